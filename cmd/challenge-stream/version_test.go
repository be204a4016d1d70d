package main

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/buildinfo"
)

// TestVersion: `version`, `--version` and `-version` print the build's one line on stdout.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), env{args: args, stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		require.NoError(t, err, args)
		require.Equal(t, buildinfo.Get().String()+"\n", out.String(), args)
		require.Empty(t, errOut.String())
	}
	err := run(context.Background(), env{args: []string{"version", "extra"}, stdout: io.Discard, stderr: io.Discard})
	require.Equal(t, exitUsage, exitCode(err, io.Discard))
}
