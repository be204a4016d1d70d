// Package e2e runs the real challenge-stream binary against a real Postgres and breaks things
// on purpose: kill -9 at chosen moments, SIGTERM, a second replica, a server restart. After each
// scenario a from-scratch recompute must find no difference.
package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/internal/tools/process"
	"github.com/challenge-stream/challenge-stream/internal/tools/testbin"
	"github.com/challenge-stream/challenge-stream/processors"
)

// binary is the challenge-stream executable built for this test run.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// proc is one challenge-stream process (internal/tools/process.Proc) with the shorthands the tests
// use: out is its output so far, cmd and done are the process's.
type proc struct {
	*process.Proc
	t    *testing.T
	cmd  *exec.Cmd
	out  *process.Output
	done <-chan struct{}
}

type env struct {
	t   *testing.T
	ctx context.Context
	db  *pgtest.DB
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	return &env{t: t, ctx: t.Context(), db: pgtest.NewDB(t)}
}

// run starts `challenge-stream run` on the test's database with extra flags and environment.
func (e *env) run(extraEnv []string, flags ...string) *proc {
	e.t.Helper()
	args := append([]string{"run", "--database-url", e.db.URL, "--slot", e.db.Slot, "--publication", e.db.Publication,
		"--metrics-addr", "off", "--log-level", "debug",
		// Confirm any idle movement, so caughtUp can wait for the server's insert position
		// while other tests' databases write.
		"--idle-confirm-bytes", "1"}, flags...)
	out := &process.Output{}
	tp := testbin.StartT(e.t, binary, args, extraEnv, out)
	return &proc{Proc: tp, t: e.t, cmd: tp.Cmd, out: out, done: tp.Done()}
}

func (p *proc) kill9() {
	p.t.Helper()
	require.NoError(p.t, p.Kill9())
}

// exited waits for the process to exit and returns its exit code.
func (p *proc) exited(within time.Duration) int {
	p.t.Helper()
	code, ok := p.ExitCode(within)
	if !ok {
		p.t.Fatalf("challenge-stream still running after %s", within)
	}
	return code
}

// waitStreaming waits until this process streams from the slot.
func (e *env) waitStreaming(p *proc) {
	e.t.Helper()
	eventually(e.t, "process streaming", func() bool {
		var active bool
		err := e.db.Pool.QueryRow(e.ctx, `SELECT active_pid IS NOT NULL FROM pg_replication_slots WHERE slot_name = $1`, e.db.Slot).Scan(&active)
		return err == nil && active && bytes.Contains([]byte(p.out.String()), []byte(`"streaming"`))
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *env) lsn(sql string) pglogrepl.LSN {
	e.t.Helper()
	var s *string
	require.NoError(e.t, e.db.Pool.QueryRow(e.ctx, sql, e.db.Slot).Scan(&s))
	if s == nil {
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	require.NoError(e.t, err)
	return lsn
}

// insertLSN is past every commit so far.
func (e *env) insertLSN() pglogrepl.LSN {
	return e.lsn(`SELECT pg_current_wal_insert_lsn()::text WHERE $1::text IS NOT NULL`)
}

// waitSent waits until the server has sent the slot's consumer everything written so far.
func (e *env) waitSent() {
	e.t.Helper()
	target := e.insertLSN()
	eventually(e.t, "walsender to send "+target.String(), func() bool {
		return e.lsn(`SELECT max(sent_lsn)::text FROM pg_stat_replication r JOIN pg_replication_slots s
			ON s.active_pid = r.pid WHERE s.slot_name = $1`) >= target
	})
}

// caughtUp waits until the stored LSN passes everything written so far.
func (e *env) caughtUp() {
	e.t.Helper()
	target := e.insertLSN()
	eventually(e.t, "stored LSN to reach "+target.String(), func() bool {
		lsn, _, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
		return err == nil && lsn >= target
	})
}

func (e *env) verified() {
	e.t.Helper()
	diffs, err := processors.Verify(e.ctx, e.db.Pool)
	require.NoError(e.t, err)
	require.Empty(e.t, diffs)
}

func (e *env) count(sql string, args ...any) int64 {
	e.t.Helper()
	return e.db.QueryInt(e.t, sql, args...)
}

var in2025 = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

// artistWithTrack adds a verified artist owning one track.
func (e *env) artistWithTrack(artist, track int64) {
	e.t.Helper()
	require.NoError(e.t, hostdb.AddUser(e.ctx, e.db.Pool, artist, true))
	require.NoError(e.t, hostdb.AddTrack(e.ctx, e.db.Pool, track, artist))
}

func (e *env) plays(track, n int64) {
	e.t.Helper()
	require.NoError(e.t, hostdb.InsertPlays(e.ctx, e.db.Pool, track, n, in2025))
}

// countWrites installs a trigger counting row writes to user_challenges.
func (e *env) countWrites() {
	e.t.Helper()
	e.db.Exec(e.t, `CREATE TABLE uc_writes (n bigint NOT NULL);
		INSERT INTO uc_writes VALUES (0);
		CREATE FUNCTION count_uc_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN UPDATE uc_writes SET n = n + 1; RETURN NULL; END $$;
		CREATE TRIGGER count_uc_write AFTER INSERT OR UPDATE ON user_challenges
			FOR EACH ROW EXECUTE FUNCTION count_uc_write();`)
}

func (e *env) writes() int64 { e.t.Helper(); return e.count(`SELECT n FROM uc_writes`) }

// TestKill9WithUnflushedWindow: the process dies holding a received window that was never
// flushed; the restart replays it from the slot.
func TestKill9WithUnflushedWindow(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(1, 10)
	p := e.run(nil, "--window", "1h", "--fixed-windows")
	e.waitStreaming(p)
	e.plays(10, 300)
	require.NoError(t, hostdb.InsertComment(e.ctx, e.db.Pool, 1, 1, in2025, 5))
	e.waitSent()
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM user_challenges`), "the window is still open")
	p.kill9()

	p = e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	e.caughtUp()
	require.EqualValues(t, 3, e.count(`SELECT count(*) FROM user_challenges`), "p1, p2 and c applied after the restart")
	e.verified()
}

// TestCrashAfterFlushCommit: the process dies after the flush committed but before it confirmed
// the LSN to the server. The server re-sends the transaction; the restart applies nothing twice.
func TestCrashAfterFlushCommit(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(2, 20)
	e.countWrites()
	p := e.run([]string{"CHALLENGE_STREAM_FAILPOINT=after-flush-commit:1"}, "--window", "100ms")
	e.waitStreaming(p)
	e.plays(20, 300)
	require.NotEqual(t, 0, p.exited(90*time.Second), "killed at the failpoint")
	require.EqualValues(t, 2, e.writes(), "p1 and p2 inserted once")
	storedBefore, _, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
	require.NoError(t, err)
	confirmed := e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`)
	require.Less(t, confirmed, storedBefore, "the flush committed but was not confirmed")

	p = e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	eventually(t, "the restart to confirm the stored LSN", func() bool {
		return e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`) >= storedBefore
	})
	e.plays(20, 1)
	eventually(t, "the next play to update p2", func() bool {
		return e.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '2:1000'`) == 301
	})
	require.EqualValues(t, 3, e.writes(), "p1 and p2 written once each, then p2 once more: nothing applied twice")
	e.verified()
}

// TestListenStreakCrashAfterFlushCommit: e keeps state (challenge_listen_streak) beside its
// rows. The process dies after the flush of the first listens committed, before the confirm;
// the restart receives them again and counts none of them twice.
func TestListenStreakCrashAfterFlushCommit(t *testing.T) {
	e := setup(t)
	e.db.Exec(t, `UPDATE challenges SET active = true WHERE id = 'e'`)
	day := func(n int) time.Time { return in2025.Add(time.Duration(n) * 24 * time.Hour) }
	listen := func(n int) {
		e.db.Exec(t, `INSERT INTO plays (user_id, play_item_id, created_at) VALUES (700, 1, $1)`, day(n))
	}
	p := e.run([]string{"CHALLENGE_STREAM_FAILPOINT=after-flush-commit:1"}, "--window", "100ms")
	e.waitStreaming(p)
	e.db.Exec(t, `INSERT INTO plays (user_id, play_item_id, created_at) VALUES (700, 1, $1), (700, 1, $2)`, day(0), day(1))
	require.NotEqual(t, 0, p.exited(90*time.Second), "killed at the failpoint")
	require.EqualValues(t, 2, e.count(`SELECT listen_streak FROM challenge_listen_streak WHERE user_id = 700`))

	p = e.run(nil, "--window", "100ms")
	e.waitStreaming(p)
	listen(2)
	listen(3)
	e.caughtUp()
	require.EqualValues(t, 4, e.count(`SELECT listen_streak FROM challenge_listen_streak WHERE user_id = 700`),
		"four days, each counted once")
	require.EqualValues(t, 4, e.count(`SELECT count(*) FROM user_challenges WHERE challenge_id = 'e'`))
	require.EqualValues(t, 4, e.count(`SELECT max(current_step_count) FROM user_challenges WHERE challenge_id = 'e'`))
	e.verified()
}

// TestSIGTERMFlushesOpenWindow: SIGTERM applies the open window, confirms it and exits 0 within
// 10 s.
func TestSIGTERMFlushesOpenWindow(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(3, 30)
	p := e.run(nil, "--window", "1h", "--fixed-windows")
	e.waitStreaming(p)
	e.plays(30, 260)
	e.waitSent()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exited(10*time.Second))
	require.EqualValues(t, 2, e.count(`SELECT count(*) FROM user_challenges`))
	stored, _, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
	require.NoError(t, err)
	// The walsender handles the last status update after the process has gone: wait for it.
	confirmedLSN := func() pglogrepl.LSN {
		return e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`)
	}
	eventually(t, "the walsender to apply the final status update", func() bool { return confirmedLSN() >= stored })
	require.Equal(t, stored, confirmedLSN(), "the final window was confirmed, and nothing past it")
	e.verified()
}

// TestKill9ActiveReplica: two replicas on one slot; kill -9 of the active one; the standby takes
// over within 30 s and nothing is lost.
func TestKill9ActiveReplica(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(4, 40)
	first := e.run(nil, "--window", "100ms")
	e.waitStreaming(first)
	second := e.run(nil, "--window", "100ms")
	e.plays(40, 100)
	e.caughtUp()
	first.kill9()
	killedAt := time.Now()
	e.plays(40, 200)
	e.waitStreaming(second)
	require.Less(t, time.Since(killedAt), 30*time.Second, "standby took over within 30 s")
	e.caughtUp()
	require.EqualValues(t, 300, e.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '4:1000'`))
	e.verified()
}
