package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/health"
	"github.com/challenge-stream/challenge-stream/metrics"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// opsShutdownTimeout bounds the wait for in-flight scrapes when the process stops.
const opsShutdownTimeout = 5 * time.Second

// opsFlags are run's flags for the probes, next to --metrics-addr.
type opsFlags struct {
	readyMaxLagBytes int64
}

func (o *opsFlags) register(f *flagSet) {
	f.bytes(&o.readyMaxLagBytes, "ready-max-lag-bytes", "CHALLENGE_STREAM_READY_MAX_LAG_BYTES",
		health.DefaultMaxLagBytes, "replication lag in bytes above which /readyz fails")
}

func (o *opsFlags) check() error {
	if o.readyMaxLagBytes <= 0 {
		return usagef("ready max lag %d bytes must be positive", o.readyMaxLagBytes)
	}
	return nil
}

// bytes registers a non-negative byte count flag.
func (f *flagSet) bytes(p *int64, name, envName string, def int64, usage string) {
	if v := f.envOr(envName, ""); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q is not a number of bytes", envName, v))
		}
		def = n
	}
	f.Int64Var(p, name, def, envHelp(usage, envName))
}

// opsConfig configures startOps.
type opsConfig struct {
	addr             string // host:port of the listener, or "off"
	databaseURL      string // for the slot poller; empty disables it
	slot             string
	readyMaxLagBytes int64         // 0: health's default
	slotPollInterval time.Duration // 0: metrics' default
	now              func() time.Time
}

// opsConfig is the operational side's share of run's flags.
func (rf runFlags) opsConfig() opsConfig {
	return opsConfig{
		addr:             rf.metricsAddr,
		databaseURL:      rf.databaseURL,
		slot:             rf.slot,
		readyMaxLagBytes: rf.opsFlags.readyMaxLagBytes,
	}
}

// ops is the operational side of `run`: metrics and probes.
type ops struct {
	// observer is to be passed to the pipeline: it feeds the metrics and the probes.
	observer pipeline.Observer
	// addr is where the listener is bound, empty when it is off.
	addr string
	// close stops the listener and the slot poller and waits for them. It may be called more
	// than once.
	close func()
}

// startOps serves /metrics, /livez and /readyz on cfg.addr and polls the slot for the metrics.
// With addr "off" nothing listens and nothing polls, but the observer still works.
func startOps(ctx context.Context, cfg opsConfig, log *zap.Logger) (ops, error) {
	log = log.Named("ops")
	m := metrics.New()
	h := health.New(health.Options{MaxLagBytes: cfg.readyMaxLagBytes, Now: cfg.now})
	o := ops{observer: observers{m, h}, close: func() {}}
	if cfg.addr == "off" {
		log.Info("metrics and probes are off")
		return o, nil
	}
	var poller *metrics.SlotPoller
	if cfg.databaseURL != "" {
		var err error
		if poller, err = m.NewSlotPoller(cfg.databaseURL, cfg.slot, cfg.slotPollInterval, log); err != nil {
			return ops{}, err
		}
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return ops{}, fmt.Errorf("listen on --metrics-addr %s: %w", cfg.addr, err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /livez", h.LiveHandler())
	mux.Handle("GET /readyz", h.ReadyHandler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics and probes listener stopped", zap.Error(err))
		}
		return nil
	})
	if poller != nil {
		g.Go(func() error {
			poller.Run(pollCtx)
			return nil
		})
	}
	o.addr = ln.Addr().String()
	o.close = sync.OnceFunc(func() {
		stopPoll()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opsShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close() // scrapes still in flight after the timeout are cut
		}
		_ = g.Wait()
	})
	log.Info("serving metrics and probes", zap.String("addr", o.addr))
	return o, nil
}

// observers tells several observers, in order.
type observers []pipeline.Observer

var _ pipeline.Observer = observers(nil)

func (obs observers) StateChanged(s pipeline.State) {
	for _, o := range obs {
		o.StateChanged(s)
	}
}

func (obs observers) TransactionReceived(tx *replication.Transaction) {
	for _, o := range obs {
		o.TransactionReceived(tx)
	}
}

func (obs observers) Flushed(r pipeline.FlushResult) {
	for _, o := range obs {
		o.Flushed(r)
	}
}

func (obs observers) StatusSent(received, applied, serverWALEnd pglogrepl.LSN) {
	for _, o := range obs {
		o.StatusSent(received, applied, serverWALEnd)
	}
}

func (obs observers) Reconnecting(err error) {
	for _, o := range obs {
		o.Reconnecting(err)
	}
}

func (obs observers) SlotRecreated(reason string) {
	for _, o := range obs {
		o.SlotRecreated(reason)
	}
}
