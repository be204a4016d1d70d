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
	if err := replication.CheckServer(ctx, conn, registryPlan().tables()); err != nil {
		return err
	}
	if err := replication.CheckSlotName(ctx, conn, p.cfg.Slot); err != nil {
		return err
	}
	return replication.CheckSynchronousStandby(ctx, conn)
}
