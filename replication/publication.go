package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ColumnListVersion is the first server (server_version_num) with publication column lists.
const ColumnListVersion = 150000

// ManagedComment marks a publication the sidecar created and keeps exact: on every start it
// adds the tables the registry reads and sets each one's column list to what the rules read
// plus the replica identity. An operator adopts an older publication the same way:
//
//	COMMENT ON PUBLICATION challenge_stream IS 'managed by challenge-stream';
const ManagedComment = "managed by challenge-stream"

// PublishedTable is what a publication carries of one table.
type PublishedTable struct {
	Table     string `json:"table"`
	Published bool   `json:"published"`
	// Columns is the column list, nil for whole rows.
	Columns []string `json:"columns"`
	// RowFilter is the publication's WHERE for the table, "" for none.
	RowFilter string `json:"row_filter,omitempty"`
	// Needed are the columns the sidecar reads (the plan's and the replica identity), nil
	// when it needs whole rows (REPLICA IDENTITY FULL, or a server without column lists).
	Needed []string `json:"needed"`
	// Wider: it carries columns no rule reads. Lacking: it lacks needed columns.
	Wider   bool     `json:"wider"`
	Lacking []string `json:"lacking,omitempty"`
	// Unsent are the columns the plan reads that the table's column list leaves out: changes
	// written under that list arrive without them (see Publication.Misses).
	Unsent []string `json:"unsent,omitempty"`
}

// Publication is what a publication carries of the plan's tables.
type Publication struct {
	Exists, Managed bool
	// OID is pg_publication.oid: a publication dropped and recreated under the same name is
	// another one.
	OID uint32
	// Inserts, Updates: it publishes them.
	Inserts, Updates bool
	// ColumnLists: the server has them (15+).
	ColumnLists bool
	Tables      []PublishedTable
}

// EnsurePublication creates the publication for the plan's tables (schema public), publishing
// inserts and updates with, per table, a column list of exactly the columns the plan reads
// plus the table's replica identity (15+; whole rows before, or with wholeRows), marked
// managed; or brings an existing one up to date: DescribePublication, Usable, then
// UpdatePublication.
func EnsurePublication(ctx context.Context, q Querier, publication string, plan Plan, wholeRows bool) (Publication, error) {
	pub, err := DescribePublication(ctx, q, publication, plan, wholeRows)
	if err != nil {
		return pub, err
	}
	if err := pub.Usable(publication); err != nil {
		return pub, err
	}
	return UpdatePublication(ctx, q, publication, pub, plan, wholeRows)
}

// Usable refuses a publication the sidecar cannot stream through and must not change: one
// that does not publish inserts and updates, or a DBA's that leaves out rows or columns the
// plan reads (a managed one is corrected by UpdatePublication instead).
func (p Publication) Usable(publication string) error {
	if !p.Exists {
		return nil
	}
	if !p.Inserts || !p.Updates {
		return fmt.Errorf("%w: publication %s must publish insert and update", ErrPublication, publication)
	}
	if p.Managed {
		return nil
	}
	for _, t := range p.Tables {
		switch {
		case t.Published && len(t.Lacking) > 0:
			return fmt.Errorf("%w: publication %s publishes public.%s without %s, which the sidecar reads (add them to its column list, or let the sidecar manage it: COMMENT ON PUBLICATION %s IS '%s')",
				ErrPublication, publication, t.Table, strings.Join(t.Lacking, ", "), publication, ManagedComment)
		case t.Published && t.RowFilter != "":
			return fmt.Errorf("%w: publication %s publishes only the rows of public.%s WHERE %s, and the rules read every row (drop the filter, or let the sidecar manage it: COMMENT ON PUBLICATION %s IS '%s')",
				ErrPublication, publication, t.Table, t.RowFilter, publication, ManagedComment)
		}
	}
	return nil
}

// Misses are the plan's tables and columns ("table" or "table.column") the publication does
// not send: a table it leaves out or filters, a column its list leaves out. Changes already
// in a slot were decoded under the publication as it was when they were written, so after
// UpdatePublication adds what is missed the slot still holds changes without it: the slot
// must be replaced. Nil for a publication that does not exist yet.
func (p Publication) Misses() []string {
	if !p.Exists {
		return nil
	}
	var misses []string
	for _, t := range p.Tables {
		if !t.Published || t.RowFilter != "" {
			misses = append(misses, t.Table)
			continue
		}
		for _, c := range t.Unsent {
			misses = append(misses, t.Table+"."+c)
		}
	}
	return misses
}

// UpdatePublication brings pub, as DescribePublication found it, up to date. A managed
// publication gets the tables it lacks and every column list set exactly, without row filters
// (DROP TABLE and ADD TABLE with its list, per table, in one implicit transaction: no table is
// ever unpublished, other tables stay as they are). Any other, a DBA's, is used as it is
// except that missing tables are added with their lists. No table is ever removed: someone
// else may stream it. Row filters are never added: on a table whose updates are published a
// WHERE may only use replica identity columns, and no rule allows filtering on those.
func UpdatePublication(ctx context.Context, q Querier, publication string, pub Publication, plan Plan, wholeRows bool) (Publication, error) {
	sql, changed := publicationSQL(publication, pub)
	if !changed {
		return pub, nil
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return pub, fmt.Errorf("%w: not allowed to change publication %s (a table owner must run: %s): %w",
				ErrPublication, publication, sql, err)
		}
		return pub, fmt.Errorf("publish in %s: %w", publication, err)
	}
	return DescribePublication(ctx, q, publication, plan, wholeRows)
}

// publicationSQL is what brings pub up to date, and whether anything must change: one
// statement or several in one implicit transaction, so no moment sees a table unpublished.
func publicationSQL(name string, pub Publication) (string, bool) {
	quoted := pgx.Identifier{name}.Sanitize()
	var missing, statements []string
	for _, t := range pub.Tables {
		want := tableSpec(t.Table, t.Needed)
		switch {
		case !t.Published:
			missing = append(missing, want)
		case pub.Managed && (pub.ColumnLists && (t.Wider || len(t.Lacking) > 0) || t.RowFilter != ""):
			// SET TABLE would replace the whole list, and other tables may be someone else's.
			statements = append(statements, fmt.Sprintf("ALTER PUBLICATION %s DROP TABLE %s", quoted, tableSpec(t.Table, nil)),
				fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", quoted, want))
		}
	}
	if !pub.Exists {
		return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update'); COMMENT ON PUBLICATION %s IS '%s'",
			quoted, strings.Join(missing, ", "), quoted, ManagedComment), true
	}
	if len(missing) > 0 {
		statements = append(statements, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", quoted, strings.Join(missing, ", ")))
	}
	return strings.Join(statements, "; "), len(statements) > 0
}

func tableSpec(table string, columns []string) string {
	spec := pgx.Identifier{"public", table}.Sanitize()
	if columns == nil {
		return spec
	}
	quoted := make([]string, len(columns))
	for i, c := range columns {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	return spec + " (" + strings.Join(quoted, ", ") + ")"
}

// DescribePublication reads what the publication carries of the plan's tables and what they
// need: with wholeRows, every column. It fails on a source table without replica identity.
func DescribePublication(ctx context.Context, q Querier, publication string, plan Plan, wholeRows bool) (Publication, error) {
	var pub Publication
	num, err := serverVersionNum(ctx, q)
	if err != nil {
		return pub, err
	}
	pub.ColumnLists = num >= ColumnListVersion
	var comment *string
	err = q.QueryRow(ctx, `SELECT oid, obj_description(oid, 'pg_publication'), pubinsert, pubupdate FROM pg_publication WHERE pubname = $1`,
		publication).Scan(&pub.OID, &comment, &pub.Inserts, &pub.Updates)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return pub, fmt.Errorf("look up publication %s: %w", publication, err)
	default:
		pub.Exists, pub.Managed = true, comment != nil && *comment == ManagedComment
	}
	for _, t := range plan.Tables {
		identity, err := replicaIdentity(ctx, q, t.Name)
		if err != nil {
			return pub, err
		}
		pt := PublishedTable{Table: t.Name}
		if pub.ColumnLists && identity != nil && !wholeRows {
			need := map[string]bool{}
			for _, c := range t.Columns {
				need[c.Name] = true
			}
			for _, c := range identity {
				need[c] = true
			}
			pt.Needed = slices.Sorted(maps.Keys(need))
		}
		if pub.Exists {
			if err := readPublishedTable(ctx, q, publication, pub.ColumnLists, &pt); err != nil {
				return pub, err
			}
		}
		for _, c := range t.Columns {
			if pt.Columns != nil && !slices.Contains(pt.Columns, c.Name) && !slices.Contains(pt.Unsent, c.Name) {
				pt.Unsent = append(pt.Unsent, c.Name)
			}
		}
		pub.Tables = append(pub.Tables, pt)
	}
	return pub, nil
}

// readPublishedTable fills in whether the publication carries pt.Table, its column list (nil
// for whole rows), its row filter, and how that compares with pt.Needed.
func readPublishedTable(ctx context.Context, q Querier, publication string, columnLists bool, pt *PublishedTable) error {
	query := `SELECT NULL::text[], NULL::text, NULL::text[] FROM pg_publication_tables
		WHERE pubname = $1 AND schemaname = 'public' AND tablename = $2`
	if columnLists {
		// prattrs is NULL for whole rows; attnames then lists every column.
		query = `SELECT CASE WHEN r.prattrs IS NULL THEN NULL ELSE t.attnames::text[] END, t.rowfilter,
			(SELECT array_agg(a.attname::text) FROM pg_attribute a
				WHERE a.attrelid = to_regclass('public.' || quote_ident(t.tablename)) AND a.attnum > 0 AND NOT a.attisdropped)
			FROM pg_publication_tables t
			JOIN pg_publication p ON p.pubname = t.pubname
			-- none for FOR ALL TABLES or TABLES IN SCHEMA: whole rows
			LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = to_regclass('public.' || quote_ident(t.tablename))
			WHERE t.pubname = $1 AND t.schemaname = 'public' AND t.tablename = $2`
	}
	var columns, every []string
	var filter *string
	err := q.QueryRow(ctx, query, publication, pt.Table).Scan(&columns, &filter, &every)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up public.%s in publication %s: %w", pt.Table, publication, err)
	}
	pt.Published, pt.Columns = true, columns
	if filter != nil {
		pt.RowFilter = *filter
	}
	if pt.Needed == nil {
		if columns != nil && len(columns) < len(every) {
			pt.Lacking = slices.DeleteFunc(slices.Clone(every), func(c string) bool { return slices.Contains(columns, c) })
		}
		return nil
	}
	carried := columns
	if carried == nil {
		carried = every
	}
	for _, c := range pt.Needed {
		if !slices.Contains(carried, c) {
			pt.Lacking = append(pt.Lacking, c)
		}
	}
	pt.Wider = slices.ContainsFunc(carried, func(c string) bool { return !slices.Contains(pt.Needed, c) })
	return nil
}

// replicaIdentity is the columns of the table's replica identity — the primary key (DEFAULT)
// or the index (USING INDEX) — or nil for FULL, whose updates carry the whole old row. It
// fails unless UPDATEs of the table can be published.
func replicaIdentity(ctx context.Context, q Querier, table string) ([]string, error) {
	var identity string
	var columns []string
	err := q.QueryRow(ctx, `SELECT c.relreplident::text,
		(SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END)
		FROM pg_class c WHERE c.oid = to_regclass($1)`, "public."+table).Scan(&identity, &columns)
	if err != nil {
		return nil, fmt.Errorf("look up replica identity of %s: %w", table, err)
	}
	switch {
	case identity == "f":
		return nil, nil
	case identity == "n" || len(columns) == 0:
		return nil, fmt.Errorf("%w: public.%s (publishing its updates would make the host's UPDATEs fail; "+
			"add a primary key or ALTER TABLE ... REPLICA IDENTITY)", ErrNoReplicaIdentity, table)
	}
	return columns, nil
}
