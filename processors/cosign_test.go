package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamCosignTick is CosignProcessor.Reconcile (the incremental version): every current
// track repost and save above the checkpoint (5,000 at most), in blocknumber order, joined to
// the cosign chain; each cosign paid unless its row exists or the artist's cosign rows of the
// last 30 days number 5. The test breaks upstream's ties in block order by artist and remix,
// as the sidecar does.
func upstreamCosignTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "cs")
	if err != nil || !ok {
		return err
	}
	prev, err := upstreamReadCheckpoint(ctx, tx, processors.CosignCheckpoint)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `
SELECT da.blocknumber::bigint, da.actor_id::bigint, child.owner_id::bigint, r.child_track_id::bigint,
       (parent.track_id IS NOT NULL AND child.track_id IS NOT NULL AND u.user_id IS NOT NULL)
FROM (SELECT user_id AS actor_id, repost_item_id AS track_id, blocknumber FROM reposts
      WHERE blocknumber > $1 AND is_current AND NOT is_delete AND repost_type = 'track'
      UNION ALL
      SELECT user_id, save_item_id, blocknumber FROM saves
      WHERE blocknumber > $1 AND is_current AND NOT is_delete AND save_type = 'track') da
LEFT JOIN remixes r ON r.child_track_id = da.track_id
LEFT JOIN tracks parent ON parent.track_id = r.parent_track_id AND parent.is_current = true AND parent.owner_id = da.actor_id
LEFT JOIN tracks child ON child.track_id = r.child_track_id AND child.is_current = true
LEFT JOIN users u ON u.user_id = da.actor_id AND u.is_current = true AND u.is_verified = true
ORDER BY da.blocknumber ASC, da.actor_id, r.child_track_id LIMIT $2`, prev, 5000)
	if err != nil {
		return err
	}
	type action struct {
		Block, Actor   int64
		Remixer, Remix *int64
		IsCosign       bool
	}
	actions, err := pgx.CollectRows(rows, pgx.RowToStructByPos[action])
	if err != nil || len(actions) == 0 {
		return err
	}
	maxBlock := prev
	for _, a := range actions {
		maxBlock = max(maxBlock, a.Block)
		if !a.IsCosign || a.Remixer == nil || a.Remix == nil {
			continue
		}
		specifier := fmt.Sprintf("%x:%x", a.Actor, *a.Remix)
		var have bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM user_challenges WHERE challenge_id = 'cs' AND specifier = $1)`,
			specifier).Scan(&have); err != nil {
			return err
		}
		if have {
			continue
		}
		var recent int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM user_challenges WHERE challenge_id = 'cs' AND specifier LIKE $1
			AND created_at >= now() - INTERVAL '30 days'`, fmt.Sprintf("%x:", a.Actor)+"%").Scan(&recent); err != nil {
			return err
		}
		if recent >= 5 {
			continue
		}
		if err := upstreamUpsert(ctx, tx, "cs", specifier, *a.Remixer, 1, 1, amount); err != nil {
			return err
		}
	}
	next := maxBlock
	if len(actions) >= 5000 && maxBlock-1 > prev {
		next = maxBlock - 1
	}
	if next <= prev {
		return nil
	}
	return upstreamWriteCheckpoint(ctx, tx, processors.CosignCheckpoint, next)
}

// cosignHistory: verified artists 800 (three parent tracks with many remixes: its cosigns run
// into the cap) and 801, unverified 802, remixers 900–902 and a fan 950 repost and save remixes
// and other tracks. Each action is new (a user's second repost of a track would move it to a
// later block, and one tick over the final state would then walk the cosigns in another order
// than the ticks did, so the cap would pick others). Sticky, 801 (three remixes, never near
// the cap) also undoes its actions.
type cosignHistory struct {
	sticky  bool
	block   int64
	txhash  int
	done    map[[3]any]bool // table, user, track
	actions [][3]any        // 801's, to undo
}

const (
	cosignRemixes = 24  // remix tracks 100..123
	cosignOther   = 200 // a track that is no remix
)

func (h *cosignHistory) setup() []write {
	ws := []write{
		insertUser(800, userState{verified: true}, "a"), insertUser(801, userState{verified: true}, "a"),
		insertUser(802, userState{}, "a"), insertUser(950, userState{}, "a"),
	}
	parents := map[int64]int64{1: 800, 2: 800, 3: 800, 4: 801, 5: 802}
	for id := int64(1); id <= 5; id++ {
		ws = append(ws, track(id, parents[id], 0, publicTrack))
	}
	ws = append(ws, track(cosignOther, 900, 0, publicTrack))
	for i := range int64(cosignRemixes) {
		id := 100 + i
		ws = append(ws, track(id, 900+i%3, 0, publicTrack),
			write{sql: `INSERT INTO remixes (parent_track_id, child_track_id) VALUES ($1, $2)`, args: []any{1 + i%5, id}})
		if i%7 == 0 { // a second parent
			ws = append(ws, write{sql: `INSERT INTO remixes (parent_track_id, child_track_id) VALUES ($1, $2)`, args: []any{1 + (i+1)%5, id}})
		}
	}
	return ws
}

// act is a repost or save (table) of track by user at the current block, versioned in place: an
// earlier row of the same action stops being current.
func (h *cosignHistory) act(table string, user, track int64, deleted bool) []write {
	item, kind := "repost_item_id", "repost_type"
	if table == "saves" {
		item, kind = "save_item_id", "save_type"
	}
	h.txhash++
	return []write{
		{
			sql:    `UPDATE ` + table + ` SET is_current = false WHERE user_id = $1 AND ` + item + ` = $2 AND is_current`,
			args:   []any{user, track},
			change: nil, // the old version's block was applied; a real stream carries it too, to no effect
		},
		{
			sql: `INSERT INTO ` + table + ` (user_id, ` + item + `, ` + kind + `, blocknumber, is_current, is_delete, created_at, txhash)
				VALUES ($1, $2, 'track', $3, true, $4, now(), $5)`,
			args:   []any{user, track, h.block, deleted, fmt.Sprint("tx", h.txhash)},
			change: &change{table: table, op: processors.Insert, cols: map[string]int64{"blocknumber": h.block}},
		},
	}
}

func (h *cosignHistory) gen(rng *rand.Rand, step int) []write {
	var ws []write
	if step == 0 {
		ws = h.setup()
		h.done = map[[3]any]bool{}
	}
	h.block++
	if h.sticky && step == 30 { // whatever the seed, 801 takes every cosign back once
		for _, a := range h.actions {
			ws = append(ws, h.act(a[0].(string), a[1].(int64), a[2].(int64), true)...)
		}
		return ws
	}
	for range 1 + rng.IntN(3) {
		table := []string{"reposts", "saves"}[rng.IntN(2)]
		user, track := int64(800), 100+rng.Int64N(cosignRemixes)
		switch n := rng.IntN(10); {
		case n < 5:
		case n < 7:
			user, track = 801, []int64{103, 108, 113}[rng.IntN(3)]
		case n < 8:
			user = []int64{802, 950}[rng.IntN(2)]
		case n < 9:
			track = cosignOther
		case h.sticky && len(h.actions) > 0:
			a := h.actions[rng.IntN(len(h.actions))]
			ws = append(ws, h.act(a[0].(string), a[1].(int64), a[2].(int64), true)...)
			continue
		default:
			continue
		}
		a := [3]any{table, user, track}
		if h.done[a] {
			continue
		}
		h.done[a] = true
		if user == 801 {
			h.actions = append(h.actions, a)
		}
		ws = append(ws, h.act(table, user, track, false)...)
	}
	return ws
}

func TestCosignParity(t *testing.T) {
	t.Parallel()
	for _, sticky := range []bool{false, true} {
		t.Run(fmt.Sprintf("sticky=%v", sticky), func(t *testing.T) {
			t.Parallel()
			h := &cosignHistory{sticky: sticky}
			// Upstream's scan reads only current, live track actions, so its checkpoint stops at
			// the last of them; the stream's follows every reposts and saves change.
			runParity(t, paritySpec{rule: "cosign", steps: 40, gen: h.gen, reference: upstreamCosignTick,
				takesAway: sticky, checkpointAhead: true})
		})
	}
}

func TestCosignCases(t *testing.T) {
	t.Parallel()
	h := &cosignHistory{}
	setup := h.setup()
	at := func(block int64, table string, user, track int64) []write {
		h.block = block
		return h.act(table, user, track, false)
	}
	cosigned := func(remix int64, remixer int64) (string, progress) {
		return fmt.Sprintf("cs 320:%x", remix), progress{User: remixer, Current: 1, Complete: true, Amount: 1}
	}
	k100, p100 := cosigned(100, 900)
	var sixCosigns []write
	want := map[string]progress{}
	for i, remix := range []int64{100, 105, 110, 115, 120, 102} { // parents 1, 1, 1, 1, 1, 3: all 800's
		sixCosigns = append(sixCosigns, at(int64(10+i), "reposts", 800, remix)...)
		if i < 5 {
			k, p := cosigned(remix, 900+(remix-100)%3)
			want[k] = p
		}
	}
	runRuleCases(t, "cosign", []ruleCase{
		{name: "the artist's repost of a remix pays the remixer", steps: [][]write{setup, at(10, "reposts", 800, 100)}, want: rowsOf(k100, p100)},
		{name: "a save counts too", steps: [][]write{setup, at(10, "saves", 800, 100)}, want: rowsOf(k100, p100)},
		{name: "an unverified artist's repost pays nothing", steps: [][]write{setup, at(10, "reposts", 802, 104)}},
		{name: "a fan's repost pays nothing", steps: [][]write{setup, at(10, "reposts", 950, 100)}},
		{name: "a repost of another artist's remix pays nothing", steps: [][]write{setup, at(10, "reposts", 800, 103)}},
		{name: "a repost of a track that is no remix pays nothing", steps: [][]write{setup, at(10, "reposts", 800, cosignOther)}},
		{
			name:  "repost and save of the same remix pay once",
			steps: [][]write{setup, at(10, "reposts", 800, 100), at(11, "saves", 800, 100)},
			want:  rowsOf(k100, p100),
		},
		{name: "five cosigns an artist in 30 days, the sixth waits", steps: [][]write{setup, sixCosigns}, want: want},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{setup, at(10, "reposts", 800, 100)}},
	})
}
