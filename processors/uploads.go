package processors

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ChallengeTrackUpload is the track-upload challenge: a user's public tracks counted up to the
// challenge's step (3 in production).
const ChallengeTrackUpload = "u"

// TrackUploadCheckpoint is u's legacy checkpoint: the highest tracks.blocknumber applied.
const TrackUploadCheckpoint = "challenges:u:last_blocknumber"

// uploadedTrack is upstream's test of a tracks row t that counts: the current version of a
// public (listed), non-deleted track that is not a stem, at or after the starting block.
const uploadedTrack = `t.is_current = true AND t.is_delete = false AND t.is_unlisted = false
  AND t.stem_of IS NULL AND t.blocknumber >= @start`

// trackUploadRule is u. Upstream (track_upload.go) recomputes the owners of the tracks whose
// blocknumber passed its checkpoint; a tracks change here makes its owner dirty. A user whose
// tracks are all gone keeps the row as it was (no row is written for a count of 0), and a
// complete one stays complete.
func trackUploadRule() Rule {
	return incremental(Rule{
		Name:       "uploads",
		Challenges: []string{ChallengeTrackUpload},
		Sources:    []Source{{Table: "tracks", Ops: Insert | Update, Column: "owner_id", Keys: "users"}},
		active:     func(c Catalog) bool { _, ok := uploadEntry(c); return ok },
		all:        allTrackUploadRows,
	}, blockSpec(TrackUploadCheckpoint, recomputeTrackUploads))
}

// uploadEntry is u's catalog row when the rule runs: upstream does nothing while step_count or
// starting_block is NULL. A step below 1 is also skipped here (upstream's LIMIT would fail its
// tick on a negative one, and a step of 0 counts nothing).
func uploadEntry(c Catalog) (Entry, bool) {
	e, ok := c.Active[ChallengeTrackUpload]
	if !ok || e.Step == nil || e.StartingBlock == nil || *e.Step < 1 {
		return Entry{}, false
	}
	return e, true
}

func recomputeTrackUploads(ctx context.Context, q Querier, cat Catalog, users []int64) (Stats, error) {
	stats, err := recompute(ctx, q, cat, users, TrackUploadRows)
	if err != nil {
		return nil, fmt.Errorf("recompute track uploads: %w", err)
	}
	return stats, nil
}

// TrackUploadRows computes the u rows of the given users: each user's counting tracks, counted
// no further than the step (the LIMIT keeps a label with thousands of tracks cheap).
func TrackUploadRows(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error) {
	e, ok := uploadEntry(cat)
	if !ok || len(users) == 0 {
		return nil, nil
	}
	return queryUploads(ctx, q, e, `
SELECT k.user_id, c.n
FROM unnest(@users::bigint[]) AS k(user_id)
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM tracks t WHERE t.owner_id = k.user_id AND `+uploadedTrack+` LIMIT @step
    ) counted
) c
WHERE c.n > 0`, pgx.NamedArgs{"users": sortedKeys(users), "start": *e.StartingBlock, "step": *e.Step})
}

// allTrackUploadRows is the polling job's tick before it went incremental: every owner's count.
func allTrackUploadRows(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
	e, ok := uploadEntry(cat)
	if !ok {
		return nil, nil
	}
	return queryUploads(ctx, q, e, `
SELECT t.owner_id, LEAST(count(*), @step)
FROM tracks t WHERE `+uploadedTrack+`
GROUP BY t.owner_id`, pgx.NamedArgs{"start": *e.StartingBlock, "step": *e.Step})
}

// queryUploads turns (user, count) rows into u rows.
func queryUploads(ctx context.Context, q Querier, e Entry, sql string, args pgx.NamedArgs) ([]Row, error) {
	rows, err := q.Query(ctx, sql, args)
	if err != nil {
		return nil, fmt.Errorf("count uploaded tracks: %w", err)
	}
	var (
		out         []Row
		user, count int64
	)
	_, err = pgx.ForEachRow(rows, []any{&user, &count}, func() error {
		out = append(out, Row{ChallengeID: ChallengeTrackUpload, Specifier: hexUserID(user), UserID: user,
			Current: count, Step: *e.Step, Amount: e.Amount})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count uploaded tracks: %w", err)
	}
	return out, nil
}
