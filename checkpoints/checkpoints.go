package checkpoints

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Names of the legacy checkpoint rows in indexing_checkpoints (SPEC §3.4). They are the polling
// job's names and must not change.
const (
	// PlaysCheckpoint holds the highest plays.id applied.
	PlaysCheckpoint = "challenges:play_count_milestones:last_play_id"
	// CommentsCheckpoint holds the highest comments.blocknumber applied.
	CommentsCheckpoint = "challenges:c:last_blocknumber"
)

// ErrNotMigrated means challenge_stream.slot_checkpoints does not exist, or lacks a column this
// version writes: the project's migrations have not been applied to this database, or not this
// version's (with --skip-migrations, run `challenge-stream migrate` before the new version).
var ErrNotMigrated = errors.New("challenge_stream schema missing or older than this version: migrations not applied (run `challenge-stream migrate`)")

// ErrPublicationReplaced means the publication a stored position was streamed through is gone
// or is another one of the same name (dropped and recreated): changes after the drop were never
// decoded through it, so the slot cannot deliver them; it must be recreated.
var ErrPublicationReplaced = errors.New("publication dropped or recreated since the stored position")

// Querier is the part of pgx.Tx, *pgx.Conn and *pgxpool.Pool the checkpoint functions use.
// Pass the flush transaction so the checkpoints commit or roll back with the reward writes.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Legacy holds legacy checkpoint values by name (indexing_checkpoints.tablename). A name that
// is absent is a row that is absent (on read) or a value to leave alone (on advance).
type Legacy map[string]int64

// Has reports whether the named checkpoint is present.
func (l Legacy) Has(name string) bool { _, ok := l[name]; return ok }

// LegacyPrefix begins the name of every checkpoint of the polling job's challenge processors;
// the rest of indexing_checkpoints belongs to the indexer.
const LegacyPrefix = "challenges:"

// State is the stored replication position of one slot.
type State struct {
	// LSN is the end LSN of the last transaction whose effects are committed.
	LSN pglogrepl.LSN
	// Found is false when nothing has been stored for the slot yet.
	Found bool
	// UpdatedAt is when the LSN row was last written (the last flush), zero when not Found.
	UpdatedAt time.Time
	// PublicationOID is the publication the position was streamed through, 0 when unknown (a
	// row written before it was kept).
	PublicationOID uint32
}

// ReadLegacy returns every challenge processor's checkpoint that is present (LegacyPrefix).
func ReadLegacy(ctx context.Context, q Querier) (Legacy, error) {
	rows, err := q.Query(ctx,
		`SELECT tablename, last_checkpoint FROM indexing_checkpoints WHERE starts_with(tablename, $1)`, LegacyPrefix)
	if err != nil {
		return nil, fmt.Errorf("read legacy checkpoints: %w", err)
	}
	l := Legacy{}
	var name string
	var value int64
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error {
		l[name] = value
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read legacy checkpoints: %w", err)
	}
	return l, nil
}

// advanceLegacySQL creates the named rows or raises them; the WHERE clause makes an advance
// that would not raise a row a no-op (no new row version, no WAL, no trigger). signature is the
// polling job's column and is left untouched. Every row it does write is mirrored into
// challenge_stream.legacy_checkpoints.last_written, so a later flush can tell a change made by
// someone else (see LegacyCheckpoint.Foreign).
const advanceLegacySQL = `
WITH raised AS (
    INSERT INTO indexing_checkpoints AS ic (tablename, last_checkpoint)
    SELECT * FROM unnest($1::varchar[], $2::int4[])
    ON CONFLICT (tablename) DO UPDATE
        SET last_checkpoint = GREATEST(ic.last_checkpoint, EXCLUDED.last_checkpoint)
        WHERE ic.last_checkpoint < EXCLUDED.last_checkpoint
    RETURNING ic.tablename, ic.last_checkpoint
)
INSERT INTO challenge_stream.legacy_checkpoints AS s (tablename, last_written)
SELECT tablename, last_checkpoint FROM raised
ON CONFLICT (tablename) DO UPDATE SET last_written = EXCLUDED.last_written`

// AdvanceLegacy raises the legacy checkpoints in l to the given values, creating absent rows,
// and records what it wrote (see ReadLegacyState). A checkpoint never moves backwards: a value
// not above the stored one changes nothing and writes nothing. Rows are written in name order,
// so two writers take their locks in the same order. It needs the project's migrations
// (ErrNotMigrated otherwise).
func AdvanceLegacy(ctx context.Context, q Querier, l Legacy) error {
	if len(l) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(l))
	values := make([]int32, len(names))
	for i, name := range names {
		// The column is int4 (the host's schema); say which checkpoint overflowed rather than
		// letting the encoder fail with a bare range error.
		v := l[name]
		if v < math.MinInt32 || v > math.MaxInt32 {
			return fmt.Errorf("advance legacy checkpoint %q: %d does not fit int4", name, v)
		}
		values[i] = int32(v)
	}
	if _, err := q.Exec(ctx, advanceLegacySQL, names, values); err != nil {
		return fmt.Errorf("advance legacy checkpoints: %w", notMigrated(err))
	}
	return nil
}

// LegacyCheckpoint is one legacy checkpoint as the host stores it, with challenge-stream's
// bookkeeping about it from challenge_stream.legacy_checkpoints.
type LegacyCheckpoint struct {
	// Value is indexing_checkpoints.last_checkpoint; Has is false when the row is absent.
	Value int64
	Has   bool
	// Written is the value the row had right after challenge-stream last wrote it; HasWritten
	// is false when challenge-stream has not written it since the bookkeeping began.
	Written    int64
	HasWritten bool
	// Held is true while challenge-stream leaves the checkpoint where it is because the rules
	// it belongs to are inactive (see HoldLegacy).
	Held bool
}

// Foreign reports whether someone else changed the row since challenge-stream last wrote it:
// the polling job, or an operator, is writing it too.
func (c LegacyCheckpoint) Foreign() bool { return c.Has && c.HasWritten && c.Value != c.Written }

// LegacyState is legacy checkpoints with their bookkeeping, by name.
type LegacyState map[string]LegacyCheckpoint

// Legacy returns the stored values alone.
func (s LegacyState) Legacy() Legacy {
	l := Legacy{}
	for name, c := range s {
		if c.Has {
			l[name] = c.Value
		}
	}
	return l
}

// readLegacyStateSQL is one small read: a host row and one of ours per name, by primary key.
const readLegacyStateSQL = `
SELECT n.name, ic.last_checkpoint, s.last_written, COALESCE(s.held_since IS NOT NULL, false)
FROM unnest($1::text[]) AS n(name)
LEFT JOIN indexing_checkpoints ic ON ic.tablename = n.name
LEFT JOIN challenge_stream.legacy_checkpoints s ON s.tablename = n.name`

// ReadLegacyState returns the named legacy checkpoints with what challenge-stream last wrote to
// them and whether it holds them; every name is in the result, absent ones with Has false.
func ReadLegacyState(ctx context.Context, q Querier, names []string) (LegacyState, error) {
	rows, err := q.Query(ctx, readLegacyStateSQL, names)
	if err != nil {
		return nil, fmt.Errorf("read legacy checkpoints: %w", notMigrated(err))
	}
	var (
		st             = LegacyState{}
		name           string
		value, written *int64
		held           bool
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &value, &written, &held}, func() error {
		c := LegacyCheckpoint{Held: held}
		if value != nil {
			c.Value, c.Has = *value, true
		}
		if written != nil {
			c.Written, c.HasWritten = *written, true
		}
		st[name] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read legacy checkpoints: %w", notMigrated(err))
	}
	return st, nil
}

// holdLegacySQL sets or clears held_since, writing only when that changes it.
const holdLegacySQL = `
INSERT INTO challenge_stream.legacy_checkpoints AS s (tablename, held_since)
VALUES ($1, CASE WHEN $2::bool THEN now() END)
ON CONFLICT (tablename) DO UPDATE
    SET held_since = CASE WHEN $2::bool THEN COALESCE(s.held_since, now()) END
    WHERE (s.held_since IS NOT NULL) <> $2::bool`

// HoldLegacy records that challenge-stream holds the named legacy checkpoint (held) or no
// longer does. Holding it is what the polling job does while a rule is inactive: the checkpoint
// stays where the rule last ran, so that re-activating the rule derives the gap from there.
func HoldLegacy(ctx context.Context, q Querier, name string, held bool) error {
	if _, err := q.Exec(ctx, holdLegacySQL, name, held); err != nil {
		return fmt.Errorf("hold legacy checkpoint %q: %w", name, notMigrated(err))
	}
	return nil
}

// AcknowledgeLegacy records value as the named checkpoint's last known value after a Foreign
// change was reported, so that the same change is reported once.
func AcknowledgeLegacy(ctx context.Context, q Querier, name string, value int64) error {
	_, err := q.Exec(ctx, `
INSERT INTO challenge_stream.legacy_checkpoints AS s (tablename, last_written) VALUES ($1, $2)
ON CONFLICT (tablename) DO UPDATE SET last_written = EXCLUDED.last_written`, name, value)
	if err != nil {
		return fmt.Errorf("acknowledge legacy checkpoint %q: %w", name, notMigrated(err))
	}
	return nil
}

// LoadLSN returns the stored LSN of slot; found is false when none has been stored.
func LoadLSN(ctx context.Context, q Querier, slot string) (lsn pglogrepl.LSN, found bool, err error) {
	s, err := ReadState(ctx, q, slot)
	if err != nil {
		return 0, false, err
	}
	return s.LSN, s.Found, nil
}

// ReadState returns the stored position of slot and when it was last written.
func ReadState(ctx context.Context, q Querier, slot string) (State, error) {
	var text string
	var updatedAt time.Time
	var publication *uint32
	err := q.QueryRow(ctx,
		`SELECT lsn::text, updated_at, publication_oid FROM challenge_stream.slot_checkpoints WHERE slot_name = $1`,
		slot).Scan(&text, &updatedAt, &publication)
	if errors.Is(err, pgx.ErrNoRows) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("load lsn of slot %q: %w", slot, slotNotMigrated(err))
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return State{}, fmt.Errorf("load lsn of slot %q: %w", slot, err)
	}
	st := State{LSN: lsn, Found: true, UpdatedAt: updatedAt}
	if publication != nil {
		st.PublicationOID = *publication
	}
	return st, nil
}

// storeLSNSQL writes the LSN — the higher of the two unless $3 (reset) — with the oid of
// publication $4, and always stamps updated_at: the row doubles as the "last flush" time shown
// by `status`. Without reset it writes nothing (no row returned) when the publication is gone
// or is not the one the stored position was streamed through; a row without an oid adopts it.
const storeLSNSQL = `
INSERT INTO challenge_stream.slot_checkpoints AS sc (slot_name, lsn, publication_oid, updated_at)
VALUES ($1, $2::pg_lsn, (SELECT oid FROM pg_publication WHERE pubname = $4), now())
ON CONFLICT (slot_name) DO UPDATE
    SET lsn = CASE WHEN $3::bool THEN EXCLUDED.lsn ELSE GREATEST(sc.lsn, EXCLUDED.lsn) END,
        publication_oid = EXCLUDED.publication_oid, updated_at = now()
    WHERE $3::bool OR EXCLUDED.publication_oid = coalesce(sc.publication_oid, EXCLUDED.publication_oid)
RETURNING true`

// StoreLSN records lsn for slot, streamed through publication. The stored LSN never moves
// backwards; updated_at is set to the transaction's start time (now()) on every call. It fails
// with ErrPublicationReplaced, writing nothing, when the publication is not the one the stored
// position was streamed through: in the flush transaction, that keeps a window whose changes
// the publication's absence may have dropped from being stored.
func StoreLSN(ctx context.Context, q Querier, slot string, lsn pglogrepl.LSN, publication string) error {
	var stored bool
	err := q.QueryRow(ctx, storeLSNSQL, slot, lsn.String(), false, publication).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store lsn %s of slot %q: %w (publication %s)", lsn, slot, ErrPublicationReplaced, publication)
	}
	if err != nil {
		return fmt.Errorf("store lsn %s of slot %q: %w", lsn, slot, slotNotMigrated(err))
	}
	return nil
}

// ResetLSN records lsn for slot, streamed through publication, even when a higher one or
// another publication is stored. It is for a new slot's consistent point, stored with the
// catch-up done in the slot's snapshot: the new slot is the only position that counts then,
// and a higher stored LSN — written on another cluster and restored here, say — would make the
// stream drop every commit up to it.
func ResetLSN(ctx context.Context, q Querier, slot string, lsn pglogrepl.LSN, publication string) error {
	var stored bool
	if err := q.QueryRow(ctx, storeLSNSQL, slot, lsn.String(), true, publication).Scan(&stored); err != nil {
		return fmt.Errorf("reset lsn of slot %q to %s: %w", slot, lsn, slotNotMigrated(err))
	}
	return nil
}

// slotNotMigrated is notMigrated for statements on slot_checkpoints, whose every column is
// ours: one missing (undefined_column) means an older schema too.
func slotNotMigrated(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42703" {
		return fmt.Errorf("%w: %w", ErrNotMigrated, err)
	}
	return notMigrated(err)
}

// notMigrated marks errors caused by the missing challenge_stream schema or table with
// ErrNotMigrated, keeping the original error in the chain.
func notMigrated(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return fmt.Errorf("%w: %w", ErrNotMigrated, err)
	}
	return err
}

// RuleState is challenge-stream's bookkeeping for a rule without a legacy checkpoint (one the
// polling job rescanned in full every tick): whether challenge-stream has derived the rule from
// scratch since the bookkeeping began (Seen), and whether the rule is inactive (Held). Its row
// in challenge_stream.legacy_checkpoints is named RuleStateName(rule).
type RuleState struct {
	Seen, Held bool
}

// RuleStateName is the bookkeeping row's name of a rule without a legacy checkpoint. The prefix
// cannot collide with a host checkpoint name, which all start with "challenges:".
func RuleStateName(rule string) string { return "rule:" + rule }

// ReadRuleStates returns the bookkeeping of the named rules, by rule name.
func ReadRuleStates(ctx context.Context, q Querier, rules []string) (map[string]RuleState, error) {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = RuleStateName(r)
	}
	rows, err := q.Query(ctx, `SELECT tablename, held_since IS NOT NULL
		FROM challenge_stream.legacy_checkpoints WHERE tablename = ANY($1::text[])`, names)
	if err != nil {
		return nil, fmt.Errorf("read rule states: %w", notMigrated(err))
	}
	states := make(map[string]RuleState, len(rules))
	var (
		name string
		held bool
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &held}, func() error {
		states[strings.TrimPrefix(name, "rule:")] = RuleState{Seen: true, Held: held}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read rule states: %w", notMigrated(err))
	}
	return states, nil
}

// SetRuleState records that the rule has been derived from scratch (Seen) and whether it is now
// held. It writes only when that changes the row.
func SetRuleState(ctx context.Context, q Querier, rule string, held bool) error {
	return HoldLegacy(ctx, q, RuleStateName(rule), held)
}
