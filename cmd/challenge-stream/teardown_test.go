package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

func slotExists(t *testing.T, db *pgtest.DB) bool {
	return db.QueryInt(t, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", db.Slot) == 1
}

func publicationExists(t *testing.T, db *pgtest.DB) bool {
	return db.QueryInt(t, "SELECT count(*) FROM pg_publication WHERE pubname = $1", db.Publication) == 1
}

func schemaExists(t *testing.T, db *pgtest.DB) bool {
	return db.QueryInt(t, "SELECT count(*) FROM pg_namespace WHERE nspname = 'challenge_stream'") == 1
}

func teardownArgs(db *pgtest.DB, extra ...string) []string {
	return append([]string{"--database-url", db.URL, "--slot", db.Slot, "--publication", db.Publication}, extra...)
}

func TestTeardownRequiresYes(t *testing.T) {
	t.Parallel()
	d := setupDeployed(t)
	out, code, err := runCmd(t, teardownCommand, teardownArgs(d.db, "--drop-state")...)
	require.ErrorContains(t, err, "--yes is required")
	require.Equal(t, exitUsage, code)
	require.Contains(t, out, "drop replication slot "+d.db.Slot)
	require.Contains(t, out, "drop publication "+d.db.Publication)
	require.Contains(t, out, "drop schema challenge_stream")
	require.True(t, slotExists(t, d.db))
	require.True(t, publicationExists(t, d.db))
	require.True(t, schemaExists(t, d.db))
}

func TestTeardownDrops(t *testing.T) {
	t.Parallel()
	d := setupDeployed(t)
	out, code, err := runCmd(t, teardownCommand, teardownArgs(d.db, "--yes")...)
	require.NoError(t, err)
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "dropped replication slot "+d.db.Slot)
	require.Contains(t, out, "dropped publication "+d.db.Publication)
	require.False(t, slotExists(t, d.db))
	require.False(t, publicationExists(t, d.db))
	require.True(t, schemaExists(t, d.db), "state kept without --drop-state")

	// Again, with --drop-state: nothing left to drop but the schema.
	out, _, err = runCmd(t, teardownCommand, teardownArgs(d.db, "--yes", "--drop-state")...)
	require.NoError(t, err)
	require.Contains(t, out, "replication slot "+d.db.Slot+" did not exist")
	require.Contains(t, out, "dropped schema challenge_stream")
	require.False(t, schemaExists(t, d.db))
}

func TestTeardownRefusesActiveSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := setupDeployed(t)
	repl, err := replication.Connect(ctx, &d.db.ConnConfig(t).Config)
	require.NoError(t, err)
	t.Cleanup(func() { _ = repl.Close(context.Background()) })
	require.NoError(t, pglogrepl.StartReplication(ctx, repl, d.db.Slot, d.lsn, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + d.db.Publication + "'"},
	}))
	require.Eventually(t, func() bool {
		info, err := replication.InspectSlot(ctx, d.db.Pool, d.db.Slot)
		return err == nil && info.Active
	}, 10*time.Second, 10*time.Millisecond)

	_, code, err := runCmd(t, teardownCommand, teardownArgs(d.db, "--yes")...)
	require.ErrorContains(t, err, "stop the sidecar first")
	require.Equal(t, exitFailed, code)
	require.True(t, slotExists(t, d.db))
	require.True(t, publicationExists(t, d.db))
}

func TestTeardownRefusesWhileSidecarLeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := setupDeployed(t)
	// A sidecar between sessions holds the leader lock but no active slot.
	leader, err := d.db.Pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { leader.Release() })
	_, err = leader.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", pipeline.LeaderLockKey(d.db.Slot))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = leader.Exec(context.Background(), "SELECT pg_advisory_unlock_all()")
	})

	_, code, err := runCmd(t, teardownCommand, teardownArgs(d.db, "--yes")...)
	require.ErrorContains(t, err, "stop the sidecar first")
	require.Equal(t, exitFailed, code)
	require.True(t, slotExists(t, d.db))
}

// TestTeardownLeavesAnotherDatabasesSlot: slot names are cluster-wide. Teardown (and status) in
// a database without the slot must neither see nor drop another database's slot of that name.
func TestTeardownLeavesAnotherDatabasesSlot(t *testing.T) {
	t.Parallel()
	d := setupDeployed(t)
	other := pgtest.NewDB(t)
	args := []string{"--database-url", other.URL, "--slot", d.db.Slot, "--publication", other.Publication}

	out, _, err := runCmd(t, statusCommand, args...)
	require.NoError(t, err)
	require.Regexp(t, `exists\s+no`, out)

	out, code, err := runCmd(t, teardownCommand, append(args, "--yes")...)
	require.NoError(t, err)
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "replication slot "+d.db.Slot+" did not exist")
	require.True(t, slotExists(t, d.db), "the other database's slot is untouched")
}
