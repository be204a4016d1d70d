package workload_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/processors"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// small is a database that generates in well under a second; MilestoneGap 1 puts most
// eligible artists one play below a milestone, so a few blocks cross many.
func small() workload.Config {
	return workload.Config{Seed: 7, Artists: 200, TracksPerArtist: 4, Listeners: 300, Comments: 500, MilestoneGap: 1}
}

type bundle struct {
	db   *pgtest.DB
	conn *pgx.Conn
	host *workload.Host
	size workload.Sizes
}

func setup(t *testing.T, cfg workload.Config) bundle {
	t.Helper()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	// Generate derives the history's rewards, which keeps its bookkeeping in our schema.
	require.NoError(t, migrations.Apply(ctx, conn, nil))
	host, sizes, err := workload.Generate(ctx, conn, cfg)
	require.NoError(t, err)
	return bundle{db: db, conn: conn, host: host, size: sizes}
}

// dbCounts is the milestone rule's count per eligible artist, as the database has it.
func dbCounts(t *testing.T, conn *pgx.Conn) map[int64]int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
SELECT t.owner_id, SUM(a.count)::bigint
FROM tracks t JOIN aggregate_monthly_plays a ON a.play_item_id = t.track_id
WHERE t.is_current AND NOT t.is_delete AND a."timestamp" >= DATE '2025-01-01'
  AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = t.owner_id AND u.is_current
              AND u.is_verified AND NOT u.is_deactivated)
GROUP BY t.owner_id`)
	require.NoError(t, err)
	got := map[int64]int64{}
	for rows.Next() {
		var a, n int64
		require.NoError(t, rows.Scan(&a, &n))
		got[a] = n
	}
	require.NoError(t, rows.Err())
	return got
}

func requireModelMatches(t *testing.T, b bundle) {
	t.Helper()
	counts := dbCounts(t, b.conn)
	require.Equal(t, b.host.EligibleArtists(), len(counts), "eligible artists with live tracks")
	for a, n := range counts {
		require.Equal(t, n, b.host.Count(a), "count of artist %d", a)
	}
}

func requireNoDifferences(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	diffs, err := processors.Verify(context.Background(), conn)
	require.NoError(t, err)
	require.Empty(t, diffs)
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	b := setup(t, small())

	require.Greater(t, b.size.Users, int64(500))
	require.Greater(t, b.size.Tracks, int64(200))
	require.Equal(t, int64(500), b.size.Comments)
	// Months of history: several aggregate rows per track, as in production.
	require.Greater(t, b.size.Aggregates, 3*b.size.Tracks)
	require.Positive(t, b.size.EligibleArtists)
	require.Positive(t, b.size.Rewards, "the history derives reward rows")
	requireModelMatches(t, b)

	// The history's rewards are derived and the checkpoints are where the polling job would
	// have left them.
	requireNoDifferences(t, b.conn)
	legacy, err := checkpoints.ReadLegacy(context.Background(), b.conn)
	require.NoError(t, err)
	require.True(t, legacy.Has(checkpoints.PlaysCheckpoint))
	require.True(t, legacy.Has(checkpoints.CommentsCheckpoint))
	require.Equal(t, int64(500), legacy[checkpoints.CommentsCheckpoint])
}

func TestGenerateIsReproducible(t *testing.T) {
	t.Parallel()
	a := setup(t, small())
	b := setup(t, small())
	require.Equal(t, dbCounts(t, a.conn), dbCounts(t, b.conn))
	require.Equal(t, a.host.NextBlock(50, 5, 2), b.host.NextBlock(50, 5, 2))
}

func TestTrafficCrossesMilestones(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, small())

	// A clone draws the same traffic as the original from here on.
	clone := b.host.Clone()
	require.Equal(t, clone.NextBlock(30, 3, 1), b.host.Clone().NextBlock(30, 3, 1))

	var crossings []workload.Crossing
	for range 5 {
		blk := b.host.NextBlock(200, 10, 2)
		w, err := workload.Write(ctx, b.conn, blk)
		require.NoError(t, err)
		require.Positive(t, w.MaxPlayID)
		crossings = append(crossings, b.host.Observe(blk, w.CommittedAt)...)
	}
	require.NotEmpty(t, crossings, "plays one below a milestone cross it")
	requireModelMatches(t, b)

	// The polling job applies the traffic: every crossing the model saw is a complete row.
	require.NoError(t, pgx.BeginFunc(ctx, b.conn, func(tx pgx.Tx) error {
		_, err := processors.CatchUp(ctx, tx, processors.CatchUpOptions{})
		return err
	}))
	for _, c := range crossings {
		var complete bool
		require.NoError(t, b.conn.QueryRow(ctx,
			`SELECT is_complete FROM user_challenges WHERE challenge_id = $1 AND specifier = $2`,
			c.ChallengeID, c.Specifier).Scan(&complete), c.Specifier)
		require.True(t, complete, c.Specifier)
	}
	requireNoDifferences(t, b.conn)
}

func TestDrive(t *testing.T) {
	t.Parallel()
	b := setup(t, small())
	var blocks, plays int
	err := b.host.Drive(context.Background(), b.conn,
		workload.Traffic{Rate: 1000, CommentRate: 50, BlockInterval: 50 * time.Millisecond}, 300*time.Millisecond,
		func(a workload.Applied) {
			blocks++
			plays += len(a.Block.Plays)
		})
	require.NoError(t, err)
	require.GreaterOrEqual(t, blocks, 2)
	require.Equal(t, 300, plays, "the rate is kept exactly over the duration")
	requireModelMatches(t, b)
}

func TestBacklogAndBigTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, small())
	res, err := b.host.Backlog(ctx, b.db.URL, 1050, 100, 2)
	require.NoError(t, err)
	require.Equal(t, 11, res.Transactions)
	_, err = b.host.BigTransaction(ctx, b.conn, 3000)
	require.NoError(t, err)
	require.Equal(t, int64(4050), b.db.QueryInt(t, "SELECT count(*) FROM plays"))
	requireModelMatches(t, b)
}
