package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
)

// Interval is one transaction of whatever applies the rules (a flush, a polling tick): its
// writes committed at Commit, and now() inside it lies in [Start, Commit].
type Interval struct{ Start, Commit time.Time }

// Latencies are the milestone latencies of a run: for each crossing, from the COMMIT of the
// block whose play crossed the milestone (as the writer saw it return) to the COMMIT of the
// transaction that made its user_challenges row complete.
//
// That transaction is found from the row itself: completed_at is set to now() — the start of
// the writing transaction — exactly when the row becomes complete, and the applier's
// transactions are recorded as intervals, so the interval holding completed_at is the one that
// wrote it. This measures what a user sees (the row is visible) and does not depend on which
// window the play fell in: a flush that recomputes an artist for an earlier play and already
// sees the crossing play counts, rightly, as the one that completed it.
type Latencies struct {
	Samples []time.Duration // sorted
	// Pending are crossings whose row was not complete when measured, each with how long it
	// had waited by then.
	Pending []time.Duration
	// Unattributed rows were complete but no recorded interval holds their completed_at
	// (should be 0); Early rows were completed before their crossing block committed
	// (the model disagreed with the database; should be 0).
	Unattributed, Early int
}

// Total is the number of crossings measured.
func (l Latencies) Total() int { return len(l.Samples) + len(l.Pending) + l.Unattributed + l.Early }

// Percentile returns the q-quantile (nearest rank) over all crossings, counting pending ones
// as longer than any sample. When it lands on a pending crossing the value is only a lower
// bound: censored is set and the value is the smallest wait among the pending.
func (l Latencies) Percentile(q float64) (d time.Duration, censored bool, ok bool) {
	n := len(l.Samples) + len(l.Pending)
	if n == 0 {
		return 0, false, false
	}
	rank := nearestRank(q, n)
	if rank < len(l.Samples) {
		return l.Samples[rank], false, true
	}
	return slices.Min(l.Pending), true, true
}

// nearestRank is the index of the q-quantile among n sorted values (n > 0).
func nearestRank(q float64, n int) int {
	return max(0, min(int(math.Ceil(q*float64(n)))-1, n-1))
}

// MeasureLatencies reads the rows of the crossings and attributes each to the interval that
// completed it. at is the time of measurement (for the waits of pending crossings).
func MeasureLatencies(ctx context.Context, conn *pgx.Conn, crossings []workload.Crossing, intervals []Interval, at time.Time) (Latencies, error) {
	var l Latencies
	if len(crossings) == 0 {
		return l, nil
	}
	ids := make([]string, len(crossings))
	specs := make([]string, len(crossings))
	for i, c := range crossings {
		ids[i], specs[i] = c.ChallengeID, c.Specifier
	}
	// completed_at is a timestamp without time zone written as now()::timestamp in the
	// server's zone; read it back as an instant in the same zone.
	rows, err := conn.Query(ctx, `
SELECT c.i, uc.is_complete, uc.completed_at AT TIME ZONE current_setting('TimeZone')
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS c(id, spec, i)
LEFT JOIN user_challenges uc ON uc.challenge_id = c.id AND uc.specifier = c.spec`, ids, specs)
	if err != nil {
		return l, fmt.Errorf("read milestone rows: %w", err)
	}
	defer rows.Close()
	sorted := slices.Clone(intervals)
	slices.SortFunc(sorted, func(a, b Interval) int { return a.Start.Compare(b.Start) })
	for rows.Next() {
		var (
			i           int64
			complete    *bool
			completedAt *time.Time
		)
		if err := rows.Scan(&i, &complete, &completedAt); err != nil {
			return l, fmt.Errorf("read milestone rows: %w", err)
		}
		c := crossings[i-1]
		if complete == nil || !*complete || completedAt == nil {
			l.Pending = append(l.Pending, at.Sub(c.CommittedAt))
			continue
		}
		iv, found := holding(sorted, *completedAt)
		switch {
		case !found:
			l.Unattributed++
		case iv.Commit.Before(c.CommittedAt):
			l.Early++
		default:
			l.Samples = append(l.Samples, iv.Commit.Sub(c.CommittedAt))
		}
	}
	if err := rows.Err(); err != nil {
		return l, fmt.Errorf("read milestone rows: %w", err)
	}
	slices.Sort(l.Samples)
	return l, nil
}

// clockSlack absorbs the microsecond rounding of completed_at and the gap between the client's
// clock reading and the server's transaction start.
const clockSlack = time.Millisecond

// holding finds the interval (sorted by start, not overlapping) that holds t.
func holding(sorted []Interval, t time.Time) (Interval, bool) {
	i := sort.Search(len(sorted), func(i int) bool { return sorted[i].Start.After(t.Add(clockSlack)) }) - 1
	if i < 0 || t.After(sorted[i].Commit.Add(clockSlack)) {
		return Interval{}, false
	}
	return sorted[i], true
}

// FlushIntervals are the intervals of a pipeline's flushes.
func FlushIntervals(fs []Flush) []Interval {
	out := make([]Interval, len(fs))
	for i, f := range fs {
		out[i] = Interval{Start: f.Start, Commit: f.Commit}
	}
	return out
}
