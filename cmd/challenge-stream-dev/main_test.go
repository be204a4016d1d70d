package main

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

// TestMain gives the package's tests one throw-away Postgres cluster (see internal/tools/pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }

// runTool runs a command in-process and returns its stdout, its stderr (with the error line
// main would print) and exit code.
func runTool(t *testing.T, cmd func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cmd(context.Background(), args, &out, &errOut)
	code := exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

// tinyData makes the synthetic database small enough to generate in a blink.
var tinyData = []string{"--artists", "100", "--tracks-per-artist", "4", "--listeners", "200", "--comments", "300"}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL")
	}
	t.Parallel()
	args := append([]string{"--duration", "2s", "--rate", "300", "--window", "200ms", "--block", "100ms"}, tinyData...)
	out, stderr, code := runTool(t, demoCommand, args...)
	t.Log(out)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr)
	require.Contains(t, out, "summary")
	require.Contains(t, out, "milestone latency")
	require.Contains(t, out, "verify    no differences")
}

func TestBench(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	args := append([]string{"--database-url", db.URL, "--only", "latency", "--duration", "1s", "--rate", "200",
		"--windows", "200ms", "--block", "100ms"}, tinyData...)
	out, stderr, code := runTool(t, benchCommand, args...)
	t.Log(out)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr)
	require.Contains(t, out, "milestone p50 / p99, window 200ms")
	require.Contains(t, out, "0 differences in 1 databases")
}

func TestDemoAndBenchUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
	}{
		{benchCommand, []string{"--only", "drain,nope"}},
		{benchCommand, []string{"--plays", "100000,0"}},
		{benchCommand, []string{"--windows", "1s,soon"}},
		{benchCommand, []string{"--rate", "-5"}},
		{benchCommand, []string{"--artists", "many"}},
		{benchCommand, []string{"extra"}},
		{demoCommand, []string{"--rate", "0"}},
		{demoCommand, []string{"--duration", "-1s"}},
		{demoCommand, []string{"--log-level", "loud"}},
	} {
		_, stderr, code := runTool(t, tc.cmd, tc.args...)
		require.Equal(t, exitUsage, code, "%v: %s", tc.args, stderr)
	}
}
