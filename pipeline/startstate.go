package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/failpoint"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// The start states of SPEC §5. decideStart is the whole decision, kept apart from the I/O that
// gathers its inputs and carries it out (prepare), so it can be read and tested as a table.

// The reasons a slot is recreated (SlotRecreated, the slot_recreated_total label); each is a
// row of decideStart.
const (
	// ReasonMissing: a position is stored but the slot is gone (dropped by someone).
	ReasonMissing = "missing"
	// ReasonFailover: the slot is gone and the server's timeline began after the stored
	// position: it was promoted (a failover or switchover to a standby the slot was not
	// synchronized to, or a point-in-time restore), and the slot stayed on the old primary.
	ReasonFailover = "failover"
	// ReasonLost: the server invalidated the slot (wal_status = lost).
	ReasonLost = "lost"
	// ReasonPublication: the publication was dropped, or dropped and recreated, since the stored
	// position (another pg_publication oid than the stored one, or none; or pgoutput failing on
	// it): changes written meanwhile were never decoded through it — Postgres 18 skips them,
	// older servers fail on them — so the slot can never deliver them.
	ReasonPublication = "publication"
	// ReasonPublicationWidened: the publication must send a table, rows or columns it did not
	// send when the slot's pending changes were written (a newer registry reads more, or
	// someone narrowed it), and the slot decodes those changes under the publication as it was.
	ReasonPublicationWidened = "publication_widened"
	// ReasonStoredAhead: the stored LSN is past the server's WAL end, so it was written on
	// another cluster (a restored dump or backup, a blue/green or logical migration). Resuming
	// from it would drop every commit up to it and confirm a future position to the server.
	ReasonStoredAhead = "stored_ahead"
	// ReasonConfirmedAhead: the slot was confirmed past the stored LSN, so another consumer took
	// changes from it that were never applied here; START_REPLICATION would silently skip them.
	ReasonConfirmedAhead = "confirmed_ahead"
)

// SlotCreatedLog is the message logged when a slot is created, with its consistent_point: the
// slot is confirmed there, ahead of the stored position, until the catch-up in its snapshot
// stores that point.
const SlotCreatedLog = "created the slot; catching up inside its snapshot"

// noteUnusableSlot remembers a session error that means the slot can never stream again, so
// the next session recreates it and catches up from the legacy checkpoints.
func (p *pipeline) noteUnusableSlot(err error) {
	if replication.IsPublicationMissing(err) || errors.Is(err, checkpoints.ErrPublicationReplaced) {
		p.unusableSlot = ReasonPublication
	}
}

// startKind is what a session does before it streams.
type startKind int

const (
	// resume streams from the stored LSN on the existing slot.
	resume startKind = iota
	// recreate replaces a slot that cannot deliver from the stored LSN and catches up from
	// the legacy checkpoints inside the new slot's snapshot.
	recreate
	// firstStart creates the slot and catches up inside its snapshot from the legacy
	// checkpoints, or seeds them, or derives all history (--backfill).
	firstStart
)

// startState is what decideStart knows: the slot, whether an LSN is stored for it and whether
// that LSN lies past the server's WAL end, and why an earlier session found the slot unusable
// ("" when none did).
type startState struct {
	slot   replication.SlotInfo
	stored bool
	// storedAhead: the stored LSN is past the server's WAL end. No position of this server
	// can be there, so the row came from elsewhere (see ReasonStoredAhead); neither it nor the
	// slot can say where this server's stream stands.
	storedAhead bool
	// confirmedAhead: the slot's confirmed_flush_lsn is past the stored LSN (see
	// ReasonConfirmedAhead).
	confirmedAhead bool
	// promoted: the server's current timeline began after the stored LSN (see ReasonFailover).
	promoted bool
	// widened: the publication is to send what it does not send today (see
	// ReasonPublicationWidened).
	widened bool
	// publicationReplaced: the publication is gone or is not the one the stored position was
	// streamed through (see ReasonPublication).
	publicationReplaced bool
	unusable            string
	backfill            bool
}

// startPlan is the decision.
type startPlan struct {
	kind startKind
	// reason is why the slot is recreated (the slot_recreated_total label): one of the Reason
	// constants.
	reason string
	// interrupted: a slot without a stored position, left by a first start that died before its
	// catch-up committed. Nothing was applied from it.
	interrupted bool
	// dropSlot: the existing slot goes before a new one is made.
	dropSlot bool
	// fromScratch derives all history instead of cutting over from the legacy checkpoints.
	fromScratch bool
}

func decideStart(s startState) startPlan {
	usable := s.slot.Exists && !s.slot.Lost() && s.unusable == "" && !s.storedAhead && !s.confirmedAhead &&
		!s.publicationReplaced && !s.widened
	switch {
	case s.stored && usable:
		return startPlan{kind: resume}
	case s.stored:
		reason := ReasonMissing
		switch {
		case s.storedAhead:
			reason = ReasonStoredAhead
		case s.unusable != "":
			reason = s.unusable
		case s.publicationReplaced:
			reason = ReasonPublication
		case s.widened:
			reason = ReasonPublicationWidened
		case s.confirmedAhead:
			reason = ReasonConfirmedAhead
		case s.slot.Exists:
			reason = ReasonLost
		case s.promoted:
			reason = ReasonFailover
		}
		return startPlan{kind: recreate, reason: reason, dropSlot: s.slot.Exists}
	default:
		// No stored position: nothing was ever applied from a slot, so this is a first start,
		// with its --backfill, even when an interrupted one left a slot behind.
		return startPlan{kind: firstStart, interrupted: s.slot.Exists, dropSlot: s.slot.Exists, fromScratch: s.backfill}
	}
}

// prepare decides where the stream starts (SPEC §5) and, for a new slot, catches up inside the
// slot's exported snapshot, so the catch-up and the stream meet without gap or overlap.
func (p *pipeline) prepare(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (pglogrepl.LSN, error) {
	cfg := p.cfg
	state, err := checkpoints.ReadState(ctx, conn, cfg.Slot)
	if err != nil {
		return 0, err
	}
	stored, found := state.LSN, state.Found
	slot, err := replication.InspectSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return 0, err
	}
	walEnd, err := serverWALEnd(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("read the server's WAL end: %w", err)
	}
	_, timelineBegan, err := replication.TimelineBegan(ctx, repl)
	if err != nil {
		return 0, err
	}
	pub, err := replication.DescribePublication(ctx, conn, cfg.Publication, registryPlan().plan, cfg.PublishWholeRows)
	if err != nil {
		return 0, err
	}
	if err := pub.Usable(cfg.Publication); err != nil {
		return 0, err
	}
	misses := pub.Misses()
	opts := processors.CatchUpOptions{
		PlayIDMargin:      cfg.PlayIDMargin,
		BlockMargin:       processors.DefaultBlockMargin,
		CommentNullBlocks: true,
	}
	plan := decideStart(startState{slot: slot, stored: found, storedAhead: found && stored > walEnd,
		confirmedAhead: found && slot.Exists && slot.ConfirmedFlush > stored, promoted: found && stored < timelineBegan,
		widened:             found && len(misses) > 0,
		publicationReplaced: found && (!pub.Exists || state.PublicationOID != 0 && state.PublicationOID != pub.OID),
		unusable:            p.unusableSlot, backfill: cfg.Backfill})
	switch plan.kind {
	case recreate:
		// The reason says which (see the Reason constants); the positions say by how much.
		p.log.Error("replication slot is gone or unusable; recreating it and catching up from the legacy checkpoints",
			zap.String("slot", cfg.Slot), zap.String("reason", plan.reason), zap.Stringer("stored_lsn", stored),
			zap.Stringer("server_wal_end", walEnd), zap.Stringer("timeline_began", timelineBegan),
			zap.Stringer("confirmed_flush_lsn", slot.ConfirmedFlush), zap.Strings("publication_adds", misses))
		cfg.Observe(SlotRecreated{Reason: plan.reason})
	case firstStart:
		if plan.interrupted {
			p.log.Warn("slot has no stored position (interrupted first start); recreating it", zap.String("slot", cfg.Slot))
		}
		opts.FromScratch = plan.fromScratch
		p.log.Info("first start: creating the slot", zap.String("slot", cfg.Slot), zap.Bool("backfill", cfg.Backfill))
	}
	// The slot goes before the publication widens: a crash in between leaves no slot to resume
	// on, so the next start recreates it too, after the publication has changed.
	if plan.dropSlot {
		if err := replication.DropSlot(ctx, conn, cfg.Slot); err != nil {
			return 0, err
		}
	}
	if pub, err = replication.UpdatePublication(ctx, conn, cfg.Publication, pub, registryPlan().plan, cfg.PublishWholeRows); err != nil {
		return 0, err
	}
	p.tellPublication(pub)
	if plan.kind == resume {
		return stored, nil
	}
	p.unusableSlot = ""
	created, err := replication.CreateSlot(ctx, repl, cfg.Slot, replication.SlotOptions{Failover: !cfg.DisableFailoverSlot})
	if err != nil {
		return 0, err
	}
	p.log.Info(SlotCreatedLog, zap.String("slot", cfg.Slot), zap.Stringer("consistent_point", created.ConsistentPoint))
	failpoint.Hit("after-create-slot")
	if cfg.afterCreateSlot != nil {
		cfg.afterCreateSlot()
	}
	cfg.Observe(StateChanged{State: StateCatchingUp})
	res, err := catchUpInSnapshot(ctx, conn, created, cfg.Slot, cfg.Publication, opts)
	if err != nil {
		return 0, err
	}
	p.log.Info("caught up inside the slot's snapshot",
		zap.Stringer("consistent_point", created.ConsistentPoint),
		zap.Int64("rows_scanned", res.Scanned()),
		zap.Int("artists", res.Artists), zap.Int("commenters", res.Users))
	p.oddities.note(res.Oddities)
	return created.ConsistentPoint, nil
}

// tellPublication says once per process when the publication sends more than the rules read:
// whole rows before Postgres 15, or an operator's publication with wider column lists.
func (p *pipeline) tellPublication(pub replication.Publication) {
	if p.toldPublication {
		return
	}
	p.toldPublication = true
	if !pub.ColumnLists {
		p.log.Info("publishing whole rows: publication column lists need Postgres 15",
			zap.String("publication", p.cfg.Publication))
		return
	}
	var wider []string
	for _, t := range pub.Tables {
		if t.Wider {
			wider = append(wider, t.Table)
		}
	}
	if len(wider) > 0 {
		p.log.Info("the publication sends columns no rule reads; the sidecar leaves it as it is because it did not create it "+
			"(see `challenge-stream status`; to let it set the column lists: COMMENT ON PUBLICATION … IS '"+replication.ManagedComment+"')",
			zap.String("publication", p.cfg.Publication), zap.Strings("tables", wider))
	}
}

var snapshotName = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// catchUpInSnapshot runs the catch-up in one REPEATABLE READ transaction that sees exactly what
// committed before the slot's consistent point, and stores that point with its results.
func catchUpInSnapshot(ctx context.Context, conn *pgx.Conn, slot replication.NewSlot, slotName, publication string,
	opts processors.CatchUpOptions) (processors.CatchUpResult, error) {
	if !snapshotName.MatchString(slot.Snapshot) {
		return processors.CatchUpResult{}, fmt.Errorf("unexpected snapshot name %q", slot.Snapshot)
	}
	var res processors.CatchUpResult
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.Snapshot+"'"); err != nil {
			return fmt.Errorf("import snapshot: %w", err)
		}
		var err error
		if res, err = processors.CatchUp(ctx, tx, opts); err != nil {
			return err
		}
		// The new slot's consistent point is where this stream starts, whatever was stored
		// before: a higher stored LSN (from another cluster) would drop every commit up to it.
		return checkpoints.ResetLSN(ctx, tx, slotName, slot.ConsistentPoint, publication)
	})
	if err != nil {
		return processors.CatchUpResult{}, fmt.Errorf("catch up in snapshot: %w", err)
	}
	return res, nil
}
