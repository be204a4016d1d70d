package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// The server-restart tests are not parallel: a restart takes down every database of the shared
// cluster. Go runs the non-parallel top-level tests before it resumes the parallel ones, so
// these run alone.

// TestPostgresRestartWhileStreaming: an immediate shutdown (a crash, as far as clients and WAL
// are concerned) while the sidecar streams; it reconnects on its own and applies what arrives
// meanwhile.
func TestPostgresRestartWhileStreaming(t *testing.T) {
	e := setupAlone(t)
	e.artistWithTrack(5, 50)
	p := e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	e.flushedPast(e.commitPlays(50, 200))
	sessions := p.streamingSessions()

	e.restartPostgres()
	mark := e.commitPlays(50, 100) // may commit before the sidecar is back
	require.NoError(t, hostdb.InsertComment(e.ctx, e.db.Pool, 1, 5, in2025, 7))
	eventually(t, "a new streaming session", func() bool { return p.streamingSessions() > sessions })
	e.flushedPast(mark)
	e.waitRow("p2", "5:1000", 300)
	e.waitRow("c", "5:202523", 1)
	e.verified()
}

// TestPostgresRestartDuringFlush: the server crashes while a flush is in progress (held on a row
// lock); the flush never committed, so the restarted session replays its window from the slot.
func TestPostgresRestartDuringFlush(t *testing.T) {
	e := setupAlone(t)
	e.artistWithTrack(6, 60)
	e.countWrites()
	p := e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	e.flushedPast(e.commitPlays(60, 300))
	e.waitRow("p2", "6:1000", 300)

	lock := e.lockRow("p2", "6:1000")
	window := e.commitPlays(60, 50)
	e.waitFlushBlocked()
	require.Less(t, e.storedLSN(), window, "the blocked flush has not committed")
	sessions := p.streamingSessions()
	e.restartPostgres()
	_ = lock.Close(context.Background()) // died with the server

	eventually(t, "a new streaming session", func() bool { return p.streamingSessions() > sessions })
	e.flushedPast(window)
	e.waitRow("p2", "6:1000", 350)
	require.EqualValues(t, 3, e.writes(), "p1 and p2 inserted, then p2 updated once")
	e.verified()
}

// TestFlushConnectionTerminated: the flush connection is terminated while its flush waits for a
// row lock. The flush rolls back; the sidecar reconnects and applies the window exactly once.
func TestFlushConnectionTerminated(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(7, 70)
	e.countWrites()
	addr := freeAddr(t)
	p := e.run(nil, "--window", "100ms", "--metrics-addr", addr)
	e.waitStreaming(p)
	e.flushedPast(e.commitPlays(70, 300))
	e.waitRow("p2", "7:1000", 300)
	require.EqualValues(t, 2, e.writes(), "p1 and p2 inserted")

	lock := e.lockRow("p2", "7:1000")
	window := e.commitPlays(70, 10)
	pid := e.waitFlushBlocked()
	var terminated bool
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&terminated))
	require.True(t, terminated, "the flush backend exited")
	// Only now release the lock: the terminated flush must not get to commit.
	require.NoError(t, lock.Close(e.ctx))

	e.flushedPast(window)
	e.waitRow("p2", "7:1000", 310)
	require.EqualValues(t, 3, e.writes(), "the window was applied once: one more write, of p2")
	require.Contains(t, p.out.String(), "session ended; reconnecting")
	require.GreaterOrEqual(t, scrape(t, addr, "challenge_stream_reconnects_total"), 1.0)
	e.verified()
}

// TestMetricsAndProbes: while streaming, /metrics answers and its counters move with the plays,
// /livez and /readyz answer 200; a second replica standing by is live and ready too (readiness
// is health in its role, never leadership: the sidecar shares its pod with the host API) and
// says it is not the leader.
func TestMetricsAndProbes(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(8, 80)
	addr := freeAddr(t)
	p := e.run(nil, "--window", "100ms", "--metrics-addr", addr)
	e.waitStreaming(p)
	eventually(t, "/readyz to answer 200", func() bool { return probe(addr, "/readyz") == http.StatusOK })
	require.Equal(t, http.StatusOK, probe(addr, "/livez"))

	events := scrape(t, addr, "challenge_stream_events_total", `table="plays"`)
	flushes := scrape(t, addr, "challenge_stream_flushes_total")
	inserted := scrape(t, addr, "challenge_stream_upserts_total", `outcome="inserted"`)
	e.flushedPast(e.commitPlays(80, 300))
	e.waitRow("p2", "8:1000", 300)
	eventually(t, "counters to count the plays and their flush", func() bool {
		return scrape(t, addr, "challenge_stream_events_total", `table="plays"`) >= events+300 &&
			scrape(t, addr, "challenge_stream_flushes_total") > flushes &&
			scrape(t, addr, "challenge_stream_upserts_total", `outcome="inserted"`) >= inserted+2
	})
	require.EqualValues(t, 2, scrape(t, addr, "challenge_stream_upserts_total", `challenge=~"p[12]"`, `outcome="inserted"`))
	require.Equal(t, http.StatusOK, probe(addr, "/readyz"))

	standbyAddr := freeAddr(t)
	e.run(nil, "--window", "100ms", "--metrics-addr", standbyAddr)
	eventually(t, "the second replica to stand by", func() bool {
		return scrapeOK(standbyAddr, "challenge_stream_state", `state="standby"`) == 1
	})
	require.Equal(t, http.StatusOK, probe(standbyAddr, "/livez"), "a standby is live")
	require.Equal(t, http.StatusOK, probe(standbyAddr, "/readyz"), "a standby is ready")
	require.Equal(t, http.StatusOK, probe(addr, "/readyz"), "the streaming replica stays ready")
	require.Equal(t, 0.0, scrape(t, standbyAddr, "challenge_stream_leader"))
	require.Equal(t, 1.0, scrape(t, addr, "challenge_stream_leader"))
	e.verified()
}

// TestStatusJSON: `status --json` on a live sidecar parses, names the slot and shows it active
// with the walsender's PID, the stored LSN and the legacy checkpoints.
func TestStatusJSON(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(9, 90)
	p := e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	mark := e.commitPlays(90, 260)
	e.flushedPast(mark)

	out, err := exec.CommandContext(e.ctx, binary, "status", "--json",
		"--database-url", e.db.URL, "--slot", e.db.Slot).Output()
	require.NoError(t, err)
	var st struct {
		Slot              string  `json:"slot"`
		SlotExists        bool    `json:"slot_exists"`
		Active            bool    `json:"active"`
		ActivePID         *int32  `json:"active_pid"`
		WALStatus         string  `json:"wal_status"`
		ConfirmedFlushLSN string  `json:"confirmed_flush_lsn"`
		Migrated          bool    `json:"migrated"`
		StoredLSN         *string `json:"stored_lsn"`
		LegacyLastPlayID  *int64  `json:"legacy_last_play_id"`
	}
	require.NoError(t, json.Unmarshal(out, &st), "status --json output:\n%s", out)
	require.Equal(t, e.db.Slot, st.Slot)
	require.True(t, st.SlotExists)
	require.True(t, st.Active)
	require.NotNil(t, st.ActivePID)
	require.EqualValues(t, e.count(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, e.db.Slot), *st.ActivePID)
	require.Equal(t, "reserved", st.WALStatus)
	require.True(t, st.Migrated)
	require.NotNil(t, st.StoredLSN)
	stored, err := pglogrepl.ParseLSN(*st.StoredLSN)
	require.NoError(t, err)
	require.Greater(t, stored, mark)
	require.NotNil(t, st.LegacyLastPlayID)
	require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), *st.LegacyLastPlayID)
	e.verified()
}

// setupAlone is setup for a test that must not run alongside others (it restarts the server).
func setupAlone(t *testing.T) *env {
	t.Helper()
	if pgtest.Cluster() == nil {
		t.Skip("TEST_DATABASE_URL is set: the test cannot restart that server")
	}
	return &env{t: t, ctx: t.Context(), db: pgtest.NewDB(t)}
}

// restartPostgres crashes the server (immediate shutdown) and starts it again.
func (e *env) restartPostgres() {
	e.t.Helper()
	require.NoError(e.t, pgtest.Cluster().Restart(e.ctx, pgcluster.Immediate, time.Minute))
	e.db.Pool.Reset() // its connections died with the server
}

// streamingSessions counts the sessions that started streaming so far.
func (p *proc) streamingSessions() int {
	return strings.Count(p.out.String(), `"msg":"streaming"`)
}

// commitPlays inserts n plays in one transaction and returns a WAL position inside it, before
// its commit record. The stored LSN (a commit's end, or a keepalive's WAL end while nothing is
// pending) passes it only once that transaction has been flushed, whatever else writes WAL.
func (e *env) commitPlays(track, n int64) pglogrepl.LSN {
	e.t.Helper()
	var mark pglogrepl.LSN
	require.NoError(e.t, pgx.BeginFunc(e.ctx, e.db.Pool, func(tx pgx.Tx) error {
		if err := hostdb.InsertPlays(e.ctx, tx, track, n, in2025); err != nil {
			return err
		}
		var s string
		if err := tx.QueryRow(e.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
			return err
		}
		var err error
		mark, err = pglogrepl.ParseLSN(s)
		return err
	}))
	return mark
}

// storedLSN is the LSN stored with the last flush (0 before the first).
func (e *env) storedLSN() pglogrepl.LSN {
	e.t.Helper()
	lsn, _, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
	if err != nil {
		return 0 // not migrated yet, or the server is restarting
	}
	return lsn
}

// flushedPast waits until the stored LSN passes mark.
func (e *env) flushedPast(mark pglogrepl.LSN) {
	e.t.Helper()
	eventually(e.t, "stored LSN to pass "+mark.String(), func() bool { return e.storedLSN() > mark })
}

// streamingArtist adds a verified artist with a track and runs the binary until it streams.
func (e *env) streamingArtist(artist, track int64) *proc {
	e.t.Helper()
	e.artistWithTrack(artist, track)
	return e.runStreaming()
}

// runStreaming starts the binary with 100 ms windows and waits until it streams.
func (e *env) runStreaming() *proc {
	e.t.Helper()
	p := e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	return p
}

// waitRow waits until a user_challenges row has the given current_step_count.
func (e *env) waitRow(challenge, specifier string, current int64) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%s %s at %d", challenge, specifier, current), func() bool {
		var got int64
		err := e.db.Pool.QueryRow(e.ctx, `SELECT current_step_count FROM user_challenges
			WHERE challenge_id = $1 AND specifier = $2`, challenge, specifier).Scan(&got)
		return err == nil && got == current
	})
}

// lockRow holds a row lock on a user_challenges row from another connection, so a flush that
// writes the row waits. Close the connection to release it.
func (e *env) lockRow(challenge, specifier string) *pgx.Conn {
	e.t.Helper()
	conn, locked := e.holdLocks(`SELECT 1 FROM user_challenges WHERE challenge_id = $1 AND specifier = $2 FOR UPDATE`,
		challenge, specifier)
	require.EqualValues(e.t, 1, locked, "row %s %s to lock", challenge, specifier)
	return conn
}

// holdLocks runs a locking statement in a transaction left open on a connection of its own and
// returns that connection (close it, or end the transaction, to release the locks) with the
// rows locked.
func (e *env) holdLocks(sql string, args ...any) (*pgx.Conn, int64) {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, e.db.URL)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	_, err = conn.Exec(e.ctx, `BEGIN`)
	require.NoError(e.t, err)
	tag, err := conn.Exec(e.ctx, sql, args...)
	require.NoError(e.t, err)
	return conn, tag.RowsAffected()
}

// waitFlushBlocked waits until the sidecar's flush connection waits for a lock and returns its
// backend PID.
func (e *env) waitFlushBlocked() int32 {
	e.t.Helper()
	var pid int32
	eventually(e.t, "the flush to wait for the row lock", func() bool {
		err := e.db.Pool.QueryRow(e.ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = $1 AND application_name = $2 AND wait_event_type = 'Lock'`,
			e.db.Name, pipeline.FlushApplicationName).Scan(&pid)
		return err == nil
	})
	return pid
}

// freeAddr is a 127.0.0.1 address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

var probeClient = &http.Client{Timeout: 5 * time.Second}

// probe returns the status code of GET path on addr, or 0 when nothing answers.
func probe(addr, path string) int {
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// scrape sums the samples of a metric on addr's /metrics whose labels match every matcher
// (`name="value"` or `name=~"regexp"`).
func scrape(t *testing.T, addr, metric string, matchers ...string) float64 {
	t.Helper()
	v, err := scrapeSum(addr, metric, matchers...)
	require.NoError(t, err)
	return v
}

// scrapeOK is scrape for polling: -1 when the scrape fails.
func scrapeOK(addr, metric string, matchers ...string) float64 {
	v, err := scrapeSum(addr, metric, matchers...)
	if err != nil {
		return -1
	}
	return v
}

func scrapeSum(addr, metric string, matchers ...string) (float64, error) {
	resp, err := probeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, metric) {
			continue
		}
		rest := line[len(metric):]
		labels := ""
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				return 0, fmt.Errorf("malformed sample %q", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // another metric sharing the prefix
		}
		if !labelsMatch(labels, matchers) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, fmt.Errorf("sample %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// labelsMatch checks a sample's labels (`a="x",b="y"`) against matchers `k="v"` (equal) and
// `k=~"re"` (the whole value matches the regular expression).
func labelsMatch(labels string, matchers []string) bool {
	have := map[string]string{}
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			have[k] = strings.Trim(v, `"`)
		}
	}
	for _, m := range matchers {
		if k, re, ok := strings.Cut(m, "=~"); ok {
			if !regexp.MustCompile(`^(?:` + strings.Trim(re, `"`) + `)$`).MatchString(have[k]) {
				return false
			}
			continue
		}
		k, v, _ := strings.Cut(m, "=")
		if have[k] != strings.Trim(v, `"`) {
			return false
		}
	}
	return true
}

// TestSIGTERMWithStuckFinalFlush: SIGTERM while the final flush waits for a row lock that
// outlasts the shutdown timeout (8 s). The process gives up, says why and exits non-zero —
// an orchestrator must not take it for a clean stop — and nothing is lost: the window is
// replayed by the next start.
func TestSIGTERMWithStuckFinalFlush(t *testing.T) {
	e := setup(t)
	p := e.streamingArtist(6, 60)
	e.plays(60, 250)
	e.waitRow("p1", "6:250", 250)
	lock := e.lockRow("p1", "6:250")
	e.plays(60, 5)
	e.waitFlushBlocked()

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	code := p.exited(30 * time.Second)
	require.NotEqual(t, 0, code, "a stop that could not flush is not a clean exit")
	require.Contains(t, p.out.String(), "final flush did not finish in time")
	require.NoError(t, lock.Close(e.ctx))

	e.runStreaming()
	e.caughtUp()
	e.verified()
}

// TestSIGTERMDuringBackpressureThenFlushFails is a reviewer's reproduction: SIGTERM arrives while
// the loop waits for a slow flush with the next window full (backpressure), and that flush then
// fails (here an operator's pg_cancel_backend; a statement_timeout, lock_timeout or deadlock
// fails it the same way). The stop used to take the failure for a clean one: its shutdown
// flushed the next window, stored that window's LSN past the failed one's plays and exited 0
// (verify: "p2 … want 335, got 334"). Now nothing is flushed after the failed window, the exit
// is non-zero with the reason, and the next start applies both windows.
func TestSIGTERMDuringBackpressureThenFlushFails(t *testing.T) {
	e := setup(t)
	p := e.streamingArtist(6, 60)
	e.plays(60, 334)
	e.waitRow("p2", "6:1000", 334)
	lock, flush, full := e.backpressureBehindBlockedFlush(60)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	// The stop must have begun before the flush fails: a flush failing first ends the session
	// (a reconnect, then the stop), which is safe too but not the case under test.
	eventually(t, "the sidecar to begin its stop", func() bool {
		return strings.Contains(p.out.String(), "stopping: applying what was received")
	})
	var cancelled bool
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT pg_cancel_backend($1)`, flush).Scan(&cancelled))
	require.True(t, cancelled)
	_, err := lock.Exec(e.ctx, `ROLLBACK`) // a later flush of this process could now commit
	require.NoError(t, err)
	code := p.exited(30 * time.Second)
	require.NotEqual(t, 0, code, "a stop whose flush failed is not a clean exit")
	require.Contains(t, p.out.String(), "a flush failed while stopping")
	require.Less(t, e.storedLSN(), full, "nothing stored past the failed window")

	e.runStreaming()
	e.caughtUp()
	e.waitRow("p2", "6:1000", 335)
	e.verified()
}

// backpressureBehindBlockedFlush holds the legacy checkpoint rows (every flush with changes
// raises one), commits a play of track so that its flush blocks on them, then 50,002 plays of
// distinct tracks, and waits until the sidecar reports them received: the next window is full
// while the first still flushes. It returns the lock's connection (in its transaction), the
// blocked flush's backend and the position past the full window.
func (e *env) backpressureBehindBlockedFlush(track int64) (lock *pgx.Conn, flush int32, full pglogrepl.LSN) {
	e.t.Helper()
	lock, _ = e.holdLocks(`SELECT 1 FROM indexing_checkpoints FOR UPDATE`)
	e.plays(track, 1)
	flush = e.waitFlushBlocked()
	_, err := e.db.Pool.Exec(e.ctx, `INSERT INTO plays (play_item_id, created_at) SELECT 100000 + g, now() FROM generate_series(1, 50002) g`)
	require.NoError(e.t, err)
	full = e.insertLSN()
	eventually(e.t, "the sidecar to report the full window received", func() bool {
		return e.lsn(`SELECT max(write_lsn)::text FROM pg_stat_replication r JOIN pg_replication_slots s
			ON s.active_pid = r.pid WHERE s.slot_name = $1`) >= full
	})
	return lock, flush, full
}
