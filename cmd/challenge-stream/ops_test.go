package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// get fetches a URL without keeping the connection, so no client goroutine outlives the test.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestOpsServesMetricsAndProbes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	db.Exec(t, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", db.Slot)

	o, err := startOps(ctx, opsConfig{addr: "127.0.0.1:0", database: db.ConnConfig(t), slot: db.Slot}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(o.close)
	base := "http://" + o.addr

	code, _ := get(t, base+"/livez")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "not yet leading or standing by")

	o.observe(pipeline.StateChanged{State: pipeline.StateStandby})
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, "a standby is ready")
	o.observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	o.observe(pipeline.StatusSent{Received: 0x2000, Applied: 0x1000, ServerWALEnd: 0x1000})
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(t, base+"/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code, "pprof only on --debug-addr")

	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `challenge_stream_state{state="streaming"} 1`)
	require.Contains(t, body, "challenge_stream_status_updates_total 1\n")
	require.Contains(t, body, `challenge_stream_leader{slot="`+db.Slot+`"} 1`)
	require.Contains(t, body, "challenge_stream_build_info{")

	// The poller reads the slot and the challenges' owners at once, then every 15 s (p1 is
	// active in the test catalog, v not).
	require.Eventually(t, func() bool {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte("challenge_stream_slot_exists 1\n")) &&
			bytes.Contains(b, []byte(`challenge_stream_slot_wal_status{status="reserved"} 1`)) &&
			bytes.Contains(b, []byte(`challenge_stream_challenge_owned{challenge="p1"} 1`)) &&
			bytes.Contains(b, []byte(`challenge_stream_challenge_owned{challenge="v"} 0`))
	}, 20*time.Second, 50*time.Millisecond)

	o.close()
	o.close() // idempotent
	_, err = net.DialTimeout("tcp", o.addr, time.Second)
	require.Error(t, err, "listener still open after close")
}

func TestOpsOff(t *testing.T) {
	t.Parallel()
	o, err := startOps(context.Background(), opsConfig{addr: "off", database: mustParse(t, "postgres://localhost/x"), slot: "s"},
		zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Empty(t, o.addr)
	o.observe(pipeline.StateChanged{State: pipeline.StateStreaming}) // still usable
	o.close()
}

func TestOpsBindFailure(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	_, err = startOps(context.Background(), opsConfig{addr: ln.Addr().String()}, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "listen on --metrics-addr "+ln.Addr().String())
}

// TestOpsDebugAddr: pprof answers on its own listener only, and only when asked for.
func TestOpsDebugAddr(t *testing.T) {
	t.Parallel()
	o, err := startOps(context.Background(), opsConfig{addr: "127.0.0.1:0", debugAddr: "127.0.0.1:0"}, zaptest.NewLogger(t))
	require.NoError(t, err)
	t.Cleanup(o.close)
	require.NotEqual(t, o.addr, o.debugAddr)
	code, body := get(t, "http://"+o.debugAddr+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	code, _ = get(t, "http://"+o.debugAddr+"/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(t, "http://"+o.debugAddr+"/metrics")
	require.Equal(t, http.StatusNotFound, code)

	off, err := startOps(context.Background(), opsConfig{addr: "off", debugAddr: "off"}, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Empty(t, off.debugAddr)
	off.close()

	// The metrics listener is released when the debug one cannot bind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	_, err = startOps(context.Background(), opsConfig{addr: "127.0.0.1:0", debugAddr: ln.Addr().String()}, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "listen on --debug-addr "+ln.Addr().String())
}

func TestRunFlagsOps(t *testing.T) {
	t.Parallel()
	parse := func(environ map[string]string, args ...string) (runFlags, error) {
		var out bytes.Buffer
		return parseRunFlags(env{
			args:   append([]string{"--database-url", "postgres://localhost/db"}, args...),
			stdout: &out, stderr: &out,
			getenv: func(k string) string { return environ[k] },
		})
	}
	rf, err := parse(nil)
	require.NoError(t, err)
	require.Equal(t, ":9464", rf.opsConfig().addr, "all interfaces: the kubelet probes the pod IP")
	require.Equal(t, "off", rf.opsConfig().debugAddr)

	rf, err = parse(map[string]string{"CHALLENGE_STREAM_DEBUG_ADDR": "127.0.0.1:6060"}, "--metrics-addr", "127.0.0.1:9464")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9464", rf.opsConfig().addr)
	require.Equal(t, "127.0.0.1:6060", rf.opsConfig().debugAddr)

	// Deprecated and ignored, but still accepted so old manifests keep starting.
	rf, err = parse(map[string]string{"CHALLENGE_STREAM_READY_MAX_LAG_BYTES": "4096"}, "--ready-max-lag-bytes", "100")
	require.NoError(t, err)
	require.Equal(t, int64(100), rf.opsFlags.readyMaxLagBytes)

	for _, tc := range []struct {
		environ map[string]string
		args    []string
		want    string
	}{
		{args: []string{"--debug-addr", "6060"}, want: `debug address "6060"`},
		{args: []string{"--ready-max-lag-bytes", "1GiB"}, want: "ready-max-lag-bytes"},
		{environ: map[string]string{"CHALLENGE_STREAM_READY_MAX_LAG_BYTES": "lots"}, want: "CHALLENGE_STREAM_READY_MAX_LAG_BYTES"},
	} {
		_, err := parse(tc.environ, tc.args...)
		var usage usageError
		require.ErrorAs(t, err, &usage)
		require.Contains(t, err.Error(), tc.want)
		require.Equal(t, exitUsage, exitCode(err, io.Discard))
		require.False(t, strings.Contains(err.Error(), "\n"))
	}
}

// mustParse is url's connection settings, as validate parses them.
func mustParse(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return cfg
}
