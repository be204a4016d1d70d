package processors

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// Window is what one replication window made dirty, as the flush applies it.
type Window struct {
	// Keys are the dirty keys by rule name (Rule.Name), each by key set (Source.Keys).
	Keys map[string]Keys
	// Legacy holds the highest values of the incremental rules' checkpoint columns the window
	// saw (plays.id, comments.blocknumber).
	Legacy checkpoints.Legacy
	// Dropped names the rules whose keys the window did not keep because an earlier flush
	// found them inactive. A rule that is active again when this window is applied derives
	// what the window missed, as after a re-activation: from its legacy checkpoint, or from
	// scratch.
	Dropped []string
}

// RuleResult is what a flush or catch-up did for one rule: the slowest rule is the one to look
// at when flushes grow.
type RuleResult struct {
	Rule string
	// Keys counts the dirty keys the rule was given.
	Keys int
	// FromScratch is true when a full-rescan rule was derived from scratch: the first time
	// challenge-stream saw it, or after it was re-activated.
	FromScratch bool
	// Duration is the time spent in the rule, gap derivation included.
	Duration time.Duration
	Stats    Stats
}

// WindowOptions are the margins of a gap derivation (see ApplyWindow). Zero means the
// default: DefaultPlayIDMargin and DefaultBlockMargin.
type WindowOptions struct {
	PlayIDMargin int64
	BlockMargin  int64
}

// DefaultPlayIDMargin is the PlayIDMargin of a gap derivation when none is given.
const DefaultPlayIDMargin = 100_000

// Gap is a rule family's gap derived by a flush: after the family was re-activated, or after
// another writer (the polling job) moved its checkpoint.
type Gap struct {
	// Checkpoint is the legacy checkpoint's name (checkpoints.PlaysCheckpoint or
	// checkpoints.CommentsCheckpoint).
	Checkpoint string
	// From is the checkpoint the derivation started from (before the margin), To the maximum
	// it reached.
	From, To int64
	// Scanned counts the source rows read.
	Scanned int64
	// Foreign is true when the gap was derived because another writer moved the checkpoint,
	// false when the family was re-activated.
	Foreign bool
	// FromScratch is true for a full-rescan rule derived from scratch (Checkpoint is then its
	// bookkeeping row, checkpoints.RuleStateName).
	FromScratch bool
}

// WindowResult says what ApplyWindow did.
type WindowResult struct {
	Stats Stats
	// Artists and Users count the distinct artists and commenters recomputed, gaps included.
	Artists, Users int
	// Oddities are the catalog's, see Catalog.
	Oddities []string
	// Held names the legacy checkpoints left where they were because their rules are
	// inactive.
	Held []string
	// Gaps are the gap derivations this flush ran.
	Gaps []Gap
	// Rules are the per-rule results, in registry order; inactive rules are left out and
	// named in Inactive.
	Rules    []RuleResult
	Inactive []string
	// Foreign names the legacy checkpoints someone else changed since challenge-stream last
	// wrote them: the polling job is running alongside the sidecar. Each change is reported
	// once. See the package documentation for what that costs.
	Foreign []string
}

// ApplyWindow applies one window in the caller's transaction: it recomputes the window's
// artists and commenters and advances the legacy checkpoints, holding a rule family's
// checkpoint while the family is inactive and deriving its gap once the family is active again,
// as the polling job does (see the package documentation). In the common case (every family
// active, nothing held, nobody else writing the checkpoints) it costs one small read beyond
// the recompute and the checkpoint write.
func ApplyWindow(ctx context.Context, q Querier, w Window, opts WindowOptions) (WindowResult, error) {
	if opts.PlayIDMargin <= 0 {
		opts.PlayIDMargin = DefaultPlayIDMargin
	}
	if opts.BlockMargin <= 0 {
		opts.BlockMargin = DefaultBlockMargin
	}
	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return WindowResult{}, fmt.Errorf("apply window: %w", err)
	}
	state, err := checkpoints.ReadLegacyState(ctx, q, incrementalNames())
	if err != nil {
		return WindowResult{}, fmt.Errorf("apply window: %w", err)
	}
	res := WindowResult{Oddities: cat.Oddities}
	d := newDeriver(q, cat)
	// A copy: a flush whose transaction fails applies the same window again.
	next := maps.Clone(w.Legacy)
	if next == nil {
		next = checkpoints.Legacy{}
	}
	scan := CatchUpOptions{
		PlayIDMargin: opts.PlayIDMargin, BlockMargin: opts.BlockMargin, CommentNullBlocks: true,
	}
	var m maxima // read once, only when a gap is derived
	rules := Rules()
	gapTime := map[string]time.Duration{}
	for _, r := range incrementalRules() {
		f := r.family
		began := time.Now()
		stored := state[f.checkpoint]
		foreign := stored.Foreign()
		if foreign {
			res.Foreign = append(res.Foreign, f.checkpoint)
			if err := checkpoints.AcknowledgeLegacy(ctx, q, f.checkpoint, stored.Value); err != nil {
				return WindowResult{}, fmt.Errorf("apply window: %w", err)
			}
		}
		if !r.active(cat) {
			res.Held = append(res.Held, f.checkpoint)
			delete(next, f.checkpoint)
			if !stored.Held {
				if err := checkpoints.HoldLegacy(ctx, q, f.checkpoint, true); err != nil {
					return WindowResult{}, fmt.Errorf("apply window: %w", err)
				}
			}
			continue
		}
		if stored.Held {
			if err := checkpoints.HoldLegacy(ctx, q, f.checkpoint, false); err != nil {
				return WindowResult{}, fmt.Errorf("apply window: %w", err)
			}
		}
		// A held checkpoint is where the family stopped, and a window that dropped the
		// family's keys missed what came after it; a foreign one was moved by a writer whose
		// counts may be older than ours, so re-derive from where we last left it.
		from, ok := stored.Value, stored.Has
		if !stored.Held {
			dropped := slices.Contains(w.Dropped, r.Name)
			switch {
			case foreign && stored.Written < stored.Value:
				from = stored.Written
			case !dropped:
				ok = false
			}
		}
		if !ok {
			continue
		}
		if m == nil {
			if m, err = sourceMaxima(ctx, q); err != nil {
				return WindowResult{}, fmt.Errorf("apply window: %w", err)
			}
		}
		r, err := f.scan(d, ctx, from, m[f.checkpoint], scan)
		if err != nil {
			return WindowResult{}, fmt.Errorf("apply window: derive gap of %q: %w", f.checkpoint, err)
		}
		f.raise(next, r.reached)
		res.Gaps = append(res.Gaps, Gap{Checkpoint: f.checkpoint, From: from, To: r.reached, Scanned: r.rows, Foreign: !stored.Held})
		gapTime[f.checkpoint] = time.Since(began)
	}

	states, err := checkpoints.ReadRuleStates(ctx, q, fullRescanNames(rules))
	if err != nil {
		return WindowResult{}, fmt.Errorf("apply window: %w", err)
	}
	res.Stats = Stats{}
	for _, r := range rules {
		began := time.Now()
		keys := w.Keys[r.Name]
		if !r.active(cat) {
			res.Inactive = append(res.Inactive, r.Name)
		}
		if r.family != nil {
			if !r.active(cat) {
				continue
			}
			if err := r.family.visit(d, ctx)(keys[r.family.keys]); err != nil {
				return WindowResult{}, fmt.Errorf("apply window: rule %s: %w", r.Name, err)
			}
			res.Rules = append(res.Rules, RuleResult{Rule: r.Name, Keys: keys.count(),
				Duration: time.Since(began) + gapTime[r.family.checkpoint], Stats: d.stats.only(r.Challenges)})
			continue
		}
		rr, held, err := applyFullRescan(ctx, q, cat, r, states[r.Name], keys, slices.Contains(w.Dropped, r.Name))
		if err != nil {
			return WindowResult{}, fmt.Errorf("apply window: %w", err)
		}
		if held {
			continue
		}
		if rr.FromScratch {
			res.Gaps = append(res.Gaps, Gap{Checkpoint: checkpoints.RuleStateName(r.Name), FromScratch: true})
		}
		res.Stats.Add(rr.Stats)
		res.Rules = append(res.Rules, rr)
	}
	if err := checkpoints.AdvanceLegacy(ctx, q, next); err != nil {
		return WindowResult{}, fmt.Errorf("apply window: %w", err)
	}
	res.Stats.Add(d.stats)
	res.Artists, res.Users = d.derived(milestonesName), d.derived(commentsName)
	return res, nil
}
