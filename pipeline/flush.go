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
	// Held names the legacy checkpoints left in place because their rules are inactive; Gaps
	// are the derivations run for a family re-activated or a checkpoint another writer moved.
	Held []string
	Gaps []processors.Gap
	// ForeignCheckpoints names the legacy checkpoints someone else wrote since the last flush:
	// the polling job is running too. Worth a warning and a counter (see processors' doc).
	ForeignCheckpoints []string
}

// Flush applies a window in one database transaction: resolve its tracks to eligible artists,
// recompute p1–p3 and c, advance the legacy checkpoints and store the window's end LSN. Either
// all of it commits or none of it does, so the stored LSN always describes the rewards.
func Flush(ctx context.Context, conn *pgx.Conn, slot string, w *Window, now func() time.Time) (FlushResult, error) {
	start := now()
	res := FlushResult{LSN: w.EndLSN, Tracks: len(w.Tracks), Commenters: len(w.Commenters), FirstCommit: w.FirstCommit}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if w.HasChanges() {
			r, err := processors.ApplyWindow(ctx, tx, processors.Window{
				TrackIDs: IDs(w.Tracks), UserIDs: IDs(w.Commenters), Legacy: w.Legacy,
			}, processors.WindowOptions{})
			if err != nil {
				return err
			}
			res.Stats, res.Artists, res.Oddities = r.Stats, r.Artists, r.Oddities
			res.Held, res.Gaps, res.ForeignCheckpoints = r.Held, r.Gaps, r.Foreign
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
