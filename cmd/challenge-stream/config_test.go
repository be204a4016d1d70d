package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBadConfigExits2 checks every bad value exits 2 with one line naming it, before any
// connection, and never prints the password.
func TestBadConfigExits2(t *testing.T) {
	t.Parallel()
	const url = "postgres://app:s3cr3t-pw@127.0.0.1:1/db"
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		wants string
	}{
		{"missing url", []string{"run"}, nil, "database URL is required"},
		{"bad window flag", []string{"run", "--database-url", url, "--window", "soon"}, nil, "-window"},
		{"bad window env", []string{"run", "--database-url", url}, map[string]string{"CHALLENGE_STREAM_WINDOW": "1 sec"}, "CHALLENGE_STREAM_WINDOW"},
		{"negative window", []string{"run", "--database-url", url, "--window", "-1s"}, nil, "window -1s"},
		{"receive timeout too short", []string{"run", "--database-url", url, "--receive-timeout", "5s"}, nil, "receive timeout 5s"},
		{"bad fixed windows env", []string{"run", "--database-url", url}, map[string]string{"CHALLENGE_STREAM_FIXED_WINDOWS": "often"}, "CHALLENGE_STREAM_FIXED_WINDOWS"},
		{"slot with capitals", []string{"run", "--database-url", url, "--slot", "Bad"}, nil, `slot "Bad"`},
		{"slot injection", []string{"run", "--database-url", url, "--slot", "x; DROP TABLE plays"}, nil, "slot"},
		{"publication too long", []string{"run", "--database-url", url, "--publication", strings.Repeat("p", 64)}, nil, "publication"},
		{"metrics addr", []string{"run", "--database-url", url, "--metrics-addr", "nowhere"}, nil, `metrics address "nowhere"`},
		{"log format", []string{"run", "--database-url", url, "--log-format", "xml"}, nil, `log format "xml"`},
		{"bad bool env", []string{"run", "--database-url", url}, map[string]string{"CHALLENGE_STREAM_BACKFILL": "maybe"}, "CHALLENGE_STREAM_BACKFILL"},
		{"publication columns", []string{"run", "--database-url", url, "--publication-columns", "some"}, nil, `publication columns "some"`},
		{"decoding work mem below the server's floor", []string{"run", "--database-url", url, "--decoding-work-mem", "1024"}, nil, "decoding work mem 1024"},
		{"unparsable url", []string{"run", "--database-url", "postgres://app:s3cr3t-pw@[::1"}, nil, "database URL"},
		{"unknown flag", []string{"verify", "--database-url", url, "--nope"}, nil, "nope"},
		{"unknown command", []string{"stream"}, nil, `unknown command "stream"`},
		{"verify bad slot", []string{"verify", "--database-url", url, "--slot", "-x"}, nil, "slot"},
		{"migrate missing url", []string{"migrate"}, nil, "database URL is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return c.env[k] }
			err := run(context.Background(), env{args: c.args, stdout: &stdout, stderr: &stderr, getenv: getenv})
			code := exitCode(err, &stderr)
			require.Equal(t, exitUsage, code, stderr.String())
			out := stderr.String()
			require.Zero(t, strings.Count(strings.TrimRight(out, "\n"), "\n"), "one line: %q", out)
			require.Contains(t, out, c.wants)
			require.NotContains(t, stdout.String()+out, "s3cr3t-pw")
		})
	}
}

// TestFailoverSlotFlag checks the failover slot is on by default and turned off by the flag or
// the environment.
func TestFailoverSlotFlag(t *testing.T) {
	t.Parallel()
	const url = "postgres://app@127.0.0.1:1/db"
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		disable bool
	}{
		{"default", nil, nil, false},
		{"flag off", []string{"--failover-slot=false"}, nil, true},
		{"env off", nil, map[string]string{"CHALLENGE_STREAM_FAILOVER_SLOT": "false"}, true},
		{"flag wins", []string{"--failover-slot"}, map[string]string{"CHALLENGE_STREAM_FAILOVER_SLOT": "0"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"--database-url", url}, c.args...)
			rf, err := parseRunFlags(env{args: args, stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return c.env[k] }})
			require.NoError(t, err)
			require.Equal(t, c.disable, rf.cfg.DisableFailoverSlot)
		})
	}
}
