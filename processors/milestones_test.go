package processors_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/processors"
)

const in2025 = "2025-03-04 12:00:00"

func TestMilestonesVerifiedOnly(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.artist(401, false)
	f.track(1, 400)
	f.track(2, 401)
	f.plays(1, 300, in2025)
	f.plays(2, 300, in2025)

	f.milestones(1, 2)
	require.Equal(t, map[string]progress{
		"p1 190:250":  {User: 400, Current: 250, Complete: true, Amount: 25},
		"p2 190:1000": {User: 400, Current: 300, Amount: 100},
	}, f.progressRows())

	// The count query checks eligibility itself, whatever IDs it is given.
	f.inTx(func(tx pgxTx) {
		cat, err := processors.LoadCatalog(f.ctx, tx)
		require.NoError(t, err)
		stats, err := processors.RecomputeMilestones(f.ctx, tx, cat, []int64{401})
		require.NoError(t, err)
		require.Empty(t, stats)
	})
	require.Len(t, f.rows(), 2)
}

func TestMilestonesDeactivatedArtist(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.userRow(400, true, true, true, "u400")
	f.track(1, 400)
	f.plays(1, 300, in2025)

	artists, err := processors.ArtistsForTracks(f.ctx, f.db.Pool, []int64{1})
	require.NoError(t, err)
	require.Empty(t, artists)
	f.milestones(1)
	require.Empty(t, f.rows())
}

func TestMilestonesCurrentUsersRowDecides(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// 400 was unverified and is verified now; 401 the other way round.
	f.userRow(400, false, false, false, "u400-old")
	f.userRow(400, true, true, false, "u400-new")
	f.userRow(401, false, true, false, "u401-old")
	f.userRow(401, true, false, false, "u401-new")
	f.track(1, 400)
	f.track(2, 401)
	f.plays(1, 250, in2025)
	f.plays(2, 250, in2025)

	artists, err := processors.ArtistsForTracks(f.ctx, f.db.Pool, []int64{1, 2})
	require.NoError(t, err)
	require.Equal(t, []int64{400}, artists)
	f.milestones(1, 2)
	require.Equal(t, map[string]progress{
		"p1 190:250":  {User: 400, Current: 250, Complete: true, Amount: 25},
		"p2 190:1000": {User: 400, Current: 250, Amount: 100},
	}, f.progressRows())
}

func TestMilestonesCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		count int64
		want  map[string]progress
	}{
		{249, map[string]progress{
			"p1 190:250": {User: 400, Current: 249, Amount: 25},
		}},
		{300, map[string]progress{
			"p1 190:250":  {User: 400, Current: 250, Complete: true, Amount: 25},
			"p2 190:1000": {User: 400, Current: 300, Amount: 100},
		}},
		{1500, map[string]progress{
			"p1 190:250":   {User: 400, Current: 250, Complete: true, Amount: 25},
			"p2 190:1000":  {User: 400, Current: 1000, Complete: true, Amount: 100},
			"p3 190:10000": {User: 400, Current: 1500, Amount: 1000},
		}},
		{10500, map[string]progress{
			"p1 190:250":   {User: 400, Current: 250, Complete: true, Amount: 25},
			"p2 190:1000":  {User: 400, Current: 1000, Complete: true, Amount: 100},
			"p3 190:10000": {User: 400, Current: 10000, Complete: true, Amount: 1000},
		}},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			f.artist(400, true)
			// Split over two tracks and two months: the count is a sum.
			f.track(1, 400)
			f.track(2, 400)
			f.plays(1, tt.count/2, "2025-01-15")
			f.plays(2, tt.count-tt.count/2, "2025-06-01")
			f.milestones(1)
			require.Equal(t, tt.want, f.progressRows())
			require.Empty(t, f.verify())
		})
	}
}

func TestMilestonesP1Inactive(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET active = false WHERE id = 'p1'`)
	f.artist(400, true)
	f.artist(401, true)
	f.track(1, 400)
	f.track(2, 401)
	f.plays(1, 100, in2025)
	f.plays(2, 1500, in2025)

	f.milestones(1, 2)
	require.Equal(t, map[string]progress{
		"p2 190:1000":  {User: 400, Current: 100, Amount: 100},
		"p2 191:1000":  {User: 401, Current: 1000, Complete: true, Amount: 100},
		"p3 191:10000": {User: 401, Current: 1500, Amount: 1000},
	}, f.progressRows())
	require.Empty(t, f.verify())
}

func TestMilestonesAmountAndCompletedAtFrozen(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 300, in2025)
	f.milestones(1)
	before := f.rows()["p1 190:250"]
	require.True(t, before.Complete)
	require.NotNil(t, before.CompletedAt)

	f.exec(`UPDATE challenges SET amount = '50' WHERE id = 'p1'`)
	f.exec(`UPDATE challenges SET amount = '200' WHERE id = 'p2'`)
	f.plays(1, 800, in2025)
	f.milestones(1)

	after := f.rows()
	require.Equal(t, before, after["p1 190:250"], "a completed row keeps amount and completed_at")
	require.Equal(t, stored{UserID: 400, Complete: true, Current: 1000, Amount: 200, CompletedAt: after["p2 190:1000"].CompletedAt},
		after["p2 190:1000"], "p2 completes now, with the amount of the moment")
	require.NotNil(t, after["p2 190:1000"].CompletedAt)
	require.Equal(t, int64(1100), after["p3 190:10000"].Current)
	require.Equal(t, int64(1000), after["p3 190:10000"].Amount)
	require.Empty(t, f.verify())
}

func TestMilestonesTrackDeletedAfterCompletion(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.track(1, 400)
	f.track(2, 400)
	f.plays(1, 200, in2025)
	f.plays(2, 100, in2025)
	f.milestones(1, 2)
	completedAt := f.rows()["p1 190:250"].CompletedAt

	f.deleteTrack(2)
	f.plays(1, 1, in2025) // the next play on the remaining track triggers the recompute
	f.milestones(1)

	rows := f.rows()
	require.Equal(t, stored{UserID: 400, Complete: true, Current: 201, Amount: 25, CompletedAt: completedAt},
		rows["p1 190:250"], "the count goes down, the completion stays")
	// 201 < 250 no longer reaches p2, so the walk stops before it and p2 keeps its last
	// value: a legitimately historical row, which verify tolerates.
	require.Equal(t, int64(300), rows["p2 190:1000"].Current)
	require.Empty(t, f.verify())
}

func TestMilestonesPlaysBefore2025Ignored(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 500, "2024-12-31 23:59:59")
	f.plays(1, 100, "2025-01-01 00:00:00")
	f.milestones(1)
	require.Equal(t, map[string]progress{
		"p1 190:250": {User: 400, Current: 100, Amount: 25},
	}, f.progressRows())

	// Plays only before 2025: a count of 0 gets nothing.
	f.artist(401, true)
	f.track(2, 401)
	f.plays(2, 300, "2024-06-01")
	f.milestones(2)
	require.Len(t, f.rows(), 1)
}

func TestMilestonesPlaysOnDeletedTracksIgnored(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.track(1, 400)
	f.trackRow(2, 400, true, true, "t2")
	f.plays(1, 100, in2025)
	f.plays(2, 500, in2025)

	artists, err := processors.ArtistsForTracks(f.ctx, f.db.Pool, []int64{2, 99})
	require.NoError(t, err)
	require.Empty(t, artists, "a deleted or unknown track resolves to nobody")
	f.milestones(1, 2)
	require.Equal(t, map[string]progress{
		"p1 190:250": {User: 400, Current: 100, Amount: 25},
	}, f.progressRows())
}

func TestMilestonesTrackMovedToAnotherOwner(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.artist(401, true)
	f.trackRow(5, 400, false, false, "t5-old")
	f.trackRow(5, 401, true, false, "t5-new")
	f.plays(5, 300, in2025)

	artists, err := processors.ArtistsForTracks(f.ctx, f.db.Pool, []int64{5})
	require.NoError(t, err)
	require.Equal(t, []int64{401}, artists)

	f.inTx(func(tx pgxTx) {
		cat, err := processors.LoadCatalog(f.ctx, tx)
		require.NoError(t, err)
		_, err = processors.RecomputeMilestones(f.ctx, tx, cat, []int64{400, 401})
		require.NoError(t, err)
	})
	require.Equal(t, map[string]progress{
		"p1 191:250":  {User: 401, Current: 250, Complete: true, Amount: 25},
		"p2 191:1000": {User: 401, Current: 300, Amount: 100},
	}, f.progressRows())
}

func TestMilestonesAnonymousPlaysCount(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.artist(400, true)
	f.track(1, 400)
	f.exec(`INSERT INTO plays (play_item_id, created_at, user_id) SELECT 1, $1::timestamp, NULL
		FROM generate_series(1, 250)`, in2025)
	f.milestones(1)
	require.True(t, f.rows()["p1 190:250"].Complete)
}

func TestMilestonesCatalogOddities(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET amount = 'lots' WHERE id = 'p2'`)
	f.exec(`UPDATE challenges SET step_count = NULL WHERE id = 'p3'`)

	cat, err := processors.LoadCatalog(f.ctx, f.db.Pool)
	require.NoError(t, err)
	require.Equal(t, []processors.Tier{
		{ChallengeID: "p1", Suffix: "250", Step: 250, Amount: 25},
		{ChallengeID: "p2", Suffix: "1000", Step: 1000, Amount: 0},
	}, cat.Milestones)
	require.Equal(t, processors.CommentRule{Active: true, Amount: 1}, cat.Comments)
	require.Len(t, cat.Oddities, 2)
	require.Contains(t, cat.Oddities[0], `"p2"`)
	require.Contains(t, cat.Oddities[1], `"p3"`)

	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 1500, in2025)
	f.milestones(1)
	require.Equal(t, map[string]progress{
		"p1 190:250":  {User: 400, Current: 250, Complete: true, Amount: 25},
		"p2 190:1000": {User: 400, Current: 1000, Complete: true, Amount: 0},
	}, f.progressRows())
	require.Empty(t, f.verify())
}

func TestMilestonesNullStepOnP1(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET step_count = NULL WHERE id = 'p1'`)
	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 10, in2025)
	f.milestones(1)
	require.Equal(t, map[string]progress{
		"p2 190:1000": {User: 400, Current: 10, Amount: 100},
	}, f.progressRows(), "p2 gates at 0 when p1 is skipped")
}

func TestMilestonesNoActiveTier(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET active = false WHERE id IN ('p1', 'p2', 'p3')`)
	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 300, in2025)
	require.Empty(t, f.milestones(1))
	require.Empty(t, f.rows())
	require.Empty(t, f.verify())
	f.exec(`INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
		VALUES ('p1', 400, '190:250', true, 250, 25, now())`)
	require.Empty(t, f.verify(), "rows of a retired tier are historical")
}
