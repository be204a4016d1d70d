package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

// dbFlusher applies windows on the session's flush connection.
type dbFlusher struct {
	conn *pgx.Conn
	slot string
	// margins are the catch-up margins used when a re-activated rule derives its gap.
	margins processors.WindowOptions
	now     func() time.Time
	log     *zap.Logger
}

// flush applies a window in one database transaction: resolve its tracks to eligible artists,
// recompute p1–p3 and c, advance the legacy checkpoints and store the window's end LSN. Either
// all of it commits or none of it does, so the stored LSN always describes the rewards.
func (f dbFlusher) flush(ctx context.Context, w *window) (Flushed, error) {
	start := f.now()
	res := Flushed{LSN: w.endLSN, Tracks: len(w.tracks), Commenters: len(w.commenters), FirstCommit: w.firstCommit}
	if err := waitVisible(ctx, f.conn, w.xids, f.log); err != nil {
		return Flushed{}, fmt.Errorf("flush window ending %s: %w", w.endLSN, err)
	}
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
		return Flushed{}, fmt.Errorf("flush window ending %s: %w", w.endLSN, err)
	}
	res.CommittedAt = f.now()
	res.Duration = res.CommittedAt.Sub(start)
	return res, nil
}

// serverWALEnd is how far the server has written WAL durably: as far as the walsender can
// send (on a standby, as far as it has replayed).
func (f dbFlusher) serverWALEnd(ctx context.Context) (pglogrepl.LSN, error) {
	var end pglogrepl.LSN
	err := f.conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
	ELSE pg_current_wal_flush_lsn() END`).Scan(&end)
	return end, err
}

// invisibleXids counts the transactions of $1 (32-bit xids, as pgoutput's BEGIN carries them)
// that a snapshot taken now does not see. An xid is widened to the xid8 of the epoch it belongs
// to: the one of the snapshot's xmax, or the one before if it would lie ahead of xmax.
const invisibleXids = `
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot(full_xid::text::xid8, snap))
FROM (SELECT pg_current_snapshot() AS snap) s
CROSS JOIN LATERAL (SELECT pg_snapshot_xmax(s.snap)::text::bigint AS xmax) m
CROSS JOIN LATERAL unnest($1::bigint[]) AS x
CROSS JOIN LATERAL (SELECT (m.xmax & ~4294967295::bigint) | x AS same_epoch) e
CROSS JOIN LATERAL (SELECT CASE WHEN e.same_epoch > m.xmax THEN e.same_epoch - 4294967296
                               ELSE e.same_epoch END AS full_xid) f`

// waitVisible waits until every transaction of xids is visible to a new snapshot. The
// walsender sends a COMMIT once its WAL record is flushed, but the committing backend leaves
// the proc array — which is what makes the transaction visible to other sessions — only after
// that, and after waiting for synchronous standbys when synchronous_commit asks for them. A
// flush that read the tables in between would recompute without the transaction's rows and
// store an LSN past it: the rows would be lost for good. The check runs outside the flush
// transaction, so any isolation level works; a snapshot that sees a committed transaction is
// followed only by snapshots that see it too.
func waitVisible(ctx context.Context, conn *pgx.Conn, xids []uint32, log *zap.Logger) error {
	if len(xids) == 0 {
		return nil
	}
	arg := make([]int64, len(xids))
	for i, x := range xids {
		arg[i] = int64(x)
	}
	started := time.Now()
	pause, warned := time.Millisecond, false
	for {
		var invisible int64
		if err := conn.QueryRow(ctx, invisibleXids, arg).Scan(&invisible); err != nil {
			return fmt.Errorf("check that the window's transactions are visible: %w", err)
		}
		if invisible == 0 {
			return nil
		}
		if !warned && time.Since(started) > visibleWarnAfter {
			// A commit that waits for a synchronous standby is in WAL, and so in our stream,
			// but nobody sees it until the standby answers.
			log.Warn("waiting for committed transactions to become visible; is a commit waiting for a synchronous standby?",
				zap.Int64("invisible", invisible), zap.Duration("waited", time.Since(started)))
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// visibleWarnAfter is how long a flush waits for its transactions to become visible before it
// says so.
const visibleWarnAfter = 5 * time.Second
