package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/replication"
)

// Config configures Run. Zero durations and sizes take the documented defaults.
type Config struct {
	// Database is the host database's connection settings, parsed once by the caller
	// (pgx.ParseConfig: URL or DSN, environment, .pgpass, service file). Every connection the
	// pipeline opens (replication, flush, shutdown probe) uses a copy with its own
	// application_name. Required; its role needs the REPLICATION attribute (see the README's
	// runbook).
	Database *pgx.ConnConfig
	// Slot and Publication name the replication slot and publication (plain lower-case
	// identifiers). Publication defaults to DefaultName; Slot, unset, is chosen at start by
	// ResolveSlot: DefaultName, or DerivedSlotName when another database of the cluster has a
	// slot of that name.
	Slot        string
	Publication string
	// Window is the longest a change waits in a window while the stream keeps delivering.
	// A window closes earlier once the stream has caught up and the flusher is idle (group
	// commit), unless FixedWindows is set. Default 1s.
	Window time.Duration
	// FixedWindows closes windows only on their length or size: fewer, larger flushes at the
	// cost of latency (today's rule before group commit).
	FixedWindows bool
	// ReceiveTimeout ends a session whose server has sent nothing for this long, although
	// the sidecar asked for a reply: the server is gone without closing the socket. Default
	// 60s, the server's default wal_sender_timeout.
	ReceiveTimeout time.Duration
	// ShutdownProbeInterval is how often the sidecar checks whether the server refuses new
	// connections because it is shutting down (see watchShutdown). Default 10s.
	ShutdownProbeInterval time.Duration
	// MaxWindowSize closes a window early once it holds this many distinct IDs, bounding the
	// flush's size and the memory. Default 50,000.
	MaxWindowSize int
	// StatusInterval is the longest gap between standby status updates; it must stay well
	// inside the server's wal_sender_timeout (default 60s). Default 10s.
	StatusInterval time.Duration
	// ShutdownTimeout bounds the final flush after a stop signal. Default 8s.
	ShutdownTimeout time.Duration
	// RetryMaxInterval caps the reconnect backoff (and so how fast a standby replica takes
	// over). Default 5s.
	RetryMaxInterval time.Duration
	// IdleConfirmBytes is how far the server's WAL end must be ahead of the stored position
	// before an idle slot stores and confirms it. Storing writes WAL itself, so without a floor a
	// quiet database would see one write per status interval forever. Default 1 MiB: an idle
	// slot holds at most that much WAL.
	IdleConfirmBytes uint64
	// DecodingWorkMem is the walsender's logical_decoding_work_mem (set on the replication
	// connection, whole kB): a transaction whose decoded changes outgrow it is streamed to us
	// while it runs (protocol 2) instead of waiting for its commit, so what is left to send
	// after a large COMMIT — the time until its rewards are stored — is bounded by it. It also
	// bounds the walsender's memory. Default 16 MiB (the server's default is 64 MiB, which
	// leaves up to ~1 s of decoding after the commit of a 1,000,000-row transaction).
	DecodingWorkMem uint64
	// PublishWholeRows makes a publication the sidecar manages send whole rows instead of the
	// columns the rules read: a column in a publication's column list cannot be retyped or
	// dropped by the host (Postgres refuses; DROP … CASCADE would unpublish the table), so a
	// host migration that does either runs while this is set.
	PublishWholeRows bool
	// PlayIDMargin is how far below the legacy plays.id checkpoint a catch-up re-scans, because
	// serial ids commit out of order. Default 100,000.
	PlayIDMargin int64
	// Backfill derives all history on the first start instead of starting from now.
	Backfill bool
	// SkipMigrations skips applying the project's own migrations at start.
	SkipMigrations bool

	// afterCreateSlot, when set, runs right after a new slot is created: in-process tests stop
	// a first start there (export_test.go). The binary's fault tests use internal/failpoint.
	afterCreateSlot func()
	// DisableFailoverSlot creates the slot without FAILOVER on 17+ servers, where it is
	// otherwise created with it (so a slot-syncing standby keeps it across a promotion).
	DisableFailoverSlot bool

	// Log receives the pipeline's logs (default: none).
	Log *zap.Logger
	// Observe is told about everything the pipeline does (metrics, health); see Event.
	// Default: nothing.
	Observe func(Event)
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

// Defaults for Config.
const (
	DefaultName             = "challenge_stream"
	DefaultWindow           = time.Second
	DefaultMaxWindowSize    = 50_000
	DefaultStatusInterval   = 10 * time.Second
	DefaultShutdownTimeout  = 8 * time.Second
	DefaultReceiveTimeout   = time.Minute
	DefaultShutdownProbe    = 10 * time.Second
	DefaultRetryMaxInterval = 5 * time.Second
	DefaultPlayIDMargin     = 100_000
	DefaultIdleConfirmBytes = 1 << 20
	DefaultDecodingWorkMem  = 16 << 20
	// MinDecodingWorkMem is the server's floor for logical_decoding_work_mem.
	MinDecodingWorkMem = 64 << 10
)

func (c Config) withDefaults() Config {
	if c.Publication == "" {
		c.Publication = DefaultName
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxWindowSize == 0 {
		c.MaxWindowSize = DefaultMaxWindowSize
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.ReceiveTimeout == 0 {
		c.ReceiveTimeout = DefaultReceiveTimeout
	}
	if c.ShutdownProbeInterval == 0 {
		c.ShutdownProbeInterval = DefaultShutdownProbe
	}
	if c.RetryMaxInterval == 0 {
		c.RetryMaxInterval = DefaultRetryMaxInterval
	}
	if c.IdleConfirmBytes == 0 {
		c.IdleConfirmBytes = DefaultIdleConfirmBytes
	}
	if c.PlayIDMargin == 0 {
		c.PlayIDMargin = DefaultPlayIDMargin
	}
	if c.DecodingWorkMem == 0 {
		c.DecodingWorkMem = DefaultDecodingWorkMem
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Observe == nil {
		c.Observe = func(Event) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks the configuration with its defaults applied, as Run will use it; errors name
// the bad value. Run checks it itself: call Validate to report a bad configuration before
// anything starts (the command line does, to exit 2).
// maxDecodingWorkMem is the largest logical_decoding_work_mem the server takes (INT_MAX kB).
const maxDecodingWorkMem = (1<<31 - 1) << 10

func (c Config) Validate() error { return c.withDefaults().validate() }

// validate checks a configuration whose defaults are applied.
func (c Config) validate() error {
	if c.Database == nil {
		return errors.New("the database's connection settings are required")
	}
	if c.Slot != "" && !replication.ValidIdentifier(c.Slot) {
		return fmt.Errorf("slot %q is not a plain lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)", c.Slot)
	}
	if !replication.ValidIdentifier(c.Publication) {
		return fmt.Errorf("publication %q is not a plain lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)", c.Publication)
	}
	if c.Window < 0 {
		return fmt.Errorf("window %s must be positive", c.Window)
	}
	if c.MaxWindowSize < 0 {
		return fmt.Errorf("max window size %d must be positive", c.MaxWindowSize)
	}
	if c.StatusInterval < 0 || c.StatusInterval > time.Minute {
		return fmt.Errorf("status interval %s must be between 0 and 1m (the server drops silent clients)", c.StatusInterval)
	}
	if c.DecodingWorkMem < MinDecodingWorkMem || c.DecodingWorkMem > maxDecodingWorkMem {
		return fmt.Errorf("decoding work mem %d bytes must be between 64 kB and 2 TB", c.DecodingWorkMem)
	}
	if c.ReceiveTimeout <= c.StatusInterval {
		return fmt.Errorf("receive timeout %s must be longer than the status interval %s", c.ReceiveTimeout, c.StatusInterval)
	}
	return nil
}
