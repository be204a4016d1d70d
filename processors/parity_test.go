package processors_test

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// The parity harness runs a rule both ways over the same random history: the stream's way
// (ApplyWindow with the dirty keys the registry's Sources make of each step's changes) and the
// polling job's way (the upstream processor's tick, written out in the test from the upstream
// source, after every step). Both databases must hold the same rows of the rule's challenges
// after every step. A third database receives the whole history first and derives the rule
// once from scratch, which must agree too.
//
// An incremental rule's window also carries its checkpoint column's highest value, as the
// stream's does, and its legacy checkpoint must equal upstream's after every step. Halfway
// through, the stream hands the database over to the upstream tick, which must carry on from
// the checkpoint the stream left with no gap: the cut-over back to the polling job.

// change is one row change as the stream carries it: table, operation and the new row's
// integer columns (those the rule's Sources may name).
type change struct {
	table string
	op    processors.Op
	cols  map[string]int64
}

// write is one statement of a step, with the change it makes as the stream would see it (nil
// for a statement the stream does not carry to any rule, e.g. on an unpublished table).
type write struct {
	sql    string
	args   []any
	change *change
}

// paritySpec describes one rule's parity test.
type paritySpec struct {
	rule string
	// steps is the number of random steps; each runs gen once.
	steps int
	// gen returns one step's writes. It is called once per step and its writes run on every
	// database, so it must write explicit values (no serials) and may keep state between
	// calls (the ids it has used).
	gen func(rng *rand.Rand, step int) []write
	// reference is the upstream processor's tick, in the caller's transaction.
	reference func(ctx context.Context, tx pgx.Tx) error
	// takesAway says the history takes a paid reward's conditions away again or changes the
	// catalog amount: the rows the ticks accumulated must then differ from what the final state
	// earns (completion is sticky) while holding every row of it, and otherwise be exactly that.
	takesAway bool
	// checkpointAhead says upstream's dirty scan reads only the rows that can earn (m's mobile
	// rows, the referral rules' rows with a referrer), so its checkpoint stops at the last of
	// them while the stream's follows every change it applied: the stream's may be ahead.
	checkpointAhead bool
}

// paritySeed is PARITY_SEED when set (to replay a failure), else a fixed seed per rule so that
// the suite is repeatable; run with PARITY_SEED=random for a new one.
func paritySeed(t *testing.T, rule string) uint64 {
	t.Helper()
	seed := uint64(len(rule)) * 7919
	for _, c := range rule {
		seed = seed*31 + uint64(c)
	}
	switch v := os.Getenv("PARITY_SEED"); v {
	case "":
	case "random":
		seed = rand.Uint64()
	default:
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "PARITY_SEED")
		seed = n
	}
	t.Logf("parity seed %d (PARITY_SEED=%d replays it)", seed, seed)
	return seed
}

func runParity(t *testing.T, spec paritySpec) {
	t.Helper()
	rule := ruleNamed(t, spec.rule)
	stream, reference, scratch, scratchReference := setup(t), setup(t), setup(t), setup(t)
	for _, f := range []*fixture{stream, reference, scratch, scratchReference} {
		require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	}
	seedName := spec.rule
	if spec.takesAway {
		seedName += "/sticky"
	}
	rng := rand.New(rand.NewPCG(paritySeed(t, seedName), 1))

	checkpoint := rule.Checkpoint()
	var history []write
	for step := range spec.steps {
		writes := spec.gen(rng, step)
		history = append(history, writes...)
		stream.runWrites(writes)
		reference.runWrites(writes)

		handedOver := checkpoint != "" && step >= spec.steps/2
		if handedOver {
			stream.inTx(func(tx pgx.Tx) { require.NoError(t, spec.reference(stream.ctx, tx)) })
		} else {
			res := stream.applyWindowOf(rule, writes)
			if step > 0 {
				for _, r := range res.Rules {
					require.False(t, r.FromScratch && r.Rule == rule.Name, "step %d: derived from scratch again", step)
				}
			}
		}
		reference.inTx(func(tx pgx.Tx) { require.NoError(t, spec.reference(reference.ctx, tx)) })
		require.Equal(t, reference.ruleRows(rule), stream.ruleRows(rule), "step %d: stream and upstream differ", step)
		if checkpoint != "" && !handedOver {
			want, got := reference.legacy()[checkpoint], stream.legacy()[checkpoint]
			if spec.checkpointAhead && got > want {
				want = got
			}
			require.Equal(t, want, got, "step %d: the legacy checkpoint is not where upstream has it", step)
		}
	}

	// From scratch against one upstream tick over the whole history: a reward the history
	// took away after a tick paid it stays in the step-by-step databases (completion is
	// sticky) but no single derivation can produce it.
	scratch.runWrites(history)
	scratchReference.runWrites(history)
	if checkpoint != "" {
		scratch.catchUp(processors.CatchUpOptions{FromScratch: true}) // the --backfill of a first run
	} else {
		res := scratch.applyKeys(rule.Name, nil)
		require.True(t, slices.ContainsFunc(res.Rules, func(r processors.RuleResult) bool {
			return r.Rule == rule.Name && r.FromScratch
		}), "the first window derives the rule from scratch")
	}
	scratchReference.inTx(func(tx pgx.Tx) { require.NoError(t, spec.reference(scratchReference.ctx, tx)) })
	final, kept := scratchReference.ruleRows(rule), reference.ruleRows(rule)
	t.Logf("%d rows earned, %d of them still earned at the end", len(kept), len(final))
	require.Equal(t, final, scratch.ruleRows(rule), "from scratch and upstream differ")
	require.NotEmpty(t, kept, "the history earns nothing: the test cannot fail")
	if spec.takesAway {
		// A reward taken away leaves a row no derivation produces, or a complete row whose
		// count has gone down since.
		require.NotEqual(t, final, kept, "the history takes nothing away: stickiness is not tested")
		for k := range final {
			require.Contains(t, kept, k)
		}
	} else {
		require.Equal(t, kept, final, "the history took a paid reward away")
	}
	require.Empty(t, ruleDiffs(stream, rule), "verify after the stream")
}

// ruleDiffs is Verify's differences in the rule's challenges: the other rules see the same
// host writes without their keys.
func ruleDiffs(f *fixture, rule processors.Rule) []processors.Difference {
	return slices.DeleteFunc(f.verify(), func(d processors.Difference) bool {
		return !slices.Contains(rule.Challenges, d.ChallengeID)
	})
}

// ruleNamed finds a registered rule.
func ruleNamed(t *testing.T, name string) processors.Rule {
	t.Helper()
	i := slices.IndexFunc(processors.Rules(), func(r processors.Rule) bool { return r.Name == name })
	require.GreaterOrEqual(t, i, 0, "rule %q is not registered", name)
	return processors.Rules()[i]
}

// dirtyKeys applies the rule's Sources to the writes' changes, as the stream does.
func dirtyKeys(rule processors.Rule, writes []write) processors.Keys {
	keys := processors.Keys{}
	for _, w := range writes {
		if w.change == nil {
			continue
		}
		for _, s := range rule.Sources {
			if s.Table != w.change.table || s.Ops&w.change.op == 0 {
				continue
			}
			if v, ok := w.change.cols[s.Column]; ok {
				keys[s.Keys] = append(keys[s.Keys], v)
			}
		}
	}
	return keys
}

// applyWindowOf runs the flush's rule step for a window of the writes as the stream sees them:
// the rule's dirty keys and, for an incremental rule, its checkpoint column's highest value.
func (f *fixture) applyWindowOf(rule processors.Rule, writes []write) processors.WindowResult {
	f.t.Helper()
	w := processors.Window{Keys: map[string]processors.Keys{rule.Name: dirtyKeys(rule, writes)}}
	if sources := rule.CheckpointSources(); len(sources) > 0 {
		maxima := map[string]int64{}
		for _, wr := range writes {
			c := wr.change
			for _, src := range sources {
				if v, has := c.col(src.Column); has && c.table == src.Table && c.op&src.Ops != 0 {
					maxima[rule.Checkpoint()] = max(maxima[rule.Checkpoint()], v)
				}
			}
		}
		w.Legacy = processors.LegacyFrom(maxima)
	}
	var res processors.WindowResult
	f.inTx(func(tx pgx.Tx) {
		var err error
		res, err = processors.ApplyWindow(f.ctx, tx, w, processors.WindowOptions{})
		require.NoError(f.t, err)
	})
	return res
}

// col is a column of the change's new row; a write the stream does not carry has none.
func (c *change) col(name string) (int64, bool) {
	if c == nil {
		return 0, false
	}
	v, ok := c.cols[name]
	return v, ok
}

// runWrites runs the writes in one transaction, like one source transaction.
func (f *fixture) runWrites(writes []write) {
	f.t.Helper()
	f.inTx(func(tx pgx.Tx) {
		for _, w := range writes {
			_, err := tx.Exec(f.ctx, w.sql, w.args...)
			require.NoError(f.t, err, "%s %v", w.sql, w.args)
		}
	})
}

// applyKeys runs the flush's rule step for a window holding the rule's keys only.
func (f *fixture) applyKeys(rule string, keys processors.Keys) processors.WindowResult {
	f.t.Helper()
	var res processors.WindowResult
	f.inTx(func(tx pgx.Tx) {
		var err error
		res, err = processors.ApplyWindow(f.ctx, tx, processors.Window{Keys: map[string]processors.Keys{rule: keys}},
			processors.WindowOptions{})
		require.NoError(f.t, err)
	})
	return res
}

// ruleRows are the stored rows of the rule's challenges, without timestamps.
func (f *fixture) ruleRows(rule processors.Rule) map[string]progress {
	f.t.Helper()
	out := map[string]progress{}
	for k, r := range f.progressRows() {
		id, _, _ := cutSpace(k)
		if slices.Contains(rule.Challenges, id) {
			out[k] = r
		}
	}
	return out
}

func cutSpace(s string) (before, after string, found bool) {
	for i := range len(s) {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// upstreamUpsert is the polling job's UpsertUserChallenge (SPEC §3.1), one row per call,
// written on every call: the reference side of a parity test.
func upstreamUpsert(ctx context.Context, tx pgx.Tx, challengeID, specifier string, userID int64,
	current, step, amount int64) error {
	_, err := tx.Exec(ctx, `
INSERT INTO user_challenges
    (challenge_id, user_id, specifier, is_complete, current_step_count, amount, created_at, completed_at)
VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $4 THEN now() END)
ON CONFLICT (challenge_id, specifier) DO UPDATE SET
    current_step_count = EXCLUDED.current_step_count,
    is_complete = user_challenges.is_complete OR EXCLUDED.is_complete,
    amount = CASE WHEN user_challenges.is_complete THEN user_challenges.amount ELSE EXCLUDED.amount END,
    completed_at = CASE WHEN user_challenges.is_complete THEN user_challenges.completed_at
                        WHEN EXCLUDED.is_complete THEN now() ELSE user_challenges.completed_at END`,
		challengeID, userID, specifier, step > 0 && current >= step, current, amount)
	return err
}

// upstreamAmount reads a challenge's amount and active flag as upstream's LoadChallenge and
// AmountInt do; ok is false when the row is missing or inactive (the processor then returns).
func upstreamAmount(ctx context.Context, tx pgx.Tx, id string) (amount int64, ok bool, err error) {
	var (
		raw    string
		active bool
	)
	err = tx.QueryRow(ctx, `SELECT amount, active FROM challenges WHERE id = $1`, id).Scan(&raw, &active)
	if err == pgx.ErrNoRows {
		return 0, false, nil
	}
	if err != nil || !active {
		return 0, false, err
	}
	n, _ := strconv.ParseInt(raw, 10, 32) // the catalog rows in these tests are plain integers
	return n, true, nil
}
