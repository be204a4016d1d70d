package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoToolsLinked: the production binary links no package under internal/tools (the bench,
// the demo, the test harness; cmd/challenge-stream-dev runs them), so no product package
// imports one, and neither their code nor the exports they would need ship in the image.
func TestNoToolsLinked(t *testing.T) {
	t.Parallel()
	for _, tags := range []string{"", "failpoints"} {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").Output()
		require.NoError(t, err, "go list -deps -tags %q", tags)
		for _, pkg := range strings.Fields(string(out)) {
			require.NotContains(t, pkg, "/internal/tools/", "tags %q", tags)
		}
	}
}
