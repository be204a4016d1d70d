package pipeline

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/replication"
)

// preflight refuses, before anything is created, a server we cannot stream from safely: wal_level,
// missing host tables, a slot name held by another database or a physical slot (never ours to
// drop), and a synchronous_standby_names that would make the host's commits wait on us.
func (p *pipeline) preflight(ctx context.Context, conn *pgx.Conn) error {
	if err := replication.CheckServer(ctx, conn); err != nil {
		return err
	}
	if err := replication.CheckSlotName(ctx, conn, p.cfg.Slot); err != nil {
		return err
	}
	return replication.CheckSynchronousStandby(ctx, conn)
}

// SlotRecreated reasons beyond "missing" and "lost".
const (
	// ReasonPublication: pgoutput cannot read the publication at the slot's position (it was
	// dropped, or dropped and recreated, while the slot lagged); the slot can never stream again.
	ReasonPublication = "publication"
	// ReasonStoredAhead: the stored LSN is past the server's WAL end, so it was written on
	// another cluster (a restored dump or backup, a blue/green or logical migration). Resuming
	// from it would drop every commit up to it and confirm a future position to the server.
	ReasonStoredAhead = "stored_ahead"
	// ReasonConfirmedAhead: the slot was confirmed past the stored LSN, so another consumer took
	// changes from it that were never applied here; START_REPLICATION would silently skip them.
	ReasonConfirmedAhead = "confirmed_ahead"
)

// noteUnusableSlot remembers a session error that means the slot can never stream again, so
// the next session recreates it and catches up from the legacy checkpoints.
func (p *pipeline) noteUnusableSlot(err error) {
	if replication.IsPublicationMissing(err) {
		p.unusableSlot = ReasonPublication
	}
}
