package pipeline

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Slot names are cluster-wide and publications per database, so only the slot's default name
// depends on the database. Without a configured slot the sidecar uses DefaultName, as it
// always has, unless another database of the cluster holds a slot of that name: then
// DerivedSlotName of its own database, so two databases on one cluster both stream with the
// defaults. A database that already streams under either name keeps it.

// DerivedSlotName is the default slot name of a database whose cluster has DefaultName taken
// by another database: DefaultName_<database>, lower-cased, every character outside [a-z0-9_]
// made '_', and, when that changed or shortened the name, a hash of the database name at the
// end so that two databases never share one. At most 63 characters.
func DerivedSlotName(database string) string {
	const maxLen = 63
	var b strings.Builder
	for _, r := range strings.ToLower(database) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := DefaultName + "_" + b.String()
	if b.String() == database && len(name) <= maxLen {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(database))
	suffix := fmt.Sprintf("_%08x", h.Sum32())
	return name[:min(len(name), maxLen-len(suffix))] + suffix
}

// slotsFound is what the cluster and the database say of the two default names.
type slotsFound struct {
	// defaultHere, derivedHere: this database has a slot or a stored position of that name.
	defaultHere, derivedHere bool
	// defaultElsewhere: another database has a slot named DefaultName.
	defaultElsewhere bool
}

// useDerivedName decides between DefaultName and DerivedSlotName (see above).
func useDerivedName(f slotsFound) bool {
	switch {
	case f.defaultHere:
		return false
	case f.derivedHere:
		return true
	default:
		return f.defaultElsewhere
	}
}

// ResolveSlot is the slot name to use on the database conn is connected to: configured when
// set, else DefaultName or DerivedSlotName (see above). conn may be a replication connection:
// it runs simple-protocol SQL only.
func ResolveSlot(ctx context.Context, conn *pgconn.PgConn, configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	database, err := queryText(ctx, conn, `SELECT current_database()`)
	if err != nil {
		return "", fmt.Errorf("choose the slot name: %w", err)
	}
	derived := DerivedSlotName(database)
	here := func(name string) string {
		return `EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = ` + quoteLiteral(name) +
			` AND database = current_database())`
	}
	found, err := queryRow(ctx, conn, `SELECT `+here(DefaultName)+`, `+here(derived)+`,
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = `+quoteLiteral(DefaultName)+
		` AND database IS DISTINCT FROM current_database()),
		to_regclass('challenge_stream.slot_checkpoints') IS NOT NULL`)
	if err != nil {
		return "", fmt.Errorf("choose the slot name: %w", err)
	}
	f := slotsFound{defaultHere: found[0] == "t", derivedHere: found[1] == "t", defaultElsewhere: found[2] == "t"}
	if found[3] == "t" {
		// A stored position counts as the slot's: the slot may be lost or dropped, and the
		// recovery must happen under the name it was stored for.
		stored, err := queryRow(ctx, conn, `SELECT coalesce(bool_or(slot_name = `+quoteLiteral(DefaultName)+`), false),
			coalesce(bool_or(slot_name = `+quoteLiteral(derived)+`), false) FROM challenge_stream.slot_checkpoints`)
		if err != nil {
			return "", fmt.Errorf("choose the slot name: %w", err)
		}
		f.defaultHere = f.defaultHere || stored[0] == "t"
		f.derivedHere = f.derivedHere || stored[1] == "t"
	}
	if useDerivedName(f) {
		return derived, nil
	}
	return DefaultName, nil
}

// queryRow runs a statement that returns one row, and returns its columns as text ("" for
// NULL; booleans are "t" and "f").
func queryRow(ctx context.Context, conn *pgconn.PgConn, sql string) ([]string, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return nil, fmt.Errorf("unexpected result")
	}
	row := make([]string, len(res[0].Rows[0]))
	for i, v := range res[0].Rows[0] {
		row[i] = string(v)
	}
	return row, nil
}

// queryText runs a statement that returns one text value ("" for NULL).
func queryText(ctx context.Context, conn *pgconn.PgConn, sql string) (string, error) {
	row, err := queryRow(ctx, conn, sql)
	if err != nil {
		return "", err
	}
	if len(row) != 1 {
		return "", fmt.Errorf("unexpected result")
	}
	return row[0], nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
