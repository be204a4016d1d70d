package main

import (
	"cmp"
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/internal/buildinfo"
	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/payouts"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// runFlags are the flags of `run`.
type runFlags struct {
	commonFlags
	cfg         pipeline.Config // the pipeline's settings; validate completes it
	metricsAddr string
	opsFlags    opsFlags // --debug-addr, --ready-max-lag-bytes (ops.go)

	// Flags whose pipeline setting has another type or sense; validate carries them over.
	idleConfirmBytes int64
	decodingWorkMem  int64
	payoutRetry      time.Duration
	publishColumns   string
	failoverSlot     bool
}

func parseRunFlags(e env) (runFlags, error) {
	var rf runFlags
	f := newFlagSet("run", e)
	rf.register(f)
	f.duration(&rf.cfg.Window, "window", "CHALLENGE_STREAM_WINDOW", pipeline.DefaultWindow,
		"the longest a window gathers changes while the stream keeps delivering; a caught-up stream flushes at once")
	f.bool(&rf.cfg.FixedWindows, "fixed-windows", "CHALLENGE_STREAM_FIXED_WINDOWS",
		"close windows only on --window or the size cap, not when the stream has caught up (fewer, larger flushes)")
	f.duration(&rf.cfg.ReceiveTimeout, "receive-timeout", "CHALLENGE_STREAM_RECEIVE_TIMEOUT", pipeline.DefaultReceiveTimeout,
		"reconnect when the server has sent nothing for this long (a dead host or a black hole)")
	// All interfaces: the kubelet probes and Prometheus scrapes the pod's IP, not localhost.
	f.string(&rf.metricsAddr, "metrics-addr", "CHALLENGE_STREAM_METRICS_ADDR", defaultMetricsAddr,
		"address of /metrics, /livez and /readyz (e.g. 127.0.0.1:9464 for local scrapes only), or off")
	rf.opsFlags.register(f)
	f.bool(&rf.cfg.Backfill, "backfill", "CHALLENGE_STREAM_BACKFILL", "on the first start, derive all history instead of starting from now")
	f.bool(&rf.cfg.SkipMigrations, "skip-migrations", "CHALLENGE_STREAM_SKIP_MIGRATIONS", "do not apply the project's own migrations at start")
	f.boolDefault(&rf.failoverSlot, "failover-slot", "CHALLENGE_STREAM_FAILOVER_SLOT", true,
		"on Postgres 17+, create the slot with FAILOVER so a slot-syncing standby keeps it across a promotion")
	f.bytes(&rf.idleConfirmBytes, "idle-confirm-bytes", "CHALLENGE_STREAM_IDLE_CONFIRM_BYTES", pipeline.DefaultIdleConfirmBytes,
		"WAL an idle slot may hold before the sidecar stores and confirms the server's WAL end")
	f.string(&rf.publishColumns, "publication-columns", "CHALLENGE_STREAM_PUBLICATION_COLUMNS", "rules",
		"what a publication the sidecar manages sends of each table: rules (the columns the rules read and the replica identity) or all (whole rows: before a host migration retypes or drops one of those columns)")
	f.bytes(&rf.decodingWorkMem, "decoding-work-mem", "CHALLENGE_STREAM_DECODING_WORK_MEM", pipeline.DefaultDecodingWorkMem,
		"the walsender's logical_decoding_work_mem: larger transactions are streamed while they run (bounds the wait after a large COMMIT)")
	f.duration(&rf.payoutRetry, "payout-retry", "CHALLENGE_STREAM_PAYOUT_RETRY", payouts.DefaultRetry,
		"how often, on Fridays (UTC), the leader tries the weekly trending payouts until each active one is recorded")
	if err := f.parse(e.args); err != nil {
		return rf, err
	}
	return rf, rf.validate()
}

// defaultMetricsAddr follows the exporter convention: every interface, port 9464.
const defaultMetricsAddr = ":9464"

// runCommand is the sidecar: it streams until SIGTERM/SIGINT, then flushes, confirms and exits 0.
func runCommand(ctx context.Context, e env) error {
	rf, err := parseRunFlags(e)
	if err != nil {
		return err
	}
	log := rf.logger(e)
	defer func() { _ = log.Sync() }()
	cfg := rf.cfg
	cfg.Log = log
	bi := buildinfo.Get()
	log.Info("starting", zap.String("version", bi.Version), zap.String("revision", bi.Revision),
		zap.String("go_version", bi.GoVersion),
		zap.String("database", redact.URL(rf.databaseURL)), zap.String("slot", cmp.Or(cfg.Slot, "(chosen at start)")),
		zap.String("publication", cfg.Publication), zap.Duration("window", cfg.Window))
	if rf.opsFlags.readyMaxLagBytes != 0 {
		log.Warn("--ready-max-lag-bytes is deprecated and ignored: lag no longer affects /readyz")
	}

	ops, err := startOps(ctx, rf.opsConfig(), log)
	if err != nil {
		return err
	}
	defer ops.close()
	sched := payouts.New(rf.database, rf.payoutRetry, log.Named("payouts"))
	sched.Settled = ops.trendingSettled
	cfg.Observe = func(e pipeline.Event) {
		ops.observe(e)
		sched.Observe(e)
	}
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sched.Run(ctx) })
	defer wg.Wait()
	defer stop()
	return pipeline.Run(ctx, cfg)
}
