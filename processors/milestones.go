package processors

import (
	"context"
	"fmt"
	"slices"
	"strconv"
)

// idBatchSize bounds the ID arrays of one lookup query, and so the rows one statement
// produces (at most three milestone rows per artist).
const idBatchSize = 5000

// trackBatchSize bounds the track IDs of one ArtistsForTracks statement (at most the window
// size cap, pipeline.DefaultMaxWindowSize, so a window resolves in one statement).
const trackBatchSize = 50_000

// eligibleUser is the SPEC §3.2 eligibility test for the users row u.
const eligibleUser = `u.is_current = true AND u.is_verified = true AND u.is_deactivated = false`

// eligibleArtist is the same test for the artist in column owner_id of t.
const eligibleArtist = `EXISTS (
    SELECT 1 FROM users u WHERE u.user_id = t.owner_id AND ` + eligibleUser + `)`

// ArtistsForTracks resolves the tracks that received plays to the artists whose milestones may
// have moved: the distinct owners of the tracks' live rows (is_current, not deleted) who are
// eligible. Tracks that are unknown, deleted or owned by an ineligible user resolve to
// nothing. The result is sorted.
func ArtistsForTracks(ctx context.Context, q Querier, trackIDs []int64) ([]int64, error) {
	seen := map[int64]struct{}{}
	// A join on unnest rather than track_id = ANY($1): the planner estimates an ANY list
	// element by element (8.7 ms of planning for 5,000 IDs), and a backlog's window holds tens
	// of thousands of tracks. Its output is the distinct owners, so batches can be large.
	err := chunks(trackIDs, trackBatchSize, func(batch []int64) error {
		rows, err := q.Query(ctx, `
SELECT DISTINCT t.owner_id
FROM unnest($1::bigint[]) AS played(track_id)
JOIN tracks t ON t.track_id = played.track_id
WHERE t.is_current = true AND t.is_delete = false
  AND `+eligibleArtist, batch)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			seen[id] = struct{}{}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("resolve tracks to artists: %w", err)
	}
	artists := make([]int64, 0, len(seen))
	for id := range seen {
		artists = append(artists, id)
	}
	slices.Sort(artists)
	return artists, nil
}

// recomputeMilestones re-derives the p1–p3 rows of the given artists (SPEC §3.2) and upserts
// them. Ineligible artists and artists without plays since 2025 get nothing; their existing
// rows are left as they are.
func recomputeMilestones(ctx context.Context, q Querier, cat Catalog, artistIDs []int64) (Stats, error) {
	stats, err := recompute(ctx, q, cat, artistIDs, MilestoneRows)
	if err != nil {
		return nil, fmt.Errorf("recompute play milestones: %w", err)
	}
	return stats, nil
}

// MilestoneRows computes the p1–p3 rows of the given artists without writing them: the play
// counts in one query, then the tier walk. recomputeMilestones is MilestoneRows followed by
// Upsert; the rows on their own are for the polling reference (internal/tools/pollingjob),
// which writes the same rows its own way for the benchmarks.
func MilestoneRows(ctx context.Context, q Querier, cat Catalog, artistIDs []int64) ([]Row, error) {
	if len(cat.Milestones) == 0 || len(artistIDs) == 0 {
		return nil, nil
	}
	// Eligibility is looked up per artist first (users by primary key): written as EXISTS on
	// tracks, the planner chose a merge semi join that walked users_pkey from the start to the
	// highest owner id, a cost that grew with the users table, not with the window (14.7 ms of
	// which 6.3 ms in that walk for 216 artists at 10x the synthetic data; 8.2 ms this way).
	counts, err := q.Query(ctx, `
SELECT t.owner_id, SUM(a.count)::bigint
FROM (SELECT DISTINCT u.user_id FROM users u
      WHERE u.user_id = ANY($1::bigint[]) AND `+eligibleUser+`) eligible
JOIN tracks t ON t.owner_id = eligible.user_id AND t.is_current = true AND t.is_delete = false
JOIN aggregate_monthly_plays a ON a.play_item_id = t.track_id AND a."timestamp" >= DATE '2025-01-01'
GROUP BY t.owner_id
HAVING SUM(a.count) > 0`, artistIDs)
	if err != nil {
		return nil, fmt.Errorf("count plays: %w", err)
	}
	defer counts.Close()
	var rows []Row
	for counts.Next() {
		var user, n int64
		if err := counts.Scan(&user, &n); err != nil {
			return nil, fmt.Errorf("count plays: %w", err)
		}
		rows = append(rows, milestoneRows(user, n, cat.Milestones)...)
	}
	if err := counts.Err(); err != nil {
		return nil, fmt.Errorf("count plays: %w", err)
	}
	return rows, nil
}

// milestoneRows is the tier walk of SPEC §3.2: a tier is reached once the count reaches the
// previous tier's step, and its progress is capped at its own step. So p2 appears at 250
// plays and p3 at 1,000, and a missing or inactive tier lowers the gate of the next one.
func milestoneRows(userID, count int64, tiers []Tier) []Row {
	if count <= 0 {
		return nil
	}
	var rows []Row
	prev := int64(0)
	for _, t := range tiers {
		if count < prev {
			break
		}
		rows = append(rows, Row{
			ChallengeID: t.ChallengeID,
			Specifier:   milestoneSpecifier(userID, t.Suffix),
			UserID:      userID,
			Current:     min(count, t.Step),
			Step:        t.Step,
			Amount:      t.Amount,
		})
		prev = t.Step
	}
	return rows
}

// hexUserID is the user part of every specifier: lowercase hex, no prefix, no padding.
func hexUserID(userID int64) string { return strconv.FormatInt(userID, 16) }

func milestoneSpecifier(userID int64, suffix string) string {
	return hexUserID(userID) + ":" + suffix
}
