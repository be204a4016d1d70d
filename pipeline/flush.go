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
	// publication is what the stream reads through: the flush stores its position only while
	// it is the one the stored position was streamed through (checkpoints.StoreLSN).
	publication string
	// margins are the catch-up margins used when a re-activated rule derives its gap.
	margins processors.WindowOptions
	now     func() time.Time
	log     *zap.Logger
}

// flush applies a window in one database transaction: every registered rule recomputes its
// dirty keys, the legacy checkpoints advance, and the window's end LSN is stored. Either
// all of it commits or none of it does, so the stored LSN always describes the rewards.
func (f dbFlusher) flush(ctx context.Context, w *window) (Flushed, error) {
	start := f.now()
	res := Flushed{LSN: w.endLSN, Changes: w.changes, Keys: w.size(), FirstCommit: w.firstCommit}
	if err := waitVisible(ctx, f.conn, w.xids, f.log); err != nil {
		return Flushed{}, fmt.Errorf("flush window ending %s: %w", w.endLSN, err)
	}
	err := pgx.BeginFunc(ctx, f.conn, func(tx pgx.Tx) error {
		if w.hasChanges() {
			r, err := processors.ApplyWindow(ctx, tx, w.rulesWindow(), f.margins)
			if err != nil {
				return err
			}
			res.Stats, res.Artists, res.Oddities = r.Stats, r.Artists, r.Oddities
			res.Rules, res.Inactive = r.Rules, r.Inactive
			res.Held, res.Gaps, res.ForeignCheckpoints = r.Held, r.Gaps, r.Foreign
		}
		return checkpoints.StoreLSN(ctx, tx, f.slot, w.endLSN, f.publication)
	})
	if err != nil {
		return Flushed{}, fmt.Errorf("flush window ending %s: %w", w.endLSN, err)
	}
	res.CommittedAt = f.now()
	res.Duration = res.CommittedAt.Sub(start)
	return res, nil
}

// serverWALEnd reads the server's WAL end on the flush connection (see serverWALEnd).
func (f dbFlusher) serverWALEnd(ctx context.Context) (pglogrepl.LSN, error) {
	return serverWALEnd(ctx, f.conn)
}

// serverWALEnd is how far the server has written WAL durably: as far as the walsender can
// send (on a standby, as far as it has replayed).
func serverWALEnd(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var end pglogrepl.LSN
	err := conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
	ELSE pg_current_wal_flush_lsn() END`).Scan(&end)
	return end, err
}

// snapshotXmax is the xmax of a snapshot taken now, as a full (epoch-qualified) transaction id.
const snapshotXmax = `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`

// invisibleXids counts the transactions of $1 (full xids) that a snapshot taken now does not see.
const invisibleXids = `
SELECT count(*) FILTER (WHERE NOT pg_visible_in_snapshot(x::text::xid8, pg_current_snapshot()))
FROM unnest($1::bigint[]) AS x`

// fullXid widens a 32-bit xid, as pgoutput's BEGIN carries it, to the full transaction id
// nearest to near (a snapshot's xmax): the one within 2³¹ of it. Every transaction the server
// still tracks lies that close to its next xid — wraparound protection guarantees it — and a
// streamed transaction can lie on either side of xmax: one whose COMMIT is in WAL but that has
// not yet left the proc array (a synchronous-standby wait, or the instant after its WAL flush)
// can have an xid at or above xmax. Assuming such an xid to be older than xmax reads it as a
// transaction of the previous epoch, long visible, and the flush would pass its rows.
func fullXid(xid uint32, near uint64) uint64 {
	const epochSpan = 1 << 32
	full := near&^(epochSpan-1) | uint64(xid)
	switch {
	case full > near && full-near > epochSpan/2 && full >= epochSpan:
		return full - epochSpan // the epoch before near's
	case full < near && near-full > epochSpan/2:
		return full + epochSpan // the epoch after near's
	}
	return full
}

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
	var xmax int64
	if err := conn.QueryRow(ctx, snapshotXmax).Scan(&xmax); err != nil {
		return fmt.Errorf("read the snapshot's xmax: %w", err)
	}
	arg := make([]int64, len(xids))
	for i, x := range xids {
		arg[i] = int64(fullXid(x, uint64(xmax)))
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
