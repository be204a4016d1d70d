package workload

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/migrations"
)

// CreateDatabase creates database name, as a copy of template when that is not empty, and
// returns its URL. serverURL must be a superuser's.
//
// Commits in the new database wait for their WAL to be flushed (synchronous_commit = on, as on
// a production primary): logical decoding only sends flushed WAL, so with asynchronous commits
// every change would wait up to wal_writer_delay before the stream sees it, and the latencies
// measured would be the WAL writer's.
func CreateDatabase(ctx context.Context, serverURL, name, template string) (string, error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET synchronous_commit = on"); err != nil {
		return "", fmt.Errorf("configure database %s: %w", name, err)
	}
	return pgcluster.DatabaseURL(serverURL, name)
}

// Setup creates database name with the host schema and the project's migrations applied,
// generates the synthetic data into it and returns its URL and model.
func Setup(ctx context.Context, serverURL, name string, cfg Config) (string, *Host, Sizes, error) {
	dbURL, err := CreateDatabase(ctx, serverURL, name, "")
	if err != nil {
		return "", nil, Sizes{}, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", nil, Sizes{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := hostdb.Create(ctx, conn); err != nil {
		return "", nil, Sizes{}, err
	}
	// Every registered rule on, as in production: the bench and the demo run them all.
	if err := hostdb.ActivateRules(ctx, conn); err != nil {
		return "", nil, Sizes{}, err
	}
	if err := migrations.Apply(ctx, conn, nil); err != nil {
		return "", nil, Sizes{}, err
	}
	host, sizes, err := Generate(ctx, conn, cfg)
	if err != nil {
		return "", nil, Sizes{}, err
	}
	return dbURL, host, sizes, nil
}
