package pollingjob_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/internal/tools/pollingjob"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/processors"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var in2025 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// setup returns a database with artist 400 (track 1) and both legacy checkpoints at zero.
func setup(t *testing.T) (context.Context, *pgtest.DB) {
	t.Helper()
	ctx, db := migratedDB(t)
	require.NoError(t, hostdb.AddUser(ctx, db.Pool, 400, true))
	require.NoError(t, hostdb.AddTrack(ctx, db.Pool, 1, 400))
	require.NoError(t, checkpoints.AdvanceLegacy(ctx, db.Pool, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0}))
	return ctx, db
}

// migratedDB is a host database with the project's migrations, where the legacy checkpoints'
// bookkeeping lives.
func migratedDB(t *testing.T) (context.Context, *pgtest.DB) {
	t.Helper()
	ctx, db := t.Context(), pgtest.NewDB(t)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	require.NoError(t, migrations.Apply(ctx, conn.Conn(), nil))
	return ctx, db
}

func tick(t *testing.T, ctx context.Context, db *pgtest.DB, maxRows int64) pollingjob.Result {
	t.Helper()
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	res, err := pollingjob.Tick(ctx, tx, maxRows)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	return res
}

func TestTickBudget(t *testing.T) {
	t.Parallel()
	ctx, db := setup(t)
	require.NoError(t, hostdb.InsertPlays(ctx, db.Pool, 1, 1200, in2025))
	for i, c := range []struct{ id, user, block int64 }{{1, 500, 10}, {2, 501, 10}, {3, 502, 11}} {
		require.NoError(t, hostdb.InsertComment(ctx, db.Pool, c.id, c.user, in2025.AddDate(0, 0, i*7), c.block))
	}
	maxPlay := db.QueryInt(t, `SELECT max(id) FROM plays`)

	res := tick(t, ctx, db, 500)
	require.False(t, res.Complete)
	require.EqualValues(t, 500, res.PlaysScanned, "plays are cut at an exact row")
	require.EqualValues(t, 500, db.QueryInt(t, `SELECT count(*) FROM plays WHERE id <= $1`, res.Legacy[checkpoints.PlaysCheckpoint]))
	require.EqualValues(t, 3, res.CommentsScanned)
	require.EqualValues(t, 11, res.Legacy[checkpoints.CommentsCheckpoint])

	ticks := 1
	for !res.Complete {
		res = tick(t, ctx, db, 500)
		require.LessOrEqual(t, res.PlaysScanned, int64(500))
		ticks++
	}
	require.Equal(t, 3, ticks)
	require.Equal(t, maxPlay, res.Legacy[checkpoints.PlaysCheckpoint])
	diffs, err := processors.Verify(ctx, db.Pool)
	require.NoError(t, err)
	require.Empty(t, diffs)

	// Comments are cut at a block boundary: a block is never split.
	require.NoError(t, hostdb.InsertComment(ctx, db.Pool, 50, 505, in2025, 20))
	require.NoError(t, hostdb.InsertComment(ctx, db.Pool, 51, 506, in2025, 20))
	require.NoError(t, hostdb.InsertComment(ctx, db.Pool, 52, 507, in2025, 21))
	res = tick(t, ctx, db, 1)
	require.EqualValues(t, 2, res.CommentsScanned)
	require.EqualValues(t, 20, res.Legacy[checkpoints.CommentsCheckpoint])
	require.False(t, res.Complete)
	res = tick(t, ctx, db, 1)
	require.True(t, res.Complete)
	require.EqualValues(t, 21, res.Legacy[checkpoints.CommentsCheckpoint])
	diffs, err = processors.Verify(ctx, db.Pool)
	require.NoError(t, err)
	require.Empty(t, diffs)
}

func TestTickSeedsAbsentCheckpoints(t *testing.T) {
	t.Parallel()
	ctx, db := migratedDB(t)
	require.NoError(t, hostdb.AddUser(ctx, db.Pool, 400, true))
	require.NoError(t, hostdb.AddTrack(ctx, db.Pool, 1, 400))
	require.NoError(t, hostdb.InsertPlays(ctx, db.Pool, 1, 300, in2025))
	require.NoError(t, hostdb.InsertComment(ctx, db.Pool, 1, 500, in2025, 7))

	res := tick(t, ctx, db, 0)
	require.True(t, res.Complete)
	require.Zero(t, res.PlaysScanned+res.CommentsScanned)
	want := checkpoints.Legacy{checkpoints.PlaysCheckpoint: db.QueryInt(t, `SELECT max(id) FROM plays`), checkpoints.CommentsCheckpoint: 7}
	require.Equal(t, want, res.Legacy)
	require.Zero(t, db.QueryInt(t, `SELECT count(*) FROM user_challenges`), "nothing derived: the stream starts from now")
}

// TestUpsertReferenceRewritesEveryRow: the reference writes every row again (the host's
// notification trigger fires for each complete one) where processors.Upsert writes nothing,
// and both leave the same contents.
func TestUpsertReferenceRewritesEveryRow(t *testing.T) {
	t.Parallel()
	ctx, db := setup(t)
	require.NoError(t, hostdb.InsertPlays(ctx, db.Pool, 1, 1200, in2025))
	tick(t, ctx, db, 0)
	notifications := func() int64 { return db.QueryInt(t, `SELECT count(*) FROM notification`) }
	contents := func() [][]any {
		rows, err := db.Pool.Query(ctx, `SELECT challenge_id, specifier, is_complete, current_step_count, amount, completed_at
			FROM user_challenges ORDER BY 1, 2`)
		require.NoError(t, err)
		defer rows.Close()
		var out [][]any
		for rows.Next() {
			v, err := rows.Values()
			require.NoError(t, err)
			out = append(out, v)
		}
		require.NoError(t, rows.Err())
		return out
	}

	cat, err := processors.LoadCatalog(ctx, db.Pool)
	require.NoError(t, err)
	rows, err := processors.MilestoneRows(ctx, db.Pool, cat, []int64{400})
	require.NoError(t, err)
	require.Len(t, rows, 3, "p1 and p2 complete, p3 in progress")
	before, sent := contents(), notifications()

	stats, err := processors.Upsert(ctx, db.Pool, rows)
	require.NoError(t, err)
	require.Equal(t, processors.Counts{Unchanged: 3}, stats.Total())
	require.Equal(t, sent, notifications())

	require.NoError(t, pollingjob.UpsertReference(ctx, db.Pool, append(rows, rows...)))
	require.Equal(t, sent+2, notifications(), "both complete rows rewritten once")
	require.Equal(t, before, contents())
}
