package pipeline_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// TestCommitsHeldPastXmaxOnLaterEpoch holds the server where a streamed commit's xid lies above
// the xmax of every new snapshot, on a cluster past 2³² transactions (epoch ≥ 1, as pgtest
// starts it): two transactions wait for a synchronous standby that does not exist, the first
// with no change of ours, the second with 300 plays. Both are in WAL, so the walsender streams
// them; neither has left the proc array, so xmax stays at the first and the second's xid is
// above it. The flush must wait until the plays are visible. Widening the 32-bit xid to "the
// epoch of xmax, or the one before if that lies ahead of xmax" read it as a transaction of the
// previous epoch — visible long ago — and stored the LSN past rows it had not counted.
//
// Not parallel: synchronous_standby_names is a server setting, and any other test's commit
// would move xmax past the held transactions (the cluster's default synchronous_commit = off
// keeps other sessions from waiting on it).
func TestCommitsHeldPastXmaxOnLaterEpoch(t *testing.T) {
	cluster := pgtest.Cluster()
	if cluster == nil || cluster.XIDEpoch() == 0 {
		t.Skip("needs the harness's own cluster in xid epoch ≥ 1 (pg_resetwal beside initdb)")
	}
	e := newEnv(t)
	e.artist(7, true)
	e.track(70, 7)
	e.plays(70, 334)
	e.exec(`CREATE TABLE elsewhere (x int)`)
	// The default idle confirm (1 MiB): a flush of its own between the two would take an xid and,
	// committing above the held ones, move xmax past them.
	s := e.start(func(c *pipeline.Config) { c.IdleConfirmBytes = 0 })
	s.waitStreaming()

	require.NoError(t, pgtest.SetSyncStandbys(e.ctx, e.db.Pool, "nobody_here"))
	released := false
	t.Cleanup(func() {
		if !released {
			require.NoError(t, pgtest.SetSyncStandbys(e.ctx, e.db.Pool, ""))
		}
	})

	// begin opens a transaction that will wait for the standby at COMMIT and returns it with
	// its full xid and its backend.
	begin := func(sql string) (tx pgx.Tx, xid int64, pid int32) {
		t.Helper()
		conn, err := pgx.Connect(e.ctx, e.db.URL)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		_, err = conn.Exec(e.ctx, `SET synchronous_commit = on`)
		require.NoError(t, err)
		require.NoError(t, conn.QueryRow(e.ctx, `SELECT pg_backend_pid()`).Scan(&pid))
		tx, err = conn.Begin(e.ctx)
		require.NoError(t, err)
		require.NoError(t, tx.QueryRow(e.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid))
		_, err = tx.Exec(e.ctx, sql)
		require.NoError(t, err)
		return tx, xid, pid
	}
	commit := func(tx pgx.Tx, pid int32) <-chan error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- tx.Commit(e.ctx) }()
		eventually(t, "the commit to wait for the synchronous standby", func() bool {
			return e.count(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'`, pid) == 1
		})
		return done
	}
	first, _, firstPID := begin(`INSERT INTO elsewhere VALUES (1)`)
	plays, playsXid, playsPID := begin(`INSERT INTO plays (play_item_id, created_at) SELECT 70, now() FROM generate_series(1, 300)`)
	firstDone := commit(first, firstPID)
	playsDone := commit(plays, playsPID)
	commitEnd := e.currentLSN()

	// The condition itself: the plays' xid is above every new snapshot's xmax, in epoch ≥ 1.
	xmax := e.count(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`)
	require.Greater(t, playsXid, xmax, "the held plays' xid must lie above xmax for the test to hold the condition")
	require.GreaterOrEqual(t, playsXid>>32, int64(1), "epoch")

	var waiting bool
	eventually(t, "the sidecar to flush the plays or wait for them", func() bool {
		waiting = e.count(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2
			AND query LIKE '%pg_visible_in_snapshot%'`, pipeline.FlushApplicationName, e.db.Name) > 0
		return waiting || e.storedLSN() >= commitEnd
	})
	require.Less(t, e.storedLSN(), commitEnd, "the sidecar stored a position past plays nobody could see yet")

	require.NoError(t, pgtest.SetSyncStandbys(e.ctx, e.db.Pool, ""))
	released = true
	require.NoError(t, <-firstDone)
	require.NoError(t, <-playsDone)
	e.caughtUp()
	e.requireRow("p2", "7:1000", 634, false)
	e.verified()
	s.stop()
}
