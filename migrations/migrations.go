package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// LockKey is the pg_advisory_lock key serialising Apply across replicas: the ASCII bytes
// "cs_migra". It is fixed forever so that every version of the binary agrees on it.
const LockKey int64 = 0x63735f6d69677261

// lockPollInterval is how often a replica waiting for the migration lock tries again.
const lockPollInterval = 250 * time.Millisecond

//go:embed *.sql
var files embed.FS

// migration is one embedded NNNN_name.sql file.
type migration struct {
	version int
	name    string // file name without .sql, e.g. "0001_state"
	sql     string
}

var fileName = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)

// bootstrapSQL creates the table that records applied migrations. It runs only when that table
// is missing, because CREATE SCHEMA checks the database-level CREATE privilege even with
// IF NOT EXISTS, and a role without it must still be able to start on a migrated database.
const bootstrapSQL = `
CREATE SCHEMA IF NOT EXISTS challenge_stream;
CREATE TABLE IF NOT EXISTS challenge_stream.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);`

// Apply brings the database up to date: the project's versioned migrations, then the host
// indexes. It holds the migration advisory lock throughout and is a no-op on an up-to-date
// database. conn must not be inside a transaction. See the package documentation.
func Apply(ctx context.Context, conn *pgx.Conn, log *zap.Logger) (err error) {
	if log == nil {
		log = zap.NewNop()
	}
	migrations, err := load(files)
	if err != nil {
		return err
	}

	// Every host table and column the indexes need is checked before anything changes: a host
	// without them would get the schema and then fail, half-migrated.
	if err := checkHostColumns(ctx, conn); err != nil {
		return err
	}
	if err := lock(ctx, conn, log); err != nil {
		return err
	}
	defer func() {
		if uerr := unlock(ctx, conn); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()

	if err := applyVersions(ctx, conn, log, migrations); err != nil {
		return err
	}
	for _, idx := range hostIndexes() {
		if err := ensureIndex(ctx, conn, log, idx); err != nil {
			return err
		}
	}
	return nil
}

// load reads and orders the migration files.
func load(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	out := make([]migration, 0, len(names))
	for _, name := range names {
		m := fileName.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name is not NNNN_name.sql", name)
		}
		version, _ := strconv.Atoi(m[1]) // four digits: cannot fail
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		out = append(out, migration{version: version, name: name[:len(name)-len(".sql")], sql: string(body)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// lock takes the migration advisory lock, polling so that waiting holds no snapshot (see the
// package documentation for the deadlock a blocking wait causes).
func lock(ctx context.Context, conn *pgx.Conn, log *zap.Logger) error {
	var timer *time.Timer
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&ok); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if ok {
			return nil
		}
		if timer == nil {
			log.Info("waiting for migration lock held by another session", zap.Int64("key", LockKey))
			timer = time.NewTimer(lockPollInterval)
			defer timer.Stop()
		} else {
			timer.Reset(lockPollInterval)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("take migration lock: %w", context.Cause(ctx))
		case <-timer.C:
		}
	}
}

// unlock releases the migration lock. It runs even when ctx is cancelled; a closed connection
// has released the lock with its session.
func unlock(ctx context.Context, conn *pgx.Conn) error {
	if conn.IsClosed() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var released bool
	if err := conn.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, LockKey).Scan(&released); err != nil {
		return fmt.Errorf("release migration lock: %w", err)
	}
	if !released {
		return errors.New("release migration lock: lock was not held")
	}
	return nil
}

// applyVersions applies the migrations not yet recorded, each in its own transaction.
func applyVersions(ctx context.Context, conn *pgx.Conn, log *zap.Logger, migrations []migration) error {
	var exists bool
	if err := conn.QueryRow(ctx,
		`SELECT to_regclass('challenge_stream.schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema_migrations: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, bootstrapSQL); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
	}

	rows, err := conn.Query(ctx, `SELECT version, name FROM challenge_stream.schema_migrations`)
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	applied := make(map[int]string)
	var version int
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&version, &name}, func() error {
		applied[version] = name
		return nil
	}); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}

	known := make(map[int]bool, len(migrations))
	for _, m := range migrations {
		known[m.version] = true
		if _, ok := applied[m.version]; ok {
			continue
		}
		start := time.Now()
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx,
				`INSERT INTO challenge_stream.schema_migrations (version, name, applied_at) VALUES ($1, $2, now())`,
				m.version, m.name)
			return err
		}); err != nil {
			return fmt.Errorf("apply migration %s: %w", m.name, err)
		}
		log.Info("applied migration",
			zap.Int("version", m.version), zap.String("name", m.name), zap.Duration("took", time.Since(start)))
	}
	for v, name := range applied {
		if !known[v] {
			// A newer binary migrated this database; its migrations are meant to be compatible
			// with older replicas during a rolling deploy, so this one carries on.
			log.Warn("database has a migration this binary does not know",
				zap.Int("version", v), zap.String("name", name))
		}
	}
	return nil
}
