package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// The faults in this file break the flush transaction itself: its statement is cancelled, times
// out, deadlocks, fails while the process stops, or waits for commits held in SyncRep. Each
// failed flush must leave nothing stored or confirmed past it, and the window must be replayed.

// Substrings of the server errors the sidecar logs when a flush statement is cut short.
const (
	cancelledByUser  = "canceling statement due to user request"
	statementTimeout = "canceling statement due to statement timeout"
	deadlockDetected = "deadlock detected"
	stopFlushFailed  = "a flush failed while stopping"
)

// plannedStopLimit is how long a SIGTERM'd sidecar may take to exit: the shutdown drain and
// the final flush (pipeline.DefaultShutdownTimeout, 8 s) with room to spare.
const plannedStopLimit = 30 * time.Second

// cancelFlush cancels whatever statement the flush connection is running (pg_cancel_backend),
// as an operator, a statement killer or a pooler's query timeout would: the flush transaction
// aborts with 57014 and commits nothing, so the session must end, reconnect and replay the
// window rather than confirm past it. Flushes are short; the first one seen running is hit.
func (s *suite) cancelFlush(*rand.Rand) error {
	before := s.sc.countInLogs(cancelledByUser)
	var queries []string
	for end := time.Now().Add(3 * time.Second); len(queries) == 0 && time.Now().Before(end); pause(s.ctx, 5*time.Millisecond) {
		rows, err := s.pool.Query(s.ctx, `SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 60), pg_cancel_backend(pid)
			FROM pg_stat_activity WHERE application_name = $1 AND datname = $2 AND state = 'active'`,
			pipeline.FlushApplicationName, s.db.Name)
		if err != nil {
			return err
		}
		queries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var q string
			var sent bool
			return q, r.Scan(&q, &sent)
		})
		if err != nil {
			return err
		}
	}
	if len(queries) == 0 {
		s.note("flush cancel: no flush statement was running within 3s")
		return nil
	}
	hit := s.logged(cancelledByUser, before, 2*time.Second)
	s.t.Logf("cancelled the flush connection's %q (the sidecar logged the cancellation: %t)", queries[0], hit)
	if !hit {
		s.note("flush cancel: the statement %q ended before the cancel reached it", queries[0])
	}
	return nil
}

// flushTimeout restarts the sidecar with statement_timeout = 500ms on its connections
// (PGOPTIONS, as an operator's role or URL setting would give it) and holds the reward-row locks
// longer than that: the flush's upsert times out (57014) while it waits, the window is replayed,
// and once the locks are gone it applies. A second planned restart puts the normal settings back.
func (s *suite) flushTimeout(rng *rand.Rand) (err error) {
	run, code, err := s.restartSidecar("PGOPTIONS=-c statement_timeout=500ms")
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("run %d: a planned SIGTERM exited %d:\n%s", run, code, lastLines(s.sc.logPath(run), 20))
	}
	timed := run + 1
	defer func() {
		run, code, rerr := s.restartSidecar()
		if rerr != nil {
			err = errors.Join(err, fmt.Errorf("restart without the statement timeout: %w", rerr))
			return
		}
		if code != 0 { // the timeout may cut the final flush short too: ours, not the sidecar's
			s.note("flush timeout: run %d, under the 500ms statement_timeout, exited %d at its SIGTERM", run, code)
		}
	}()
	s.waitProgress() // the new process streams under the timeout
	hold := time.Duration(2000+rng.IntN(1000)) * time.Millisecond
	locked, err := s.holdRewardLocks(hold)
	if err != nil && !isDeadlock(err) {
		return err
	}
	s.waitProgress() // and applies once the locks are gone
	n := countLines(s.sc.logPath(timed), statementTimeout)
	s.note("flush timeout: held %d reward-row locks for %s under a 500ms statement_timeout; run %d logged %q %d times",
		locked, hold, timed, statementTimeout, n)
	return nil
}

// deadlockFlush locks the reward rows in the reverse of the flush's order — c rows first, then,
// once a flush waits for one of them while it holds milestone rows, the milestone rows — as a
// host job that updates user_challenges in its own order may. Postgres finds the cycle after
// deadlock_timeout (1 s) and aborts one side with 40P01: the flush when we close the cycle at
// once (its own check runs first), the holder when we wait past the flush's check. A flush
// aborted by a deadlock must be replayed, not skipped.
func (s *suite) deadlockFlush(rng *rand.Rand) error {
	before := s.sc.countInLogs(deadlockDetected)
	late := rng.IntN(2) == 0
	var blocked bool
	err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		flush, err := s.blockFlush(tx, func(tx pgx.Tx) (int64, error) {
			return lockRewardRows(s.ctx, tx, rewardUsers(), "c")
		})
		if err != nil {
			return err
		}
		if flush == 0 {
			return errRollback
		}
		blocked = true
		if late {
			pause(s.ctx, 1500*time.Millisecond)
		}
		if _, err := lockRewardRows(s.ctx, tx, rewardUsers(), "p1", "p2", "p3"); err != nil {
			return err
		}
		return errRollback
	})
	switch {
	case isDeadlock(err):
		s.note("flush deadlock: Postgres aborted the lock holder (cycle closed %s)", closedAt(late))
	case !errors.Is(err, errRollback):
		return err
	case !blocked:
		s.note("flush deadlock: no flush waited for the c rows within 5s")
	case s.logged(deadlockDetected, before, 2*time.Second):
		s.note("flush deadlock: Postgres aborted the flush (cycle closed %s)", closedAt(late))
	default:
		s.note("flush deadlock: no cycle (the waiting flush held none of the milestone rows)")
	}
	return nil
}

func closedAt(late bool) string {
	if late {
		return "after the flush's deadlock check"
	}
	return "before the flush's deadlock check"
}

// stopDuringFailedFlush sends SIGTERM while a flush waits behind the reward-row locks, then
// cancels that flush: the final flush of a rolling restart fails. Nothing after it may be stored
// or confirmed, and the process must exit non-zero (pipeline.ErrStopFlushFailed) so the
// orchestrator and the operator see it; the next process replays the window.
func (s *suite) stopDuringFailedFlush(*rand.Rand) error {
	var (
		run, code int
		stopped   bool
	)
	err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		flush, err := s.blockFlush(tx, func(tx pgx.Tx) (int64, error) { return lockInFlushOrder(s.ctx, tx) })
		if err != nil {
			return err
		}
		if flush == 0 {
			return errRollback
		}
		stopping := s.sc.countInLogs(stopBegun)
		var exited <-chan int
		run, exited, err = s.sc.sigterm()
		if err != nil {
			return err
		}
		// The stop must have begun before the flush fails: a flush failing first ends the
		// session (a reconnect, then the stop), which is safe too but not this fault.
		if !s.logged(stopBegun, stopping, 10*time.Second) {
			return fmt.Errorf("run %d did not begin its stop within 10s of its SIGTERM", run)
		}
		if _, err := s.pool.Exec(s.ctx, `SELECT pg_cancel_backend($1)`, flush); err != nil {
			return err
		}
		select {
		case code = <-exited:
			stopped = true
		case <-time.After(plannedStopLimit):
			return fmt.Errorf("run %d did not exit within %s of its SIGTERM", run, plannedStopLimit)
		}
		return errRollback // the locks go only now: the exit must not depend on them
	})
	if !errors.Is(err, errRollback) {
		return err
	}
	if !stopped {
		s.note("stop during a failed flush: no flush waited for the locks within 5s")
		return nil
	}
	tail := lastLines(s.sc.logPath(run), 10)
	if code == 0 {
		return fmt.Errorf("run %d: its final flush was cancelled, yet it exited 0:\n%s", run, tail)
	}
	s.note("stop during a failed flush: run %d exited %d (%q logged: %t)", run, code, stopFlushFailed,
		strings.Contains(tail, stopFlushFailed))
	return nil
}

// stopBegun is what the sidecar logs when a stop begins.
const stopBegun = "stopping: applying what was received"

// syncRepScratch is a table outside the publication, written by holdInSyncRep.
const syncRepScratch = "fault_syncrep_scratch"

// holdInSyncRep holds two commits in their synchronous-replication wait (SyncRep) for 2–4 s:
// one of a table outside the publication, one of plays of a verified artist's track. With a
// synchronous standby that is slow or gone this is what a primary does: the commits are in WAL
// and streamed, but invisible to everyone until the standby answers. The flush must wait for
// the plays to become visible, neither skip them nor store a position past them. Only these two
// sessions ask for synchronous commit; the cluster's default (off) and the flush's own (local)
// do not wait.
func (s *suite) holdInSyncRep(rng *rand.Rand) (err error) {
	if _, err := s.pool.Exec(s.ctx, `CREATE TABLE IF NOT EXISTS `+syncRepScratch+
		` (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	artist := artists[rng.IntN(len(artists))]
	track := artist*10 + rng.Int64N(tracksPerArtist)
	plays := 1 + rng.Int64N(5)
	writes := []func(context.Context, *pgx.Conn) error{
		func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, `INSERT INTO `+syncRepScratch+` DEFAULT VALUES`)
			return err
		},
		func(ctx context.Context, c *pgx.Conn) error {
			return hostdb.InsertPlays(ctx, c, track, plays, time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
		},
	}
	var pids []int32
	var conns []*pgx.Conn
	for range writes {
		c, err := pgx.Connect(s.ctx, s.db.URL)
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(s.ctx))
		if _, err := c.Exec(s.ctx, `SET synchronous_commit = on`); err != nil {
			return err
		}
		var pid int32
		if err := c.QueryRow(s.ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			return err
		}
		conns, pids = append(conns, c), append(pids, pid)
	}

	if err := pgtest.SetSyncStandbys(s.ctx, s.pool, "nobody_here"); err != nil {
		return err
	}
	// The setting reaches the committing backends a moment after the reload: a write that
	// committed without waiting is repeated until both wait (held), then nothing more is written.
	held := make(chan struct{})
	release := sync.OnceFunc(func() { close(held) })
	committed := make(chan error, len(writes))
	var early atomic.Int64 // writes that committed before the setting took effect
	defer func() {
		release()
		err = errors.Join(err, pgtest.SetSyncStandbys(s.ctx, s.pool, "")) // ends the waits
		for range writes {
			err = errors.Join(err, <-committed)
		}
	}()
	for i, write := range writes {
		go func() {
			for {
				if err := write(s.ctx, conns[i]); err != nil {
					committed <- err
					return
				}
				select {
				case <-held:
					committed <- nil
					return
				case <-time.After(10 * time.Millisecond):
					early.Add(1)
				}
			}
		}()
	}
	var waiting int
	for end := time.Now().Add(10 * time.Second); waiting < len(pids) && time.Now().Before(end); pause(s.ctx, 20*time.Millisecond) {
		if err := s.pool.QueryRow(s.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE pid = ANY($1) AND wait_event = 'SyncRep'`, pids).Scan(&waiting); err != nil {
			return err
		}
	}
	release()
	if waiting < len(pids) {
		return fmt.Errorf("only %d of %d commits waited in SyncRep within 10s", waiting, len(pids))
	}
	// Both commit records are flushed before their SyncRep wait: a stored position at or past
	// the flush position now would be past the held plays, which nobody can see yet.
	heldEnd, err := s.flushLSN()
	if err != nil {
		return err
	}
	hold := time.Duration(2000+rng.IntN(2000)) * time.Millisecond
	var flushWaited bool
	for end := time.Now().Add(hold); time.Now().Before(end); pause(s.ctx, 50*time.Millisecond) {
		// Between its checks the waiting flush connection is idle; its last query says what it does.
		var w bool
		if err := s.pool.QueryRow(s.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE application_name = $1 AND datname = $2 AND query LIKE '%pg_visible_in_snapshot%')`,
			pipeline.FlushApplicationName, s.db.Name).Scan(&w); err != nil {
			return err
		}
		flushWaited = flushWaited || w
		stored, _, err := checkpoints.LoadLSN(s.ctx, s.pool, s.db.Slot)
		if err != nil {
			return err
		}
		if stored >= heldEnd {
			return fmt.Errorf("the sidecar stored %s, past plays of track %d still held in SyncRep (WAL flushed to %s)",
				stored, track, heldEnd)
		}
	}
	s.t.Logf("held %d plays of track %d and a scratch row in SyncRep for %s (%d writes committed before the setting took effect; a flush seen waiting for visibility: %t)",
		plays, track, hold, early.Load(), flushWaited)
	if !flushWaited {
		s.note("SyncRep hold: no flush was seen waiting for the held plays to become visible")
	}
	return nil
}

func (s *suite) flushLSN() (pglogrepl.LSN, error) {
	var text string
	if err := s.pool.QueryRow(s.ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&text); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(text)
}

// restartSidecar is a planned restart (SIGTERM) whose next process gets env; it returns the
// stopped run and its exit code.
func (s *suite) restartSidecar(env ...string) (run, code int, err error) {
	run, exited, err := s.sc.sigterm(env...)
	if err != nil {
		return run, -1, err
	}
	select {
	case code = <-exited:
		return run, code, nil
	case <-time.After(plannedStopLimit):
		return run, -1, fmt.Errorf("run %d did not exit within %s of its SIGTERM", run, plannedStopLimit)
	}
}

// holdRewardLocks holds the reward-row locks, in the flush's order, for hold and returns how
// many it held.
func (s *suite) holdRewardLocks(hold time.Duration) (int64, error) {
	var locked int64
	err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if locked, err = lockInFlushOrder(s.ctx, tx); err != nil {
			return err
		}
		pause(s.ctx, hold)
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return locked, nil
	}
	return locked, err
}

// rewardUsers are the users whose reward rows the lock faults take: every busy artist and
// commenter of the traffic.
func rewardUsers() []int64 { return append(append([]int64(nil), artists...), commenters...) }

// lockRewardRows locks the reward rows of users in challenges by challenge and specifier — the
// order the flush takes them in within a family — and returns how many it locked.
func lockRewardRows(ctx context.Context, tx pgx.Tx, users []int64, challenges ...string) (int64, error) {
	var n int64
	err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM user_challenges
		WHERE user_id = ANY($1) AND challenge_id = ANY($2)
		ORDER BY challenge_id, specifier FOR UPDATE) l`, users, challenges).Scan(&n)
	return n, err
}

// lockInFlushOrder locks every reward row of rewardUsers in the order the flush takes them:
// milestones, then c.
func lockInFlushOrder(ctx context.Context, tx pgx.Tx) (int64, error) {
	var locked int64
	for _, challenges := range [][]string{{"p1", "p2", "p3"}, {"c"}} {
		n, err := lockRewardRows(ctx, tx, rewardUsers(), challenges...)
		if err != nil {
			return locked, err
		}
		locked += n
	}
	return locked, nil
}

// blockFlush takes row locks in tx with lock and waits up to 5 s for a flush to wait on them; it
// returns that flush's backend, or 0 when none came.
func (s *suite) blockFlush(tx pgx.Tx, lock func(pgx.Tx) (int64, error)) (int32, error) {
	holder, err := backendPID(s.ctx, tx)
	if err != nil {
		return 0, err
	}
	if _, err := lock(tx); err != nil {
		return 0, err
	}
	return s.flushBlockedBy(holder, 5*time.Second)
}

func backendPID(ctx context.Context, tx pgx.Tx) (int32, error) {
	var pid int32
	err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid)
	return pid, err
}

// flushBlockedBy waits up to within for a flush statement to wait for a lock holder holds and
// returns the flush backend's pid, or 0 if none did.
func (s *suite) flushBlockedBy(holder int32, within time.Duration) (int32, error) {
	for end := time.Now().Add(within); time.Now().Before(end); pause(s.ctx, 20*time.Millisecond) {
		var pid int32
		err := s.pool.QueryRow(s.ctx, `SELECT pid FROM pg_stat_activity
			WHERE application_name = $1 AND datname = $2 AND $3::int = ANY(pg_blocking_pids(pid))`,
			pipeline.FlushApplicationName, s.db.Name, holder).Scan(&pid)
		switch {
		case err == nil:
			return pid, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, err
		}
	}
	return 0, nil
}

// logged waits up to within for the sidecar's logs to hold more than before lines with substr.
func (s *suite) logged(substr string, before int, within time.Duration) bool {
	for end := time.Now().Add(within); time.Now().Before(end); pause(s.ctx, 50*time.Millisecond) {
		if s.sc.countInLogs(substr) > before {
			return true
		}
	}
	return s.sc.countInLogs(substr) > before
}
