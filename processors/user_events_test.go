package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// The upstream processors of user_event_challenges.go, written out: each reads the current
// user_events rows above its checkpoint that carry its flag (m) or a referrer (r, rv, rd).
const (
	upstreamMobileDirtySQL = `SELECT user_id, blocknumber FROM user_events
		WHERE blocknumber > $1 AND is_current = true AND is_mobile_user = true ORDER BY blocknumber ASC LIMIT $2`
	upstreamReferralDirtySQL = `SELECT user_id, blocknumber FROM user_events
		WHERE blocknumber > $1 AND is_current = true AND referrer IS NOT NULL ORDER BY blocknumber ASC LIMIT $2`
)

// upstreamMobileTick is MobileInstallProcessor.Reconcile.
func upstreamMobileTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "m")
	if err != nil || !ok {
		return err
	}
	return upstreamIncremental(ctx, tx, "challenges:m:last_blocknumber", upstreamMobileDirtySQL,
		func(users []int64) error {
			rows, err := tx.Query(ctx, `SELECT x.user_id FROM unnest($1::bigint[]) AS x(user_id)
				WHERE EXISTS (SELECT 1 FROM user_events ue WHERE ue.user_id = x.user_id
				    AND ue.is_current = true AND ue.is_mobile_user = true)`, users)
			if err != nil {
				return err
			}
			mobile, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				return err
			}
			for _, u := range mobile {
				if err := upstreamUpsert(ctx, tx, "m", fmt.Sprintf("%x", u), u, 1, 1, amount); err != nil {
					return err
				}
			}
			return nil
		})
}

// upstreamReferralTick is ReferralProcessor.Reconcile (r, or rv when verified) and, for rd,
// ReferredProcessor.Reconcile.
func upstreamReferralTick(challenge string, verified bool) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		amount, ok, err := upstreamAmount(ctx, tx, challenge)
		if err != nil || !ok {
			return err
		}
		query := `SELECT ue.user_id, ue.referrer FROM user_events ue
			JOIN users u ON u.user_id = ue.referrer AND u.is_current = true
			WHERE ue.user_id = ANY($1::bigint[]) AND ue.is_current = true AND ue.referrer IS NOT NULL
			  AND COALESCE(u.is_verified, false) = $2`
		if challenge == "rd" {
			query = `SELECT user_id, referrer FROM user_events
				WHERE user_id = ANY($1::bigint[]) AND is_current = true AND referrer IS NOT NULL`
		}
		return upstreamIncremental(ctx, tx, "challenges:"+challenge+":last_blocknumber", upstreamReferralDirtySQL,
			func(referred []int64) error {
				args := []any{referred, verified}
				if challenge == "rd" {
					args = args[:1]
				}
				rows, err := tx.Query(ctx, query, args...)
				if err != nil {
					return err
				}
				type pair struct{ Referred, Referrer int64 }
				pairs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[pair])
				if err != nil {
					return err
				}
				for _, p := range pairs {
					specifier, user := fmt.Sprintf("%x:%x", p.Referrer, p.Referred), p.Referrer
					if challenge == "rd" {
						specifier, user = fmt.Sprintf("%x:%x", p.Referred, p.Referrer), p.Referred
					}
					if err := upstreamUpsert(ctx, tx, challenge, specifier, user, 1, 1, amount); err != nil {
						return err
					}
				}
				return nil
			})
	}
}

// userEventsHistory versions user_events rows as the indexer does (the live row becomes
// historical, a new current row is inserted at the step's block) for a few referred users,
// with referrers of both verification states and one without a users row. Unless sticky, a
// user's mobile flag and referrer are only ever set, never cleared or changed, and referrers
// keep their verification, so that the final state derives every row the ticks paid.
type userEventsHistory struct {
	sticky    bool
	users     []int64
	referrers []int64
	event     map[int64]userEvent // the user's current row
	verified  map[int64]bool      // by referrer, in users
	nextID    int64
	block     int64
	txhash    int
}

type userEvent struct {
	block    int64
	mobile   bool
	referrer *int64
}

func newUserEventsHistory(sticky bool) *userEventsHistory {
	return &userEventsHistory{
		sticky:    sticky,
		users:     []int64{300, 301, 302, 303, 304, 305, 0xabc},
		referrers: []int64{400, 401, 402, 403, 0x7ff}, // 0x7ff has no users row
		event:     map[int64]userEvent{},
		verified:  map[int64]bool{},
	}
}

// version writes the user's next user_events row.
func (h *userEventsHistory) version(user int64, e userEvent) []write {
	var ws []write
	if old, ok := h.event[user]; ok {
		ws = append(ws, write{
			sql:    `UPDATE user_events SET is_current = false WHERE user_id = $1 AND is_current`,
			args:   []any{user},
			change: &change{table: "user_events", op: processors.Update, cols: map[string]int64{"user_id": user, "blocknumber": old.block}},
		})
	}
	h.nextID++
	e.block = h.block
	h.event[user] = e
	return append(ws, write{
		sql: `INSERT INTO user_events (id, user_id, blocknumber, is_current, is_mobile_user, referrer, blockhash)
			VALUES ($1, $2, $3, true, $4, $5, 'b')`,
		args:   []any{h.nextID, user, e.block, e.mobile, e.referrer},
		change: &change{table: "user_events", op: processors.Insert, cols: map[string]int64{"user_id": user, "blocknumber": e.block}},
	})
}

func (h *userEventsHistory) gen(rng *rand.Rand, step int) []write {
	h.block++
	var ws []write
	if step == 0 {
		for i, r := range h.referrers[:len(h.referrers)-1] {
			h.verified[r] = i%2 == 0
			h.txhash++
			ws = append(ws, insertUser(r, userState{verified: h.verified[r]}, fmt.Sprint(h.txhash)))
		}
	}
	for range 1 + rng.IntN(3) {
		user := h.users[rng.IntN(len(h.users))]
		e := h.event[user]
		switch n := rng.IntN(10); {
		case n < 3 && (h.sticky || !e.mobile):
			e.mobile = !e.mobile
		case n < 6 && (h.sticky || e.referrer == nil):
			r := h.referrers[rng.IntN(len(h.referrers))]
			e.referrer = &r
		case n < 7 && h.sticky:
			e.referrer = nil
		case n < 8 && h.sticky:
			ws = append(ws, h.reverify(h.referrers[rng.IntN(len(h.referrers)-1)])...)
			continue
		case n < 9 && h.sticky:
			ws = append(ws, setAmount([]string{"m", "r", "rv", "rd"}[rng.IntN(4)], int64(1+rng.IntN(9))))
			continue
		}
		ws = append(ws, h.version(user, e)...) // a profile edit that changes neither is a new row too
	}
	return ws
}

// reverify flips a referrer's verification and then versions every user it referred (a profile
// edit each): r and rv read the verification only when the referred user's row changes, on
// both sides, so without the edits the final state would derive rows no tick paid.
func (h *userEventsHistory) reverify(referrer int64) []write {
	h.verified[referrer] = !h.verified[referrer]
	h.txhash++
	ws := updateUser(referrer, userState{verified: h.verified[referrer]}, fmt.Sprint(h.txhash))
	for _, user := range h.users {
		if e, ok := h.event[user]; ok && e.referrer != nil && *e.referrer == referrer {
			ws = append(ws, h.version(user, e)...)
		}
	}
	return ws
}

func userEventsGen(sticky bool) func(rng *rand.Rand, step int) []write {
	return newUserEventsHistory(sticky).gen
}

func TestUserEventsParity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rule      string
		reference func(ctx context.Context, tx pgx.Tx) error
	}{
		{"mobile_install", upstreamMobileTick},
		{"referral", upstreamReferralTick("r", false)},
		{"verified_referral", upstreamReferralTick("rv", true)},
		{"referred", upstreamReferralTick("rd", false)},
	} {
		for _, sticky := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sticky=%v", tc.rule, sticky), func(t *testing.T) {
				t.Parallel()
				runParity(t, paritySpec{rule: tc.rule, steps: 40, gen: userEventsGen(sticky),
					reference: tc.reference, takesAway: sticky, checkpointAhead: true})
			})
		}
	}
}

// userEventRow is a user's first user_events row.
func userEventRow(id, user, block int64, mobile bool, referrer any) write {
	return write{
		sql: `INSERT INTO user_events (id, user_id, blocknumber, is_current, is_mobile_user, referrer)
			VALUES ($1, $2, $3, true, $4, $5)`,
		args:   []any{id, user, block, mobile, referrer},
		change: &change{table: "user_events", op: processors.Insert, cols: map[string]int64{"user_id": user, "blocknumber": block}},
	}
}

// reversion makes the user's live row historical and inserts its next one.
func reversion(id, user, block int64, mobile bool, referrer any) []write {
	return []write{{
		sql:    `UPDATE user_events SET is_current = false WHERE user_id = $1 AND is_current`,
		args:   []any{user},
		change: &change{table: "user_events", op: processors.Update, cols: map[string]int64{"user_id": user}},
	}, userEventRow(id, user, block, mobile, referrer)}
}

func TestMobileInstallCases(t *testing.T) {
	t.Parallel()
	earned := map[string]progress{"m 12c": {User: 300, Current: 1, Complete: true, Amount: 1}}
	runRuleCases(t, "mobile_install", []ruleCase{
		{name: "a mobile profile earns", steps: [][]write{{userEventRow(1, 300, 5, true, nil)}}, want: earned},
		{name: "a web profile earns nothing", steps: [][]write{{userEventRow(1, 300, 5, false, nil)}}},
		{
			name:  "only the current row counts",
			steps: [][]write{append([]write{userEventRow(1, 300, 5, true, nil)}, reversion(2, 300, 5, false, nil)...)},
		},
		{
			name:  "a later mobile row earns",
			steps: [][]write{{userEventRow(1, 300, 5, false, nil)}, reversion(2, 300, 6, true, nil)},
			want:  earned,
		},
		{
			name:  "leaving mobile keeps the reward",
			steps: [][]write{{userEventRow(1, 300, 5, true, nil)}, reversion(2, 300, 6, false, nil)},
			want:  earned,
		},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{{userEventRow(1, 300, 5, true, nil)}}},
	})
}

func TestReferralCases(t *testing.T) {
	t.Parallel()
	verifiedReferrer := insertUser(400, userState{verified: true}, "a")
	plainReferrer := insertUser(401, userState{}, "a")
	referral := func(challenge string, referrer int64) map[string]progress {
		return map[string]progress{fmt.Sprintf("%s %x:12c", challenge, referrer): {User: referrer, Current: 1, Complete: true, Amount: 1}}
	}
	runRuleCases(t, "referral", []ruleCase{
		{name: "an unverified referrer earns r", steps: [][]write{{plainReferrer, userEventRow(1, 300, 5, false, 401)}}, want: referral("r", 401)},
		{name: "a verified referrer earns no r", steps: [][]write{{verifiedReferrer, userEventRow(1, 300, 5, false, 400)}}},
		{name: "a referrer with no users row earns nothing", steps: [][]write{{userEventRow(1, 300, 5, false, 401)}}},
		{name: "no referrer earns nothing", steps: [][]write{{plainReferrer, userEventRow(1, 300, 5, false, nil)}}},
		{
			name: "a new referrer earns too and the old keeps its row",
			steps: [][]write{
				{plainReferrer, insertUser(402, userState{}, "a"), userEventRow(1, 300, 5, false, 401)},
				reversion(2, 300, 6, false, 402),
			},
			want: map[string]progress{
				"r 191:12c": {User: 401, Current: 1, Complete: true, Amount: 1},
				"r 192:12c": {User: 402, Current: 1, Complete: true, Amount: 1},
			},
		},
	})
	runRuleCases(t, "verified_referral", []ruleCase{
		{name: "a verified referrer earns rv", steps: [][]write{{verifiedReferrer, userEventRow(1, 300, 5, false, 400)}}, want: referral("rv", 400)},
		{name: "an unverified referrer earns no rv", steps: [][]write{{plainReferrer, userEventRow(1, 300, 5, false, 401)}}},
		{
			// Upstream's caveat, kept: the referred user's row changing is what re-derives it.
			name: "verification is read when the referred user's row next changes",
			steps: [][]write{
				{plainReferrer, userEventRow(1, 300, 5, false, 401)},
				updateUser(401, userState{verified: true}, "b"),
				reversion(2, 300, 6, false, 401),
			},
			want: referral("rv", 401),
		},
	})
	runRuleCases(t, "referred", []ruleCase{
		{
			name:  "the referred user earns rd whatever the referrer",
			steps: [][]write{{userEventRow(1, 300, 5, false, 401), userEventRow(2, 301, 5, true, 400), verifiedReferrer}},
			want: map[string]progress{
				"rd 12c:191": {User: 300, Current: 1, Complete: true, Amount: 1},
				"rd 12d:190": {User: 301, Current: 1, Complete: true, Amount: 1},
			},
		},
		{name: "no referrer earns nothing", steps: [][]write{{userEventRow(1, 300, 5, true, nil)}}},
	})
}
