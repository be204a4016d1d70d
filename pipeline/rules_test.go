package pipeline_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

func (e *env) legacy() checkpoints.Legacy {
	e.t.Helper()
	l, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
	require.NoError(e.t, err)
	return l
}

func (e *env) setActive(active bool, ids ...string) {
	e.t.Helper()
	e.exec(`UPDATE challenges SET active = $1 WHERE id = ANY($2::text[])`, active, ids)
}

// TestRuleSwitchedOffAndOn: while a rule family is inactive the sidecar keeps flushing windows
// but leaves the family's legacy checkpoint where it was, as the polling job does; once the
// family is active again, the next window derives the gap.
func TestRuleSwitchedOffAndOn(t *testing.T) {
	e := setup(t)
	week := func(n int) time.Time { return in2025.AddDate(0, 0, 7*n) }
	e.artist(1, true)
	e.track(10, 1)
	e.artist(2, true)
	e.track(20, 2)
	s := e.start()
	s.waitStreaming()
	e.plays(10, 100)
	e.comment(1, 5, in2025, 1)
	e.caughtUp()
	e.verified()
	held := e.legacy()

	// c off: comments arrive and are flushed, nothing is derived, the checkpoint stays.
	e.setActive(false, "c")
	e.comment(2, 6, week(1), 2)
	e.comment(3, 7, week(2), 3)
	e.plays(10, 10)
	e.caughtUp()
	_, _, found := e.row("c", "6:202512")
	require.False(t, found)
	require.Equal(t, held[checkpoints.CommentsCheckpoint], e.legacy()[checkpoints.CommentsCheckpoint])
	require.Greater(t, e.legacy()[checkpoints.PlaysCheckpoint], held[checkpoints.PlaysCheckpoint], "the other family goes on")

	e.setActive(true, "c")
	e.comment(4, 8, week(3), 4)
	e.caughtUp()
	e.requireRow("c", "6:202512", 1, true)
	e.requireRow("c", "7:202513", 1, true)
	require.EqualValues(t, 4, e.legacy()[checkpoints.CommentsCheckpoint])
	e.verified()

	// Every p tier off: the same for milestones.
	held = e.legacy()
	e.setActive(false, "p1", "p2", "p3")
	e.plays(10, 200)
	e.comment(5, 9, week(4), 5)
	e.caughtUp()
	e.requireRow("p1", "1:250", 110, false)
	require.Equal(t, held[checkpoints.PlaysCheckpoint], e.legacy()[checkpoints.PlaysCheckpoint])

	e.setActive(true, "p1", "p2", "p3")
	e.plays(20, 1)
	e.caughtUp()
	e.requireRow("p1", "1:250", 250, true)
	e.requireRow("p2", "1:1000", 310, false)
	e.verified()

	// The observer hears of a flush after its commit, so the last report may trail the rows.
	want := []string{checkpoints.CommentsCheckpoint, checkpoints.PlaysCheckpoint}
	var gaps []string
	eventually(t, "both gaps reported", func() bool {
		_, _, _, flushes, _ := s.obs.get()
		gaps = gaps[:0]
		for _, f := range flushes {
			for _, g := range f.Gaps {
				gaps = append(gaps, g.Checkpoint)
			}
		}
		return len(slices.Compact(slices.Clone(gaps))) >= len(want)
	})
	// A window opened before the re-activating flush finished dropped the family's keys too,
	// and derives the gap again: the same checkpoint may repeat.
	require.Equal(t, want, slices.Compact(gaps))
	s.stop()
}

// TestSlotLostLateAndNullComments: comments the stream never delivered because the slot was
// lost — one committed late into a block below the checkpoint, one without a block number, an
// edit that moved a comment to a lower block — are derived by the recovery.
func TestSlotLostLateAndNullComments(t *testing.T) {
	e := setup(t)
	s := e.start()
	s.waitStreaming()
	e.comment(1, 5, in2025, 10)
	e.comment(2, 6, in2025, 11)
	e.exec(`UPDATE comments SET is_visible = false WHERE comment_id = 2`)
	e.caughtUp()
	s.stop()
	require.EqualValues(t, 11, e.legacy()[checkpoints.CommentsCheckpoint])

	eventually(t, "slot dropped (the walsender exits asynchronously)", func() bool {
		_, err := e.db.Pool.Exec(e.ctx, `SELECT pg_drop_replication_slot($1)`, e.db.Slot)
		return err == nil
	})
	e.comment(3, 7, in2025, 9)
	e.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, txhash, blockhash)
		VALUES (4, 'nice', 8, 1, 'Track', $1, NULL, 'tx', 'bh')`, in2025)
	e.exec(`UPDATE comments SET is_visible = true, created_at = $1, blocknumber = 10 WHERE comment_id = 2`, in2025.AddDate(0, 0, 7))
	s = e.start()
	s.waitStreaming()
	e.caughtUp()
	s.requireRecreated("missing")
	e.requireRow("c", "7:202511", 1, true)
	e.requireRow("c", "8:202511", 1, true)
	e.requireRow("c", "6:202512", 1, true)
	e.verified()
	s.stop()
}

// TestFullRescanRulesStream: v, t, cp and w reach the stream through the registry alone: the
// publication carries their tables, the window keeps their keys, and each change earns its
// reward through a flush. A rule switched off keeps nothing and is derived when switched on.
func TestFullRescanRulesStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id IN ('v', 't', 'cp', 'w')`)
	e.artist(1, true)
	e.track(10, 1)
	e.artist(2, false)
	e.track(20, 2)
	s := e.start()
	s.waitStreaming()
	e.caughtUp()
	e.requireRow("v", "1", 1, true) // derived from scratch by the first flush

	e.artist(3, true)                                                       // v
	e.comment(100, 2, in2025, 1)                                            // a comment by user 2 …
	e.exec(`UPDATE tracks SET pinned_comment_id = 100 WHERE track_id = 10`) // … pinned by verified 1: cp
	e.exec(`INSERT INTO reposts (user_id, repost_item_id, repost_type, is_current, is_delete, created_at)
		VALUES (2, 20, 'track', true, false, '2025-02-01')`)
	e.exec(`INSERT INTO track_trending_scores (track_id, type, version, time_range, score)
		VALUES (20, 'TRACKS', 'pnagD', 'week', 5)`) // t: track 20 enters the top 10
	e.exec(`INSERT INTO events (event_id, event_type, user_id, event_data)
		VALUES (7, 'remix_contest', 1, '{"winners": [20]}')`) // w: the remix by 2 wins 1's contest
	e.caughtUp()
	e.requireRow("v", "3", 1, true)
	e.requireRow("cp", "2:a", 1, true)
	e.requireRow("t", "2:t:14", 1, true)
	e.requireRow("w", "7:2", 1, true)

	e.setActive(false, "v")
	e.artist(4, true)
	e.plays(10, 1) // a window with changes while v is off
	e.caughtUp()
	_, _, found := e.row("v", "4")
	require.False(t, found, "nothing derived while v is off")
	e.setActive(true, "v")
	e.plays(10, 1)
	e.caughtUp()
	e.requireRow("v", "4", 1, true)
	e.verified()
	s.stop()
}

// TestIncrementalRulesStream: u and fp reach the stream through the registry alone, and their
// legacy checkpoints follow tracks.blocknumber and playlists.blocknumber in the flush, so the
// polling job could take over at any moment.
func TestIncrementalRulesStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id IN ('u', 'fp')`)
	e.artist(1, false)
	s := e.start()
	s.waitStreaming()

	for i, block := range []int{11, 12, 13, 14} {
		e.exec(`INSERT INTO tracks (track_id, owner_id, blocknumber, is_current, is_delete) VALUES ($1, 1, $2, true, false)`,
			100+i, block)
	}
	e.exec(`INSERT INTO tracks (track_id, owner_id, blocknumber, is_current, is_delete, is_unlisted)
		VALUES (200, 2, 15, true, false, true)`) // unlisted: user 2 earns nothing
	e.exec(`INSERT INTO playlists (playlist_id, playlist_owner_id, blocknumber, is_current, is_delete) VALUES (1, 3, 21, true, false)`)
	e.caughtUp()
	e.requireRow("u", "1", 3, true)
	e.requireRow("fp", "3", 1, true)
	_, _, found := e.row("u", "2")
	require.False(t, found)
	require.EqualValues(t, 15, e.legacy()["challenges:u:last_blocknumber"])
	require.EqualValues(t, 21, e.legacy()["challenges:fp:last_blocknumber"])

	// An edit in place: the unlisted track is listed at a later block.
	e.exec(`UPDATE tracks SET is_unlisted = false, blocknumber = 16 WHERE track_id = 200`)
	e.caughtUp()
	e.requireRow("u", "2", 1, false)
	require.EqualValues(t, 16, e.legacy()["challenges:u:last_blocknumber"])
	e.verified()
	s.stop()
}

// TestUserEventsRulesStream: m, r, rv and rd stream from user_events, each following its own
// checkpoint on user_events.blocknumber; a user's new version (the old row made historical, a
// new current row) is what re-derives the referral rules.
func TestUserEventsRulesStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id IN ('m', 'r', 'rv', 'rd')`)
	e.exec(`INSERT INTO users (user_id, is_current, is_verified, txhash) VALUES (7, true, false, 'a'), (8, true, true, 'a')`)
	s := e.start()
	s.waitStreaming()

	e.exec(`INSERT INTO user_events (user_id, blocknumber, is_current, is_mobile_user, referrer) VALUES
		(20, 31, true, true, NULL), (21, 32, true, false, 7), (22, 33, true, false, 8)`)
	e.caughtUp()
	e.requireRow("m", "14", 1, true)
	e.requireRow("r", "7:15", 1, true)
	e.requireRow("rd", "15:7", 1, true)
	e.requireRow("rv", "8:16", 1, true)
	e.requireRow("rd", "16:8", 1, true)
	for _, id := range []string{"m", "r", "rv", "rd"} {
		require.EqualValues(t, 33, e.legacy()["challenges:"+id+":last_blocknumber"], id)
	}

	// User 21 becomes mobile and changes referrer to the verified 8.
	e.exec(`UPDATE user_events SET is_current = false WHERE user_id = 21`)
	e.exec(`INSERT INTO user_events (user_id, blocknumber, is_current, is_mobile_user, referrer) VALUES (21, 34, true, true, 8)`)
	e.caughtUp()
	e.requireRow("m", "15", 1, true)
	e.requireRow("rv", "8:15", 1, true)
	e.requireRow("r", "7:15", 1, true) // completion is sticky
	require.EqualValues(t, 34, e.legacy()["challenges:rv:last_blocknumber"])
	e.verified()
	s.stop()
}

// TestPurchaseRulesStream: b and s stream from sol_purchases through the host's view, follow
// their slot checkpoints, and a purchase validated after a later one still earns.
func TestPurchaseRulesStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id IN ('b', 's')`)
	e.artist(1, true) // verified
	e.track(1, 1)
	s := e.start()
	s.waitStreaming()

	e.exec(`INSERT INTO sol_purchases (signature, instruction_index, amount, slot, content_type, content_id, buyer_user_id, is_valid)
		VALUES ('a', 0, 3000000, 900, 'track', 1, 40, NULL), ('b', 0, 2000000, 901, 'track', 1, 41, true)`)
	e.caughtUp()
	e.requireRow("b", "29:1", 1, true)
	e.requireRow("s", "29:1", 1, true)
	_, _, found := e.row("b", "28:1")
	require.False(t, found, "an unvalidated purchase earns nothing")
	require.EqualValues(t, 901, e.legacy()["challenges:b:last_slot"])

	e.exec(`UPDATE sol_purchases SET is_valid = true WHERE signature = 'a'`)
	e.caughtUp()
	e.requireRow("b", "28:1", 1, true)
	require.EqualValues(t, 901, e.legacy()["challenges:s:last_slot"])
	e.verified()
	s.stop()
}

// TestCosignStream: an artist's repost of a remix of their track pays the remixer, the
// checkpoint follows the highest block of reposts and saves, and a save of the same remix pays
// nothing more.
func TestCosignStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id = 'cs'`)
	e.artist(1, true)
	e.artist(2, false)
	e.track(10, 1)
	e.track(20, 2)
	e.exec(`INSERT INTO remixes (parent_track_id, child_track_id) VALUES (10, 20)`)
	s := e.start()
	s.waitStreaming()

	e.exec(`INSERT INTO reposts (user_id, repost_item_id, repost_type, blocknumber, is_current, is_delete, created_at)
		VALUES (1, 20, 'track', 50, true, false, now())`)
	e.caughtUp()
	e.requireRow("cs", "1:14", 1, true)
	require.EqualValues(t, 50, e.legacy()["challenges:cs:last_blocknumber"])
	e.exec(`INSERT INTO saves (user_id, save_item_id, save_type, blocknumber, is_current, is_delete, created_at)
		VALUES (1, 20, 'track', 52, true, false, now())`)
	e.caughtUp()
	require.EqualValues(t, 52, e.legacy()["challenges:cs:last_blocknumber"])
	require.EqualValues(t, 1, e.count(`SELECT count(*) FROM user_challenges WHERE challenge_id = 'cs'`))
	e.verified()
	s.stop()
}

// TestProfileCompletionStream: p's steps come from four tables and its checkpoint follows the
// highest blocknumber of all four.
func TestProfileCompletionStream(t *testing.T) {
	e := setup(t)
	e.exec(`UPDATE challenges SET active = true WHERE id = 'p'`)
	s := e.start()
	s.waitStreaming()

	e.exec(`INSERT INTO users (user_id, handle, handle_lc, bio, name, is_current, blocknumber, txhash)
		VALUES (5, 'h', 'h', 'bio', 'name', true, 60, 'a')`)
	e.caughtUp()
	e.requireRow("p", "5", 2, false)
	for i := range 5 {
		e.exec(`INSERT INTO follows (follower_user_id, followee_user_id, blocknumber, is_current, is_delete)
			VALUES (5, $1, $2, true, false)`, 10+i, 61+i)
	}
	e.exec(`INSERT INTO saves (user_id, save_item_id, save_type, blocknumber, is_current, is_delete, created_at)
		VALUES (5, 1, 'track', 70, true, false, now())`)
	e.caughtUp()
	e.requireRow("p", "5", 4, false)
	require.EqualValues(t, 70, e.legacy()["challenges:p:last_blocknumber"])
	require.EqualValues(t, 1, e.count(`SELECT count(*) FROM challenge_profile_completion WHERE user_id = 5 AND follows AND favorites`))
	e.verified()
	s.stop()
}
