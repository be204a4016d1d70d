package pipeline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/failpoint"
	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// errStandby means another replica holds the leader lock: wait and try again.
var errStandby = errors.New("another replica holds the slot")

// errSlotAhead means the slot was confirmed past what we stored: someone else consumed it.
var errSlotAhead = errors.New("slot confirmed past the stored LSN")

// Run streams until ctx is cancelled, then flushes what it holds, confirms it and returns nil.
// Transient failures (network, server restart, slot in use by another replica) are retried
// forever with exponential backoff and jitter; a permanent one (wal_level, privileges, missing
// tables or columns) is returned.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	p := &pipeline{cfg: cfg, log: cfg.Log.Named("pipeline")}
	p.oddities = &oddityLog{log: p.log}

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = cfg.RetryMaxInterval
	b.MaxElapsedTime = 0 // retry forever; the default gives up after 15 minutes
	p.resetBackoff = b.Reset

	err := backoff.RetryNotify(func() error {
		err := p.session(ctx)
		switch {
		case ctx.Err() != nil && errors.Is(err, ErrShutdownIncomplete):
			return backoff.Permanent(err)
		case ctx.Err() != nil:
			return nil
		case err == nil:
			return nil
		case isPermanent(err):
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		if errors.Is(err, errStandby) {
			cfg.Observe(StateChanged{State: StateStandby})
			p.log.Debug("standing by: another replica streams from the slot", zap.Duration("retry_in", wait))
			return
		}
		cfg.Observe(StateChanged{State: StateReconnecting})
		cfg.Observe(Reconnecting{Err: err})
		p.log.Warn("session ended; reconnecting", p.errFields(err, zap.Duration("retry_in", wait))...)
	})
	cfg.Observe(StateChanged{State: StateStopped})
	if ctx.Err() != nil && !isPermanent(err) && !errors.Is(err, ErrShutdownIncomplete) {
		return nil
	}
	if err != nil {
		p.log.Error("stopped", p.errFields(err)...)
		return redactedError{err: err, password: cfg.Database.Password}
	}
	return nil
}

// redactedError keeps an error's chain, so errors.Is works on the sentinels from cmd, while its
// text loses the database password, should a server or driver message ever echo it.
type redactedError struct {
	err      error
	password string
}

func (e redactedError) Error() string { return redact.Secret(e.err.Error(), e.password) }
func (e redactedError) Unwrap() error { return e.err }

type pipeline struct {
	cfg          Config
	log          *zap.Logger
	migrated     bool
	oddities     *oddityLog
	resetBackoff func()
	// unusableSlot, when set, is why the last session found the slot unusable although it
	// exists (a SlotRecreated reason): the next prepare recreates it.
	unusableSlot string
}

// errFields describes an error for a log line: the message without secrets and, for a
// Postgres error, its SQLSTATE.
func (p *pipeline) errFields(err error, extra ...zap.Field) []zap.Field {
	fields := []zap.Field{zap.String("error", redact.Secret(err.Error(), p.cfg.Database.Password))}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		fields = append(fields, zap.String("sqlstate", pgErr.Code))
	}
	return append(fields, extra...)
}

// isPermanent reports errors that retrying cannot fix.
func isPermanent(err error) bool {
	if errors.Is(err, replication.ErrWALLevel) || errors.Is(err, replication.ErrPublication) ||
		errors.Is(err, replication.ErrNoReplicaIdentity) || errors.Is(err, replication.ErrHostTable) ||
		errors.Is(err, replication.ErrMissingColumn) || errors.Is(err, replication.ErrColumnType) ||
		errors.Is(err, replication.ErrBadTuple) || errors.Is(err, replication.ErrSlotTaken) ||
		errors.Is(err, replication.ErrSynchronousStandby) || errors.Is(err, replication.ErrServerVersion) {
		// The same bytes would fail the same way after a reconnect: stop, and confirm nothing
		// past them, until an operator looks.
		return true
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &badCert) {
		return true // the server's certificate will not verify on the next try either
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501", // insufficient_privilege: e.g. no REPLICATION attribute
			"28000", "28P01", // invalid authorization / password
			"3D000", // database does not exist
			"42P01", // undefined_table
			"42703": // undefined_column
			return true
		}
	}
	return false
}

// session is one connection's life: lead, choose the start state, stream, shut down.
func (p *pipeline) session(ctx context.Context) error {
	cfg := p.cfg
	cfg.Observe(StateChanged{State: StateStarting})
	repl, err := replication.Connect(ctx, &cfg.Database.Config)
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	// One replica leads per slot. The lock lives as long as the replication connection (see
	// TryLeaderLock), so a replica that dies, even by kill -9 or with its host, frees it.
	leader, err := TryLeaderLock(ctx, repl, cfg.Slot)
	if err != nil {
		return err
	}
	if !leader {
		return errStandby
	}

	conn, err := connectFlush(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := p.preflight(ctx, conn); err != nil {
		return err
	}
	if !cfg.SkipMigrations && !p.migrated {
		if err := migrations.Apply(ctx, conn, cfg.Log.Named("migrations")); err != nil {
			return err
		}
		p.migrated = true
	}

	start, err := p.prepare(ctx, conn, repl)
	if err != nil {
		return err
	}
	stream, err := replication.Start(ctx, repl, cfg.Slot, cfg.Publication, start, cfg.Log.Named("replication"))
	if err != nil {
		return err
	}
	// START_REPLICATION silently starts at confirmed_flush_lsn when that is ahead of the
	// requested position; everything in between would be lost.
	slot, err := replication.InspectSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return err
	}
	if slot.ConfirmedFlush > start {
		_ = repl.Close(ctx)
		p.log.Error("slot was confirmed past the stored LSN by another consumer; recreating it and catching up",
			zap.Stringer("stored_lsn", start), zap.Stringer("confirmed_flush_lsn", slot.ConfirmedFlush))
		if err := replication.DropSlot(ctx, conn, cfg.Slot); err != nil {
			return err
		}
		return errSlotAhead
	}
	p.log.Info("streaming", zap.String("slot", cfg.Slot), zap.Stringer("from_lsn", start))
	cfg.Observe(StateChanged{State: StateStreaming})
	err = p.stream(ctx, stream, conn, start)
	p.noteUnusableSlot(err)
	return err
}

// connectFlush opens the connection that runs the catch-up and the flushes. It names itself so
// operators (and fault tests) can find it in pg_stat_activity.
func connectFlush(ctx context.Context, database *pgx.ConnConfig) (*pgx.Conn, error) {
	cfg := database.Copy()
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = FlushApplicationName
	}
	// Our commits never wait for a synchronous standby: should our own walsender ever become
	// one, the flush would wait for a confirmation that only follows it.
	if _, set := cfg.RuntimeParams["synchronous_commit"]; !set {
		cfg.RuntimeParams["synchronous_commit"] = "local"
	}
	// A replica cut off in the middle of a flush (a dead host, a black hole) must not keep its
	// row locks, or the replica that takes over blocks on them: the server ends a transaction
	// whose client has said nothing for this long. Ours never wait on the client between
	// statements.
	if _, set := cfg.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.RuntimeParams["idle_in_transaction_session_timeout"] = FlushIdleInTransactionTimeout
	}
	if err := replication.DetectDeadPeers(&cfg.Config); err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// FlushApplicationName is the application_name of the flush connection.
const FlushApplicationName = "challenge-stream-flush"

// FlushIdleInTransactionTimeout is the flush session's idle_in_transaction_session_timeout
// (unless the URL sets one): no longer than the default wal_sender_timeout, after which the
// leader lock of a cut-off replica is released too.
const FlushIdleInTransactionTimeout = "60s"

// prepare decides where the stream starts (SPEC §5) and, for a new slot, catches up inside the
// slot's exported snapshot, so the catch-up and the stream meet without gap or overlap.
func (p *pipeline) prepare(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (pglogrepl.LSN, error) {
	cfg := p.cfg
	stored, found, err := checkpoints.LoadLSN(ctx, conn, cfg.Slot)
	if err != nil {
		return 0, err
	}
	slot, err := replication.InspectSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return 0, err
	}
	if err := replication.EnsurePublication(ctx, conn, cfg.Publication); err != nil {
		return 0, err
	}
	opts := processors.CatchUpOptions{
		PlayIDMargin:       cfg.PlayIDMargin,
		CommentBlockMargin: processors.DefaultCommentBlockMargin,
		CommentNullBlocks:  true,
	}
	plan := decideStart(startState{slot: slot, stored: found, unusable: p.unusableSlot, backfill: cfg.Backfill})
	switch plan.kind {
	case resume:
		return stored, nil
	case recreate:
		p.log.Error("replication slot is gone; recreating it and catching up from the legacy checkpoints",
			zap.String("slot", cfg.Slot), zap.String("reason", plan.reason), zap.Stringer("stored_lsn", stored))
		cfg.Observe(SlotRecreated{Reason: plan.reason})
	case firstStart:
		if plan.interrupted {
			p.log.Warn("slot has no stored position (interrupted first start); recreating it", zap.String("slot", cfg.Slot))
		}
		opts.FromScratch = plan.fromScratch
		p.log.Info("first start: creating the slot", zap.String("slot", cfg.Slot), zap.Bool("backfill", cfg.Backfill))
	}
	if plan.dropSlot {
		if err := replication.DropSlot(ctx, conn, cfg.Slot); err != nil {
			return 0, err
		}
	}
	p.unusableSlot = ""
	created, err := replication.CreateSlot(ctx, repl, cfg.Slot, replication.SlotOptions{Failover: !cfg.DisableFailoverSlot})
	if err != nil {
		return 0, err
	}
	failpoint.Hit("after-create-slot")
	if cfg.afterCreateSlot != nil {
		cfg.afterCreateSlot()
	}
	cfg.Observe(StateChanged{State: StateCatchingUp})
	res, err := catchUpInSnapshot(ctx, conn, created, cfg.Slot, opts)
	if err != nil {
		return 0, err
	}
	p.log.Info("caught up inside the slot's snapshot",
		zap.Stringer("consistent_point", created.ConsistentPoint),
		zap.Int64("plays_scanned", res.PlaysScanned), zap.Int64("comments_scanned", res.CommentsScanned),
		zap.Int("artists", res.Artists), zap.Int("commenters", res.Users))
	p.oddities.note(res.Oddities)
	return created.ConsistentPoint, nil
}

var snapshotName = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// catchUpInSnapshot runs the catch-up in one REPEATABLE READ transaction that sees exactly what
// committed before the slot's consistent point, and stores that point with its results.
func catchUpInSnapshot(ctx context.Context, conn *pgx.Conn, slot replication.NewSlot, slotName string,
	opts processors.CatchUpOptions) (processors.CatchUpResult, error) {
	if !snapshotName.MatchString(slot.Snapshot) {
		return processors.CatchUpResult{}, fmt.Errorf("unexpected snapshot name %q", slot.Snapshot)
	}
	var res processors.CatchUpResult
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.Snapshot+"'"); err != nil {
			return fmt.Errorf("import snapshot: %w", err)
		}
		var err error
		if res, err = processors.CatchUp(ctx, tx, opts); err != nil {
			return err
		}
		return checkpoints.StoreLSN(ctx, tx, slotName, slot.ConsistentPoint)
	})
	if err != nil {
		return processors.CatchUpResult{}, fmt.Errorf("catch up in snapshot: %w", err)
	}
	return res, nil
}

// stream runs the loop on a started stream, with the shutdown watch beside it.
func (p *pipeline) stream(ctx context.Context, stream *replication.Stream, conn *pgx.Conn, start pglogrepl.LSN) error {
	cfg := p.cfg
	probe, err := probeConfig(&cfg.Database.Config)
	if err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	stopping := make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		watchShutdown(watchCtx, probe, cfg.ShutdownProbeInterval, p.log, stopping, stream.Interrupt)
		return nil
	})
	l := newLoop(cfg, loopDeps{
		src: stream,
		flusher: dbFlusher{conn: conn, slot: cfg.Slot, now: cfg.Now, log: p.log, margins: processors.WindowOptions{
			PlayIDMargin: cfg.PlayIDMargin, CommentBlockMargin: processors.DefaultCommentBlockMargin,
		}},
		stored:       start,
		stopping:     stopping,
		oddities:     p.oddities,
		resetBackoff: p.resetBackoff,
	})
	err = l.run(ctx)
	stopWatch()
	_ = g.Wait()
	return err
}
