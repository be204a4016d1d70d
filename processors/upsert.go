package processors

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// upsertBatchSize bounds the rows of one INSERT … SELECT FROM unnest statement: large enough
// that a flush of a busy window is a handful of round trips, small enough that one statement's
// arrays and its RETURNING set stay a few hundred kB.
const upsertBatchSize = 5000

// Row is one user_challenges row as a rule computes it, before §3.1 merges it with the stored
// row (sticky completion, frozen amount and completed_at).
type Row struct {
	ChallengeID string
	Specifier   string
	UserID      int64
	Current     int64 // current_step_count
	Step        int64 // the challenge's step; the row is complete when Step > 0 && Current >= Step
	Amount      int64
}

// Complete reports whether the row, taken on its own, is complete.
func (r Row) Complete() bool { return r.Step > 0 && r.Current >= r.Step }

// The statement is the reference upsert of SPEC §3.1 in one set-based INSERT per batch.
//
// completed_at is a timestamp without time zone, so "now()" is written as now()::timestamp in
// every branch: a CASE mixing timestamp and timestamptz would resolve to timestamptz and
// round-trip the frozen value through the session time zone.
//
// (xmax = 0) tells an inserted row from an updated one: an ON CONFLICT update leaves the
// updating transaction's id in xmax of the new version.
const upsertSQL = `
INSERT INTO user_challenges AS uc
    (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
SELECT r.challenge_id, r.user_id, r.specifier, r.complete, r.current, r.amount,
       CASE WHEN r.complete THEN now()::timestamp END
FROM (
    SELECT u.challenge_id, u.user_id, u.specifier, u.current, u.amount,
           (u.step > 0 AND u.current >= u.step) AS complete
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
        AS u(challenge_id, user_id, specifier, current, step, amount)
) r
ON CONFLICT (challenge_id, specifier) DO UPDATE SET
    current_step_count = EXCLUDED.current_step_count,
    is_complete = uc.is_complete OR EXCLUDED.is_complete,
    amount = CASE WHEN uc.is_complete THEN uc.amount ELSE EXCLUDED.amount END,
    completed_at = CASE WHEN uc.is_complete THEN uc.completed_at
                        WHEN EXCLUDED.is_complete THEN now()::timestamp
                        ELSE uc.completed_at END`

const upsertReturning = `
RETURNING uc.challenge_id, (uc.xmax = 0) AS inserted`

// noopSkip is true exactly when the SET list above would change the stored row: the step count
// differs, or the stored row is not complete yet and either becomes complete (is_complete and
// completed_at change) or carries a different amount. A DO UPDATE whose WHERE is false locks
// the row but writes no new version: no trigger, no WAL record, no dead tuple.
const noopSkip = `
WHERE uc.current_step_count IS DISTINCT FROM EXCLUDED.current_step_count
   OR (NOT uc.is_complete AND (EXCLUDED.is_complete OR uc.amount <> EXCLUDED.amount))`

const upsertSkipSQL = upsertSQL + noopSkip + upsertReturning

// Upsert writes rows with the semantics of SPEC §3.1 and skips every row whose stored contents
// would not change. Rows with the same (ChallengeID, Specifier) are merged, the last one
// winning. created_at takes its column default; completed_blocknumber is never written.
func Upsert(ctx context.Context, q Querier, rows []Row) (Stats, error) {
	stats := Stats{}
	err := chunks(dedupeRows(rows), upsertBatchSize, func(batch []Row) error {
		return upsertBatch(ctx, q, batch, stats)
	})
	if err != nil {
		return nil, err
	}
	return stats, nil
}

// dedupeRows returns the rows with one row per key (the last given), sorted by key. ON
// CONFLICT cannot touch a row twice in one statement, and a fixed order makes concurrent
// writers lock rows in the same order instead of deadlocking.
func dedupeRows(rows []Row) []Row {
	out := make([]Row, 0, len(rows))
	type key struct{ id, spec string }
	at := make(map[key]int, len(rows))
	for _, r := range rows {
		k := key{r.ChallengeID, r.Specifier}
		if i, ok := at[k]; ok {
			out[i] = r
			continue
		}
		at[k] = len(out)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		return cmp.Or(cmp.Compare(a.ChallengeID, b.ChallengeID), cmp.Compare(a.Specifier, b.Specifier))
	})
	return out
}

func upsertBatch(ctx context.Context, q Querier, batch []Row, stats Stats) error {
	var (
		ids     = make([]string, len(batch))
		users   = make([]int64, len(batch))
		specs   = make([]string, len(batch))
		current = make([]int64, len(batch))
		steps   = make([]int64, len(batch))
		amounts = make([]int64, len(batch))
		sent    = map[string]int{}
	)
	for i, r := range batch {
		ids[i], users[i], specs[i] = r.ChallengeID, r.UserID, r.Specifier
		current[i], steps[i], amounts[i] = r.Current, r.Step, r.Amount
		sent[r.ChallengeID]++
	}
	rows, err := q.Query(ctx, upsertSkipSQL, ids, users, specs, current, steps, amounts)
	if err != nil {
		return fmt.Errorf("upsert user_challenges: %w", err)
	}
	defer rows.Close()
	written := map[string]Counts{}
	for rows.Next() {
		var (
			id       string
			inserted bool
		)
		if err := rows.Scan(&id, &inserted); err != nil {
			return fmt.Errorf("upsert user_challenges: %w", err)
		}
		c := written[id]
		if inserted {
			c.Inserted++
		} else {
			c.Updated++
		}
		written[id] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("upsert user_challenges: %w", err)
	}
	for id, n := range sent {
		c := written[id]
		c.Unchanged = n - c.Inserted - c.Updated
		stats.Add(Stats{id: c})
	}
	return nil
}
