package processors_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

// history writes a mixed first round of host activity: artists across the tiers, ineligible
// artists, plays before 2025, a deleted and a moved track, and commenters with visible, hidden
// and deleted comments over several weeks (two sharing a block).
func (f *fixture) history() {
	f.t.Helper()
	for _, a := range []struct {
		id       int64
		verified bool
	}{{1000, true}, {1001, true}, {1002, true}, {1003, true}, {1004, false}, {1006, true}, {1007, true}, {1008, true}, {1009, true}} {
		f.artist(a.id, a.verified)
	}
	f.userRow(1005, true, true, true, "u1005")
	for track, owner := range map[int64]int64{10: 1000, 11: 1001, 12: 1001, 13: 1002, 14: 1003, 15: 1004, 16: 1005, 17: 1006, 18: 1006, 20: 1009} {
		f.track(track, owner)
	}
	f.trackRow(19, 1008, false, false, "t19-old")
	f.trackRow(19, 1007, true, false, "t19-new")
	for _, p := range []struct {
		track, n int64
		at       string
	}{
		{10, 120, in2025}, {11, 300, "2025-02-01"}, {12, 50, "2025-07-01"}, {13, 1500, in2025},
		{14, 10500, in2025}, {15, 400, in2025}, {16, 400, in2025}, {17, 600, in2025}, {18, 30, in2025},
		{19, 260, in2025}, {20, 500, "2024-11-11"}, {99, 10, in2025},
	} {
		f.plays(p.track, p.n, p.at)
	}
	f.deleteTrack(17)
	for _, c := range []comment{
		{id: 1, user: 2000, at: "2025-01-06", block: 100},
		{id: 2, user: 2000, at: "2025-01-08", block: 100},
		{id: 3, user: 2000, at: "2024-12-30", block: 101},
		{id: 4, user: 2001, at: "2021-01-03", block: 102},
		{id: 5, user: 2001, at: "2025-03-03", hidden: true, block: 103},
		{id: 6, user: 2002, at: "2025-03-03", deleted: true, block: 104},
		{id: 7, user: 2003, at: "2027-01-01", block: 105},
	} {
		f.comment(c)
	}
}

// moreHistory is the second round: progress, a new artist, an edit that soft-deletes a
// comment, a new commenter.
func (f *fixture) moreHistory() {
	f.t.Helper()
	f.plays(10, 200, in2025)
	f.plays(13, 9000, "2025-09-09")
	f.artist(1010, true)
	f.track(21, 1010)
	f.plays(21, 260, in2025)
	f.exec(`UPDATE comments SET is_delete = true, blocknumber = 200 WHERE comment_id = 3`)
	f.comment(comment{id: 8, user: 2004, at: "2025-05-05", block: 201})
	f.comment(comment{id: 9, user: 2000, at: "2025-05-05", block: 201})
}

func (f *fixture) maxima() (playID, block int64) {
	f.t.Helper()
	return f.count(`SELECT COALESCE(MAX(id), 0) FROM plays`), f.count(`SELECT COALESCE(MAX(blocknumber), 0) FROM comments`)
}

func TestCatchUpMatchesVerify(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.history()

	res := f.catchUp(processors.CatchUpOptions{BatchSize: 997})
	require.Empty(t, f.verify())
	maxPlay, maxBlock := f.maxima()
	want := withUntouched(checkpoints.Legacy{checkpoints.PlaysCheckpoint: maxPlay, checkpoints.CommentsCheckpoint: maxBlock})
	require.Equal(t, want, res.Legacy)
	require.Equal(t, want, f.legacy())
	require.Equal(t, maxPlay, res.Checkpoints[checkpoints.PlaysCheckpoint].Scanned)
	require.EqualValues(t, 7, res.Checkpoints[checkpoints.CommentsCheckpoint].Scanned)
	require.Equal(t, 7, res.Artists, "1000, 1001, 1002, 1003, 1006, 1007 and 1009 (whose plays are all before 2025)")
	require.Equal(t, 4, res.Users)
	require.Equal(t, processors.Counts{Inserted: 16}, res.Stats.Total())
	rows := f.progressRows()
	require.Equal(t, progress{User: 1007, Current: 250, Complete: true, Amount: 25}, rows["p1 3ef:250"])
	require.Equal(t, progress{User: 1006, Current: 30, Amount: 25}, rows["p1 3ee:250"])

	f.moreHistory()
	res = f.catchUp(processors.CatchUpOptions{BatchSize: 997})
	require.Empty(t, f.verify())
	require.Equal(t, 3, res.Artists)
	require.Equal(t, 2, res.Users, "2000 twice (an edit and a new comment) counts once")
	require.Equal(t, processors.Stats{
		"p1": {Inserted: 1, Updated: 1, Unchanged: 1}, // 1010 new, 1000 completes, 1002 done already
		"p2": {Inserted: 2, Unchanged: 1},             // 1000 and 1010 reach it
		"p3": {Updated: 1},                            // 1002 completes
		"c":  {Inserted: 2, Unchanged: 1},             // 2000's week 19, 2004; 2000's week 2 again
	}, res.Stats)
	seeded := maxPlay
	maxPlay, maxBlock = f.maxima()
	want = withUntouched(checkpoints.Legacy{checkpoints.PlaysCheckpoint: maxPlay, checkpoints.CommentsCheckpoint: 201})
	want[processors.ListenStreakCheckpoint] = seeded // e is inactive: held where the first catch-up seeded it
	require.Equal(t, want, f.legacy())
	require.EqualValues(t, 201, maxBlock)

	// Nothing new: nothing scanned, nothing written.
	res = f.catchUp(processors.CatchUpOptions{})
	require.Zero(t, res.Scanned())
	require.Empty(t, res.Stats)
}

// TestCatchUpEqualsStreamingPath feeds the same history to the stream's entry points and to
// CatchUp in two databases: the rows must be identical.
func TestCatchUpEqualsStreamingPath(t *testing.T) {
	t.Parallel()
	stream, poll := setup(t), setup(t)
	poll.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	for _, f := range []*fixture{stream, poll} {
		f.history()
	}
	stream.milestones(10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 99)
	stream.weekly(2000, 2001, 2002, 2003)
	poll.catchUp(processors.CatchUpOptions{BatchSize: 5000})
	require.Equal(t, stream.progressRows(), poll.progressRows())

	for _, f := range []*fixture{stream, poll} {
		f.moreHistory()
	}
	stream.milestones(10, 13, 21)
	stream.weekly(2000, 2004)
	poll.catchUp(processors.CatchUpOptions{BatchSize: 5000})
	require.Equal(t, stream.progressRows(), poll.progressRows())
	require.Empty(t, stream.verify())
}

func TestCatchUpSeedsAbsentCheckpoints(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.history()
	res := f.catchUp(processors.CatchUpOptions{})
	require.True(t, res.Checkpoints[checkpoints.PlaysCheckpoint].Seeded)
	require.True(t, res.Checkpoints[checkpoints.CommentsCheckpoint].Seeded)
	require.Zero(t, res.Scanned())
	require.Empty(t, f.rows(), "no checkpoint means start from now: nothing derived")
	maxPlay, maxBlock := f.maxima()
	require.Equal(t, withUntouched(checkpoints.Legacy{checkpoints.PlaysCheckpoint: maxPlay, checkpoints.CommentsCheckpoint: maxBlock}), f.legacy())

	// From there on it catches up normally.
	f.moreHistory()
	res = f.catchUp(processors.CatchUpOptions{})
	require.False(t, res.Checkpoints[checkpoints.PlaysCheckpoint].Seeded)
	require.Equal(t, 3, res.Artists)
	require.Equal(t, 2, res.Users)
}

func TestCatchUpFromScratch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.history()
	f.moreHistory()
	// Stale checkpoints are ignored, and never moved backwards.
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 5, checkpoints.CommentsCheckpoint: 1_000_000})
	// Pruned plays still count through their aggregates.
	f.exec(`DELETE FROM plays WHERE play_item_id = 11`)

	res := f.catchUp(processors.CatchUpOptions{FromScratch: true, BatchSize: 3})
	require.Empty(t, f.verify())
	require.Equal(t, 7, res.Artists)
	require.Equal(t, 5, res.Users)
	require.Equal(t, progress{User: 1001, Current: 250, Complete: true, Amount: 25}, f.progressRows()["p1 3e9:250"])
	maxPlay, _ := f.maxima()
	require.Equal(t, withUntouched(checkpoints.Legacy{checkpoints.PlaysCheckpoint: maxPlay, checkpoints.CommentsCheckpoint: 1_000_000}), f.legacy())
}

// TestCatchUpPlayIDMargin emulates plays committed out of id order: ids 81–100 become visible
// after the checkpoint already passed 120.
func TestCatchUpPlayIDMargin(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.artist(401, true)
	f.track(1, 400)
	f.track(2, 401)
	f.exec(`INSERT INTO plays (id, play_item_id, created_at) SELECT g, 1, $1::timestamp
		FROM generate_series(1, 80) g UNION ALL SELECT g, 1, $1::timestamp FROM generate_series(101, 120) g`, in2025)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 120, checkpoints.CommentsCheckpoint: 0})
	f.exec(`INSERT INTO plays (id, play_item_id, created_at) SELECT g, 2, $1::timestamp
		FROM generate_series(81, 100) g`, in2025)

	res := f.catchUp(processors.CatchUpOptions{})
	require.Zero(t, res.Checkpoints[checkpoints.PlaysCheckpoint].Scanned)
	require.Empty(t, f.rows(), "without a margin the late rows are missed")

	res = f.catchUp(processors.CatchUpOptions{PlayIDMargin: 50})
	require.EqualValues(t, 50, res.Checkpoints[checkpoints.PlaysCheckpoint].Scanned)
	require.Equal(t, 2, res.Artists)
	require.EqualValues(t, 120, f.legacy()[checkpoints.PlaysCheckpoint])
	require.Equal(t, progress{User: 401, Current: 20, Amount: 25}, f.progressRows()["p1 191:250"])
}

// TestCatchUpInImportedSnapshot runs CatchUp in a transaction that adopted another
// transaction's exported snapshot, as the cut-over does with a slot's snapshot: rows committed
// after the snapshot are neither applied nor passed by the checkpoints.
func TestCatchUpInImportedSnapshot(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 100, in2025)
	f.comment(comment{id: 1, user: 700, at: "2025-01-06", block: 10})

	exporter, err := f.db.Pool.BeginTx(f.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	require.NoError(t, err)
	defer func() { _ = exporter.Rollback(f.ctx) }()
	var snapshot string
	require.NoError(t, exporter.QueryRow(f.ctx, `SELECT pg_export_snapshot()`).Scan(&snapshot))
	maxPlay, _ := f.maxima()

	f.plays(1, 200, in2025) // after the snapshot: the stream's business
	f.comment(comment{id: 2, user: 701, at: "2025-01-06", block: 11})

	tx, err := f.db.Pool.BeginTx(f.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(f.ctx) }()
	_, err = tx.Exec(f.ctx, `SET TRANSACTION SNAPSHOT '`+snapshot+`'`)
	require.NoError(t, err)
	res, err := processors.CatchUp(f.ctx, tx, processors.CatchUpOptions{})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(f.ctx))

	require.Equal(t, withUntouched(checkpoints.Legacy{checkpoints.PlaysCheckpoint: maxPlay, checkpoints.CommentsCheckpoint: 10}), res.Legacy)
	require.Equal(t, map[string]progress{
		"p1 190:250":   {User: 400, Current: 100, Amount: 25},
		"c 2bc:202502": {User: 700, Current: 1, Complete: true, Amount: 1},
	}, f.progressRows())
}

func TestCatchUpRejectsNegativeOptions(t *testing.T) {
	t.Parallel()
	_, err := processors.CatchUp(t.Context(), nil, processors.CatchUpOptions{BatchSize: -1})
	require.Error(t, err)
}

// TestCatchUpCommentMarginAndNullBlocks is slot-loss recovery after comments the stream never
// delivered: one committed late into a block below the checkpoint, an edit that moved a comment
// to a lower block, and comments without a block number. CatchUp as the recovery runs it
// derives them all; without the margin and the NULL pass it misses them.
func TestCatchUpCommentMarginAndNullBlocks(t *testing.T) {
	t.Parallel()
	late := func(f *fixture) {
		f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
		f.history()
		f.catchUp(processors.CatchUpOptions{}) // the stream applied everything up to here
		_, maxBlock := f.maxima()
		require.EqualValues(t, 105, maxBlock)
		// Then, with the slot already lost:
		f.comment(comment{id: 60, user: 2100, at: "2025-04-07", block: 104}) // block 104 committed after 105
		f.comment(comment{id: 61, user: 2101, at: "2025-04-07", block: 60})  // far behind, within the margin
		f.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber)
			VALUES (62, 'hi', 2102, 1, 'Track', '2025-04-08', NULL), (63, 'hi', 2103, 1, 'Track', '2025-04-15', NULL)`)
		f.exec(`UPDATE comments SET is_visible = true, blocknumber = 103 WHERE comment_id = 5`) // 2001 un-hides
	}

	without := setup(t)
	late(without)
	res := without.catchUp(processors.CatchUpOptions{})
	require.Zero(t, res.Checkpoints[checkpoints.CommentsCheckpoint].Scanned)
	require.Len(t, without.verify(), 5, "2100, 2101, 2102, 2103 and 2001 are missing")

	f := setup(t)
	late(f)
	res = f.catchUp(processors.CatchUpOptions{BlockMargin: processors.DefaultBlockMargin, CommentNullBlocks: true})
	require.Empty(t, f.verify())
	require.Equal(t, 8, res.Users, "2100-2103, and 2000-2003 (2001 among the five) from the margin")
	require.EqualValues(t, 105, f.legacy()[checkpoints.CommentsCheckpoint], "the margin never lowers the checkpoint")

	// A small margin reaches the late block but not the far one; NULLs still come.
	g := setup(t)
	late(g)
	g.catchUp(processors.CatchUpOptions{BlockMargin: 3, CommentNullBlocks: true})
	diffs := g.verify()
	require.Len(t, diffs, 1)
	require.Equal(t, int64(2101), diffs[0].UserID)
}

// TestCatchUpScansUseIndexes checks the plans of the recovery's comment scans on a table large
// enough for the planner to prefer the indexes the migrations create.
func TestCatchUpScansUseIndexes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber)
		SELECT g, 'hi', g % 5000, 1, 'Track', '2025-01-06'::timestamp + (g % 300) * interval '1 day',
		       CASE WHEN g % 100 = 0 THEN NULL ELSE g END
		FROM generate_series(1, 100000) g`)
	f.exec(`ANALYZE comments`)
	for sql, index := range map[string]string{
		`SELECT user_id, COUNT(*) FROM comments WHERE blocknumber IS NULL GROUP BY user_id`:                           "comments_blocknumber_idx",
		`SELECT user_id, COUNT(*) FROM comments WHERE blocknumber > 99000 AND blocknumber <= 100000 GROUP BY user_id`: "comments_blocknumber_idx",
		`SELECT MIN(blocknumber) FROM comments WHERE blocknumber > 1000`:                                              "comments_blocknumber_idx",
		`SELECT DISTINCT user_id FROM comments WHERE user_id = ANY('{1,2,3}'::bigint[])`:                              "comments_user_id_idx",
	} {
		var plan strings.Builder
		rows, err := f.db.Pool.Query(f.ctx, "EXPLAIN "+sql)
		require.NoError(t, err)
		var line string
		_, err = pgx.ForEachRow(rows, []any{&line}, func() error {
			plan.WriteString(line + "\n")
			return nil
		})
		require.NoError(t, err)
		require.Contains(t, plan.String(), index, "%s\n%s", sql, plan.String())
	}
}
