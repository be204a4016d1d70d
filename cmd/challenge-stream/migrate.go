package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// migrateCommand applies the project's own migrations and exits.
func migrateCommand(ctx context.Context, e env) error {
	return withDB(ctx, e, "migrate", nil, func(c commonFlags, conn *pgx.Conn) error {
		log := c.logger(e)
		defer func() { _ = log.Sync() }()
		if err := migrations.Apply(ctx, conn, log.Named("migrations")); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "migrations applied")
		return nil
	})
}

// withDB is the frame of a command that talks to the database: parse its flags (the common
// ones plus those extra registers), validate them before connecting, connect, run fn, and keep
// the password out of whatever error comes back.
func withDB(ctx context.Context, e env, name string, extra func(*flagSet), fn func(commonFlags, *pgx.Conn) error) error {
	var c commonFlags
	f := newFlagSet(name, e)
	c.register(f)
	if extra != nil {
		extra(f)
	}
	if err := f.parse(e.args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	if err := c.checkNames(); err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, c.database)
	if err != nil {
		return redact.Error(fmt.Errorf("connect: %w", err), c.databaseURL)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if c.slot, err = pipeline.ResolveSlot(ctx, conn.PgConn(), c.slot); err != nil {
		return redact.Error(err, c.databaseURL)
	}
	return redact.Error(fn(c, conn), c.databaseURL)
}
