package processors_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.history()
	f.catchUp(processors.CatchUpOptions{})
	require.Empty(t, f.verify())

	// 1000 (3e8) has 120 plays: p1 incomplete. 1001 (3e9) has 350: p1 complete, p2 at 350.
	// 1002 (3ea) has 1,500: p1 and p2 complete, p3 at 1,500.
	f.exec(`UPDATE user_challenges SET current_step_count = 7 WHERE specifier = '3e9:1000'`)
	f.exec(`DELETE FROM user_challenges WHERE specifier = '3ea:10000'`)
	f.exec(`UPDATE user_challenges SET amount = 26 WHERE specifier = '3e8:250'`)
	f.exec(`UPDATE user_challenges SET is_complete = false, completed_at = NULL WHERE specifier = '3ea:1000'`)
	f.exec(`UPDATE user_challenges SET completed_at = NULL WHERE specifier = '3ea:250'`)
	f.exec(`UPDATE user_challenges SET completed_at = now() WHERE specifier = '3e8:250'`)
	f.exec(`UPDATE user_challenges SET user_id = 1 WHERE specifier = '3e9:250'`)
	// Unexplained rows: nobody has commented in that week, 4242 never owned a track, and a
	// row whose user_id is not its specifier's.
	f.exec(`INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
		VALUES ('c', 2000, '7d0:202440', true, 1, 1, now()),
		       ('p1', 4242, '1092:250', false, 3, 25, NULL),
		       ('c', 5, '7d0:202441', true, 1, 1, now())`)

	got := map[string]processors.Difference{}
	for _, d := range f.verify() {
		got[d.ChallengeID+" "+d.Specifier+" "+d.Field] = d
		require.NotEmpty(t, d.String())
	}
	require.Equal(t, map[string]processors.Difference{
		"p2 3e9:1000 current_step_count": {ChallengeID: "p2", Specifier: "3e9:1000", UserID: 1001, Field: "current_step_count", Want: "350", Got: "7"},
		"p3 3ea:10000 row":               {ChallengeID: "p3", Specifier: "3ea:10000", UserID: 1002, Field: "row", Want: "present", Got: "missing"},
		"p1 3e8:250 amount":              {ChallengeID: "p1", Specifier: "3e8:250", UserID: 1000, Field: "amount", Want: "25", Got: "26"},
		"p1 3e8:250 completed_at":        {ChallengeID: "p1", Specifier: "3e8:250", UserID: 1000, Field: "completed_at", Want: "NULL", Got: "set"},
		"p2 3ea:1000 is_complete":        {ChallengeID: "p2", Specifier: "3ea:1000", UserID: 1002, Field: "is_complete", Want: "true", Got: "false"},
		"p1 3ea:250 completed_at":        {ChallengeID: "p1", Specifier: "3ea:250", UserID: 1002, Field: "completed_at", Want: "set", Got: "NULL"},
		"p1 3e9:250 user_id":             {ChallengeID: "p1", Specifier: "3e9:250", UserID: 1001, Field: "user_id", Want: "1001", Got: "1"},
		"c 7d0:202440 row":               {ChallengeID: "c", Specifier: "7d0:202440", UserID: 2000, Field: "row", Want: "absent", Got: "present"},
		"p1 1092:250 row":                {ChallengeID: "p1", Specifier: "1092:250", UserID: 4242, Field: "row", Want: "absent", Got: "present"},
		"c 7d0:202441 user_id":           {ChallengeID: "c", Specifier: "7d0:202441", UserID: 5, Field: "user_id", Want: "owner of specifier 7d0:202441", Got: "5"},
	}, got)

	// The catch-up path repairs what a recompute touches.
	f.exec(`DELETE FROM user_challenges WHERE specifier IN ('7d0:202440', '1092:250', '7d0:202441', '3e9:250')`)
	f.exec(`UPDATE user_challenges SET amount = 25, completed_at = NULL WHERE specifier = '3e8:250'`)
	f.exec(`UPDATE user_challenges SET completed_at = now() WHERE specifier = '3ea:250'`)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0})
	f.exec(`UPDATE indexing_checkpoints SET last_checkpoint = 0 WHERE tablename = $1`, checkpoints.PlaysCheckpoint)
	f.catchUp(processors.CatchUpOptions{})
	require.Empty(t, f.verify())
}

// TestVerifyToleratesHistory covers the rows the rules legitimately leave behind.
func TestVerifyToleratesHistory(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, id := range []int64{400, 401, 402, 403} {
		f.artist(id, true)
	}
	f.track(1, 400)
	f.track(2, 401)
	f.track(3, 402)
	f.track(4, 403)
	f.track(5, 403)
	f.plays(1, 1200, in2025)
	f.plays(2, 300, in2025)
	f.plays(3, 300, in2025)
	f.plays(4, 200, in2025)
	f.plays(5, 100, in2025)
	f.comment(comment{id: 1, user: 700, at: "2025-01-06", block: 1})
	f.comment(comment{id: 2, user: 701, at: "2025-01-06", block: 1})
	f.milestones(1, 2, 3, 4, 5)
	f.weekly(700, 701)
	require.Empty(t, f.verify())
	require.Len(t, f.rows(), 11)

	// 400 loses verification: its rows stay without a fresh counterpart.
	f.exec(`UPDATE users SET is_verified = false WHERE user_id = 400`)
	// 401's only track is deleted: its rows stay.
	f.deleteTrack(2)
	// 402's track moves to 401 (a new version of the track row).
	f.exec(`UPDATE tracks SET is_current = false WHERE track_id = 3`)
	f.trackRow(3, 401, true, false, "t3-moved")
	// 403 drops below 250: p1 stays complete at the new count, p2 is no longer reached and
	// keeps its last count.
	f.deleteTrack(5)
	f.plays(4, 1, in2025)
	// 700's comment is deleted, 701's hidden.
	f.exec(`UPDATE comments SET is_delete = true WHERE comment_id = 1`)
	f.exec(`UPDATE comments SET is_visible = false WHERE comment_id = 2`)
	f.milestones(1, 2, 3, 4, 5)
	f.weekly(700, 701)
	require.Len(t, f.rows(), 11)
	rows := f.progressRows()
	require.Equal(t, progress{User: 403, Current: 201, Complete: true, Amount: 25}, rows["p1 193:250"])
	require.Equal(t, progress{User: 403, Current: 300, Amount: 100}, rows["p2 193:1000"])
	require.Empty(t, f.verify())

	// Retiring p1 makes every p1 row historical, and p2 gates at 0 from the next recompute.
	f.exec(`UPDATE challenges SET active = false WHERE id = 'p1'`)
	f.milestones(1, 2, 3, 4, 5)
	require.Equal(t, int64(201), f.rows()["p2 193:1000"].Current)
	require.Empty(t, f.verify())

	// A retired c challenge leaves its rows historical too.
	f.exec(`UPDATE challenges SET active = false WHERE id = 'c'`)
	require.Empty(t, f.verify())
}
