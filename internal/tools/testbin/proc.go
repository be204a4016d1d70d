package testbin

import (
	"testing"

	"github.com/challenge-stream/challenge-stream/internal/tools/process"
)

// StartT is process.Start for one test: it fails the test if the process does not start, kills
// it in the test's cleanup, and then logs out when the test failed.
func StartT(t testing.TB, binary string, args, env []string, out *process.Output) *process.Proc {
	t.Helper()
	p, err := process.Start(binary, args, env, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		<-p.Done()
		if t.Failed() {
			t.Logf("challenge-stream output:\n%s", out.String())
		}
	})
	return p
}
