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

// pinHistory is the state of a random host history, with ids in creation order so that
// picks from the same seed are the same.
type pinHistory struct {
	rng                     *rand.Rand
	users, tracks, comments []int64
	user                    map[int64]userState
	track                   map[int64]trackState
	comment                 map[int64]commentState
	seq                     int
}

func (h *pinHistory) txhash(prefix string, id int64) string {
	h.seq++
	return fmt.Sprintf("%s%d-%d", prefix, id, h.seq)
}

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func (h *pinHistory) addUser() []write {
	id := int64(200 + 13*len(h.users))
	s := userState{verified: h.rng.IntN(2) == 0, deactivated: h.rng.IntN(8) == 0}
	h.users = append(h.users, id)
	h.user[id] = s
	return []write{insertUser(id, s, h.txhash("u", id))}
}

func (h *pinHistory) changeUser(flip func(*userState)) []write {
	id := pick(h.rng, h.users)
	s := h.user[id]
	flip(&s)
	h.user[id] = s
	return updateUser(id, s, h.txhash("u", id))
}

func (h *pinHistory) addTrack() []write {
	id := int64(4000 + 29*len(h.tracks))
	s := trackState{owner: pick(h.rng, h.users)}
	h.tracks = append(h.tracks, id)
	h.track[id] = s
	return []write{insertTrack(id, s, h.txhash("t", id))}
}

// liveTracks are the tracks not deleted; the platform never revives a deleted one.
func (h *pinHistory) liveTracks(pinned bool) []int64 {
	var out []int64
	for _, id := range h.tracks {
		if s := h.track[id]; !s.deleted && (!pinned || s.pinned != 0) {
			out = append(out, id)
		}
	}
	return out
}

func (h *pinHistory) changeTrack(live []int64, change func(*trackState)) []write {
	if len(live) == 0 {
		return nil
	}
	id := pick(h.rng, live)
	s := h.track[id]
	change(&s)
	h.track[id] = s
	return updateTrack(id, s, h.txhash("t", id))
}

func (h *pinHistory) addComment() []write {
	live := h.liveTracks(false)
	if len(live) == 0 {
		return nil
	}
	track := pick(h.rng, live)
	s := commentState{track: track, user: pick(h.rng, h.users)}
	if h.rng.IntN(3) == 0 {
		s.user = h.track[track].owner // a comment the owner may self-pin
	}
	id := int64(7000 + 11*len(h.comments))
	h.comments = append(h.comments, id)
	h.comment[id] = s
	return []write{insertComment(id, s)}
}

// pin pins one of the track's own comments, deleted ones and earlier pins included.
func (h *pinHistory) pin() []write {
	live := h.liveTracks(false)
	if len(live) == 0 {
		return nil
	}
	track := pick(h.rng, live)
	var own []int64
	for _, c := range h.comments {
		if h.comment[c].track == track {
			own = append(own, c)
		}
	}
	if len(own) == 0 {
		return nil
	}
	c := pick(h.rng, own)
	return h.changeTrack([]int64{track}, func(s *trackState) { s.pinned = c })
}

func (h *pinHistory) changeComment(ids []int64, change func(*commentState)) []write {
	if len(ids) == 0 {
		return nil
	}
	id := pick(h.rng, ids)
	s := h.comment[id]
	change(&s)
	h.comment[id] = s
	return []write{updateComment(id, s)}
}

func (h *pinHistory) step(step int) []write {
	var ws []write
	if step == 0 {
		for range 5 {
			ws = append(ws, h.addUser()...)
		}
		for range 3 {
			ws = append(ws, h.addTrack()...)
		}
	}
	for range 1 + h.rng.IntN(4) {
		switch n := h.rng.IntN(40); {
		case n < 3:
			ws = append(ws, h.addUser()...)
		case n < 8:
			ws = append(ws, h.changeUser(func(s *userState) { s.verified = !s.verified })...)
		case n < 10:
			ws = append(ws, h.changeUser(func(s *userState) { s.deactivated = !s.deactivated })...)
		case n < 13:
			ws = append(ws, h.addTrack()...)
		case n < 20:
			ws = append(ws, h.addComment()...)
		case n < 28:
			ws = append(ws, h.pin()...)
		case n < 31:
			ws = append(ws, h.changeTrack(h.liveTracks(true), func(s *trackState) { s.pinned = 0 })...)
		case n < 33:
			// A title edit: a new version with the same pin.
			ws = append(ws, h.changeTrack(h.liveTracks(false), func(*trackState) {})...)
		case n < 35:
			ws = append(ws, h.changeTrack(h.liveTracks(false), func(s *trackState) { s.deleted = true })...)
		case n < 37:
			var pinned []int64
			for _, t := range h.liveTracks(true) {
				pinned = append(pinned, h.track[t].pinned)
			}
			ws = append(ws, h.changeComment(pinned, func(s *commentState) { s.deleted = true })...)
		case n < 39:
			ws = append(ws, h.changeComment(h.comments, func(s *commentState) {
				s.deleted, s.hidden = h.rng.IntN(2) == 0, h.rng.IntN(2) == 0
			})...)
		default:
			ws = append(ws, setAmount("cp", int64(50+h.rng.IntN(100))))
		}
	}
	return ws
}

func TestCommentPinParity(t *testing.T) {
	t.Parallel()
	var h *pinHistory
	runParity(t, paritySpec{
		rule:  "comment_pin",
		steps: 40,
		gen: func(rng *rand.Rand, step int) []write {
			if h == nil {
				h = &pinHistory{rng: rng, user: map[int64]userState{}, track: map[int64]trackState{},
					comment: map[int64]commentState{}}
			}
			return h.step(step)
		},
		reference: upstreamCommentPinTick,
	})
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
	// earned is the row of commenter 901 (0x385) on track 9000 (0x2328).
	earned := map[string]progress{"cp 385:2328": {User: commenter, Current: 1, Complete: true, Amount: 100}}
	on := func(user int64) commentState { return commentState{user: user, track: track} }
	pinned := func(c int64) trackState { return trackState{owner: owner, pinned: c} }

	runRuleCases(t, "comment_pin", []ruleCase{
		{
			name:  "verified owner pins another user's comment",
			steps: [][]write{slices.Concat(users(verified), []write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")})},
			want:  earned,
		},
		{
			name:  "self-pin earns nothing",
			steps: [][]write{slices.Concat(users(verified), []write{insertComment(c1, on(owner)), insertTrack(track, pinned(c1), "a")})},
		},
		{
			name:  "unverified owner earns nothing",
			steps: [][]write{slices.Concat(users(unverified), []write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")})},
		},
		{
			name: "a deactivated verified owner still pays, as upstream",
			steps: [][]write{slices.Concat(users(userState{verified: true, deactivated: true}),
				[]write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")})},
			want: earned,
		},
		{
			name: "a hidden comment still pays, as upstream",
			steps: [][]write{slices.Concat(users(verified),
				[]write{insertComment(c1, commentState{user: commenter, track: track, hidden: true}), insertTrack(track, pinned(c1), "a")})},
			want: earned,
		},
		{
			name: "deleted comment earns nothing",
			steps: [][]write{slices.Concat(users(verified),
				[]write{insertComment(c1, commentState{user: commenter, track: track, deleted: true}), insertTrack(track, pinned(c1), "a")})},
		},
		{
			name: "deleted track earns nothing",
			steps: [][]write{slices.Concat(users(verified),
				[]write{insertComment(c1, on(commenter)), insertTrack(track, trackState{owner: owner, pinned: c1, deleted: true}, "a")})},
		},
		{
			name: "owner verified after the pin",
			steps: [][]write{
				slices.Concat(users(unverified), []write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")}),
				updateUser(owner, verified, "o2"),
			},
			want: earned,
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
				slices.Concat(users(verified), []write{insertComment(c1, commentState{user: commenter, track: track, deleted: true}),
					insertTrack(track, pinned(c1), "a")}),
				{updateComment(c1, on(commenter))},
			},
			want: earned,
		},
		{
			name: "sticky: unpin, delete and unverify keep the row",
			steps: [][]write{
				slices.Concat(users(verified), []write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")}),
				updateTrack(track, trackState{owner: owner}, "b"),
				{updateComment(c1, commentState{user: commenter, track: track, deleted: true})},
				updateUser(owner, unverified, "o2"),
			},
			want: earned,
		},
		{
			name: "re-pin mints no second row",
			steps: [][]write{
				slices.Concat(users(verified), []write{insertComment(c1, on(commenter)), insertComment(c2, on(commenter)),
					insertTrack(track, pinned(c1), "a")}),
				updateTrack(track, trackState{owner: owner}, "b"),
				updateTrack(track, pinned(c1), "c"),
				updateTrack(track, pinned(c2), "d"),
			},
			want: earned,
		},
		{
			name: "a pin per track",
			steps: [][]write{slices.Concat(users(verified), []write{
				insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a"),
				insertComment(c2, commentState{user: commenter, track: other}),
				insertTrack(other, trackState{owner: owner, pinned: c2}, "a"),
			})},
			want: map[string]progress{
				"cp 385:2328": earned["cp 385:2328"],
				"cp 385:2329": {User: commenter, Current: 1, Complete: true, Amount: 100},
			},
		},
		{
			name:     "inactive rule writes nothing",
			inactive: true,
			steps:    [][]write{slices.Concat(users(verified), []write{insertComment(c1, on(commenter)), insertTrack(track, pinned(c1), "a")})},
		},
	})
}
