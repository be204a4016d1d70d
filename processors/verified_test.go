package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// userState is what a users row says about the rules' gates.
type userState struct{ verified, deactivated bool }

// insertUser adds a current users row.
func insertUser(id int64, s userState, txhash string) write {
	return write{
		sql: `INSERT INTO users (user_id, is_current, is_verified, is_deactivated, txhash, handle)
			VALUES ($1, true, $2, $3, $4, 'h')`,
		args:   []any{id, s.verified, s.deactivated, txhash},
		change: &change{table: "users", op: processors.Insert, cols: map[string]int64{"user_id": id}},
	}
}

// updateUser versions a user the way the indexer does: the live row becomes historical (an
// UPDATE on the stream) and a new current row is inserted (an INSERT).
func updateUser(id int64, s userState, txhash string) []write {
	return []write{{
		sql:    `UPDATE users SET is_current = false WHERE user_id = $1 AND is_current`,
		args:   []any{id},
		change: &change{table: "users", op: processors.Update, cols: map[string]int64{"user_id": id}},
	}, insertUser(id, s, txhash)}
}

// setAmount changes a catalog amount. The challenges table is not streamed: only rows earned
// afterwards carry the new amount, which is all the polling job changes too (the amount of a
// complete row is frozen).
func setAmount(challenge string, amount int64) write {
	return write{sql: `UPDATE challenges SET amount = $2 WHERE id = $1`, args: []any{challenge, fmt.Sprint(amount)}}
}

// upstreamVerifiedTick is the polling job's ProfileVerifiedProcessor.Reconcile.
func upstreamVerifiedTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "v")
	if err != nil || !ok {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT user_id FROM users
		WHERE is_current = true AND is_verified = true AND is_deactivated = false`)
	if err != nil {
		return err
	}
	users, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := upstreamUpsert(ctx, tx, "v", fmt.Sprintf("%x", u), u, 1, 1, amount); err != nil {
			return err
		}
	}
	return nil
}

// verifiedHistory writes random users. Unless sticky, it never takes v away from a user who
// earned it at an earlier step, and never changes the amount, so that the final state derives
// every row the polling job accumulated (what runParity checks last).
type verifiedHistory struct {
	sticky bool
	rng    *rand.Rand
	ids    []int64 // in creation order, so that picks repeat with the seed
	user   map[int64]userState
	earned map[int64]bool // users the last tick paid
	seq    int
}

func newVerifiedHistory(sticky bool) *verifiedHistory {
	return &verifiedHistory{sticky: sticky, user: map[int64]userState{}, earned: map[int64]bool{}}
}

func (h *verifiedHistory) txhash(id int64) string {
	h.seq++
	return fmt.Sprintf("u%d-%d", id, h.seq)
}

func (h *verifiedHistory) add() []write {
	id := int64(300 + 37*len(h.ids))
	s := userState{verified: h.rng.IntN(2) == 0, deactivated: h.rng.IntN(6) == 0}
	h.ids = append(h.ids, id)
	h.user[id] = s
	return []write{insertUser(id, s, h.txhash(id))}
}

// change versions a random user; a flip that takes v away is only picked for users who have
// not earned it yet, unless the history is sticky.
func (h *verifiedHistory) change(takesAway bool, flip func(*userState)) []write {
	ids := h.ids
	if takesAway && !h.sticky {
		ids = slices.DeleteFunc(slices.Clone(ids), func(id int64) bool { return h.earned[id] })
	}
	if len(ids) == 0 {
		return nil
	}
	id := ids[h.rng.IntN(len(ids))]
	s := h.user[id]
	flip(&s)
	h.user[id] = s
	return updateUser(id, s, h.txhash(id))
}

// blink flips a user's verification and back within one window: the flush sees only the end
// state, as a polling tick would.
func (h *verifiedHistory) blink() []write {
	id := h.ids[h.rng.IntN(len(h.ids))]
	s := h.user[id]
	flipped := s
	flipped.verified = !s.verified
	return append(updateUser(id, flipped, h.txhash(id)), updateUser(id, s, h.txhash(id))...)
}

func (h *verifiedHistory) gen(rng *rand.Rand, step int) []write {
	h.rng = rng
	for id, s := range h.user {
		if s.verified && !s.deactivated {
			h.earned[id] = true
		}
	}
	var ws []write
	if step == 0 {
		for range 4 {
			ws = append(ws, h.add()...)
		}
	}
	for range 1 + rng.IntN(3) {
		switch n := rng.IntN(20); {
		case n < 5:
			ws = append(ws, h.add()...)
		case n < 10:
			ws = append(ws, h.change(true, func(s *userState) { s.verified = !s.verified })...)
		case n < 14:
			ws = append(ws, h.change(true, func(s *userState) { s.deactivated = !s.deactivated })...)
		case n < 16:
			// A profile edit: a new version with the same gates.
			ws = append(ws, h.change(false, func(*userState) {})...)
		case n < 18:
			ws = append(ws, h.blink()...)
		default:
			if h.sticky {
				ws = append(ws, setAmount("v", int64(1+rng.IntN(9))))
			}
		}
	}
	return ws
}

func TestVerifiedParity(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "verified", steps: 40, gen: newVerifiedHistory(false).gen,
		reference: upstreamVerifiedTick})
}

func TestVerifiedParitySticky(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "verified", steps: 40, gen: newVerifiedHistory(true).gen,
		reference: upstreamVerifiedTick, takesAway: true})
}

// ruleCase is one edge case of a rule: host writes applied as consecutive windows through the
// stream's path, and the rule's rows afterwards.
type ruleCase struct {
	name     string
	inactive bool // leave the rule's challenge switched off
	steps    [][]write
	want     map[string]progress
}

// runRuleCases runs each case in its own database. An empty first window takes the rule's
// from-scratch derivation, so the steps go through its dirty keys; Verify then checks the
// from-scratch derivation against what the keys produced.
func runRuleCases(t *testing.T, ruleName string, cases []ruleCase) {
	t.Helper()
	rule := ruleNamed(t, ruleName)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			if !tc.inactive {
				require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
			}
			f.applyKeys(rule.Name, nil)
			for _, step := range tc.steps {
				f.runWrites(step)
				f.applyWindowOf(rule, step)
			}
			want := tc.want
			if want == nil {
				want = map[string]progress{}
			}
			require.Equal(t, want, f.ruleRows(rule))
			require.Empty(t, ruleDiffs(f, rule))
		})
	}
}

func TestVerifiedCases(t *testing.T) {
	t.Parallel()
	earned := func(user int64) map[string]progress {
		return map[string]progress{fmt.Sprintf("v %x", user): {User: user, Current: 1, Complete: true, Amount: 5}}
	}
	runRuleCases(t, "verified", []ruleCase{
		{
			name:  "verified user earns",
			steps: [][]write{{insertUser(400, userState{verified: true}, "a")}},
			want:  earned(400),
		},
		{
			name:  "unverified user earns nothing",
			steps: [][]write{{insertUser(400, userState{}, "a")}},
		},
		{
			name:  "deactivated verified user earns nothing",
			steps: [][]write{{insertUser(400, userState{verified: true, deactivated: true}, "a")}},
		},
		{
			name: "only the current row counts",
			steps: [][]write{
				append([]write{insertUser(400, userState{verified: true}, "a")}, updateUser(400, userState{}, "b")...),
			},
		},
		{
			name: "becoming verified later earns",
			steps: [][]write{
				{insertUser(400, userState{}, "a")},
				updateUser(400, userState{verified: true}, "b"),
			},
			want: earned(400),
		},
		{
			name: "reactivated verified user earns",
			steps: [][]write{
				{insertUser(400, userState{verified: true, deactivated: true}, "a")},
				updateUser(400, userState{verified: true}, "b"),
			},
			want: earned(400),
		},
		{
			name: "losing verification keeps the row",
			steps: [][]write{
				{insertUser(400, userState{verified: true}, "a")},
				updateUser(400, userState{}, "b"),
				updateUser(400, userState{verified: true, deactivated: true}, "c"),
			},
			want: earned(400),
		},
		{
			name: "amount is the catalog's when earned",
			steps: [][]write{
				{setAmount("v", 7), insertUser(4095, userState{verified: true}, "a")},
				{setAmount("v", 9)},
			},
			want: map[string]progress{"v fff": {User: 4095, Current: 1, Complete: true, Amount: 7}},
		},
		{
			name:     "inactive rule writes nothing",
			inactive: true,
			steps:    [][]write{{insertUser(400, userState{verified: true}, "a")}},
		},
	})
}
