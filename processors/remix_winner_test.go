package processors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
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

// remixState is the host state the parity history has built: the live row of each host, track
// and contest. It is a value (clone copies it), so that a drawn change can be tried and
// dropped.
type remixState struct {
	hosts     map[int64]remixHost
	tracks    map[int64]remixTrack
	contests  map[int64]remixContest
	nextTrack int64
}

type remixHost struct {
	verified bool
	versions int
}

type remixTrack struct {
	owner    int64
	deleted  bool
	versions int
}

type remixContest struct {
	host    int64
	typ     string
	deleted bool
	// ids are the winners as track ids; named how each was written (a number or a string).
	ids   []int64
	named []any
}

func (s remixState) clone() remixState {
	s.hosts, s.tracks, s.contests = maps.Clone(s.hosts), maps.Clone(s.tracks), maps.Clone(s.contests)
	return s
}

// mint is the job's tick over s given the rows already minted (specifier → contest), in the
// (contest, position) order, with the week cap reduced to a count per host: the test runs in
// far less than a week. It returns the rows after the tick.
func (s remixState) mint(minted map[string]int64) map[string]int64 {
	out := map[string]int64{}
	maps.Copy(out, minted)
	perContest, perHost := map[int64]int{}, map[int64]int{}
	for _, contest := range out {
		perContest[contest]++
		perHost[s.contests[contest].host]++
	}
	for _, id := range remixSortedIDs(s.contests) {
		c := s.contests[id]
		if c.typ != "remix_contest" || c.deleted || !s.hosts[c.host].verified {
			continue
		}
		for _, track := range c.ids {
			tr, ok := s.tracks[track]
			spec := fmt.Sprintf("%x:%x", id, tr.owner)
			if _, have := out[spec]; !ok || tr.deleted || have || perContest[id] >= 5 || perHost[c.host] >= 5 {
				continue
			}
			out[spec] = id
			perContest[id]++
			perHost[c.host]++
		}
	}
	return out
}

// remixHistory generates the parity test's host history: a fixed scene in the first steps that
// reaches every cap (a contest with seven winners, a host with seven winners over two
// contests, an unverified host with winners), then random changes.
//
// The harness also derives the whole history once from scratch and wants the same rows. With
// caps and sticky rows that holds only for histories whose order does not matter: a winner
// minted and then deleted is a row the polling job has and a from-scratch tick does not, and
// one that became eligible after a later one filled the cap is the other way round. So each drawn change is tried on a
// model of the job first, and dropped when it would make the two differ. The fixed scene has
// one of each kind of change; kinds counts the random ones kept.
type remixHistory struct {
	s      remixState
	minted map[string]int64 // the model's rows: specifier → contest
	kinds  map[string]int
	// dropped counts the changes drawn and not kept.
	dropped int
}

const (
	remixFirstHost  = 11
	remixHosts      = 6 // 11..16
	remixFirstOwner = 101
	remixOwners     = 12 // 101..112
	remixMaxContest = 9  // 1..9: hex and decimal agree, which the job's count needs
)

func newRemixHistory() *remixHistory {
	return &remixHistory{
		s: remixState{hosts: map[int64]remixHost{}, tracks: map[int64]remixTrack{},
			contests: map[int64]remixContest{}, nextTrack: 201},
		minted: map[string]int64{}, kinds: map[string]int{},
	}
}

// host writes a new current users row, versioning the live one as the indexer does.
func (s *remixState) host(id int64, verified bool) []write {
	u, ok := s.hosts[id]
	var ws []write
	if ok {
		ws = append(ws, write{
			sql:    `UPDATE users SET is_current = false WHERE user_id = $1 AND is_current`,
			args:   []any{id},
			change: &change{table: "users", op: processors.Update, cols: map[string]int64{"user_id": id}},
		})
	}
	u.versions++
	u.verified = verified
	s.hosts[id] = u
	return append(ws, write{
		sql:    `INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, $2, $3, 'h')`,
		args:   []any{id, verified, fmt.Sprintf("u%d-%d", id, u.versions)},
		change: &change{table: "users", op: processors.Insert, cols: map[string]int64{"user_id": id}},
	})
}

// track writes a new current tracks row, versioning the live one.
func (s *remixState) track(id, owner int64, deleted bool) []write {
	tr, ok := s.tracks[id]
	var ws []write
	if ok {
		ws = append(ws, write{
			sql:    `UPDATE tracks SET is_current = false WHERE track_id = $1 AND is_current`,
			args:   []any{id},
			change: &change{table: "tracks", op: processors.Update, cols: map[string]int64{"track_id": id}},
		})
	}
	tr.versions++
	tr.owner, tr.deleted = owner, deleted
	s.tracks[id] = tr
	return append(ws, write{
		sql: `INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash, title)
			VALUES ($1, $2, true, $3, $4, 'remix')`,
		args:   []any{id, owner, deleted, fmt.Sprintf("t%d-%d", id, tr.versions)},
		change: &change{table: "tracks", op: processors.Insert, cols: map[string]int64{"track_id": id}},
	})
}

func (s *remixState) newTrack(owner int64) []write {
	s.nextTrack++
	return s.track(s.nextTrack-1, owner, false)
}

func remixEventData(c remixContest) string {
	if c.named == nil {
		return `{"description": "winners not announced"}`
	}
	b, _ := json.Marshal(map[string]any{"winners": c.named})
	return string(b)
}

func (s *remixState) contest(id, host int64, typ string) write {
	c := remixContest{host: host, typ: typ}
	s.contests[id] = c
	return write{
		sql: `INSERT INTO events (event_id, event_type, user_id, entity_type, entity_id, event_data)
			VALUES ($1, $2::event_type, $3, 'track', 1, $4::jsonb)`,
		args:   []any{id, typ, host, remixEventData(c)},
		change: &change{table: "events", op: processors.Insert, cols: map[string]int64{"event_id": id}},
	}
}

// announce appends winners to a contest (the platform rewrites event_data whole).
func (s *remixState) announce(id int64, named ...any) write {
	c := s.contests[id]
	c.ids, c.named = slices.Clone(c.ids), append(slices.Clone(c.named), named...)
	if c.named == nil {
		c.named = []any{}
	}
	for _, n := range named {
		switch n := n.(type) {
		case int64:
			c.ids = append(c.ids, n)
		case string:
			v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
			if err != nil {
				panic(err)
			}
			c.ids = append(c.ids, v)
		}
	}
	s.contests[id] = c
	return s.updateContest(id)
}

func (s *remixState) deleteContest(id int64, deleted bool) write {
	c := s.contests[id]
	c.deleted = deleted
	s.contests[id] = c
	return s.updateContest(id)
}

func (s *remixState) updateContest(id int64) write {
	c := s.contests[id]
	return write{
		sql:    `UPDATE events SET event_data = $2::jsonb, is_deleted = $3, updated_at = now() WHERE event_id = $1`,
		args:   []any{id, remixEventData(c), c.deleted},
		change: &change{table: "events", op: processors.Update, cols: map[string]int64{"event_id": id}},
	}
}

// remixNamed writes a track id as the platform has written winners: a number or a string.
func remixNamed(rng *rand.Rand, id int64) any {
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
	return slices.Sorted(maps.Keys(m))
}

func remixPick(rng *rand.Rand, ids []int64) int64 { return ids[rng.IntN(len(ids))] }

func remixOwner(i int) int64 { return remixFirstOwner + int64(i%remixOwners) }

// draw makes one random change to s and names its kind, or returns no writes when the change
// drawn has nothing to apply to.
func (h *remixHistory) draw(rng *rand.Rand, s *remixState) (ws []write, kind string) {
	switch rng.IntN(10) {
	case 0:
		id := remixFirstHost + int64(rng.IntN(remixHosts))
		u, ok := s.hosts[id]
		switch {
		case !ok:
			return s.host(id, rng.IntN(2) == 0), "host appears"
		case u.verified:
			return s.host(id, false), "host unverified"
		default:
			return s.host(id, true), "host verified later"
		}
	case 1, 2:
		return s.newTrack(remixOwner(rng.IntN(remixOwners))), "new remix"
	case 3:
		id := remixPick(rng, remixSortedIDs(s.tracks))
		tr := s.tracks[id]
		if tr.deleted {
			return s.track(id, tr.owner, false), "remix restored"
		}
		return s.track(id, tr.owner, true), "remix deleted"
	case 4, 5:
		var free []int64
		for id := int64(1); id <= remixMaxContest; id++ {
			if _, ok := s.contests[id]; !ok {
				free = append(free, id)
			}
		}
		if len(free) == 0 {
			return nil, ""
		}
		typ := "remix_contest"
		if rng.IntN(8) == 0 {
			typ = "new_release"
		}
		return []write{s.contest(remixPick(rng, free), remixFirstHost+int64(rng.IntN(remixHosts)), typ)}, "new contest"
	case 6, 7, 8:
		var named []any
		for range 1 + rng.IntN(3) {
			// Mostly tracks that exist, deleted or not; sometimes one not uploaded yet.
			track := s.nextTrack + int64(rng.IntN(3))
			if rng.IntN(6) > 0 {
				track = remixPick(rng, remixSortedIDs(s.tracks))
			}
			named = append(named, remixNamed(rng, track))
		}
		return []write{s.announce(remixPick(rng, remixSortedIDs(s.contests)), named...)}, "winners announced"
	default:
		id := remixPick(rng, remixSortedIDs(s.contests))
		if s.contests[id].deleted {
			return []write{s.deleteContest(id, false)}, "contest restored"
		}
		return []write{s.deleteContest(id, true)}, "contest deleted"
	}
}

func (h *remixHistory) step(rng *rand.Rand, step int) []write {
	s := h.s.clone()
	var ws []write
	switch step {
	case 0:
		// The harness gives the stream this rule's keys only, and verifies every active rule:
		// the other rules are switched off so that their rows cannot lag behind these users.
		ws = append(ws, write{sql: `UPDATE challenges SET active = false WHERE id <> 'w'`})
		ws = append(ws, s.host(11, true)...)
		ws = append(ws, s.host(12, false)...)
		ws = append(ws, s.host(13, true)...)
		for i := range 10 {
			ws = append(ws, s.newTrack(remixOwner(i))...)
		}
	case 1: // seven winners, strings among them: the contest cap takes the first five
		ws = append(ws, s.contest(1, 11, "remix_contest"),
			s.announce(1, int64(207), "201", int64(206), int64(202), "205", int64(203), int64(204)))
	case 2: // host 13: four winners here and three in contest 3 are more than its week holds
		ws = append(ws, s.contest(2, 13, "remix_contest"), s.contest(3, 13, "remix_contest"),
			s.announce(2, int64(208), int64(209), "210", int64(201)), s.announce(3, int64(202), int64(203), int64(204)))
	case 3: // an unverified host's winners, and an event that is not a contest
		ws = append(ws, s.contest(4, 12, "remix_contest"), s.contest(5, 11, "live_event"),
			s.announce(4, int64(205), int64(206)), s.announce(5, int64(208)))
	case 4: // the host's users change alone mints contest 4
		ws = append(ws, s.host(12, true)...)
	case 5: // a deleted winner; a host with no users row yet; a contest deleted before it paid
		ws = append(ws, s.newTrack(111)...)
		ws = append(ws, s.track(211, 111, true)...)
		ws = append(ws, s.contest(6, 14, "remix_contest"), s.announce(6, int64(211), "209"),
			s.contest(7, 15, "remix_contest"), s.announce(7, int64(203)), s.deleteContest(7, true))
	case 6: // host 14 appears, verified: contest 6 pays its live winner
		ws = append(ws, s.host(14, true)...)
	default:
		for range 1 + rng.IntN(3) {
			for range 20 {
				try := s.clone()
				drawn, kind := h.draw(rng, &try)
				if drawn == nil || !maps.Equal(try.mint(h.minted), try.mint(nil)) {
					h.dropped++
					continue
				}
				s, ws = try, append(ws, drawn...)
				h.kinds[kind]++
				break
			}
		}
	}
	h.s, h.minted = s, s.mint(h.minted)
	return ws
}

func TestRemixWinnerParity(t *testing.T) {
	t.Parallel()
	h := newRemixHistory()
	runParity(t, paritySpec{rule: "remix_winner", steps: 40, gen: h.step, reference: remixWinnerReference})
	kept := 0
	for _, n := range h.kinds {
		kept += n
	}
	require.Greater(t, kept, 40, "the model dropped most of the random changes")
	t.Logf("changes kept: %v; dropped: %d; rows: %d", h.kinds, h.dropped, len(h.minted))
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

// remixDiffs is what Verify finds wrong with the w rows. The tests apply windows of this rule
// only, so the other rules' rows lag behind their users and tracks.
func (f *fixture) remixDiffs() []processors.Difference {
	f.t.Helper()
	var out []processors.Difference
	for _, d := range f.verify() {
		if d.ChallengeID == "w" {
			out = append(out, d)
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
	// Strings and numbers mixed, out of id order, a remixer named twice: the first five
	// remixers in the array win.
	f.remixContest(1, 1, `{"winners": [207, "201", 207, 206, 202, "205", 203, 204]}`)
	want := remixWant([2]int64{1, 107}, [2]int64{1, 101}, [2]int64{1, 106}, [2]int64{1, 102}, [2]int64{1, 105})
	require.Equal(t, want, f.remixWindow(processors.Keys{"events": {1}}))

	// Stored rows count, however old: with the host's week empty, a winner added later still
	// finds the contest full.
	f.exec(`UPDATE user_challenges SET created_at = created_at - interval '30 days' WHERE challenge_id = 'w'`)
	f.exec(`UPDATE events SET event_data = '{"winners": [208, 207, 201]}' WHERE event_id = 1`)
	require.Equal(t, want, f.remixWindow(processors.Keys{"events": {1}}))
	require.Empty(t, f.remixDiffs())
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
	require.Empty(t, f.remixDiffs())
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
	require.Empty(t, f.remixDiffs())
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
	require.Empty(t, f.remixDiffs())
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
	require.Empty(t, f.remixDiffs())
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
