package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// deployed is a database as a running sidecar leaves it: migrated, with its publication, its
// slot and a stored LSN.
type deployed struct {
	db  *pgtest.DB
	lsn pglogrepl.LSN // the slot's consistent point, stored as the slot's LSN
}

func setupDeployed(t *testing.T) deployed {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	require.NoError(t, migrations.Apply(ctx, conn, zaptest.NewLogger(t)))
	require.NoError(t, conn.Close(ctx))
	_, err = replication.EnsurePublication(ctx, db.Pool, db.Publication, pipeline.StreamPlan(), false)
	require.NoError(t, err)
	var text string
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
		db.Slot).Scan(&text))
	lsn, err := pglogrepl.ParseLSN(text)
	require.NoError(t, err)
	require.NoError(t, checkpoints.StoreLSN(ctx, db.Pool, db.Slot, lsn, db.Publication))
	return deployed{db: db, lsn: lsn}
}

// runCmd runs a command in-process and returns its output and exit code.
func runCmd(t *testing.T, cmd func(context.Context, env) error, args ...string) (stdout string, code int, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = cmd(context.Background(), env{args: args, stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
	return out.String(), exitCode(err, io.Discard), err
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	d := setupDeployed(t)
	require.NoError(t, checkpoints.AdvanceLegacy(context.Background(), d.db.Pool,
		checkpoints.Legacy{checkpoints.PlaysCheckpoint: 42, checkpoints.CommentsCheckpoint: 7}))
	// A challenge the sidecar has no rule for (a one-shot reward of the platform's), active; a
	// weekly payout switched on; and p2 switched off.
	d.db.Exec(t, `INSERT INTO challenges (id, type, amount, active, step_count) VALUES ('o', 'boolean', '1', true, 1)`)
	d.db.Exec(t, `UPDATE challenges SET active = true WHERE id = 'tt'`)
	d.db.Exec(t, `UPDATE challenges SET active = false WHERE id = 'p2'`)

	out, code, err := runCmd(t, statusCommand, "--database-url", d.db.URL, "--slot", d.db.Slot, "--publication", d.db.Publication, "--json")
	require.NoError(t, err)
	require.Equal(t, exitOK, code)
	var r statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)

	require.Equal(t, d.db.Slot, r.Slot)
	require.True(t, r.SlotExists)
	require.False(t, r.Active)
	require.Nil(t, r.ActivePID)
	require.Equal(t, "reserved", r.WALStatus)
	require.Equal(t, d.lsn.String(), r.ConfirmedFlushLSN)
	require.GreaterOrEqual(t, r.LagBytes, int64(0))
	require.GreaterOrEqual(t, r.RetainedWALBytes, int64(0))
	require.NotEmpty(t, r.ServerWALLSN)
	require.True(t, r.Migrated)
	require.NotNil(t, r.StoredLSN)
	require.Equal(t, d.lsn.String(), *r.StoredLSN)
	require.NotNil(t, r.StoredLSNAgeSeconds)
	require.NotNil(t, r.LastFlush)
	require.Equal(t, int64(42), *r.LegacyLastPlayID)
	require.Equal(t, int64(7), *r.LegacyLastCommentBlock)
	require.Len(t, r.Rules, len(processors.Rules()), "every registered rule")
	states := map[string]string{}
	for _, rule := range r.Rules {
		states[rule.Rule] = rule.State
	}
	require.Equal(t, "streaming", states["milestones"])
	require.Equal(t, "held", states["verified"], "inactive in the test catalog")
	owners := map[string]string{}
	for _, o := range r.Owners {
		owners[o.Challenge] = o.Owner
	}
	require.Len(t, owners, int(d.db.QueryInt(t, `SELECT count(*) FROM challenges`)), "every challenges row")
	require.Equal(t, processors.OwnedBySidecar, owners["p1"])
	require.Equal(t, processors.OwnedByNobody, owners["p2"], "a tier switched off, its rule still running")
	require.Equal(t, processors.OwnedBySidecar, owners["c"])
	require.Equal(t, processors.OwnedByNobody, owners["v"])
	require.Equal(t, processors.OwnedByPollingJob, owners["o"], "no rule")
	require.Equal(t, processors.OwnedBySidecar, owners["tt"], "the payouts run in the sidecar")
	require.Equal(t, processors.OwnedByNobody, owners["tp"])
	require.True(t, r.Publication.Exists)
	require.True(t, r.Publication.Managed, "made by EnsurePublication")
	require.Len(t, r.Publication.Tables, len(processors.Tables()))
	for _, table := range r.Publication.Tables {
		require.True(t, table.Published, table.Table)
		require.False(t, table.Wider, table.Table)
		if r.Publication.ColumnLists && table.Table == "plays" {
			require.Equal(t, []string{"id", "play_item_id"}, table.Columns, "what the rules read, and the primary key")
		}
	}
	require.NotEmpty(t, r.ServerDecodingWorkMem)

	// The JSON keys are the interface scripts use.
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &raw))
	for _, key := range []string{"slot", "slot_exists", "active", "active_pid", "wal_status", "confirmed_flush_lsn",
		"lag_bytes", "retained_wal_bytes", "stored_lsn", "stored_lsn_age_seconds", "last_flush",
		"legacy_last_play_id", "legacy_last_comment_block", "rules", "owners", "publication", "decoding", "server_logical_decoding_work_mem"} {
		require.Contains(t, raw, key)
	}
}

func TestStatusTable(t *testing.T) {
	t.Parallel()
	d := setupDeployed(t)
	out, code, err := runCmd(t, statusCommand, "--database-url", d.db.URL, "--slot", d.db.Slot, "--publication", d.db.Publication)
	require.NoError(t, err)
	require.Equal(t, exitOK, code)
	require.Regexp(t, `(?m)^slot +`+d.db.Slot+`$`, out)
	require.Regexp(t, `(?m)^publication `+d.db.Publication+` +exists, managed by the sidecar$`, out)
	plays := `id, play_item_id`
	if d.db.QueryInt(t, `SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
		plays = `all columns` // no column lists before 15
	}
	require.Regexp(t, `(?m)^  plays +`+plays+`$`, out)
	require.Regexp(t, `(?m)^active +no$`, out)
	require.Regexp(t, `(?m)^stored LSN +`+d.lsn.String()+` \(written \S+ ago\)$`, out)
	require.Regexp(t, `(?m)^legacy last play id +\(none\)$`, out)
	require.Regexp(t, `(?m)^challenge p1 +sidecar \(rule milestones\)$`, out)
	require.Regexp(t, `(?m)^challenge fp +inactive \(rule first_playlist\)$`, out)
}

func TestStatusWithoutSlotOrMigrations(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	out, _, err := runCmd(t, statusCommand, "--database-url", db.URL, "--slot", db.Slot, "--json")
	require.NoError(t, err)
	var r statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.False(t, r.SlotExists)
	require.False(t, r.Migrated)
	require.Nil(t, r.StoredLSN)
	require.Nil(t, r.LastFlush)

	out, _, err = runCmd(t, statusCommand, "--database-url", db.URL, "--slot", db.Slot)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^exists +no$`, out)
	require.Contains(t, out, "migrations not applied")
}

func TestStatusBadConfig(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{}, // no database URL
		{"--database-url", "postgres://x/y", "--slot", "Bad-Name"},
		{"--database-url", "postgres://x/y", "--jsn"},
	} {
		_, code, err := runCmd(t, statusCommand, args...)
		require.Error(t, err)
		require.Equal(t, exitUsage, code, "%v: %v", args, err)
	}
}
