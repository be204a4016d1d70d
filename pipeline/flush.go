package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

// FlushResult describes one committed flush.
type FlushResult struct {
	LSN         pglogrepl.LSN
	Artists     int // eligible artists recomputed
	Commenters  int
	Tracks      int
	Stats       processors.Stats
	Duration    time.Duration
	FirstCommit time.Time // commit time of the window's oldest change (zero for LSN-only flushes)
	CommittedAt time.Time
	// Oddities are catalog rows the rules had to interpret (a non-numeric amount, a missing
	// row); the loop logs them when they change.
	Oddities []string
}

// Flush applies a window in one database transaction: resolve its tracks to eligible artists,
// recompute p1–p3 and c, advance the legacy checkpoints and store the window's end LSN. Either
// all of it commits or none of it does, so the stored LSN always describes the rewards.
func Flush(ctx context.Context, conn *pgx.Conn, slot string, w *Window, now func() time.Time) (FlushResult, error) {
	start := now()
	res := FlushResult{LSN: w.EndLSN, Tracks: len(w.Tracks), Commenters: len(w.Commenters), FirstCommit: w.FirstCommit}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if w.HasChanges() {
			catalog, err := processors.LoadCatalog(ctx, tx)
			if err != nil {
				return err
			}
			stats, artists, err := applyChanges(ctx, tx, catalog, w)
			if err != nil {
				return err
			}
			res.Stats, res.Artists, res.Oddities = stats, artists, catalog.Oddities
			if err := checkpoints.AdvanceLegacy(ctx, tx, w.Legacy); err != nil {
				return err
			}
		}
		return checkpoints.StoreLSN(ctx, tx, slot, w.EndLSN)
	})
	if err != nil {
		return FlushResult{}, fmt.Errorf("flush window ending %s: %w", w.EndLSN, err)
	}
	res.CommittedAt = now()
	res.Duration = res.CommittedAt.Sub(start)
	return res, nil
}

func applyChanges(ctx context.Context, tx pgx.Tx, catalog processors.Catalog, w *Window) (processors.Stats, int, error) {
	stats := processors.Stats{}
	artists, err := processors.ArtistsForTracks(ctx, tx, IDs(w.Tracks))
	if err != nil {
		return nil, 0, err
	}
	if len(artists) > 0 {
		s, err := processors.RecomputeMilestones(ctx, tx, catalog, artists)
		if err != nil {
			return nil, 0, err
		}
		stats.Add(s)
	}
	if len(w.Commenters) > 0 {
		s, err := processors.RecomputeWeeklyComments(ctx, tx, catalog, IDs(w.Commenters))
		if err != nil {
			return nil, 0, err
		}
		stats.Add(s)
	}
	return stats, len(artists), nil
}
