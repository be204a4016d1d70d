package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// statusReport is what `status` shows; its JSON form is a stable interface for scripts.
type statusReport struct {
	Slot       string `json:"slot"`
	SlotExists bool   `json:"slot_exists"`
	Active     bool   `json:"active"`
	// ActivePID is the walsender's PID while a sidecar streams from the slot, else null.
	ActivePID         *int32 `json:"active_pid"`
	WALStatus         string `json:"wal_status,omitempty"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	// LagBytes is the server's WAL position minus confirmed_flush_lsn.
	LagBytes int64 `json:"lag_bytes"`
	// RetainedWALBytes is the WAL the slot keeps on the server's disk.
	RetainedWALBytes int64  `json:"retained_wal_bytes"`
	ServerWALLSN     string `json:"server_wal_lsn"`

	// Migrated is false when the challenge_stream schema is missing; the stored LSN is then
	// unknown.
	Migrated  bool    `json:"migrated"`
	StoredLSN *string `json:"stored_lsn"`
	// StoredLSNAgeSeconds is how long ago the stored LSN was last written (the last flush),
	// by the server's clock.
	StoredLSNAgeSeconds *float64   `json:"stored_lsn_age_seconds"`
	LastFlush           *time.Time `json:"last_flush"`

	LegacyLastPlayID       *int64 `json:"legacy_last_play_id"`
	LegacyLastCommentBlock *int64 `json:"legacy_last_comment_block"`

	// Rules are the registered rules with their catalog and bookkeeping state (null before
	// the migrations ran). Per-rule flush times and dirty keys are metrics of the running
	// process: challenge_stream_rule_flush_duration_seconds and challenge_stream_rule_dirty_keys.
	Rules []processors.RuleStatus `json:"rules"`
	// Owners says, per challenges row, whether the sidecar keeps it current, the polling job
	// must, or nobody does (inactive): the cut-over's checklist (README: Cut-over). Also
	// exported as challenge_stream_challenge_owned.
	Owners []processors.Ownership `json:"owners"`

	// Publication is what the publication sends of each source table: its columns (null:
	// whole rows), what the rules need, and whether it is wider than that. Error is set
	// instead when it cannot be described (a source table without replica identity).
	Publication publicationStatus `json:"publication"`
	// Decoding is the server's account of decoding for the slot (pg_stat_replication_slots;
	// null when it has none) and the server's logical_decoding_work_mem (the running sidecar
	// sets its own walsender's: --decoding-work-mem, exported as
	// challenge_stream_decoding_work_mem_bytes).
	Decoding              *replication.DecodingStats `json:"decoding"`
	ServerDecodingWorkMem string                     `json:"server_logical_decoding_work_mem"`
}

type publicationStatus struct {
	Name        string                       `json:"name"`
	Exists      bool                         `json:"exists"`
	Managed     bool                         `json:"managed"`
	ColumnLists bool                         `json:"column_lists"`
	Tables      []replication.PublishedTable `json:"tables,omitempty"`
	Error       string                       `json:"error,omitempty"`
}

// statusCommand shows the slot, its lag and retained WAL, the stored LSN and the legacy
// checkpoints, as a table or (--json) as JSON.
func statusCommand(ctx context.Context, e env) error {
	var asJSON bool
	jsonFlag := func(f *flagSet) { f.bool(&asJSON, "json", "", "print JSON instead of a table") }
	return withDB(ctx, e, "status", jsonFlag, func(c commonFlags, conn *pgx.Conn) error {
		r, err := readStatus(ctx, conn, c.slot, c.publication)
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		}
		return r.print(e.stdout)
	})
}

func readStatus(ctx context.Context, conn *pgx.Conn, slot, publication string) (statusReport, error) {
	r := statusReport{Slot: slot, Publication: publicationStatus{Name: publication}}
	var serverNow time.Time
	var walText string
	if err := conn.QueryRow(ctx, "SELECT now(), pg_current_wal_lsn()::text").Scan(&serverNow, &walText); err != nil {
		return r, fmt.Errorf("read server position: %w", err)
	}
	r.ServerWALLSN = walText

	info, err := replication.InspectSlot(ctx, conn, slot)
	if err != nil {
		return r, err
	}
	r.SlotExists, r.Active, r.WALStatus = info.Exists, info.Active, info.WALStatus
	r.LagBytes, r.RetainedWALBytes = info.LagBytes, info.RetainedBytes
	if info.Active {
		r.ActivePID = &info.ActivePID
	}
	if info.ConfirmedFlush != 0 {
		r.ConfirmedFlushLSN = info.ConfirmedFlush.String()
	}

	state, err := checkpoints.ReadState(ctx, conn, slot)
	switch {
	case errors.Is(err, checkpoints.ErrNotMigrated):
	case err != nil:
		return r, err
	default:
		r.Migrated = true
	}
	if state.Found {
		lsn := state.LSN.String()
		age := serverNow.Sub(state.UpdatedAt).Seconds()
		updated := state.UpdatedAt.UTC()
		r.StoredLSN, r.StoredLSNAgeSeconds, r.LastFlush = &lsn, &age, &updated
	}

	legacy, err := checkpoints.ReadLegacy(ctx, conn)
	if err != nil {
		return r, err
	}
	if v, ok := legacy[checkpoints.PlaysCheckpoint]; ok {
		r.LegacyLastPlayID = &v
	}
	if v, ok := legacy[checkpoints.CommentsCheckpoint]; ok {
		r.LegacyLastCommentBlock = &v
	}
	if r.Migrated {
		if r.Rules, err = processors.Statuses(ctx, conn); err != nil {
			return r, err
		}
	}
	if r.Owners, err = processors.Owners(ctx, conn); err != nil {
		return r, err
	}
	pub, err := replication.DescribePublication(ctx, conn, publication, pipeline.StreamPlan(), false)
	if err != nil {
		r.Publication.Error = err.Error()
	}
	r.Publication.Exists, r.Publication.Managed, r.Publication.ColumnLists = pub.Exists, pub.Managed, pub.ColumnLists
	if pub.Exists {
		r.Publication.Tables = pub.Tables
	}
	decoding, err := replication.InspectDecoding(ctx, conn, slot)
	if err != nil {
		return r, err
	}
	if decoding.Found {
		r.Decoding = &decoding
	}
	if err := conn.QueryRow(ctx, "SHOW logical_decoding_work_mem").Scan(&r.ServerDecodingWorkMem); err != nil {
		return r, fmt.Errorf("show logical_decoding_work_mem: %w", err)
	}
	return r, nil
}

// print writes the report as an aligned two-column table.
func (r statusReport) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("slot", r.Slot)
	if !r.SlotExists {
		row("exists", "no")
	} else {
		active := "no"
		if r.ActivePID != nil {
			active = fmt.Sprintf("yes (pid %d)", *r.ActivePID)
		}
		row("exists", "yes")
		row("active", active)
		row("wal_status", orNone(r.WALStatus))
		row("confirmed_flush_lsn", orNone(r.ConfirmedFlushLSN))
		row("lag", formatBytes(r.LagBytes))
		row("retained WAL", formatBytes(r.RetainedWALBytes))
	}
	row("server WAL position", r.ServerWALLSN)
	switch {
	case !r.Migrated:
		row("stored LSN", "unknown (migrations not applied: run challenge-stream migrate)")
	case r.StoredLSN == nil:
		row("stored LSN", "(none)")
	default:
		row("stored LSN", fmt.Sprintf("%s (written %s ago)", *r.StoredLSN, formatAge(*r.StoredLSNAgeSeconds)))
	}
	if r.LastFlush != nil {
		row("last flush", r.LastFlush.Format(time.RFC3339))
	} else {
		row("last flush", "(never)")
	}
	row("legacy last play id", optInt(r.LegacyLastPlayID))
	row("legacy last comment block", optInt(r.LegacyLastCommentBlock))
	for _, rule := range r.Rules {
		text := fmt.Sprintf("%s (%s)", rule.State, strings.Join(rule.Challenges, ", "))
		if rule.Checkpoint != "" {
			text += fmt.Sprintf("; %s = %s", rule.Checkpoint, optInt(rule.CheckpointValue))
		}
		row("rule "+rule.Rule, text)
	}
	for _, o := range r.Owners {
		text := o.Owner
		if o.Rule != "" {
			text += " (rule " + o.Rule + ")"
		}
		row("challenge "+o.Challenge, text)
	}
	r.Publication.print(row)
	if r.Decoding != nil {
		d := r.Decoding
		row("decoded", fmt.Sprintf("%d transactions, %s", d.TotalTxns, formatBytes(d.TotalBytes)))
		row("  streamed while running", fmt.Sprintf("%d transactions, %s", d.StreamedTxns, formatBytes(d.StreamedBytes)))
		row("  spilled to the server's disk", fmt.Sprintf("%d transactions, %s", d.SpilledTxns, formatBytes(d.SpilledBytes)))
	}
	row("logical_decoding_work_mem", r.ServerDecodingWorkMem+" (the server's; the sidecar sets --decoding-work-mem on its walsender)")
	return tw.Flush()
}

func (p publicationStatus) print(row func(k, v string)) {
	managed := ""
	if p.Managed {
		managed = ", managed by the sidecar"
	}
	switch {
	case p.Error != "":
		row("publication "+p.Name, p.Error)
		return
	case !p.Exists:
		row("publication "+p.Name, "(none: the first start creates it)")
		return
	}
	row("publication "+p.Name, "exists"+managed)
	for _, t := range p.Tables {
		carried := "all columns"
		if t.Columns != nil {
			carried = strings.Join(t.Columns, ", ")
		}
		switch {
		case !t.Published:
			carried = "not published (the next start adds it)"
		case len(t.Lacking) > 0:
			carried += " — lacks " + strings.Join(t.Lacking, ", ")
		case t.Wider && p.ColumnLists:
			carried += " — wider than the rules read (" + strings.Join(t.Needed, ", ") + ")"
		}
		if t.RowFilter != "" {
			carried += " WHERE " + t.RowFilter
		}
		row("  "+t.Table, carried)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func optInt(p *int64) string {
	if p == nil {
		return "(none)"
	}
	return strconv.FormatInt(*p, 10)
}

// formatBytes shows an exact count and, above a KiB, a readable size.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%d bytes (%.1f %ciB)", n, float64(n)/float64(div), "KMGTPE"[exp])
}

func formatAge(seconds float64) string {
	return (time.Duration(seconds * float64(time.Second))).Round(time.Second).String()
}
