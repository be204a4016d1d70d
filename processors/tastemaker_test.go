package processors_test

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// tastemakerReference is upstream's TastemakerProcessor.Reconcile written out: the top 10 of
// the weekly ranking, then per track the union of the earliest 10 reposters and the earliest
// 10 savers, one UpsertUserChallenge per user. The ORDER BYs carry the rule's tie-breakers
// (track_id, user_id), without which upstream's result at a tie is whatever the executor
// returns; gen writes no ties, so they only make the focused tests' ties comparable.
func tastemakerReference(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "t")
	if err != nil || !ok {
		return err
	}
	rows, err := tx.Query(ctx, `
		SELECT track_id
		FROM track_trending_scores
		WHERE type = 'TRACKS' AND version = 'pnagD' AND time_range = 'week'
		ORDER BY score DESC NULLS LAST, track_id
		LIMIT $1`, 10)
	if err != nil {
		return err
	}
	tracks, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, track := range tracks {
		rows, err := tx.Query(ctx, `
			(
				SELECT user_id FROM reposts
				WHERE is_current = true AND is_delete = false
				  AND repost_type = 'track' AND repost_item_id = $1
				ORDER BY created_at ASC, user_id
				LIMIT $2
			)
			UNION
			(
				SELECT user_id FROM saves
				WHERE is_current = true AND is_delete = false
				  AND save_type = 'track' AND save_item_id = $1
				ORDER BY created_at ASC, user_id
				LIMIT $2
			)`, track, 10)
		if err != nil {
			return err
		}
		users, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		for _, u := range users {
			if err := upstreamUpsert(ctx, tx, "t", fmt.Sprintf("%x:t:%x", u, track), u, 1, 1, amount); err != nil {
				return err
			}
		}
	}
	return nil
}

// tmScore upserts a track's row of a trending ranking, as the trending job does. op is the
// change the stream sees: the upsert inserts or updates.
func tmScore(track int64, typ, version, timeRange string, score float64, op processors.Op) write {
	return write{
		sql: `INSERT INTO track_trending_scores (track_id, type, version, time_range, score, created_at)
			VALUES ($1, $2, $3, $4, $5, '2025-03-01')
			ON CONFLICT (track_id, type, version, time_range) DO UPDATE SET score = EXCLUDED.score`,
		args:   []any{track, typ, version, timeRange, score},
		change: &change{table: "track_trending_scores", op: op, cols: map[string]int64{"track_id": track}},
	}
}

// tmWeekly upserts a track's row of the ranking the rule reads. The rule subscribes to both
// operations, so the focused tests need not tell them apart.
func tmWeekly(track int64, score float64) write {
	return tmScore(track, "TRACKS", "pnagD", "week", score, processors.Update)
}

// tmDropScore deletes a track's weekly row: the publication does not carry it.
func tmDropScore(track int64) write {
	return write{
		sql: `DELETE FROM track_trending_scores
			WHERE track_id = $1 AND type = 'TRACKS' AND version = 'pnagD' AND time_range = 'week'`,
		args: []any{track},
	}
}

// tmAction is one repost or save (table "reposts" or "saves") of an item of a kind
// ("track", "playlist", "album") at a time, or its undoing.
type tmAction struct {
	table   string
	kind    string
	user    int64
	item    int64
	at      string
	txhash  string
	undo    bool
	replace bool // a current row exists and is versioned away first
}

// writes versions the row the way the indexer does: the current row, if any, becomes
// historical, and a new current row records the action (is_delete for an undo).
func (a tmAction) writes() []write {
	itemCol, typeCol, enum := "repost_item_id", "repost_type", "reposttype"
	if a.table == "saves" {
		itemCol, typeCol, enum = "save_item_id", "save_type", "savetype"
	}
	cols := map[string]int64{itemCol: a.item, "user_id": a.user}
	var ws []write
	if a.replace {
		ws = append(ws, write{
			sql: fmt.Sprintf(`UPDATE %s SET is_current = false
				WHERE user_id = $1 AND %s = $2 AND %s = $3::text::%s AND is_current`,
				a.table, itemCol, typeCol, enum),
			args:   []any{a.user, a.item, a.kind},
			change: &change{table: a.table, op: processors.Update, cols: cols},
		})
	}
	return append(ws, write{
		sql: fmt.Sprintf(`INSERT INTO %s (user_id, %s, %s, is_current, is_delete, created_at, txhash)
			VALUES ($1, $2, $3::text::%s, true, $4, $5::text::timestamp, $6)`,
			a.table, itemCol, typeCol, enum),
		args:   []any{a.user, a.item, a.kind, a.undo, a.at, a.txhash},
		change: &change{table: a.table, op: processors.Insert, cols: cols},
	})
}

// tmGen writes a random history over candidate tracks 1..tmCandidates, about half of which
// are in the weekly ranking at a time, so that scores moving in every step push tracks in
// and out of the top 10. Scores and created_at are never equal, so that upstream's
// unordered ties never decide.
//
// The harness also derives the whole history once from scratch and wants upstream's
// accumulated rows. Rows are sticky and the ranking moves, so that only holds for a history
// whose last state still earns every row ever earned. gen keeps to such histories without
// losing the cases that matter to the stream:
//   - only the hot tracks (1..tmHot) have track reposts and saves; the cold ones move in and
//     out of the top 10 and push hot tracks out, and the last step puts every hot track on
//     top;
//   - created_at only grows, so a live row among a track's earliest 10 stays there;
//   - gen models the rule to know who has earned, and undoes a row of an earner only while
//     the user's other row (save or repost) of the track keeps them among the earliest 10.
//     Undoing rows of users who have not earned (yet) still lets the 11th in, whether the
//     track is in the top 10 then or enters later.
type tmGen struct {
	steps   int
	weekly  map[int64]float64 // the weekly ranking
	others  map[string]bool   // rows of other rankings
	used    map[float64]bool  // weekly scores ever written
	current map[tmActionKey]bool
	live    map[tmList][]int64 // live users of a hot track, by created_at
	earned  map[[2]int64]bool  // (user, track)
	clock   int
	tx      int
}

// tmActionKey is one user's versioned row of an item; tmGen.current says whether its current
// version is live (not an undo).
type tmActionKey struct {
	table, kind string
	user, item  int64
}

type tmList struct {
	table string
	track int64
}

const (
	tmCandidates = 20
	tmHot        = 9
	tmUsers      = 30
)

func newTMGen(steps int) *tmGen {
	return &tmGen{steps: steps, weekly: map[int64]float64{}, others: map[string]bool{}, used: map[float64]bool{},
		current: map[tmActionKey]bool{}, live: map[tmList][]int64{}, earned: map[[2]int64]bool{}}
}

// tmAt is a created_at seconds after the start of the history.
func tmAt(seconds int) string {
	return time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(seconds) * time.Second).
		Format("2006-01-02 15:04:05")
}

func (g *tmGen) setScore(track int64, score float64) write {
	op := processors.Update
	if _, ok := g.weekly[track]; !ok {
		op = processors.Insert
	}
	g.weekly[track], g.used[score] = score, true
	return tmScore(track, "TRACKS", "pnagD", "week", score, op)
}

// randomScore gives the track a new score below limit (in hundredths).
func (g *tmGen) randomScore(rng *rand.Rand, track int64, limit int) write {
	for {
		s := float64(rng.IntN(limit)) / 100
		if !g.used[s] {
			return g.setScore(track, s)
		}
	}
}

// move moves a random track anywhere, or drops one of the top 10 below the 11th, which
// then enters the top 10 with no change on its own rows.
func (g *tmGen) move(rng *rand.Rand) (int64, write) {
	ranked := g.ranked()
	// Below 10.00 the free scores may run out.
	if len(ranked) > 10 && g.weekly[ranked[10]] >= 10 && rng.IntN(2) == 0 {
		track := ranked[rng.IntN(10)]
		return track, g.randomScore(rng, track, int(g.weekly[ranked[10]]*100))
	}
	track := int64(rng.IntN(tmCandidates)) + 1
	return track, g.randomScore(rng, track, 100000)
}

// ranked is the model's weekly ranking, with the rule's tie-breaker (there are no ties).
func (g *tmGen) ranked() []int64 {
	tracks := slices.Collect(maps.Keys(g.weekly))
	slices.SortFunc(tracks, func(a, b int64) int {
		return cmp.Or(cmp.Compare(g.weekly[b], g.weekly[a]), cmp.Compare(a, b))
	})
	return tracks
}

func (g *tmGen) top() []int64 { r := g.ranked(); return r[:min(10, len(r))] }

// outside lists the hot tracks outside the top 10.
func (g *tmGen) outside() []int64 {
	top := g.top()
	var out []int64
	for track := int64(1); track <= tmHot; track++ {
		if !slices.Contains(top, track) {
			out = append(out, track)
		}
	}
	return out
}

func (g *tmGen) earliest(table string, track, user int64) bool {
	l := g.live[tmList{table, track}]
	return slices.Contains(l[:min(10, len(l))], user)
}

// tick records who earns in the state the step leaves, as upstream's tick does after it.
func (g *tmGen) tick() {
	for _, track := range g.top() {
		for _, table := range []string{"reposts", "saves"} {
			l := g.live[tmList{table, track}]
			for _, u := range l[:min(10, len(l))] {
				g.earned[[2]int64{u, track}] = true
			}
		}
	}
}

// action makes or undoes a repost or save, or nothing when the undo would lose a row.
func (g *tmGen) action(rng *rand.Rand) []write {
	k := tmActionKey{table: "reposts", kind: "track", user: int64(rng.IntN(tmUsers)) + 1}
	// Low ids more often, so that some tracks collect more than ten reposters or savers; and
	// often a hot track outside the top 10, which earns nothing yet: its users earn when it
	// enters, by a change of its own score or of another's.
	k.item = int64(min(rng.IntN(tmHot), rng.IntN(tmHot), rng.IntN(tmHot))) + 1
	if out := g.outside(); len(out) > 0 && rng.IntN(2) == 0 {
		k.item = out[rng.IntN(len(out))]
	}
	if rng.IntN(2) == 0 {
		k.table = "saves"
	}
	if rng.IntN(7) == 0 {
		// Playlists and albums share the id space with tracks: playlist 3 is not track 3.
		k.kind = []string{"playlist", "album"}[rng.IntN(2)]
		k.item = int64(rng.IntN(tmCandidates)) + 1
	}
	if rng.IntN(4) == 0 {
		// A pick of user and item seldom hits a live row: undo one picked among them.
		var live []tmActionKey
		for key, ok := range g.current {
			if ok {
				live = append(live, key)
			}
		}
		if len(live) > 0 {
			slices.SortFunc(live, func(a, b tmActionKey) int {
				return cmp.Or(cmp.Compare(a.table, b.table), cmp.Compare(a.kind, b.kind),
					cmp.Compare(a.user, b.user), cmp.Compare(a.item, b.item))
			})
			k = live[rng.IntN(len(live))]
		}
	}
	live, exists := g.current[k]
	other := map[string]string{"reposts": "saves", "saves": "reposts"}[k.table]
	if live && k.kind == "track" && g.earned[[2]int64{k.user, k.item}] && !g.earliest(other, k.item, k.user) {
		return nil
	}
	g.clock += 1 + rng.IntN(600)
	g.tx++
	g.current[k] = !live
	if k.kind == "track" {
		l := tmList{k.table, k.item}
		if live {
			g.live[l] = slices.DeleteFunc(g.live[l], func(u int64) bool { return u == k.user })
		} else {
			g.live[l] = append(g.live[l], k.user)
		}
	}
	return tmAction{table: k.table, kind: k.kind, user: k.user, item: k.item, at: tmAt(g.clock),
		txhash: fmt.Sprintf("tx%d", g.tx), undo: live, replace: exists}.writes()
}

func (g *tmGen) gen(rng *rand.Rand, step int) []write {
	defer g.tick()
	var ws []write
	if step == 0 {
		for _, track := range rng.Perm(tmCandidates)[:12] {
			ws = append(ws, g.randomScore(rng, int64(track)+1, 100000))
		}
	}
	if step == g.steps-1 {
		for track := int64(1); track <= tmHot; track++ {
			ws = append(ws, g.setScore(track, float64(2000+track)))
		}
		return ws
	}
	if rng.IntN(3) > 0 {
		moved := map[int64]bool{}
		for range 1 + rng.IntN(3) {
			track, w := g.move(rng)
			moved[track] = true
			ws = append(ws, w)
		}
		// The trending job deletes dropped rows in the run that rewrites the others, so a
		// delete travels with a change the stream sees.
		if rng.IntN(4) == 0 {
			var gone []int64
			for track := range g.weekly {
				if !moved[track] {
					gone = append(gone, track)
				}
			}
			if len(gone) > 0 {
				slices.Sort(gone)
				track := gone[rng.IntN(len(gone))]
				ws = append(ws, tmDropScore(track))
				delete(g.weekly, track)
			}
		}
	}
	if rng.IntN(4) == 0 {
		// Other rankings outscore every weekly track: they must not count.
		other := [][3]string{{"UNDERGROUND_TRACKS", "pnagD", "week"}, {"TRACKS", "ML51L", "week"},
			{"TRACKS", "pnagD", "month"}, {"TRACKS", "pnagD", "allTime"}}[rng.IntN(4)]
		track := int64(rng.IntN(tmCandidates)) + 1
		key := fmt.Sprint(track, other)
		op := processors.Update
		if !g.others[key] {
			op = processors.Insert
		}
		g.others[key] = true
		ws = append(ws, tmScore(track, other[0], other[1], other[2], 5000+float64(step), op))
	}
	for range 4 + rng.IntN(8) {
		ws = append(ws, g.action(rng)...)
	}
	return ws
}

func TestTastemakerParity(t *testing.T) {
	t.Parallel()
	const steps = 40
	runParity(t, paritySpec{rule: "tastemaker", steps: steps, gen: newTMGen(steps).gen, reference: tastemakerReference})
}

// tmHost is a host database with every rule active, written through the same writes as the
// parity test and flushed with the dirty keys the stream would see.
type tmHost struct {
	*fixture
	rule processors.Rule
	tx   int
	sec  int
}

func newTMHost(t *testing.T) *tmHost {
	t.Helper()
	f := setup(t)
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	h := &tmHost{fixture: f, rule: ruleNamed(t, "tastemaker")}
	// The first window derives the rule from scratch; the tests start from there.
	h.flush()
	return h
}

// apply commits the writes as one source transaction and flushes their dirty keys.
func (h *tmHost) apply(ws ...write) processors.WindowResult {
	h.t.Helper()
	h.runWrites(ws)
	return h.applyKeys(h.rule.Name, dirtyKeys(h.rule, ws))
}

func (h *tmHost) flush() { h.t.Helper(); h.applyKeys(h.rule.Name, nil) }

// act is a repost or save (or its undoing) by user of item; each one is later than the last
// unless at is given.
func (h *tmHost) act(table, kind string, user, item int64, undo bool, at ...string) []write {
	h.tx++
	h.sec++
	when := tmAt(h.sec)
	if len(at) > 0 {
		when = at[0]
	}
	return tmAction{table: table, kind: kind, user: user, item: item, at: when,
		txhash: fmt.Sprintf("h%d", h.tx), undo: undo, replace: undo}.writes()
}

func (h *tmHost) repost(user, track int64, at ...string) []write {
	return h.act("reposts", "track", user, track, false, at...)
}

func (h *tmHost) save(user, track int64) []write { return h.act("saves", "track", user, track, false) }

// earned lists the t specifiers stored, sorted.
func (h *tmHost) earned() []string {
	h.t.Helper()
	var specs []string
	for k, r := range h.ruleRows(h.rule) {
		require.True(h.t, r.Complete, k)
		require.Equal(h.t, int64(100), r.Amount, k)
		require.Equal(h.t, int64(1), r.Current, k)
		_, spec, _ := cutSpace(k)
		specs = append(specs, spec)
	}
	slices.Sort(specs)
	return specs
}

func tmSpecs(pairs ...[2]int64) []string {
	specs := make([]string, 0, len(pairs))
	for _, p := range pairs {
		specs = append(specs, fmt.Sprintf("%x:t:%x", p[0], p[1]))
	}
	slices.Sort(specs)
	return specs
}

// A track enters the top 10 because another track's score fell: nothing changes on its own
// rows, and its tastemakers earn all the same. The track that left keeps its rows.
func TestTastemakerEntersWhenAnotherDrops(t *testing.T) {
	t.Parallel()
	h := newTMHost(t)
	var ws []write
	for track := int64(1); track <= 9; track++ {
		ws = append(ws, tmWeekly(track, float64(200-track)))
	}
	// Tracks 10 and 11 tie for 10th place: the lower track id is in, whichever row came first.
	ws = append(ws, tmWeekly(11, 100), tmWeekly(10, 100), tmWeekly(12, 99))
	ws = append(ws, h.repost(101, 1)...)
	ws = append(ws, h.repost(110, 10)...)
	ws = append(ws, h.save(111, 11)...)
	ws = append(ws, h.repost(112, 12)...)
	h.apply(ws...)
	require.Equal(t, tmSpecs([2]int64{101, 1}, [2]int64{110, 10}), h.earned())

	h.apply(tmWeekly(1, 10))
	require.Equal(t, tmSpecs([2]int64{101, 1}, [2]int64{110, 10}, [2]int64{111, 11}), h.earned(),
		"track 11 entered when track 1 fell; track 1 keeps its row")

	// Another ranking outscoring the whole week is not the week.
	h.apply(tmScore(12, "TRACKS", "pnagD", "month", 1e6, processors.Insert))
	require.Equal(t, tmSpecs([2]int64{101, 1}, [2]int64{110, 10}, [2]int64{111, 11}), h.earned())
}

// Rows are sticky: a track that left the top 10 keeps its rows, and a repost on it earns
// nothing more.
func TestTastemakerLeavingKeepsRows(t *testing.T) {
	t.Parallel()
	h := newTMHost(t)
	ws := []write{tmWeekly(1, 50)}
	for track := int64(2); track <= 11; track++ {
		ws = append(ws, tmWeekly(track, float64(track)))
	}
	ws = append(ws, h.repost(201, 1)...)
	ws = append(ws, h.save(202, 1)...)
	h.apply(ws...)
	want := tmSpecs([2]int64{201, 1}, [2]int64{202, 1})
	require.Equal(t, want, h.earned())

	h.apply(tmWeekly(1, 0.5))
	require.Equal(t, want, h.earned(), "left the top 10")
	h.apply(h.repost(203, 1)...)
	require.Equal(t, want, h.earned(), "a repost on a track outside the top 10")

	// The trending job deletes the row: not streamed, and nothing to undo anyway.
	h.apply(tmDropScore(1))
	h.flush()
	require.Equal(t, want, h.earned())
}

// Only the earliest 10 reposters earn; a created_at tie at the edge goes to the lower user
// id; a repost indexed late with an early created_at still counts; an early reposter who
// undoes keeps the row and lets the next one in.
func TestTastemakerEarliestTen(t *testing.T) {
	t.Parallel()
	h := newTMHost(t)
	ws := []write{tmWeekly(7, 1)}
	var want [][2]int64
	for user := int64(301); user <= 309; user++ {
		ws = append(ws, h.repost(user, 7)...)
		want = append(want, [2]int64{user, 7})
	}
	// 311 and 310 repost at the same instant, 311 first: 310 is the tenth.
	ws = append(ws, h.repost(311, 7, "2025-03-01 12:00")...)
	ws = append(ws, h.repost(310, 7, "2025-03-01 12:00")...)
	ws = append(ws, h.repost(312, 7, "2025-03-01 13:00")...)
	want = append(want, [2]int64{310, 7})
	h.apply(ws...)
	require.Equal(t, tmSpecs(want...), h.earned(), "the 11th reposter earns nothing")

	h.apply(h.repost(300, 7, "2025-02-01")...)
	want = append(want, [2]int64{300, 7})
	require.Equal(t, tmSpecs(want...), h.earned(), "indexed late, reposted first")

	// Two undos move 310 back into the earliest 10 and let 311 in; 312 stays out.
	h.apply(h.act("reposts", "track", 303, 7, true)...)
	h.apply(h.act("reposts", "track", 305, 7, true)...)
	want = append(want, [2]int64{311, 7})
	require.Equal(t, tmSpecs(want...), h.earned(), "undone reposts keep their rows and let the next in")
}

// The earliest 10 reposters and the earliest 10 savers are two lists: a user on both gets one
// row and takes a place in each. Playlists and albums with a top track's id do not count.
func TestTastemakerRepostersAndSavers(t *testing.T) {
	t.Parallel()
	h := newTMHost(t)
	ws := []write{tmWeekly(5, 1)}
	var want [][2]int64
	ws = append(ws, h.save(401, 5)...)
	for user := int64(401); user <= 410; user++ {
		ws = append(ws, h.repost(user, 5)...)
		want = append(want, [2]int64{user, 5})
	}
	for user := int64(421); user <= 430; user++ {
		ws = append(ws, h.save(user, 5)...)
		if user < 430 {
			want = append(want, [2]int64{user, 5})
		}
	}
	ws = append(ws, h.act("reposts", "playlist", 500, 5, false, "2025-01-01")...)
	ws = append(ws, h.act("saves", "album", 501, 5, false, "2025-01-01")...)
	ws = append(ws, h.act("reposts", "track", 502, 6, false, "2025-01-01")...)
	h.apply(ws...)
	require.Equal(t, tmSpecs(want...), h.earned(),
		"401 reposted and saved: one row, and the tenth saver (430) is pushed out")
}

// An inactive challenge keeps the rule held: no rows, whatever the history.
func TestTastemakerInactive(t *testing.T) {
	t.Parallel()
	f := setup(t)
	rule := ruleNamed(t, "tastemaker")
	ws := append([]write{tmWeekly(1, 1)}, tmAction{table: "reposts", kind: "track", user: 1, item: 1,
		at: "2025-03-01", txhash: "a"}.writes()...)
	f.runWrites(ws)
	res := f.applyKeys(rule.Name, dirtyKeys(rule, ws))
	require.Empty(t, f.ruleRows(rule))
	require.False(t, slices.ContainsFunc(res.Rules, func(r processors.RuleResult) bool { return r.Rule == rule.Name }))
}
