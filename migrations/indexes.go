package migrations

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// hostIndex is an index challenge-stream needs on a host table in schema public.
type hostIndex struct {
	name   string
	table  string
	column string
}

// hostIndexes lists the indexes ensured on every Apply.
func hostIndexes() []hostIndex {
	return []hostIndex{
		{name: "comments_user_id_idx", table: "comments", column: "user_id"},
		{name: "comments_blocknumber_idx", table: "comments", column: "blocknumber"},
	}
}

// ErrHostColumn means a host table or column an index needs is missing: nothing was changed.
var ErrHostColumn = errors.New("host table or column missing")

// checkHostColumns fails, naming every missing one, unless each indexed host table and column
// exists.
func checkHostColumns(ctx context.Context, conn *pgx.Conn) error {
	var missing []string
	for _, idx := range hostIndexes() {
		var ok bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped)`,
			"public."+idx.table, idx.column).Scan(&ok)
		if err != nil {
			return fmt.Errorf("check host table %s: %w", idx.table, err)
		}
		if !ok {
			missing = append(missing, "public."+idx.table+"."+idx.column)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s (no migration was applied; is this the host database?)", ErrHostColumn, strings.Join(missing, ", "))
	}
	return nil
}

// indexState is what the catalog says about an index name in schema public.
type indexState struct {
	exists  bool
	valid   bool
	table   string // the indexed table
	leading string // the leading column's name; empty for an expression
}

// ensureIndex makes sure idx exists and is valid, or that a valid equivalent covers its column.
// It runs outside any transaction: CREATE/DROP INDEX CONCURRENTLY refuse to run inside one.
func ensureIndex(ctx context.Context, conn *pgx.Conn, log *zap.Logger, idx hostIndex) error {
	log = log.With(zap.String("index", idx.name))
	st, err := lookupIndex(ctx, conn, idx.name)
	if err != nil {
		return fmt.Errorf("ensure index %s: %w", idx.name, err)
	}
	switch {
	case st.exists && st.valid:
		if st.table != idx.table || st.leading != idx.column {
			// Someone else's index took the name. Ours only speeds queries up, so this is not
			// fatal, but the operator should know the intended index is missing.
			log.Warn("index name is used by a different index; not creating ours",
				zap.String("table", st.table), zap.String("leading_column", st.leading),
				zap.String("want_table", idx.table), zap.String("want_column", idx.column))
		}
		return nil
	case st.exists:
		// An interrupted CREATE INDEX CONCURRENTLY. Queries ignore it, writes still maintain it,
		// and IF NOT EXISTS would happily keep it forever.
		log.Warn("dropping invalid index left by an interrupted build", zap.String("table", st.table))
		if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+pgx.Identifier{"public", idx.name}.Sanitize()); err != nil {
			return fmt.Errorf("drop invalid index %s: %w", idx.name, err)
		}
	}

	other, err := coveringIndex(ctx, conn, idx)
	if err != nil {
		return fmt.Errorf("ensure index %s: %w", idx.name, err)
	}
	if other != "" {
		log.Info("index not created: an existing index covers the column",
			zap.String("covered_by", other), zap.String("table", idx.table), zap.String("column", idx.column))
		return nil
	}

	// A concurrent build waits for every transaction older than it, so on a busy host this line
	// tells the operator what the start-up is waiting for.
	log.Info("creating index concurrently", zap.String("table", idx.table), zap.String("column", idx.column))
	start := time.Now()
	sql := fmt.Sprintf(`CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)`,
		pgx.Identifier{idx.name}.Sanitize(),
		pgx.Identifier{"public", idx.table}.Sanitize(),
		pgx.Identifier{idx.column}.Sanitize())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create index %s: %w", idx.name, err)
	}

	// IF NOT EXISTS skips silently when the name appeared in between (a build by a session that
	// does not take our lock, or a non-index relation of that name): check what we ended up with.
	st, err = lookupIndex(ctx, conn, idx.name)
	if err != nil {
		return fmt.Errorf("ensure index %s: %w", idx.name, err)
	}
	if !st.exists || !st.valid {
		return fmt.Errorf("create index %s: %w", idx.name, errIndexNotBuilt)
	}
	log.Info("created index", zap.Duration("took", time.Since(start)))
	return nil
}

// errIndexNotBuilt means CREATE INDEX CONCURRENTLY IF NOT EXISTS returned without leaving a
// valid index of the name behind.
var errIndexNotBuilt = errors.New("no valid index of that name after the build (the name is taken or another build is running)")

// lookupIndex reads the catalog entry of the index called name in schema public.
func lookupIndex(ctx context.Context, conn *pgx.Conn, name string) (indexState, error) {
	var st indexState
	var leading *string
	err := conn.QueryRow(ctx, `
SELECT i.indisvalid, t.relname, a.attname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE n.nspname = 'public' AND c.relname = $1`, name).Scan(&st.valid, &st.table, &leading)
	if errors.Is(err, pgx.ErrNoRows) {
		return indexState{}, nil
	}
	if err != nil {
		return indexState{}, fmt.Errorf("look up index: %w", err)
	}
	st.exists = true
	if leading != nil {
		st.leading = *leading
	}
	return st, nil
}

// coveringIndex returns the name of another valid, non-partial btree index on idx's table
// whose leading column is idx's column, or "" when there is none. Such an index serves the
// sidecar's lookups (equality and ranges on the leading column) as well as ours would.
func coveringIndex(ctx context.Context, conn *pgx.Conn, idx hostIndex) (string, error) {
	var name string
	err := conn.QueryRow(ctx, `
SELECT c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE n.nspname = 'public' AND t.relname = $1 AND a.attname = $2 AND c.relname <> $3
  AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'
ORDER BY c.relname
LIMIT 1`, idx.table, idx.column, idx.name).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up covering index: %w", err)
	}
	return name, nil
}
