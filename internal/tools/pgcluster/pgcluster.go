// Package pgcluster starts a throw-away Postgres cluster with wal_level = logical in a temporary
// directory on a free 127.0.0.1 port. The tests, the demo and the benchmarks use it.
//
// initdb and postgres refuse to run as root. When this process is root (CI is), the cluster is
// created and run as the unprivileged `postgres` account, which is given the directory. The
// server is a child of this process with a parent-death signal, so a test binary that panics
// does not leave a postmaster behind.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoServer means the Postgres server binaries are not installed.
var ErrNoServer = errors.New("postgres server binaries (initdb, postgres) not found: install them " +
	"(Debian/Ubuntu: apt-get install postgresql-15; any major 14 to 18: " +
	"export PG_BIN=$(scripts/install-postgres.sh 17)) or put their bin directory on PATH")

// BinDirEnv names the environment variable that picks the server binaries' directory, so any
// test package runs against any major (scripts/install-postgres.sh prints one per major).
const BinDirEnv = "PG_BIN"

// dirPrefix names the temporary directories, so a later Start can remove ones left behind by a
// process that was killed.
const dirPrefix = "challenge-stream-pg-"

// Options configure a cluster. The zero value is a fast, test-friendly cluster.
type Options struct {
	// Settings override or add postgresql.conf settings (name → value).
	Settings map[string]string
	// BinDir is the directory of initdb, pg_ctl and postgres. Empty: $PG_BIN, else initdb on
	// PATH, else the newest /usr/lib/postgresql/*/bin.
	BinDir string
	// XIDEpoch moves the new cluster's transaction-id epoch forward (pg_resetwal -e), as on a
	// primary that has run past 2³² transactions (pg_upgrade keeps the epoch too). It needs
	// pg_resetwal beside initdb — Debian's packages have it, the embedded builds of other
	// majors do not; without it the cluster stays in epoch 0 (Cluster.XIDEpoch says which).
	XIDEpoch uint32
}

// Cluster is a running throw-away Postgres.
type Cluster struct {
	dir      string
	binDir   string
	port     int
	cred     *syscall.Credential
	settings map[string]string
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
	epoch    uint32
}

// defaultSettings are tuned for tests: logical decoding on, plenty of slots and senders for
// parallel tests, no durability (the cluster is thrown away).
func defaultSettings() map[string]string {
	return map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "64",
		"max_wal_senders":       "64",
		"max_connections":       "300",
		"fsync":                 "off",
		"full_page_writes":      "off",
		"synchronous_commit":    "off",
		"wal_sender_timeout":    "30s",
		"listen_addresses":      "127.0.0.1",
		"log_min_messages":      "warning",
		"shared_buffers":        "256MB",
		"max_wal_size":          "4GB",
	}
}

// Start creates and starts a cluster. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	removeStaleDirs()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("make cluster dir: %w", err)
	}
	c := &Cluster{dir: dir, binDir: binDir, logPath: filepath.Join(dir, "postgres.log")}
	if err := c.init(ctx, opts); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) init(ctx context.Context, opts Options) error {
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return err
		}
		c.cred = cred
		if err := os.Chown(c.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("give cluster dir to postgres: %w", err)
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"),
		"-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, lastLines(string(out), 10))
	}
	if opts.XIDEpoch > 0 {
		if err := c.setEpoch(ctx, opts.XIDEpoch); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.port = port
	settings := defaultSettings()
	for k, v := range opts.Settings {
		settings[k] = v
	}
	settings["port"] = strconv.Itoa(port)
	settings["unix_socket_directories"] = c.dir
	c.settings = settings
	return nil
}

// setEpoch runs pg_resetwal -e on the cleanly stopped new cluster, when pg_resetwal is there.
func (c *Cluster) setEpoch(ctx context.Context, epoch uint32) error {
	resetwal := filepath.Join(c.binDir, "pg_resetwal")
	if _, err := os.Stat(resetwal); err != nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, resetwal, "-e", strconv.FormatUint(uint64(epoch), 10), "-D", c.dataDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_resetwal -e %d: %w: %s", epoch, err, lastLines(string(out), 10))
	}
	c.epoch = epoch
	return nil
}

// XIDEpoch is the transaction-id epoch the cluster started in (Options.XIDEpoch, when it could
// be set).
func (c *Cluster) XIDEpoch() uint32 { return c.epoch }

// args are the postmaster's arguments: the data directory and every setting.
func (c *Cluster) args() []string {
	names := make([]string, 0, len(c.settings))
	for k := range c.settings {
		names = append(names, k)
	}
	sort.Strings(names)
	args := []string{"-D", c.dataDir()}
	for _, k := range names {
		args = append(args, "-c", k+"="+c.settings[k])
	}
	return args
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// start runs the postmaster and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), c.args()...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// SIGQUIT is an immediate shutdown: the postmaster takes its backends down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("postgres exited during start: %s", c.logTail())
		default:
		}
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.kill(syscall.SIGQUIT)
			return fmt.Errorf("postgres not ready after 60s: %w: %s", err, c.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill signals the postmaster and waits for it to exit.
func (c *Cluster) kill(sig syscall.Signal) {
	if err := c.signalAndWait(sig, 60*time.Second); err != nil {
		c.mu.Lock()
		cmd, exited := c.cmd, c.exited
		c.mu.Unlock()
		_ = cmd.Process.Kill()
		<-exited
	}
}

// signalAndWait signals the postmaster and waits up to timeout for it to exit.
func (c *Cluster) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("postmaster still running %s after %s", timeout, sig)
	}
}

// Shutdown is how the postmaster is asked to stop (the modes of pg_ctl stop -m).
type Shutdown syscall.Signal

const (
	// Smart waits for every client session to end on its own.
	Smart = Shutdown(syscall.SIGTERM)
	// Fast ends client sessions, but walsenders first send all WAL and wait for the
	// clients' confirmation of it.
	Fast = Shutdown(syscall.SIGINT)
	// Immediate is a crash as far as clients and WAL recovery are concerned.
	Immediate = Shutdown(syscall.SIGQUIT)
)

func (m Shutdown) String() string {
	switch m {
	case Smart:
		return "smart"
	case Fast:
		return "fast"
	case Immediate:
		return "immediate"
	}
	return syscall.Signal(m).String()
}

// Restart stops the server in the given mode and starts it again on the same port. A smart or
// fast shutdown that does not finish within timeout is an error — the server is then stopped
// immediately and started anyway, so a test can report the hang and go on.
func (c *Cluster) Restart(ctx context.Context, mode Shutdown, timeout time.Duration) error {
	hung := c.signalAndWait(syscall.Signal(mode), timeout)
	if hung != nil {
		c.kill(syscall.SIGQUIT)
		hung = fmt.Errorf("%s shutdown: %w", mode, hung)
	}
	return errors.Join(hung, c.start(ctx))
}

// Stop shuts the server down and removes its directory.
func (c *Cluster) Stop() error {
	c.kill(syscall.SIGINT)
	return os.RemoveAll(c.dir)
}

// Port is the TCP port the server listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// BinDir is the directory of the server binaries (pg_recvlogical lives there too).
func (c *Cluster) BinDir() string { return c.binDir }

// URL is a superuser connection URL for the named database.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, database)
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	return lastLines(string(b), 15)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func findBinDir(explicit string) (string, error) {
	if explicit == "" {
		explicit = os.Getenv(BinDirEnv)
	}
	if explicit != "" {
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(explicit, name)); err != nil {
				return "", fmt.Errorf("%s=%s has no %s (scripts/install-postgres.sh MAJOR prints a directory "+
					"that has): %w", BinDirEnv, explicit, name, err)
			}
		}
		return explicit, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			dir = filepath.Dir(resolved)
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Strings(matches)
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", ErrNoServer
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the unprivileged `postgres` account to run the server (create it, e.g. apt-get install postgresql-15, or run as a normal user): %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeStaleDirs deletes cluster directories whose postmaster is gone (a killed test binary).
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		info, err := os.Stat(dir)
		if err != nil || time.Since(info.ModTime()) < time.Minute {
			continue
		}
		pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
		if err == nil {
			pid, _ := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				continue
			}
		}
		_ = os.RemoveAll(dir)
	}
}
