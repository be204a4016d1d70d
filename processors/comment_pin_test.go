package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// trackState is what a tracks row says about the pin; pinned 0 is no pin.
type trackState struct {
	owner, pinned int64
	deleted       bool
}

// insertTrack adds a current tracks row.
func insertTrack(id int64, s trackState, txhash string) write {
	var pinned any
	cols := map[string]int64{"track_id": id, "owner_id": s.owner}
	if s.pinned != 0 {
		pinned = s.pinned
		cols["pinned_comment_id"] = s.pinned
	}
	return write{
		sql: `INSERT INTO tracks (track_id, owner_id, pinned_comment_id, is_current, is_delete, txhash, title)
			VALUES ($1, $2, $3, true, $4, $5, 'x')`,
		args:   []any{id, s.owner, pinned, s.deleted, txhash},
		change: &change{table: "tracks", op: processors.Insert, cols: cols},
	}
}

// updateTrack versions a track the way the indexer does (pinning and deleting included): the
// live row becomes historical and a new current row is inserted.
func updateTrack(id int64, s trackState, txhash string) []write {
	return []write{{
		sql:  `UPDATE tracks SET is_current = false WHERE track_id = $1 AND is_current`,
		args: []any{id},
		change: &change{table: "tracks", op: processors.Update,
			cols: map[string]int64{"track_id": id, "owner_id": s.owner}},
	}, insertTrack(id, s, txhash)}
}

// commentState is a comment on a track. Comments are not versioned: the platform updates them
// in place.
type commentState struct {
	user, track     int64
	deleted, hidden bool
}

func commentCols(id int64, s commentState) map[string]int64 {
	return map[string]int64{"comment_id": id, "user_id": s.user, "entity_id": s.track}
}

func insertComment(id int64, s commentState) write {
	return write{
		sql: `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, is_delete, is_visible)
			VALUES ($1, 'hi', $2, $3, 'Track', $4, $5)`,
		args:   []any{id, s.user, s.track, s.deleted, !s.hidden},
		change: &change{table: "comments", op: processors.Insert, cols: commentCols(id, s)},
	}
}

func updateComment(id int64, s commentState) write {
	return write{
		sql:    `UPDATE comments SET is_delete = $2, is_visible = $3 WHERE comment_id = $1`,
		args:   []any{id, s.deleted, !s.hidden},
		change: &change{table: "comments", op: processors.Update, cols: commentCols(id, s)},
	}
}

// upstreamCommentPinTick is the polling job's CommentPinProcessor.Reconcile.
func upstreamCommentPinTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "cp")
	if err != nil || !ok {
		return err
	}
	rows, err := tx.Query(ctx, `
		SELECT cm.user_id, t.track_id
		FROM tracks t
		JOIN comments cm ON cm.comment_id = t.pinned_comment_id
		JOIN users u ON u.user_id = t.owner_id
		WHERE t.pinned_comment_id IS NOT NULL AND t.is_current = true AND t.is_delete = false
		  AND u.is_current = true AND u.is_verified = true
		  AND cm.is_delete = false AND cm.user_id <> t.owner_id`)
	if err != nil {
		return err
	}
	type pin struct{ commenter, track int64 }
	pins, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pin, error) {
		var p pin
		return p, r.Scan(&p.commenter, &p.track)
	})
	if err != nil {
		return err
	}
	for _, p := range pins {
		spec := fmt.Sprintf("%x:%x", p.commenter, p.track)
		if err := upstreamUpsert(ctx, tx, "cp", spec, p.commenter, 1, 1, amount); err != nil {
			return err
		}
	}
	return nil
}

// pinHistory writes random users, tracks and comments, pinning only a track's own comments as
// the platform does. Unless sticky, it never takes a pin away once a tick paid it (the track,
// its pin, the comment and the owner's verification stay) and never changes the amount, so
// that the final state derives every row the polling job accumulated (what runParity checks
// last).
//
// runParity flushes cp's keys only but runs Verify over every rule, so the history leaves the
// other rules on these tables where the first window put them: comments are hidden (c counts
// visible ones; cp, like upstream, does not look), and after the first window only users
// already paid v are verified and active (verified owners are otherwise deactivated, which
// cp, like upstream, does not look at either).
type pinHistory struct {
	sticky                  bool
	rng                     *rand.Rand
	users, tracks, comments []int64 // in creation order, so that picks repeat with the seed
	user                    map[int64]userState
	track                   map[int64]trackState
	comment                 map[int64]commentState
	earned                  map[int64]bool // tracks whose pin the last tick paid
	vPaid                   map[int64]bool // users the first window paid v; nil during it
	seq                     int
}

func newPinHistory(sticky bool) *pinHistory {
	return &pinHistory{sticky: sticky, user: map[int64]userState{}, track: map[int64]trackState{},
		comment: map[int64]commentState{}, earned: map[int64]bool{}}
}

func (h *pinHistory) txhash(prefix string, id int64) string {
	h.seq++
	return fmt.Sprintf("%s%d-%d", prefix, id, h.seq)
}

// pays is the model of the rule: whether the track's pin pays now.
func (h *pinHistory) pays(track int64) bool {
	t := h.track[track]
	c, ok := h.comment[t.pinned]
	return !t.deleted && ok && !c.deleted && c.user != t.owner && h.user[t.owner].verified
}

// frozen reports whether the history must keep the track's paid pin.
func (h *pinHistory) frozen(track int64) bool { return !h.sticky && h.earned[track] }

// pick returns a random element of ids for which ok holds, and false when there is none.
func (h *pinHistory) pick(ids []int64, ok func(int64) bool) (int64, bool) {
	ids = slices.DeleteFunc(slices.Clone(ids), func(id int64) bool { return !ok(id) })
	if len(ids) == 0 {
		return 0, false
	}
	return ids[h.rng.IntN(len(ids))], true
}

func (h *pinHistory) live(track int64) bool { return !h.track[track].deleted }

// keepV keeps v where the first window put it (see pinHistory).
func (h *pinHistory) keepV(id int64, s *userState) {
	if h.vPaid != nil && s.verified && !h.vPaid[id] {
		s.deactivated = true
	}
}

func (h *pinHistory) addUser() []write {
	id := int64(200 + 13*len(h.users))
	s := userState{verified: h.rng.IntN(3) > 0, deactivated: h.rng.IntN(8) == 0}
	h.keepV(id, &s)
	h.users = append(h.users, id)
	h.user[id] = s
	return []write{insertUser(id, s, h.txhash("u", id))}
}

func (h *pinHistory) changeUser(ok func(int64) bool, flip func(*userState)) []write {
	id, found := h.pick(h.users, ok)
	if !found {
		return nil
	}
	s := h.user[id]
	flip(&s)
	h.keepV(id, &s)
	h.user[id] = s
	return updateUser(id, s, h.txhash("u", id))
}

// ownsFrozen reports whether the user owns a track whose paid pin must stay.
func (h *pinHistory) ownsFrozen(user int64) bool {
	return slices.ContainsFunc(h.tracks, func(t int64) bool { return h.track[t].owner == user && h.frozen(t) })
}

// ownsPin reports whether the user owns a live track pinning someone else's comment.
func (h *pinHistory) ownsPin(user int64) bool {
	return slices.ContainsFunc(h.tracks, func(t int64) bool {
		s := h.track[t]
		return s.owner == user && h.isPinned(s.pinned) && h.comment[s.pinned].user != user
	})
}

func (h *pinHistory) addTrack() []write {
	id := int64(4000 + 29*len(h.tracks))
	s := trackState{owner: h.users[h.rng.IntN(len(h.users))]}
	h.tracks = append(h.tracks, id)
	h.track[id] = s
	return []write{insertTrack(id, s, h.txhash("t", id))}
}

func (h *pinHistory) changeTrack(ok func(int64) bool, change func(id int64, s *trackState) bool) []write {
	id, found := h.pick(h.tracks, func(t int64) bool { return h.live(t) && ok(t) })
	if !found {
		return nil
	}
	s := h.track[id]
	if !change(id, &s) {
		return nil
	}
	h.track[id] = s
	return updateTrack(id, s, h.txhash("t", id))
}

func (h *pinHistory) addComment() []write {
	track, found := h.pick(h.tracks, h.live)
	if !found {
		return nil
	}
	s := commentState{track: track, user: h.users[h.rng.IntN(len(h.users))], hidden: true}
	if h.rng.IntN(4) == 0 {
		s.user = h.track[track].owner // one the owner may self-pin
	}
	id := int64(7000 + 11*len(h.comments))
	h.comments = append(h.comments, id)
	h.comment[id] = s
	return []write{insertComment(id, s)}
}

// pinOwn pins one of the track's own comments, deleted ones and earlier pins included.
func (h *pinHistory) pinOwn(track int64, s *trackState) bool {
	c, found := h.pick(h.comments, func(c int64) bool { return h.comment[c].track == track })
	s.pinned = c
	return found
}

func (h *pinHistory) hasComments(track int64) bool {
	return slices.ContainsFunc(h.comments, func(c int64) bool { return h.comment[c].track == track })
}

func (h *pinHistory) changeComment(ok func(int64) bool, change func(*commentState)) []write {
	id, found := h.pick(h.comments, ok)
	if !found {
		return nil
	}
	s := h.comment[id]
	change(&s)
	h.comment[id] = s
	return []write{updateComment(id, s)}
}

// isPinned reports whether the comment is the pin of its (live) track.
func (h *pinHistory) isPinned(c int64) bool {
	t, ok := h.comment[c]
	return ok && h.live(t.track) && h.track[t.track].pinned == c
}

// held reports whether the comment is a paid pin the history must keep.
func (h *pinHistory) held(c int64) bool {
	t := h.comment[c].track
	return h.frozen(t) && h.track[t].pinned == c
}

// repin unpins a track's pin and pins it again within one window: the flush sees only the end
// state, as a polling tick would.
func (h *pinHistory) repin() []write {
	id, found := h.pick(h.tracks, func(t int64) bool { return h.live(t) && h.track[t].pinned != 0 })
	if !found {
		return nil
	}
	s := h.track[id]
	unpinned := s
	unpinned.pinned = 0
	return append(updateTrack(id, unpinned, h.txhash("t", id)), updateTrack(id, s, h.txhash("t", id))...)
}

func (h *pinHistory) gen(rng *rand.Rand, step int) []write {
	h.rng = rng
	for _, t := range h.tracks {
		if h.pays(t) {
			h.earned[t] = true
		}
	}
	if step == 1 {
		h.vPaid = map[int64]bool{}
		for id, u := range h.user {
			h.vPaid[id] = u.verified && !u.deactivated
		}
	}
	every := func(int64) bool { return true }
	notFrozen := func(t int64) bool { return !h.frozen(t) }
	var ws []write
	if step == 0 {
		for range 6 {
			ws = append(ws, h.addUser()...)
		}
		for range 4 {
			ws = append(ws, h.addTrack()...)
		}
		for range 4 {
			ws = append(ws, h.addComment()...)
		}
	}
	for range 2 + rng.IntN(5) {
		switch n := rng.IntN(40); {
		case n < 3:
			ws = append(ws, h.addUser()...)
		case n < 7:
			// Half of the flips go to owners of a pin, where they move it by the owners keys alone.
			ownsPin := rng.IntN(2) == 0
			ws = append(ws, h.changeUser(func(u int64) bool { return !h.ownsFrozen(u) && (!ownsPin || h.ownsPin(u)) },
				func(s *userState) { s.verified = !s.verified })...)
		case n < 9:
			// Upstream does not look at the owner's is_deactivated.
			ws = append(ws, h.changeUser(every, func(s *userState) { s.deactivated = !s.deactivated })...)
		case n < 12:
			ws = append(ws, h.addTrack()...)
		case n < 18:
			ws = append(ws, h.addComment()...)
		case n < 30:
			ws = append(ws, h.changeTrack(func(t int64) bool { return notFrozen(t) && h.hasComments(t) }, h.pinOwn)...)
		case n < 32:
			ws = append(ws, h.changeTrack(func(t int64) bool { return notFrozen(t) && h.track[t].pinned != 0 },
				func(_ int64, s *trackState) bool { s.pinned = 0; return true })...)
		case n < 34:
			ws = append(ws, h.repin()...)
		case n < 35:
			// A title edit: a new version with the same pin.
			ws = append(ws, h.changeTrack(every, func(int64, *trackState) bool { return true })...)
		case n < 36:
			ws = append(ws, h.changeTrack(notFrozen, func(_ int64, s *trackState) bool { s.deleted = true; return true })...)
		case n < 38:
			ws = append(ws, h.changeComment(func(c int64) bool { return h.isPinned(c) && !h.held(c) },
				func(s *commentState) { s.deleted = true })...)
		case n < 39:
			// Half of the toggles restore a deleted pin, which only the comments keys see.
			restore := rng.IntN(2) == 0
			ws = append(ws, h.changeComment(func(c int64) bool {
				return !h.held(c) && (!restore || h.isPinned(c) && h.comment[c].deleted)
			}, func(s *commentState) { s.deleted = !s.deleted })...)
		default:
			if h.sticky {
				ws = append(ws, setAmount("cp", int64(50+rng.IntN(100))))
			}
		}
	}
	return ws
}

func TestCommentPinParity(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "comment_pin", steps: 40, gen: newPinHistory(false).gen,
		reference: upstreamCommentPinTick})
}

func TestCommentPinParitySticky(t *testing.T) {
	t.Parallel()
	// A loss needs an earned pin first: 60 steps make a history without one rare.
	runParity(t, paritySpec{rule: "comment_pin", steps: 60, gen: newPinHistory(true).gen,
		reference: upstreamCommentPinTick, takesAway: true})
}

func TestCommentPinCases(t *testing.T) {
	t.Parallel()
	const (
		owner, commenter = 900, 901
		track, other     = 9000, 9001
		c1, c2           = 1, 2
	)
	verified, unverified := userState{verified: true}, userState{}
	users := func(ownerState userState) []write {
		return []write{insertUser(owner, ownerState, "o"), insertUser(commenter, unverified, "c")}
	}
	on := func(user int64) commentState { return commentState{user: user, track: track} }
	pinned := func(c int64) trackState { return trackState{owner: owner, pinned: c} }
	// pin is one window: the users, comment c1 and track 9000 pinning it.
	pin := func(ownerState userState, c commentState, t trackState) []write {
		return slices.Concat(users(ownerState), []write{insertComment(c1, c), insertTrack(track, t, "a")})
	}
	// earned is the row of commenter 901 (0x385) on track 9000 (0x2328).
	earned := map[string]progress{"cp 385:2328": {User: commenter, Current: 1, Complete: true, Amount: 100}}

	runRuleCases(t, "comment_pin", []ruleCase{
		{
			name:  "verified owner pins another user's comment",
			steps: [][]write{pin(verified, on(commenter), pinned(c1))},
			want:  earned,
		},
		{
			name:  "self-pin earns nothing",
			steps: [][]write{pin(verified, on(owner), pinned(c1))},
		},
		{
			name:  "unverified owner earns nothing",
			steps: [][]write{pin(unverified, on(commenter), pinned(c1))},
		},
		{
			name:  "a deactivated verified owner still pays, as upstream",
			steps: [][]write{pin(userState{verified: true, deactivated: true}, on(commenter), pinned(c1))},
			want:  earned,
		},
		{
			name:  "a hidden comment still pays, as upstream",
			steps: [][]write{pin(verified, commentState{user: commenter, track: track, hidden: true}, pinned(c1))},
			want:  earned,
		},
		{
			name:  "deleted comment earns nothing",
			steps: [][]write{pin(verified, commentState{user: commenter, track: track, deleted: true}, pinned(c1))},
		},
		{
			name:  "deleted track earns nothing",
			steps: [][]write{pin(verified, on(commenter), trackState{owner: owner, pinned: c1, deleted: true})},
		},
		{
			name: "only the current track row counts",
			steps: [][]write{
				append(pin(verified, on(commenter), pinned(c1)), updateTrack(track, trackState{owner: owner}, "b")...),
			},
		},
		{
			name:  "only the owner's current row counts",
			steps: [][]write{append(pin(verified, on(commenter), pinned(c1)), updateUser(owner, unverified, "o2")...)},
		},
		{
			name:  "owner verified after the pin",
			steps: [][]write{pin(unverified, on(commenter), pinned(c1)), updateUser(owner, verified, "o2")},
			want:  earned,
		},
		{
			name: "pinned comment arrives after the pin",
			steps: [][]write{
				slices.Concat(users(verified), []write{insertTrack(track, pinned(c1), "a")}),
				{insertComment(c1, on(commenter))},
			},
			want: earned,
		},
		{
			name: "pinned comment undeleted",
			steps: [][]write{
				pin(verified, commentState{user: commenter, track: track, deleted: true}, pinned(c1)),
				{updateComment(c1, on(commenter))},
			},
			want: earned,
		},
		{
			name: "sticky: unpin, delete and unverify keep the row",
			steps: [][]write{
				pin(verified, on(commenter), pinned(c1)),
				updateTrack(track, trackState{owner: owner}, "b"),
				{updateComment(c1, commentState{user: commenter, track: track, deleted: true})},
				updateUser(owner, unverified, "o2"),
			},
			want: earned,
		},
		{
			name: "re-pin mints no second row",
			steps: [][]write{
				append(pin(verified, on(commenter), pinned(c1)), insertComment(c2, on(commenter))),
				updateTrack(track, trackState{owner: owner}, "b"),
				updateTrack(track, pinned(c1), "c"),
				updateTrack(track, pinned(c2), "d"),
			},
			want: earned,
		},
		{
			name: "a pin per track",
			steps: [][]write{append(pin(verified, on(commenter), pinned(c1)),
				insertComment(c2, commentState{user: commenter, track: other}),
				insertTrack(other, trackState{owner: owner, pinned: c2}, "a"))},
			want: map[string]progress{
				"cp 385:2328": earned["cp 385:2328"],
				"cp 385:2329": {User: commenter, Current: 1, Complete: true, Amount: 100},
			},
		},
		{
			name:     "inactive rule writes nothing",
			inactive: true,
			steps:    [][]write{pin(verified, on(commenter), pinned(c1))},
		},
	})
}
