// Package pollingjob is the design challenge-stream replaces, kept as a reference: the polling
// job that woke every 30 s, read at most 5,000 source rows past the legacy checkpoints,
// re-derived the artists and commenters they touched and wrote every resulting row, changed or
// not. The benchmarks measure the sidecar against it (latency, sustainable rate, write
// amplification) and the fault tests run it beside the sidecar, as the cut-over allows.
//
// The rules are the product's (processors.MilestoneRows, processors.WeeklyCommentRows); what
// is the job's own is the row budget per tick and UpsertReference, the upsert of SPEC §3.1
// without the no-op skip. None of it ships in the product's API: the product's catch-up is
// processors.CatchUp, which has no budget and uses processors.Upsert.
package pollingjob

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

// ProductionMaxRows is the production job's budget: source rows per scan per 30 s tick.
const ProductionMaxRows = 5000

// Result says what one Tick did.
type Result struct {
	// PlaysScanned and CommentsScanned count the source rows read.
	PlaysScanned, CommentsScanned int64
	// Legacy holds both checkpoints as advanced.
	Legacy checkpoints.Legacy
	// Complete is false when the budget stopped a scan before the last row visible to the
	// tick; the next tick continues there.
	Complete bool
}

// Tick runs one tick of the job in q (run it in a transaction: the rows and the checkpoints
// commit together). It reads at most maxRows plays after the plays checkpoint and at most
// maxRows comments after the comments checkpoint, never splitting a block (so it may read a
// little more); 0 means no budget. A checkpoint that is absent is seeded to the current
// maximum without deriving anything, as processors.CatchUp does.
func Tick(ctx context.Context, q processors.Querier, maxRows int64) (Result, error) {
	if maxRows < 0 {
		return Result{}, errors.New("polling tick: negative row budget")
	}
	var limit *int64 // NULL: LIMIT ALL
	if maxRows > 0 {
		limit = &maxRows
	}
	cat, err := processors.LoadCatalog(ctx, q)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	prev, err := checkpoints.ReadLegacy(ctx, q)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	res := Result{Legacy: checkpoints.Legacy{}}

	plays, err := readScan(ctx, q, playsSQL, prev[checkpoints.PlaysCheckpoint], prev.Has(checkpoints.PlaysCheckpoint), limit)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: plays: %w", err)
	}
	artists, err := processors.ArtistsForTracks(ctx, q, plays.ids)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	milestones, err := processors.MilestoneRows(ctx, q, cat, artists)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	comments, err := readScan(ctx, q, commentsSQL, prev[checkpoints.CommentsCheckpoint], prev.Has(checkpoints.CommentsCheckpoint), limit)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: comments: %w", err)
	}
	weeks, err := processors.WeeklyCommentRows(ctx, q, cat, comments.ids)
	if err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	if err := UpsertReference(ctx, q, append(milestones, weeks...)); err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}

	res.PlaysScanned, res.CommentsScanned = plays.rows, comments.rows
	res.Legacy[checkpoints.PlaysCheckpoint] = max(prev[checkpoints.PlaysCheckpoint], plays.reached)
	res.Legacy[checkpoints.CommentsCheckpoint] = max(prev[checkpoints.CommentsCheckpoint], comments.reached)
	res.Complete = !plays.more && !comments.more
	if err := checkpoints.AdvanceLegacy(ctx, q, res.Legacy); err != nil {
		return Result{}, fmt.Errorf("polling tick: %w", err)
	}
	return res, nil
}

// The scans read the rows after a checkpoint ($1) within a budget ($2, NULL for none) and
// return the distinct dirty ids, the key reached, the rows read and whether rows remain. With
// $3 false (no checkpoint yet) they read nothing and reach the current maximum.
const (
	playsSQL = `
WITH scan AS (
    SELECT id AS key, play_item_id AS dirty FROM plays
    WHERE $3::bool AND id > $1::bigint ORDER BY id LIMIT $2::bigint)
SELECT COALESCE(array_agg(DISTINCT dirty), '{}'),
       CASE WHEN $3 THEN COALESCE(MAX(key), $1) ELSE (SELECT COALESCE(MAX(id), 0) FROM plays) END,
       count(*),
       $3 AND EXISTS (SELECT FROM plays WHERE id > COALESCE((SELECT MAX(key) FROM scan), $1))
FROM scan`

	// A block is never split: the budget's last row takes the rest of its block along.
	commentsSQL = `
WITH cut AS (
    SELECT blocknumber FROM comments WHERE blocknumber > $1::bigint
    ORDER BY blocknumber OFFSET $2::bigint - 1 LIMIT 1),
scan AS (
    SELECT blocknumber AS key, user_id AS dirty FROM comments
    WHERE $3::bool AND blocknumber > $1
      AND ($2 IS NULL OR blocknumber <= COALESCE((SELECT blocknumber FROM cut), blocknumber)))
SELECT COALESCE(array_agg(DISTINCT dirty), '{}'),
       CASE WHEN $3 THEN COALESCE(MAX(key), $1) ELSE (SELECT COALESCE(MAX(blocknumber), 0) FROM comments) END,
       count(*),
       $3 AND EXISTS (SELECT FROM comments WHERE blocknumber > COALESCE((SELECT MAX(key) FROM scan), $1))
FROM scan`
)

type scanned struct {
	ids     []int64
	reached int64
	rows    int64
	more    bool
}

func readScan(ctx context.Context, q processors.Querier, sql string, after int64, has bool, limit *int64) (scanned, error) {
	var s scanned
	if err := q.QueryRow(ctx, sql, after, limit, has).Scan(&s.ids, &s.reached, &s.rows, &s.more); err != nil {
		return scanned{}, err
	}
	return s, nil
}

// referenceSQL is SPEC §3.1 as the polling job wrote it: every conflicting row is updated,
// whether its contents change or not, firing the host's triggers each time. processors.Upsert
// produces the same final rows and skips the unchanged ones; the benchmarks count the
// difference.
const referenceSQL = `
INSERT INTO user_challenges AS uc
    (challenge_id, user_id, specifier, is_complete, current_step_count, amount, completed_at)
SELECT u.id, u.user_id, u.spec, u.step > 0 AND u.cur >= u.step, u.cur, u.amount,
       CASE WHEN u.step > 0 AND u.cur >= u.step THEN now()::timestamp END
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS u(id, user_id, spec, cur, step, amount)
ON CONFLICT (challenge_id, specifier) DO UPDATE SET
    current_step_count = EXCLUDED.current_step_count,
    is_complete = uc.is_complete OR EXCLUDED.is_complete,
    amount = CASE WHEN uc.is_complete THEN uc.amount ELSE EXCLUDED.amount END,
    completed_at = CASE WHEN uc.is_complete THEN uc.completed_at
                        WHEN EXCLUDED.is_complete THEN now()::timestamp
                        ELSE uc.completed_at END`

// referenceBatch bounds the rows of one statement.
const referenceBatch = 5000

// UpsertReference writes rows as the polling job did: the final contents of processors.Upsert,
// but every conflicting row is updated. Rows with the same (ChallengeID, Specifier) are
// merged, the last one winning, and written in key order.
func UpsertReference(ctx context.Context, q processors.Querier, rows []processors.Row) error {
	type key struct{ id, spec string }
	last := make(map[key]processors.Row, len(rows))
	for _, r := range rows {
		last[key{r.ChallengeID, r.Specifier}] = r
	}
	merged := make([]processors.Row, 0, len(last))
	for _, r := range last {
		merged = append(merged, r)
	}
	slices.SortFunc(merged, func(a, b processors.Row) int {
		return cmp.Or(cmp.Compare(a.ChallengeID, b.ChallengeID), cmp.Compare(a.Specifier, b.Specifier))
	})
	for batch := range slices.Chunk(merged, referenceBatch) {
		ids, users, specs := make([]string, len(batch)), make([]int64, len(batch)), make([]string, len(batch))
		current, steps, amounts := make([]int64, len(batch)), make([]int64, len(batch)), make([]int64, len(batch))
		for i, r := range batch {
			ids[i], users[i], specs[i] = r.ChallengeID, r.UserID, r.Specifier
			current[i], steps[i], amounts[i] = r.Current, r.Step, r.Amount
		}
		if _, err := q.Exec(ctx, referenceSQL, ids, users, specs, current, steps, amounts); err != nil {
			return fmt.Errorf("reference upsert: %w", err)
		}
	}
	return nil
}
