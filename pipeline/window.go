package pipeline

import (
	"slices"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// window gathers the committed transactions between two flushes, reduced to the keys the rules
// need. It only ever holds whole transactions.
type window struct {
	plan *rulePlan
	// sets are the plan's key sets; a nil set belongs to an inactive rule and keeps nothing.
	sets []map[int64]struct{}
	// dropped are the rules whose keys the window does not keep.
	dropped []string
	// max are the plan's maxima (the legacy checkpoints' columns), hasMax whether one was seen.
	max    []int64
	hasMax []bool
	endLSN pglogrepl.LSN // end of the last transaction in the window
	// xids are the transactions with changes: the flush waits until all are visible.
	xids []uint32

	transactions int
	changes      int
	// openedAt is when the first change arrived: the window's length counts from it.
	openedAt time.Time
	// firstCommit is the commit time of the oldest transaction with a change, for the
	// commit-to-flush latency.
	firstCommit time.Time
}

// skippedSets marks the plan's key sets of the inactive rules, for the stream to keep none.
func skippedSets(plan *rulePlan, inactive []string) []bool {
	skip := make([]bool, len(plan.sets))
	for i, rk := range plan.sets {
		skip[i] = slices.Contains(inactive, rk.rule)
	}
	return skip
}

// newWindow returns an empty window keeping no keys of the inactive rules.
func newWindow(plan *rulePlan, inactive []string) *window {
	w := &window{plan: plan, sets: make([]map[int64]struct{}, len(plan.sets)),
		max: make([]int64, len(plan.maxima)), hasMax: make([]bool, len(plan.maxima))}
	for i, rk := range plan.sets {
		if !slices.Contains(inactive, rk.rule) {
			w.sets[i] = map[int64]struct{}{}
		} else if !slices.Contains(w.dropped, rk.rule) {
			w.dropped = append(w.dropped, rk.rule)
		}
	}
	return w
}

// add merges a committed transaction. A transaction without routed changes only moves endLSN:
// confirming it later lets the server free its WAL.
func (w *window) add(tx *replication.Transaction, now time.Time) {
	w.transactions++
	if tx.EndLSN > w.endLSN {
		w.endLSN = tx.EndLSN
	}
	if tx.Changes == 0 {
		return
	}
	if !w.hasChanges() {
		w.openedAt = now
		w.firstCommit = tx.CommitTime
	}
	w.changes += tx.Changes
	w.xids = append(w.xids, tx.Xid)
	for i, set := range tx.Sets {
		if w.sets[i] == nil {
			continue
		}
		for id := range set {
			w.sets[i][id] = struct{}{}
		}
	}
	for i, has := range tx.HasMax {
		if has && (!w.hasMax[i] || tx.Max[i] > w.max[i]) {
			w.max[i], w.hasMax[i] = tx.Max[i], true
		}
	}
}

// hasChanges reports whether the window holds changes to the source tables.
func (w *window) hasChanges() bool { return w.changes > 0 }

// size is the number of distinct keys held: the measure of its memory and of its flush's work.
func (w *window) size() int {
	n := 0
	for _, s := range w.sets {
		n += len(s)
	}
	return n
}

// rulesWindow is the window as the rules take it: keys by rule and key set, legacy maxima.
func (w *window) rulesWindow() processors.Window {
	keys := map[string]processors.Keys{}
	for i, set := range w.sets {
		if len(set) == 0 {
			continue
		}
		rk := w.plan.sets[i]
		if keys[rk.rule] == nil {
			keys[rk.rule] = processors.Keys{}
		}
		keys[rk.rule][rk.keys] = append(keys[rk.rule][rk.keys], ids(set)...)
	}
	maxima := map[string]int64{}
	for i, has := range w.hasMax {
		if has {
			maxima[w.plan.maxima[i]] = w.max[i]
		}
	}
	return processors.Window{Keys: keys, Legacy: processors.LegacyFrom(maxima), Dropped: w.dropped}
}

// ids returns a set's members as a slice for the recompute functions.
func ids(set map[int64]struct{}) []int64 {
	out := make([]int64, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	return out
}
