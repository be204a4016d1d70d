package processors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// applyFullRescan applies one full-rescan rule in the caller's transaction. An inactive rule is
// held and costs nothing. An active rule is derived from scratch when challenge-stream has not
// derived it since its bookkeeping began, when it was held (re-activated), or when fromScratch
// (a catch-up: what the polling job's tick did); otherwise from its dirty keys.
func applyFullRescan(ctx context.Context, q Querier, cat Catalog, r Rule, st checkpoints.RuleState,
	keys Keys, fromScratch bool) (res RuleResult, held bool, err error) {
	began := time.Now()
	if !r.active(cat) {
		if !st.Seen || !st.Held {
			if err := checkpoints.SetRuleState(ctx, q, r.Name, true); err != nil {
				return RuleResult{}, true, err
			}
		}
		return RuleResult{}, true, nil
	}
	res = RuleResult{Rule: r.Name, Keys: keys.count(), FromScratch: fromScratch || !st.Seen || st.Held}
	var rows []Row
	switch {
	case res.FromScratch:
		rows, err = r.all(ctx, q, cat)
	case res.Keys > 0:
		rows, err = r.rows(ctx, q, cat, keys)
	}
	if err != nil {
		return RuleResult{}, false, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	if res.Stats, err = Upsert(ctx, q, rows); err != nil {
		return RuleResult{}, false, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	if res.FromScratch {
		if err := checkpoints.SetRuleState(ctx, q, r.Name, false); err != nil {
			return RuleResult{}, false, err
		}
	}
	res.Duration = time.Since(began)
	return res, false, nil
}

// fullRescanNames lists the full-rescan rules' names.
func fullRescanNames(rules []Rule) []string {
	var names []string
	for _, r := range rules {
		if r.family == nil {
			names = append(names, r.Name)
		}
	}
	return names
}

// count is the number of keys over all key sets.
func (k Keys) count() int {
	n := 0
	for _, ids := range k {
		n += len(ids)
	}
	return n
}

// only returns the part of s written for the given challenges: the incremental rules share one
// deriver, whose stats hold them all.
func (s Stats) only(challenges []string) Stats {
	out := Stats{}
	for id, c := range s {
		if slices.Contains(challenges, id) {
			out[id] = c
		}
	}
	return out
}

// sortedKeys returns a key set's IDs sorted and without duplicates, for deterministic queries.
func sortedKeys(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}
