// Package testbin builds the challenge-stream binary for test packages that run it as a
// process (kill -9 is only real for a real process).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

// Main builds the binary, with the failpoints build tag (internal/failpoint), into a temporary
// directory, stores its path in *binary, runs the tests with a Postgres (pgtest.Run), removes
// the binary and exits. Call it from TestMain.
func Main(m *testing.M, binary *string) {
	dir, err := os.MkdirTemp("", "challenge-stream-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		os.Exit(1)
	}
	*binary = filepath.Join(dir, "challenge-stream")
	build := exec.Command("go", "build", "-tags", "failpoints", "-o", *binary, "github.com/challenge-stream/challenge-stream/cmd/challenge-stream")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "testbin: build challenge-stream:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
