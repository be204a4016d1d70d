//go:build failpoints

package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Run with: go test -tags failpoints ./internal/failpoint/

func TestParse(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"", "after-flush-commit", "after-flush-commit:", "after-flush-commit:0",
		"after-flush-commit:-1", "after-flush-commit:x", ":3"} {
		require.Nil(t, parse(spec), spec)
	}
	p := parse("after-flush-commit:3")
	require.NotNil(t, p)
	require.False(t, p.hit("other"))
	require.False(t, p.hit("after-flush-commit"))
	require.False(t, p.hit("after-flush-commit"))
	require.True(t, p.hit("after-flush-commit"))
	require.False(t, p.hit("after-flush-commit"), "fires once")

	var unarmed *point
	require.False(t, unarmed.hit("after-flush-commit"))
}

// TestHitKills runs this test binary again with the failpoint armed and checks that the
// second hit kills it.
func TestHitKills(t *testing.T) {
	t.Parallel()
	if os.Getenv("FAILPOINT_TEST_CHILD") == "1" {
		Hit("after-flush-commit")
		_, _ = os.Stdout.WriteString("survived the first hit\n")
		Hit("after-flush-commit")
		_, _ = os.Stdout.WriteString("survived the second hit\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
	cmd.Env = append(os.Environ(), "FAILPOINT_TEST_CHILD=1", EnvVar+"=after-flush-commit:2")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "child: %v\n%s", err, out)
	status, ok := exit.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, status.Signaled(), "child exited without a signal:\n%s", out)
	require.Equal(t, syscall.SIGKILL, status.Signal())
	require.Contains(t, string(out), "survived the first hit")
	require.NotContains(t, string(out), "survived the second hit")
	require.Contains(t, string(out), "failpoint reached")
}
