package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// stateSchema is the schema holding challenge-stream's own state (see migrations).
const stateSchema = "challenge_stream"

// teardownCommand decommissions the sidecar: it drops the slot (so the server stops retaining
// WAL for it) and the publication, and with --drop-state the challenge_stream schema. Without
// --yes it only says what it would drop.
func teardownCommand(ctx context.Context, e env) error {
	var yes, dropState bool
	flags := func(f *flagSet) {
		f.bool(&yes, "yes", "", "really drop them")
		f.bool(&dropState, "drop-state", "", "also drop the challenge_stream schema (stored LSNs, migration history)")
	}
	return withDB(ctx, e, "teardown", flags, func(c commonFlags, conn *pgx.Conn) error {
		p, err := inspectTeardown(ctx, conn, c.slot, c.publication)
		if err != nil {
			return err
		}
		if !yes {
			fmt.Fprintln(e.stdout, "teardown would:")
			fmt.Fprintln(e.stdout, "  "+plan("replication slot", c.slot, p.slot.Exists))
			fmt.Fprintln(e.stdout, "  "+plan("publication", c.publication, p.pubExists))
			if dropState {
				fmt.Fprintln(e.stdout, "  "+plan("schema", stateSchema, p.schemaExists))
			}
			return usagef("--yes is required: teardown dropped nothing")
		}
		return p.apply(ctx, conn, e.stdout, dropState)
	})
}

// teardownPlan is what exists before teardown drops it.
type teardownPlan struct {
	slotName, publication string
	slot                  replication.SlotInfo
	pubExists             bool
	schemaExists          bool
}

func inspectTeardown(ctx context.Context, conn *pgx.Conn, slot, publication string) (teardownPlan, error) {
	p := teardownPlan{slotName: slot, publication: publication}
	var err error
	if p.slot, err = replication.InspectSlot(ctx, conn, slot); err != nil {
		return p, err
	}
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		to_regnamespace($2) IS NOT NULL`, publication, stateSchema).Scan(&p.pubExists, &p.schemaExists); err != nil {
		return p, fmt.Errorf("look up publication and schema: %w", err)
	}
	return p, nil
}

// apply drops what the plan found, refusing while a sidecar runs on the slot.
func (p teardownPlan) apply(ctx context.Context, conn *pgx.Conn, out io.Writer, dropState bool) error {
	// The streaming replica holds the leader lock for its whole session, also while it
	// reconnects or catches up without an active slot. Holding it until the connection closes
	// keeps a replica from starting (and recreating the slot) while we drop.
	free, err := pipeline.TryLeaderLock(ctx, conn.PgConn(), p.slotName)
	if err != nil {
		return err
	}
	if !free {
		return fmt.Errorf("a sidecar is running on slot %s (it holds the leader lock): stop the sidecar first", p.slotName)
	}
	defer func() { _ = pipeline.ReleaseLeaderLock(context.WithoutCancel(ctx), conn.PgConn(), p.slotName) }()
	slot, err := replication.InspectSlot(ctx, conn, p.slotName)
	if err != nil {
		return err
	}
	if slot.Active {
		return fmt.Errorf("slot %s is in use (walsender pid %d): stop the sidecar first", p.slotName, slot.ActivePID)
	}
	if slot.Exists {
		if err := replication.DropSlot(ctx, conn, p.slotName); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use: it became active since
				return fmt.Errorf("slot %s is in use: stop the sidecar first", p.slotName)
			}
			return err
		}
	}
	fmt.Fprintln(out, done("replication slot", p.slotName, slot.Exists))
	if err := replication.DropPublication(ctx, conn, p.publication); err != nil {
		return err
	}
	fmt.Fprintln(out, done("publication", p.publication, p.pubExists))
	if dropState {
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{stateSchema}.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", stateSchema, err)
		}
		fmt.Fprintln(out, done("schema", stateSchema, p.schemaExists))
	}
	return nil
}

func plan(kind, name string, exists bool) string {
	if !exists {
		return fmt.Sprintf("skip %s %s (it does not exist)", kind, name)
	}
	return fmt.Sprintf("drop %s %s", kind, name)
}

func done(kind, name string, existed bool) string {
	if !existed {
		return fmt.Sprintf("%s %s did not exist", kind, name)
	}
	return fmt.Sprintf("dropped %s %s", kind, name)
}
