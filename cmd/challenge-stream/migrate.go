package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/migrations"
)

// migrateCommand applies the project's own migrations and exits.
func migrateCommand(ctx context.Context, e env) error {
	var c commonFlags
	f := newFlagSet("migrate", e)
	c.register(f)
	if err := f.parse(e.args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	log := c.logger(e)
	defer func() { _ = log.Sync() }()
	conn, err := connect(ctx, c.databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := migrations.Apply(ctx, conn, log.Named("migrations")); err != nil {
		return redacted(err, c.databaseURL)
	}
	fmt.Fprintln(e.stdout, "migrations applied")
	return nil
}

// connect opens an ordinary connection; its errors carry no password.
func connect(ctx context.Context, databaseURL string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, redacted(fmt.Errorf("connect: %w", err), databaseURL)
	}
	return conn, nil
}
