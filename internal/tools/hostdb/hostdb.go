// Package hostdb creates the host database of SPEC §2 (the platform's tables, triggers and
// challenge catalog) for tests, the demo and the benchmarks. Production never runs it: there the
// tables already exist.
package hostdb

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed schema.sql
var schema string

// Execer is the part of a connection Create needs.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Create makes the host tables, their triggers and the production catalog rows in the
// connection's current database.
func Create(ctx context.Context, db Execer) error {
	if _, err := db.Exec(ctx, schema); err != nil {
		return fmt.Errorf("create host schema: %w", err)
	}
	return nil
}

// StreamedRules are the challenges beyond p and c that the schema's catalog holds inactive.
var StreamedRules = []string{"v", "t", "cp", "w"}

// ActivateRules switches on every challenge in the catalog, as production has them.
func ActivateRules(ctx context.Context, db Execer) error {
	if _, err := db.Exec(ctx, `UPDATE challenges SET active = true WHERE NOT active`); err != nil {
		return fmt.Errorf("activate rules: %w", err)
	}
	return nil
}
