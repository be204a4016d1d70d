package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions configure a physical standby made by NewStandby.
type StandbyOptions struct {
	// PhysicalSlot is the physical slot created on the primary and named in the standby's
	// primary_slot_name (required: a slot-syncing standby needs one).
	PhysicalSlot string
	// Settings override or add the standby's postgresql.conf settings, on top of the
	// primary's (e.g. sync_replication_slots, hot_standby_feedback).
	Settings map[string]string
}

// NewStandby makes a streaming physical standby of c and starts it. The server packages here
// carry no pg_basebackup, so the standby is a copy of c's data directory taken while c is
// cleanly stopped: c is stopped (a fast shutdown), copied, and started again on its port. The
// copy gets standby.signal and a primary_conninfo with a dbname (slot synchronization
// connects to a database). Stop the standby with Stop.
func (c *Cluster) NewStandby(ctx context.Context, opts StandbyOptions) (*Cluster, error) {
	if err := c.createPhysicalSlot(ctx, opts.PhysicalSlot); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("make standby dir: %w", err)
	}
	c.kill(syscall.SIGINT)
	s, err := c.copyAsStandby(ctx, dir, opts)
	if err == nil {
		err = c.start(ctx)
	}
	if err == nil {
		err = s.start(ctx)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (c *Cluster) createPhysicalSlot(ctx context.Context, slot string) error {
	if slot == "" {
		return errors.New("standby needs a physical slot name")
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// immediately_reserve: the slot holds WAL from now, before the standby first connects.
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", slot); err != nil {
		return fmt.Errorf("create physical slot %s: %w", slot, err)
	}
	return nil
}

// copyAsStandby copies c's stopped data directory into dir and configures it as a standby.
func (c *Cluster) copyAsStandby(ctx context.Context, dir string, opts StandbyOptions) (*Cluster, error) {
	s := &Cluster{dir: dir, binDir: c.binDir, cred: c.cred, logPath: filepath.Join(dir, "postgres.log")}
	// cp -a keeps the owner (the postgres account when we are root) and the 0700 modes.
	if out, err := exec.CommandContext(ctx, "cp", "-a", c.dataDir(), s.dataDir()).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy data dir: %w: %s", err, out)
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("give standby dir to postgres: %w", err)
		}
	}
	// pg_basebackup copies no slots: the primary's would hold WAL on the standby, and a copied
	// logical slot would pose as synchronized.
	slots, _ := filepath.Glob(filepath.Join(s.dataDir(), "pg_replslot", "*"))
	for _, slot := range slots {
		if err := os.RemoveAll(slot); err != nil {
			return nil, fmt.Errorf("remove copied slot: %w", err)
		}
	}
	signal := filepath.Join(s.dataDir(), "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return nil, fmt.Errorf("write standby.signal: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(signal, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, fmt.Errorf("give standby.signal to postgres: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.port = port
	s.settings = make(map[string]string, len(c.settings))
	for k, v := range c.settings {
		s.settings[k] = v
	}
	s.settings["primary_conninfo"] = fmt.Sprintf(
		"host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=standby", c.port)
	s.settings["primary_slot_name"] = opts.PhysicalSlot
	for k, v := range opts.Settings {
		s.settings[k] = v
	}
	s.settings["port"] = strconv.Itoa(port)
	s.settings["unix_socket_directories"] = dir
	return s, nil
}

// Crash stops the server with an immediate shutdown (as if its machine died) and leaves it
// stopped; Stop still removes its directory.
func (c *Cluster) Crash() { c.kill(syscall.SIGQUIT) }

// Promote ends a standby's recovery (pg_ctl promote) and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "pg_ctl"), "promote", "-w", "-t", "60", "-D", c.dataDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl promote: %w: %s", err, lastLines(string(out), 5))
	}
	return nil
}
