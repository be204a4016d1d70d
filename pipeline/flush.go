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

// dbFlusher applies windows on the session's flush connection.
type dbFlusher struct {
	conn *pgx.Conn
	slot string
	// margins are the catch-up margins used when a re-activated rule derives its gap.
	margins processors.WindowOptions
	now     func() time.Time
}

// flush applies a window in one database transaction: resolve its tracks to eligible artists,
// recompute p1–p3 and c, advance the legacy checkpoints and store the window's end LSN. Either
// all of it commits or none of it does, so the stored LSN always describes the rewards.
func (f dbFlusher) flush(ctx context.Context, w *window) (FlushResult, error) {
	start := f.now()
	res := FlushResult{LSN: w.endLSN, Tracks: len(w.tracks), Commenters: len(w.commenters), FirstCommit: w.firstCommit}
	err := pgx.BeginFunc(ctx, f.conn, func(tx pgx.Tx) error {
		if w.hasChanges() {
			r, err := processors.ApplyWindow(ctx, tx, processors.Window{
				TrackIDs: ids(w.tracks), UserIDs: ids(w.commenters), Legacy: w.legacy,
			}, f.margins)
			if err != nil {
				return err
			}
			res.Stats, res.Artists, res.Oddities = r.Stats, r.Artists, r.Oddities
			res.Held, res.Gaps, res.ForeignCheckpoints = r.Held, r.Gaps, r.Foreign
		}
		return checkpoints.StoreLSN(ctx, tx, f.slot, w.endLSN)
	})
	if err != nil {
		return FlushResult{}, fmt.Errorf("flush window ending %s: %w", w.endLSN, err)
	}
	res.CommittedAt = f.now()
	res.Duration = res.CommittedAt.Sub(start)
	return res, nil
}
