package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// session is one connection's life: lead, choose the start state, stream, shut down.
func (p *pipeline) session(ctx context.Context) error {
	if p.standingBy && p.leaderStillHeld(ctx) {
		return errStandby
	}
	p.cfg.Observe(StateChanged{State: StateStarting})
	repl, err := replication.Connect(ctx, decodingSettings(&p.cfg.Database.Config, p.cfg.DecodingWorkMem))
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	if err := p.chooseSlot(ctx, repl); err != nil {
		return err
	}
	cfg := p.cfg
	// One replica leads per slot. The lock lives as long as the replication connection (see
	// TryLeaderLock), so a replica that dies, even by kill -9 or with its host, frees it.
	leader, err := TryLeaderLock(ctx, repl, cfg.Slot)
	if err != nil {
		return err
	}
	if !leader {
		p.standingBy = true
		return errStandby
	}
	p.standingBy = false

	conn, err := connectFlush(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := p.preflight(ctx, conn); err != nil {
		return err
	}
	p.slotChosen = true
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
	senderTimeout, err := replication.WalSenderTimeout(ctx, repl)
	if err != nil {
		return err
	}
	stream, err := replication.Start(ctx, repl, cfg.Slot, cfg.Publication, registryPlan().plan, start,
		cfg.Log.Named("replication"))
	if err != nil {
		return err
	}
	// START_REPLICATION silently starts at confirmed_flush_lsn when that is ahead of the
	// requested position; everything in between would be lost. prepare decides this case
	// before starting (ReasonConfirmedAhead); this guard catches a consumer that confirmed the
	// slot in between, and leaves the recreation to the next session's prepare.
	slot, err := replication.InspectSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return err
	}
	if slot.ConfirmedFlush > start {
		p.unusableSlot = ReasonConfirmedAhead
		return fmt.Errorf("%w: stored %s, confirmed_flush_lsn %s", errSlotAhead, start, slot.ConfirmedFlush)
	}
	p.log.Info("streaming", zap.String("slot", cfg.Slot), zap.Stringer("from_lsn", start))
	cfg.Observe(StateChanged{State: StateStreaming})
	err = p.stream(ctx, stream, conn, start, senderTimeout)
	p.noteUnusableSlot(err)
	return err
}

// chooseSlot names the slot when none is configured (ResolveSlot), again at each session until
// one has led under the name and found it free on the cluster (preflight): until then another
// database may take the default name first.
func (p *pipeline) chooseSlot(ctx context.Context, repl *pgconn.PgConn) error {
	if p.slotChosen || p.configuredSlot != "" {
		return nil
	}
	slot, err := ResolveSlot(ctx, repl, "")
	if err != nil {
		return err
	}
	if slot != p.cfg.Slot {
		p.cfg.Slot = slot
		p.log.Info("slot name chosen", zap.String("slot", slot))
		p.cfg.Observe(SlotNamed{Slot: slot})
	}
	return nil
}

// decodingSettings is database with the walsender's logical_decoding_work_mem (see
// Config.DecodingWorkMem), unless the connection settings name one already.
func decodingSettings(database *pgconn.Config, workMem uint64) *pgconn.Config {
	cfg := database.Copy()
	if _, set := cfg.RuntimeParams["logical_decoding_work_mem"]; !set {
		cfg.RuntimeParams["logical_decoding_work_mem"] = fmt.Sprintf("%dkB", workMem>>10)
	}
	return cfg
}

// statusIntervalFor is the status interval a session uses: the configured one, or half the
// server's wal_sender_timeout when that is shorter. The loop stops reading while a full window
// waits for a slow flush (backpressure) and then sends only its scheduled updates; a walsender
// that hears nothing for wal_sender_timeout ends the session, and a backlog behind a slow flush
// would then be dropped and replayed again and again. 0 disables the server's timeout.
func statusIntervalFor(configured, senderTimeout time.Duration) time.Duration {
	if senderTimeout <= 0 {
		return configured
	}
	return min(configured, senderTimeout/2)
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
	// The flush session idles between windows by design, for as long as the source tables are
	// quiet: a DBA's idle_session_timeout on the role (14+) would end it at each quiet spell,
	// and the whole session — walsender included — with it.
	if _, set := cfg.RuntimeParams["idle_session_timeout"]; !set {
		cfg.RuntimeParams["idle_session_timeout"] = "0"
	}
	if err := replication.DetectDeadPeers(&cfg.Config); err != nil {
		return nil, err
	}
	// A statement whose context ends (a WAL-end probe past its timeout, a final flush past the
	// shutdown timeout) is cancelled on the server, and the connection stays usable; pgx's
	// default closes it instead. A server that does not answer the cancel within
	// flushCancelGrace (a dead host) still loses the connection.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: flushCancelGrace}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// flushCancelGrace is how long a cancelled statement on the flush connection may take to end
// before the connection is closed.
const flushCancelGrace = 2 * time.Second

// FlushApplicationName is the application_name of the flush connection.
const FlushApplicationName = "challenge-stream-flush"

// FlushIdleInTransactionTimeout is the flush session's idle_in_transaction_session_timeout
// (unless the URL sets one): no longer than the default wal_sender_timeout, after which the
// leader lock of a cut-off replica is released too.
const FlushIdleInTransactionTimeout = "60s"

// stream runs the loop on a started stream, with the shutdown watch beside it.
func (p *pipeline) stream(ctx context.Context, stream *replication.Stream, conn *pgx.Conn, start pglogrepl.LSN,
	senderTimeout time.Duration) error {
	cfg := p.cfg
	if interval := statusIntervalFor(cfg.StatusInterval, senderTimeout); interval != cfg.StatusInterval {
		p.log.Warn("the server's wal_sender_timeout is shorter than twice the status interval; sending status updates more often",
			zap.Duration("wal_sender_timeout", senderTimeout), zap.Duration("configured_status_interval", cfg.StatusInterval),
			zap.Duration("status_interval", interval))
		cfg.StatusInterval = interval
	}
	probe, err := sideConfig(&cfg.Database.Config, ShutdownProbeApplicationName)
	if err != nil {
		return err
	}
	// The rules switched off keep no keys from the first change on (a large first transaction
	// would otherwise gather them all).
	inactive, err := processors.InactiveRules(ctx, conn)
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
	flusher := dbFlusher{conn: conn, slot: cfg.Slot, publication: cfg.Publication, now: cfg.Now, log: p.log, margins: processors.WindowOptions{
		PlayIDMargin: cfg.PlayIDMargin, BlockMargin: processors.DefaultBlockMargin,
	}}
	l := newLoop(cfg, loopDeps{
		inactive:     inactive,
		src:          stream,
		flusher:      flusher,
		serverWALEnd: flusher.serverWALEnd,
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
