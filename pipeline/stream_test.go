package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

// TestStreamAppliesRules drives the foundation's rules through the stream: every change
// arrives by logical replication, nothing is called directly.
func TestStreamAppliesRules(t *testing.T) {
	e := setup(t)
	s := e.start()
	s.waitStreaming()

	e.artist(0x100, true) // verified: 300 plays
	e.track(1, 0x100)
	e.artist(0x101, false) // unverified
	e.track(2, 0x101)
	e.artist(0x102, true) // 1,500 plays on two tracks
	e.track(3, 0x102)
	e.track(4, 0x102)
	e.exec(`UPDATE users SET is_deactivated = true WHERE user_id = $1`, 0x101)
	e.artist(0x103, true) // 10,500 plays
	e.track(5, 0x103)
	e.artist(0x104, true) // only plays before 2025 and on a deleted track
	e.track(6, 0x104)
	e.exec(`UPDATE tracks SET is_delete = true WHERE track_id = 6`)
	e.track(7, 0x104)

	e.plays(1, 300)
	e.plays(2, 500)
	e.plays(3, 1000)
	e.plays(4, 500)
	e.plays(5, 10500)
	e.plays(6, 400)
	e.exec(`INSERT INTO plays (play_item_id, created_at) SELECT 7, '2024-12-31 23:59' FROM generate_series(1, 400)`)
	e.comment(1, 700, time.Date(2025, 1, 6, 10, 0, 0, 0, time.UTC), 10)
	e.comment(2, 700, time.Date(2024, 12, 30, 10, 0, 0, 0, time.UTC), 11)
	e.comment(3, 700, time.Date(2027, 1, 1, 10, 0, 0, 0, time.UTC), 12)
	e.caughtUp()

	e.requireRow("p1", "100:250", 250, true)
	e.requireRow("p2", "100:1000", 300, false)
	_, _, found := e.row("p3", "100:10000")
	require.False(t, found, "p3 appears only from 1,000 plays")
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM user_challenges WHERE user_id IN ($1, $2)`, 0x101, 0x104))
	e.requireRow("p2", "102:1000", 1000, true)
	e.requireRow("p3", "102:10000", 1500, false)
	e.requireRow("p3", "103:10000", 10000, true)
	e.requireRow("c", "2bc:202502", 1, true)
	e.requireRow("c", "2bc:202501", 1, true)
	e.requireRow("c", "2bc:202653", 1, true)

	legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
	require.NoError(t, err)
	require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), legacy[checkpoints.PlaysCheckpoint])
	require.EqualValues(t, 12, legacy[checkpoints.CommentsCheckpoint])
	e.verified()
	s.stop()
}

// TestTwoTransactionsOneWindow: a fixed window gathers several transactions and applies them in
// one flush (here the final flush at shutdown, so the test does not depend on timing).
func TestTwoTransactionsOneWindow(t *testing.T) {
	e := setup(t)
	e.artist(7, true)
	e.track(70, 7)
	s := e.start(func(c *pipeline.Config) { c.Window, c.FixedWindows = time.Hour, true })
	s.waitStreaming()
	e.plays(70, 200)
	e.plays(70, 100)
	eventually(t, "both transactions received", func() bool {
		// Plays, not transactions: Postgres 14 also streams empty ones (the catch-up's own).
		_, _, plays, _, _ := s.obs.get()
		return plays == 300
	})
	_, _, found := e.row("p1", "7:250")
	require.False(t, found, "nothing is applied before the window closes")
	s.stop()
	_, _, _, flushes, _ := s.obs.get()
	var withChanges int
	for _, f := range flushes {
		if f.Changes > 0 {
			withChanges++
		}
	}
	require.Equal(t, 1, withChanges, "both transactions flushed together")
	e.requireRow("p1", "7:250", 250, true)
	e.requireRow("p2", "7:1000", 300, false)
	e.verified()
}

// TestTransactionsWithoutOurChanges: transactions on other tables, plays of unknown tracks and
// plays of unverified artists move the position and write no reward.
func TestTransactionsWithoutOurChanges(t *testing.T) {
	e := setup(t)
	s := e.start()
	s.waitStreaming()
	e.artist(5, false)
	e.track(50, 5)
	e.plays(50, 300)   // unverified artist
	e.plays(99999, 10) // no such track
	e.exec(`INSERT INTO users (user_id, is_current, txhash) VALUES (77, true, 'x')`)
	e.caughtUp()
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM user_challenges`))
	legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
	require.NoError(t, err)
	require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), legacy[checkpoints.PlaysCheckpoint], "checkpoint moves past plays that earn nothing")
	e.verified()
	s.stop()
}

// TestLowerIDCommitsLater: a play whose id is lower than one already flushed still counts —
// the polling job's blind spot.
func TestLowerIDCommitsLater(t *testing.T) {
	e := setup(t)
	e.artist(9, true)
	e.track(90, 9)
	e.track(91, 9)
	e.plays(90, 249)
	s := e.start(func(c *pipeline.Config) { c.Backfill = true })
	s.waitStreaming()

	slow, err := e.db.Pool.Begin(e.ctx)
	require.NoError(t, err)
	defer slow.Rollback(context.Background())
	_, err = slow.Exec(e.ctx, `INSERT INTO plays (play_item_id, created_at) VALUES (90, '2025-05-01')`)
	require.NoError(t, err)
	var lowID int64
	require.NoError(t, slow.QueryRow(e.ctx, `SELECT max(id) FROM plays`).Scan(&lowID))

	e.plays(91, 1) // a higher id, committed first (another track: the open one locks 90's aggregates)
	highID := e.count(`SELECT max(id) FROM plays`)
	require.Greater(t, highID, lowID)
	e.caughtUp()
	e.requireRow("p1", "9:250", 250, true)

	require.NoError(t, slow.Commit(e.ctx))
	e.caughtUp()
	e.requireRow("p2", "9:1000", 251, false)
	legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
	require.NoError(t, err)
	require.Equal(t, highID, legacy[checkpoints.PlaysCheckpoint], "the legacy checkpoint never moves back")
	e.verified()
	s.stop()
}

// TestCommentLifecycle: inserted, edited, soft-deleted, hidden then visible again.
func TestCommentLifecycle(t *testing.T) {
	e := setup(t)
	s := e.start()
	s.waitStreaming()
	week2 := time.Date(2025, 1, 8, 0, 0, 0, 0, time.UTC)
	week3 := time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC)
	e.comment(1, 42, week2, 100)
	e.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, is_visible)
		VALUES (2, 'hidden', 43, 1, 'Track', $1, 101, false)`, week3)
	e.caughtUp()
	e.requireRow("c", "2a:202502", 1, true)
	_, _, found := e.row("c", "2b:202503")
	require.False(t, found, "hidden comments earn nothing")

	e.exec(`UPDATE comments SET text = 'edited', is_edited = true, blocknumber = 102 WHERE comment_id = 1`)
	e.exec(`UPDATE comments SET is_delete = true, blocknumber = 103 WHERE comment_id = 1`)
	e.exec(`UPDATE comments SET is_visible = true, blocknumber = 104 WHERE comment_id = 2`)
	e.caughtUp()
	e.requireRow("c", "2a:202502", 1, true) // never removed
	e.requireRow("c", "2b:202503", 1, true)
	legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
	require.NoError(t, err)
	require.EqualValues(t, 104, legacy[checkpoints.CommentsCheckpoint])
	e.verified()
	s.stop()
}

// TestPruneTruncateAndAddColumn: bulk deletes by the pruning job, a TRUNCATE and an ALTER TABLE
// ADD COLUMN on plays while streaming change nothing that should not change.
func TestPruneTruncateAndAddColumn(t *testing.T) {
	e := setup(t)
	e.artist(3, true)
	e.track(30, 3)
	s := e.start()
	s.waitStreaming()
	e.plays(30, 260)
	e.caughtUp()
	e.requireRow("p1", "3:250", 250, true)

	e.exec(`DELETE FROM plays WHERE id IN (SELECT id FROM plays ORDER BY id LIMIT 100)`)
	e.exec(`ALTER TABLE plays ADD COLUMN mood text DEFAULT 'happy'`)
	e.exec(`ALTER TABLE plays DROP COLUMN city`)
	e.plays(30, 10)
	e.comment(5, 8, in2025, 7)
	e.caughtUp() // a comment truncated before its window flushes earns nothing: rules read state
	e.exec(`TRUNCATE comments`)
	e.comment(6, 8, in2025.AddDate(0, 0, 7), 8)
	e.caughtUp()
	e.requireRow("p2", "3:1000", 270, false)
	e.requireRow("c", "8:202511", 1, true) // never removed, even though TRUNCATE took its comment
	e.requireRow("c", "8:202512", 1, true)
	diffs, err := processors.Verify(e.ctx, e.db.Pool)
	require.NoError(t, err)
	require.Len(t, diffs, 1, "verify cannot explain a reward whose comment was truncated away")
	require.Equal(t, "8:202511", diffs[0].Specifier)
	s.stop()
}

// TestFirstStart covers the start states of SPEC §5 row 1.
func TestFirstStart(t *testing.T) {
	t.Run("from now", func(t *testing.T) {
		e := setup(t)
		e.artist(1, true)
		e.track(10, 1)
		e.plays(10, 300) // history, before the sidecar
		e.comment(1, 2, in2025, 50)
		s := e.start()
		s.waitStreaming()
		e.caughtUp()
		require.EqualValues(t, 0, e.count(`SELECT count(*) FROM user_challenges`), "history is not derived")
		legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
		require.NoError(t, err)
		require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), legacy[checkpoints.PlaysCheckpoint], "seeded to the current max")
		require.EqualValues(t, 50, legacy[checkpoints.CommentsCheckpoint])
		e.plays(10, 1) // the artist becomes dirty: the count includes history
		e.caughtUp()
		e.requireRow("p2", "1:1000", 301, false)
		s.stop()
	})
	t.Run("backfill", func(t *testing.T) {
		e := setup(t)
		e.artist(1, true)
		e.track(10, 1)
		e.plays(10, 300)
		e.comment(1, 2, in2025, 50)
		s := e.start(func(c *pipeline.Config) { c.Backfill = true })
		s.waitStreaming()
		e.caughtUp()
		e.requireRow("p2", "1:1000", 300, false)
		e.requireRow("c", "2:202511", 1, true)
		e.verified()
		s.stop()
	})
	t.Run("cut-over from the polling job", func(t *testing.T) {
		e := setup(t)
		e.artist(1, true)
		e.track(10, 1)
		e.artist(2, true)
		e.track(20, 2)
		e.plays(10, 300)
		// The polling job ran up to here and wrote its rows.
		e.exec(`INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
			VALUES ('p1', 1, '1:250', true, 250, 25, now()), ('p2', 1, '1:1000', false, 300, 100, NULL)`)
		e.exec(`INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES ($1, (SELECT max(id) FROM plays)), ($2, 0)`,
			checkpoints.PlaysCheckpoint, checkpoints.CommentsCheckpoint)
		e.plays(20, 260) // after the polling job's last tick, before the sidecar
		e.comment(1, 5, in2025, 9)
		s := e.start()
		s.waitStreaming()
		e.caughtUp()
		e.requireRow("p1", "2:250", 250, true)
		e.requireRow("c", "5:202511", 1, true)
		e.plays(20, 1)
		e.caughtUp()
		e.requireRow("p2", "2:1000", 261, false)
		e.verified()
		s.stop()
	})
}

// TestRestartResumesFromStoredLSN: a stopped sidecar picks up what was committed while it was
// down, from the slot, without re-deriving anything.
func TestRestartResumesFromStoredLSN(t *testing.T) {
	e := setup(t)
	e.artist(4, true)
	e.track(40, 4)
	s := e.start()
	s.waitStreaming()
	e.plays(40, 100)
	e.caughtUp()
	s.stop()

	e.plays(40, 200) // while down
	e.comment(1, 4, in2025, 3)
	s = e.start()
	s.waitStreaming()
	e.caughtUp()
	e.requireRow("p1", "4:250", 250, true)
	e.requireRow("p2", "4:1000", 300, false)
	_, _, _, _, recreated := s.obs.get()
	require.Empty(t, recreated)
	e.verified()
	s.stop()
}

// TestSlotLostWhileDown: the slot is dropped while the sidecar is down and plays and comments
// keep arriving; the restart recreates it and catches up from the legacy checkpoints.
func TestSlotLostWhileDown(t *testing.T) {
	e := setup(t)
	e.artist(6, true)
	e.track(60, 6)
	s := e.start()
	s.waitStreaming()
	e.plays(60, 100)
	e.caughtUp()
	s.stop()

	eventually(t, "slot dropped (the walsender exits asynchronously)", func() bool {
		_, err := e.db.Pool.Exec(e.ctx, `SELECT pg_drop_replication_slot($1)`, e.db.Slot)
		return err == nil
	})
	e.plays(60, 200)
	e.comment(1, 6, in2025, 3)
	s = e.start()
	s.waitStreaming()
	e.caughtUp()
	s.requireRecreated("missing")
	e.requireRow("p1", "6:250", 250, true)
	e.requireRow("p2", "6:1000", 300, false)
	e.requireRow("c", "6:202511", 1, true)
	e.plays(60, 1)
	e.caughtUp()
	e.requireRow("p2", "6:1000", 301, false)
	e.verified()
	s.stop()
}

// TestTwoReplicas: one streams, the other stands by and takes over when the first stops.
func TestTwoReplicas(t *testing.T) {
	e := setup(t)
	e.artist(8, true)
	e.track(80, 8)
	first := e.start()
	first.waitStreaming()
	second := e.start()
	eventually(t, "second replica standing by", func() bool {
		state, _, _, _, _ := second.obs.get()
		return state == pipeline.StateStandby
	})
	e.plays(80, 100)
	e.caughtUp()
	first.stop()
	second.waitStreaming()
	e.plays(80, 200)
	e.caughtUp()
	e.requireRow("p2", "8:1000", 300, false)
	e.verified()
	second.stop()
}

// TestStandbyHoldsNoWalsender: a standby looks at the leader lock on a plain connection and
// opens a replication connection only when the lock looks free. It used to open one at every
// retry (every RetryMaxInterval, 200 ms here): with N replicas, N−1 walsenders cycling against
// max_wal_senders. Over two seconds of standing by only the leader's walsender is ever seen,
// and the standby still takes over when the leader stops.
func TestStandbyHoldsNoWalsender(t *testing.T) {
	e := setup(t)
	first := e.streamingArtist(0x53, 530)
	second := e.start()
	eventually(t, "second replica standing by", func() bool {
		state, _, _, _, _ := second.obs.get()
		return state == pipeline.StateStandby
	})
	seen := map[int64]bool{}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		rows, err := e.db.Pool.Query(e.ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'walsender'`, e.db.Name)
		require.NoError(t, err)
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		require.NoError(t, err)
		for _, pid := range pids {
			seen[int64(pid)] = true
		}
	}
	require.Len(t, seen, 1, "only the leader's walsender, no standby cycling one: %v", seen)

	e.playsApplied(530, 100)
	first.stop()
	second.waitStreaming()
	e.playsApplied(530, 200)
	e.requireRow("p2", "53:1000", 300, false)
	e.verified()
	second.stop()
}

// TestIdleSlotKeepsConfirming: while other databases write and our tables are quiet, the slot's
// confirmed position keeps up with the server, so it holds no WAL.
func TestIdleSlotKeepsConfirming(t *testing.T) {
	e := setup(t)
	s := e.start()
	s.waitStreaming()
	busy := newEnv(t) // another database on the same server
	for i := range 5 {
		busy.exec(`INSERT INTO users (user_id, is_current, txhash) SELECT g, true, $1 FROM generate_series(1, 2000) g`, "b"+string(rune('a'+i)))
	}
	target := e.currentLSN()
	eventually(t, "slot confirmed past the busy database's writes", func() bool {
		var confirmed string
		err := e.db.Pool.QueryRow(e.ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
			WHERE slot_name = $1`, e.db.Slot).Scan(&confirmed)
		lsn, perr := pglogrepl.ParseLSN(confirmed)
		return err == nil && perr == nil && lsn >= target
	})
	require.LessOrEqual(t, e.storedLSN(), e.currentLSN())
	s.stop()
}

// TestCaughtUpStreamFlushesEachTransaction: with group commit a lone transaction is applied as
// soon as the stream has caught up, long before a window of an hour would close.
func TestCaughtUpStreamFlushesEachTransaction(t *testing.T) {
	e := setup(t)
	e.artist(7, true)
	e.track(70, 7)
	s := e.start(func(c *pipeline.Config) { c.Window = time.Hour })
	s.waitStreaming()
	e.plays(70, 250)
	eventually(t, "applied without waiting for the window", func() bool {
		_, _, found := e.row("p1", "7:250")
		return found
	})
	e.requireRow("p1", "7:250", 250, true)
	s.stop()
	e.verified()
}

// TestStoredLSNFromElsewhere: slot_checkpoints holds a position this server never reached — a
// row restored from another cluster (pg_dump/restore, a blue/green or logical migration, a
// restored backup of the host). Resuming from it would drop every commit up to it and confirm
// a future position to the server. The start refuses it as unusable: it recreates the slot,
// catches up from the legacy checkpoints and stores the new slot's position, not the higher one.
func TestStoredLSNFromElsewhere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		dropSlot bool
	}{
		{name: "slot gone", dropSlot: true},
		{name: "slot still there"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			s := e.streamingArtist(9, 90)
			e.playsApplied(90, 334)
			s.stop()
			if tc.dropSlot {
				eventually(t, "slot dropped (the walsender exits asynchronously)", func() bool {
					_, err := e.db.Pool.Exec(e.ctx, `SELECT pg_drop_replication_slot($1)`, e.db.Slot)
					return err == nil
				})
			}
			e.exec(`UPDATE challenge_stream.slot_checkpoints SET lsn = pg_current_wal_lsn() + 2000000000 WHERE slot_name = $1`, e.db.Slot)
			restored := e.storedLSN()

			s = e.start()
			s.waitStreaming()
			e.plays(90, 10)
			e.caughtUp()
			s.requireRecreated(pipeline.ReasonStoredAhead)
			require.Less(t, e.storedLSN(), restored, "the position from elsewhere was replaced")

			s = e.restart(s)
			e.plays(90, 10)
			e.caughtUp()
			e.requireRow("p2", "9:1000", 354, false)
			e.verified()
			var confirmed string
			require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
				WHERE slot_name = $1`, e.db.Slot).Scan(&confirmed))
			c, err := pglogrepl.ParseLSN(confirmed)
			require.NoError(t, err)
			require.LessOrEqual(t, c, e.currentLSN(), "never confirmed past the server's WAL")
			s.stop()
		})
	}
}

// TestPlaysUpdatesCarryNothing: the publication publishes UPDATE for both its tables (a
// publication's operations are not per table), so the host's UPDATEs of plays — which no rule
// reads — are decoded and sent. They must cost only that: nothing recomputed, the stored
// position moves past them, and the rewards stay those of a from-scratch recompute.
func TestPlaysUpdatesCarryNothing(t *testing.T) {
	e := setup(t)
	s := e.streamingArtist(0x51, 510)
	e.playsApplied(510, 300)
	_, _, _, before, _ := s.obs.get()
	e.exec(`UPDATE plays SET country = 'FR', play_item_id = play_item_id WHERE play_item_id = 510`)
	e.caughtUp()
	_, _, _, after, _ := s.obs.get()
	for _, f := range after[len(before):] {
		require.Zero(t, f.Changes, "an UPDATE of plays is no change to any rule")
	}
	e.requireRow("p2", "51:1000", 300, false)
	e.verified()
	s.stop()
}

// TestSlotConfirmedAheadByAnotherConsumer: while the sidecar is down, someone consumes the slot
// (pg_replication_slot_advance here; pg_recvlogical or a second tool would do the same), so its
// confirmed_flush_lsn passes the stored LSN. START_REPLICATION would silently start there and
// skip the plays in between. The start decides it before streaming: it recreates the slot
// (reason confirmed_ahead) and catches up from the legacy checkpoints.
func TestSlotConfirmedAheadByAnotherConsumer(t *testing.T) {
	e := setup(t)
	s := e.streamingArtist(0x52, 520)
	e.playsApplied(520, 300)
	s.stop()
	e.plays(520, 20)
	eventually(t, "the slot advanced by another consumer (the walsender exits asynchronously)", func() bool {
		_, err := e.db.Pool.Exec(e.ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, e.db.Slot)
		return err == nil
	})

	s = e.start()
	s.waitStreaming()
	e.caughtUp()
	s.requireRecreated(pipeline.ReasonConfirmedAhead)
	e.requireRow("p2", "52:1000", 320, false)
	e.verified()
	s.stop()
}
