package processors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// remixWinnerReference is the polling job's RemixContestWinnerProcessor tick (jobs/challenges/
// remix_contest_winner.go of AudiusProject/api) with the two corrections the sidecar makes on
// purpose: candidates in (contest, position in winners) order, where the job's query had no
// ORDER BY, and the specifier's contest read as hex, where the job cast it as decimal. The
// test ids keep contests below 10, where the two readings agree.
func remixWinnerReference(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "w")
	if err != nil || !ok {
		return err
	}
	rows, err := tx.Query(ctx, `
		SELECT e.event_id, e.user_id, t.owner_id
		FROM events e
		JOIN users u ON u.user_id = e.user_id AND u.is_current = true AND u.is_verified = true
		CROSS JOIN LATERAL jsonb_array_elements_text(COALESCE(e.event_data->'winners', '[]'::jsonb))
		    WITH ORDINALITY AS w(track_id_str, pos)
		JOIN tracks t ON t.track_id = w.track_id_str::int AND t.is_current = true AND t.is_delete = false
		WHERE e.event_type = 'remix_contest' AND e.is_deleted = false
		ORDER BY e.event_id, w.pos, t.owner_id`)
	if err != nil {
		return err
	}
	type winner struct{ contest, host, remixer int64 }
	var winners []winner
	var w winner
	if _, err := pgx.ForEachRow(rows, []any{&w.contest, &w.host, &w.remixer}, func() error {
		winners = append(winners, w)
		return nil
	}); err != nil {
		return err
	}
	perContest, perHost := map[int64]int{}, map[int64]int{}
	for _, w := range winners {
		spec := fmt.Sprintf("%x:%x", w.contest, w.remixer)
		var have bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM user_challenges
			WHERE challenge_id = 'w' AND specifier = $1)`, spec).Scan(&have); err != nil {
			return err
		}
		if have {
			continue
		}
		if _, ok := perContest[w.contest]; !ok {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM user_challenges
				WHERE challenge_id = 'w' AND specifier LIKE $1`, fmt.Sprintf("%x:%%", w.contest)).Scan(&n); err != nil {
				return err
			}
			perContest[w.contest] = n
		}
		if perContest[w.contest] >= 5 {
			continue
		}
		if _, ok := perHost[w.host]; !ok {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM user_challenges uc
				JOIN events e ON e.event_id = ('x' || lpad(split_part(uc.specifier, ':', 1), 8, '0'))::bit(32)::int
				WHERE uc.challenge_id = 'w' AND e.user_id = $1 AND uc.created_at >= now() - interval '7 days'`,
				w.host).Scan(&n); err != nil {
				return err
			}
			perHost[w.host] = n
		}
		if perHost[w.host] >= 5 {
			continue
		}
		if err := upstreamUpsert(ctx, tx, "w", spec, w.remixer, 1, 1, amount); err != nil {
			return err
		}
		perContest[w.contest]++
		perHost[w.host]++
	}
	return nil
}

// remixHistory generates the parity test's host history. The first steps lay down a fixed
// scene that reaches every cap (a contest with seven winners, a host with seven winners over
// two contests, an unverified host with winners); the rest is random.
type remixHistory struct {
	users     map[int64]*remixVersioned // hosts by id
	tracks    map[int64]*remixVersioned // by id; owner in the owner field
	contests  map[int64]*remixContest
	nextTrack int64
}

// remixVersioned is the live row of a versioned entity (users, tracks) and how many versions it
// has had, which names the next row's txhash.
type remixVersioned struct {
	versions int
	flag     bool // users: verified; tracks: deleted
	owner    int64
}

type remixContest struct {
	host    int64
	typ     string
	deleted bool
	winners []any // track ids, as JSON numbers or strings
}

const (
	remixFirstHost  = 11
	remixHosts      = 4 // 11..14
	remixFirstOwner = 101
	remixOwners     = 12 // 101..112
	remixMaxContest = 9  // 1..9: hex and decimal agree, which the job's count needs
)

func newRemixHistory() *remixHistory {
	return &remixHistory{
		users: map[int64]*remixVersioned{}, tracks: map[int64]*remixVersioned{},
		contests: map[int64]*remixContest{}, nextTrack: 201,
	}
}

func (h *remixHistory) user(id int64, verified bool) []write {
	u, ok := h.users[id]
	var ws []write
	if ok {
		ws = append(ws, write{
			sql:    `UPDATE users SET is_current = false WHERE user_id = $1 AND is_current`,
			args:   []any{id},
			change: &change{table: "users", op: processors.Update, cols: map[string]int64{"user_id": id}},
		})
	} else {
		u = &remixVersioned{}
		h.users[id] = u
	}
	u.versions++
	u.flag = verified
	return append(ws, write{
		sql: `INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, $2, $3, 'h')`,
		args:   []any{id, verified, fmt.Sprintf("u%d-%d", id, u.versions)},
		change: &change{table: "users", op: processors.Insert, cols: map[string]int64{"user_id": id}},
	})
}

func (h *remixHistory) track(id, owner int64, deleted bool) []write {
	tr, ok := h.tracks[id]
	var ws []write
	if ok {
		ws = append(ws, write{
			sql:    `UPDATE tracks SET is_current = false WHERE track_id = $1 AND is_current`,
			args:   []any{id},
			change: &change{table: "tracks", op: processors.Update, cols: map[string]int64{"track_id": id}},
		})
	} else {
		tr = &remixVersioned{}
		h.tracks[id] = tr
	}
	tr.versions++
	tr.flag, tr.owner = deleted, owner
	return append(ws, write{
		sql: `INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash, title)
			VALUES ($1, $2, true, $3, $4, 'remix')`,
		args:   []any{id, owner, deleted, fmt.Sprintf("t%d-%d", id, tr.versions)},
		change: &change{table: "tracks", op: processors.Insert, cols: map[string]int64{"track_id": id}},
	})
}

func (h *remixHistory) eventData(c *remixContest) string {
	if c.winners == nil {
		return `{"description": "no winners yet"}`
	}
	b, _ := json.Marshal(map[string]any{"winners": c.winners})
	return string(b)
}

func (h *remixHistory) contest(id, host int64, typ string, winners []any) write {
	c := &remixContest{host: host, typ: typ, winners: winners}
	h.contests[id] = c
	return write{
		sql: `INSERT INTO events (event_id, event_type, user_id, entity_type, entity_id, event_data)
			VALUES ($1, $2::event_type, $3, 'track', 1, $4::jsonb)`,
		args:   []any{id, typ, host, h.eventData(c)},
		change: &change{table: "events", op: processors.Insert, cols: map[string]int64{"event_id": id}},
	}
}

func (h *remixHistory) updateContest(id int64) write {
	c := h.contests[id]
	return write{
		sql:    `UPDATE events SET event_data = $2::jsonb, is_deleted = $3, updated_at = now() WHERE event_id = $1`,
		args:   []any{id, h.eventData(c), c.deleted},
		change: &change{table: "events", op: processors.Update, cols: map[string]int64{"event_id": id}},
	}
}

// remixWinnerID renders a track id as the platform has written winners: a number or a string.
func remixWinnerID(rng *rand.Rand, id int64) any {
	switch rng.IntN(6) {
	case 0:
		return strconv.FormatInt(id, 10)
	case 1:
		return " 0" + strconv.FormatInt(id, 10) // the job's ::int cast reads this as the id
	default:
		return id
	}
}

// remixSortedIDs returns the keys of m in order, so that a seeded run replays.
func remixSortedIDs[V any](m map[int64]V) []int64 {
	var ids []int64
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// winnerTrack is a track id for a winners list: mostly one that exists (deleted or not),
// sometimes one that does not exist yet.
func (h *remixHistory) winnerTrack(rng *rand.Rand) int64 {
	if ids := remixSortedIDs(h.tracks); len(ids) > 0 && rng.IntN(6) > 0 {
		return ids[rng.IntN(len(ids))]
	}
	return h.nextTrack + int64(rng.IntN(3))
}

func (h *remixHistory) step(rng *rand.Rand, step int) []write {
	var ws []write
	owner := func(i int) int64 { return remixFirstOwner + int64(i%remixOwners) }
	switch step {
	case 0:
		ws = append(ws, h.user(11, true)...)
		ws = append(ws, h.user(12, false)...)
		ws = append(ws, h.user(13, true)...)
		for i := range 10 {
			ws = append(ws, h.track(h.nextTrack, owner(i), false)...)
			h.nextTrack++
		}
		return ws
	case 1: // seven winners: the contest cap takes five, in winners order
		return []write{h.contest(1, 11, "remix_contest",
			[]any{int64(207), "201", int64(206), int64(202), "205", int64(203), int64(204)})}
	case 2: // host 13: four winners here and three in contest 3 exceed its week
		return []write{
			h.contest(2, 13, "remix_contest", []any{int64(208), int64(209), "210", int64(201)}),
			h.contest(3, 13, "remix_contest", []any{int64(202), int64(203), int64(204)}),
		}
	case 3: // an unverified host's winners, and an event that is not a contest
		return []write{
			h.contest(4, 12, "remix_contest", []any{int64(205), int64(206)}),
			h.contest(5, 11, "live_event", []any{int64(208)}),
		}
	}
	for range 1 + rng.IntN(3) {
		switch rng.IntN(10) {
		case 0: // a host appears, or changes verification
			id := remixFirstHost + int64(rng.IntN(remixHosts))
			verified := rng.IntN(3) > 0
			if u, ok := h.users[id]; ok {
				verified = !u.flag
			}
			ws = append(ws, h.user(id, verified)...)
		case 1, 2: // a new remix
			ws = append(ws, h.track(h.nextTrack, owner(rng.IntN(remixOwners)), false)...)
			h.nextTrack++
		case 3: // a remix deleted, or restored
			ids := remixSortedIDs(h.tracks)
			id := ids[rng.IntN(len(ids))]
			tr := h.tracks[id]
			ws = append(ws, h.track(id, tr.owner, !tr.flag)...)
		case 4, 5: // a new contest, maybe with winners, maybe by a host with no users row yet
			var free []int64
			for id := int64(1); id <= remixMaxContest; id++ {
				if _, ok := h.contests[id]; !ok {
					free = append(free, id)
				}
			}
			if len(free) == 0 {
				continue
			}
			var winners []any
			if rng.IntN(2) == 0 {
				for range 1 + rng.IntN(3) {
					winners = append(winners, remixWinnerID(rng, h.winnerTrack(rng)))
				}
			}
			typ := "remix_contest"
			if rng.IntN(8) == 0 {
				typ = "new_release"
			}
			ws = append(ws, h.contest(free[rng.IntN(len(free))], remixFirstHost+int64(rng.IntN(remixHosts)), typ, winners))
		case 6, 7, 8: // winners announced or extended
			ids := remixSortedIDs(h.contests)
			id := ids[rng.IntN(len(ids))]
			c := h.contests[id]
			if c.winners == nil {
				c.winners = []any{}
			}
			for range 1 + rng.IntN(3) {
				c.winners = append(c.winners, remixWinnerID(rng, h.winnerTrack(rng)))
			}
			ws = append(ws, h.updateContest(id))
		case 9: // a contest deleted, or restored
			ids := remixSortedIDs(h.contests)
			id := ids[rng.IntN(len(ids))]
			h.contests[id].deleted = !h.contests[id].deleted
			ws = append(ws, h.updateContest(id))
		}
	}
	return ws
}

func TestRemixWinnerParity(t *testing.T) {
	t.Parallel()
	h := newRemixHistory()
	runParity(t, paritySpec{rule: "remix_winner", steps: 40, gen: h.step, reference: remixWinnerReference})
}

// remixSetup is a host database with every rule active and the remix rule derived once, so
// that the windows a test applies take the stream's path.
func remixSetup(t *testing.T) *fixture {
	t.Helper()
	f := setup(t)
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	f.applyKeys("remix_winner", nil)
	return f
}

func (f *fixture) remixContest(id, host int64, eventData string) {
	f.t.Helper()
	f.exec(`INSERT INTO events (event_id, event_type, user_id, event_data) VALUES ($1, 'remix_contest', $2, $3::jsonb)`,
		id, host, eventData)
}

// remixWindow applies a window with the given keys and returns the w rows as specifier →
// user.
func (f *fixture) remixWindow(keys processors.Keys) map[string]int64 {
	f.t.Helper()
	f.applyKeys("remix_winner", keys)
	return f.remixRows()
}

func (f *fixture) remixRows() map[string]int64 {
	f.t.Helper()
	out := map[string]int64{}
	for k, r := range f.progressRows() {
		if id, spec, _ := cutSpace(k); id == "w" {
			require.Equal(f.t, progress{User: r.User, Current: 1, Complete: true, Amount: 1000}, r, k)
			out[spec] = r.User
		}
	}
	return out
}

// remixWant is the rows of (contest, remixer) pairs.
func remixWant(pairs ...[2]int64) map[string]int64 {
	out := map[string]int64{}
	for _, p := range pairs {
		out[fmt.Sprintf("%x:%x", p[0], p[1])] = p[1]
	}
	return out
}

func TestRemixWinnerContestCap(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, true)
	for id := int64(201); id <= 208; id++ {
		f.track(id, id-100)
	}
	// Strings and numbers mixed, out of id order: the first five in the array win.
	f.remixContest(1, 1, `{"winners": [207, "201", 206, 202, "205", 203, 204]}`)
	want := remixWant([2]int64{1, 107}, [2]int64{1, 101}, [2]int64{1, 106}, [2]int64{1, 102}, [2]int64{1, 105})
	require.Equal(t, want, f.remixWindow(processors.Keys{"events": {1}}))

	// Rows already there count: a winner added later finds the contest full.
	f.exec(`UPDATE events SET event_data = '{"winners": [208, 207, 201]}' WHERE event_id = 1`)
	require.Equal(t, want, f.remixWindow(processors.Keys{"events": {1}}))
	require.Empty(t, f.verify())
}

func TestRemixWinnerHostWeekCap(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, true)
	f.artist(2, true)
	for id := int64(201); id <= 209; id++ {
		f.track(id, id-100)
	}
	f.remixContest(1, 1, `{"winners": [201, 202, 203]}`)
	f.remixContest(2, 1, `{"winners": [204, 205, 206]}`)
	f.remixContest(3, 2, `{"winners": [207, 208]}`)
	// Host 1 has six winners over its two contests; the week holds five, taken in contest order.
	week := remixWant([2]int64{1, 101}, [2]int64{1, 102}, [2]int64{1, 103}, [2]int64{2, 104}, [2]int64{2, 105},
		[2]int64{3, 107}, [2]int64{3, 108})
	require.Equal(t, week, f.remixWindow(processors.Keys{"events": {1, 2, 3}}))

	// A week later nothing has changed in the host's rows, but its week has emptied: the next
	// window with any key (here a track nobody named) mints the winner the cap held back.
	f.exec(`UPDATE user_challenges SET created_at = created_at - interval '8 days' WHERE challenge_id = 'w'`)
	f.track(299, 199)
	week[fmt.Sprintf("%x:%x", 2, 106)] = 106
	require.Equal(t, week, f.remixWindow(processors.Keys{"tracks": {299}}))
	require.Empty(t, f.verify())
}

func TestRemixWinnerDeletedTrack(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, true)
	f.track(201, 101)
	f.track(202, 102)
	f.deleteTrack(202)
	f.remixContest(1, 1, `{"winners": [201, 202, 203]}`)
	require.Equal(t, remixWant([2]int64{1, 101}), f.remixWindow(processors.Keys{"events": {1}}),
		"a deleted winner and one with no track earn nothing")

	// Each track change alone mints its winner: 202 restored, 203 uploaded.
	f.exec(`UPDATE tracks SET is_current = false WHERE track_id = 202 AND is_current`)
	f.trackRow(202, 102, true, false, "t202-back")
	require.Equal(t, remixWant([2]int64{1, 101}, [2]int64{1, 102}), f.remixWindow(processors.Keys{"tracks": {202}}))
	f.track(203, 103)
	require.Equal(t, remixWant([2]int64{1, 101}, [2]int64{1, 102}, [2]int64{1, 103}),
		f.remixWindow(processors.Keys{"tracks": {203}}))

	// A winner deleted after it won keeps its reward.
	f.deleteTrack(201)
	require.Len(t, f.remixWindow(processors.Keys{"tracks": {201}}), 3)
	require.Empty(t, f.verify())
}

func TestRemixWinnerHostVerifiedLater(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, false)
	f.track(201, 101)
	f.remixContest(1, 1, `{"winners": [201]}`)
	require.Empty(t, f.remixWindow(processors.Keys{"events": {1}}), "the host is not verified")

	f.exec(`UPDATE users SET is_current = false WHERE user_id = 1 AND is_current`)
	f.userRow(1, true, true, false, "u1-verified")
	require.Equal(t, remixWant([2]int64{1, 101}), f.remixWindow(processors.Keys{"hosts": {1}}),
		"the host's users change alone mints")
	require.Empty(t, f.verify())
}

// The job read a specifier's contest as decimal, so it counted contest 16 ("10:…") as contest
// 10. The sidecar counts it as 16.
func TestRemixWinnerHexContest(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, true)
	f.artist(2, true)
	for id := int64(201); id <= 207; id++ {
		f.track(id, id-100)
	}
	f.remixContest(16, 1, `{"winners": [201, 202, 203, 204, 205]}`)
	full := remixWant([2]int64{16, 101}, [2]int64{16, 102}, [2]int64{16, 103}, [2]int64{16, 104}, [2]int64{16, 105})
	require.Equal(t, full, f.remixWindow(processors.Keys{"events": {16}}))

	// Host 1's week is full through contest 16; host 2, who hosts contest 10, has none.
	f.remixContest(17, 1, `{"winners": [206]}`)
	f.remixContest(10, 2, `{"winners": [207]}`)
	full["a:6b"] = 107
	require.Equal(t, full, f.remixWindow(processors.Keys{"events": {10, 17}}))
	require.Empty(t, f.verify())
}

// The job failed its whole tick on these; the sidecar skips what is not a track id.
func TestRemixWinnerMalformedWinners(t *testing.T) {
	t.Parallel()
	f := remixSetup(t)
	f.artist(1, true)
	f.track(202, 102)
	f.track(203, 103)
	f.exec(`INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
		VALUES ('w', 9, 'zz:9', true, 1, 1000, now())`)
	f.remixContest(1, 1, `{"winners": ["x", 1.5, null, {"a": 1}, [202], true, " 202 ", "+203", 99999999999999999999]}`)
	f.remixContest(2, 1, `{"winners": {"a": 202}}`)
	f.remixContest(3, 1, `{"winners": null}`)
	f.remixContest(4, 1, `{"winners": "202"}`)
	got := f.remixWindow(processors.Keys{"events": {1, 2, 3, 4}})
	delete(got, "zz:9")
	require.Equal(t, remixWant([2]int64{1, 102}, [2]int64{1, 103}), got)
}
