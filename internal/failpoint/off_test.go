//go:build !failpoints

package failpoint

import "testing"

// TestHitIgnoresEnvWithoutTag checks the production build: an armed environment must not
// kill the process (if it did, this test binary would die with SIGKILL).
func TestHitIgnoresEnvWithoutTag(t *testing.T) {
	t.Setenv(EnvVar, "after-flush-commit:1")
	for range 3 {
		Hit("after-flush-commit")
	}
}
