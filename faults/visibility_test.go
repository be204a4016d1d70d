package faults

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

// TestCommitStreamedBeforeVisible: a transaction's COMMIT reaches the sidecar before other
// sessions can see the transaction. The walsender sends a commit once its WAL is flushed; the
// committing backend becomes visible only after that — and, when synchronous_commit asks for
// it, only after a synchronous standby answered. Here that gap is held open: the writer's
// commit waits for a synchronous standby that does not exist. A flush that read the tables
// meanwhile would recompute without the 250 plays and store its LSN past them, and they would
// never be applied. The sidecar must wait until the transaction is visible. It needs the
// package's own cluster: synchronous_standby_names is a server setting.
func TestCommitStreamedBeforeVisible(t *testing.T) {
	cluster := pgtest.Cluster()
	if cluster == nil {
		t.Skip("changes a server setting: needs the harness's own cluster")
	}
	ctx := t.Context()
	db := pgtest.NewDB(t)
	require.NoError(t, hostdb.AddUser(ctx, db.Pool, 7, true))
	require.NoError(t, hostdb.AddTrack(ctx, db.Pool, 70, 7))
	sc := startSupervisor(t, []string{"run", "--database-url", db.URL, "--slot", db.Slot,
		"--publication", db.Publication, "--metrics-addr", "off", "--log-level", "debug"})
	until := func(what string, cond func() bool) {
		t.Helper()
		sc.waitFor(t, what, time.Minute, cond)
	}
	until("the sidecar to stream", func() bool {
		_, found, err := checkpoints.LoadLSN(ctx, db.Pool, db.Slot)
		return err == nil && found
	})

	// Every session but the writer commits locally (the test's pool, and the sidecar's flush
	// session, which always does).
	_, err := db.Pool.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db.Name}.Sanitize()+` SET synchronous_commit = local`)
	require.NoError(t, err)
	db.Pool.Reset() // new sessions pick the database setting up
	require.NoError(t, pgtest.SetSyncStandbys(ctx, db.Pool, "nobody_here"))
	t.Cleanup(func() { require.NoError(t, pgtest.SetSyncStandbys(ctx, db.Pool, "")) })

	writer, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer writer.Close(ctx)
	_, err = writer.Exec(ctx, `SET synchronous_commit = on`)
	require.NoError(t, err)
	var writerPID int
	require.NoError(t, writer.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&writerPID))
	committed := make(chan error, 1)
	go func() {
		committed <- hostdb.InsertPlays(ctx, writer, 70, 250, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))
	}()

	// The commit is in WAL and waits for the standby: the sidecar receives it now.
	until("the writer's commit to wait for the synchronous standby", func() bool {
		var waiting bool
		err := db.Pool.QueryRow(ctx, `SELECT wait_event IS NOT DISTINCT FROM 'SyncRep' FROM pg_stat_activity WHERE pid = $1`,
			writerPID).Scan(&waiting)
		return err == nil && waiting
	})
	var commitEnd string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&commitEnd))
	stored := func() string {
		lsn, _, err := checkpoints.LoadLSN(ctx, db.Pool, db.Slot)
		require.NoError(t, err)
		return lsn.String()
	}
	// Either the sidecar flushed the window without the plays (the bug: its stored position
	// passes the commit) or its flush is waiting for the transaction to become visible.
	var waitingFlush bool
	until("the sidecar to flush the commit or wait for it", func() bool {
		err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE application_name = $1 AND datname = $2 AND query LIKE '%pg_visible_in_snapshot%')`,
			pipeline.FlushApplicationName, db.Name).Scan(&waitingFlush)
		require.NoError(t, err)
		return waitingFlush || lsnAtLeast(t, stored(), commitEnd)
	})
	require.False(t, lsnAtLeast(t, stored(), commitEnd), "the sidecar stored a position past a transaction nobody could see yet")
	until("the wait to be logged", func() bool {
		return sc.countInLogs("waiting for committed transactions to become visible") > 0
	})

	// The standby's answer never comes; cancelling the wait makes the commit visible.
	_, err = db.Pool.Exec(ctx, `SELECT pg_cancel_backend($1)`, writerPID)
	require.NoError(t, err)
	require.NoError(t, <-committed, "the commit was local already; the cancel only ends the wait")
	until("the window to be applied", func() bool { return lsnAtLeast(t, stored(), commitEnd) })
	diffs, err := processors.Verify(ctx, db.Pool)
	require.NoError(t, err)
	require.Empty(t, diffs)
}

func lsnAtLeast(t *testing.T, a, b string) bool {
	t.Helper()
	la, err := pglogrepl.ParseLSN(a)
	require.NoError(t, err)
	lb, err := pglogrepl.ParseLSN(b)
	require.NoError(t, err)
	return la >= lb
}
