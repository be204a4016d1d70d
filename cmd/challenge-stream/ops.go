package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/health"
	"github.com/challenge-stream/challenge-stream/metrics"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// opsShutdownTimeout bounds the wait for in-flight scrapes when the process stops.
const opsShutdownTimeout = 5 * time.Second

// opsFlags are run's operational flags, next to --metrics-addr.
type opsFlags struct {
	debugAddr string
	// readyMaxLagBytes is deprecated and ignored: lag is a metric and an alert, never
	// readiness (see package health). It is still accepted so that an existing manifest that
	// sets it does not crash-loop the container, and with it the host API's pod.
	readyMaxLagBytes int64
}

func (o *opsFlags) register(f *flagSet) {
	f.string(&o.debugAddr, "debug-addr", "CHALLENGE_STREAM_DEBUG_ADDR", "off",
		"address of the pprof endpoints (/debug/pprof/), or off; keep it on localhost")
	f.bytes(&o.readyMaxLagBytes, "ready-max-lag-bytes", "CHALLENGE_STREAM_READY_MAX_LAG_BYTES", 0,
		"deprecated, ignored: lag no longer affects /readyz (alert on challenge_stream_slot_lag_bytes)")
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
	addr             string          // host:port of the listener, or "off"
	debugAddr        string          // host:port of the pprof listener, or "off" / empty
	database         *pgx.ConnConfig // for the slot poller; nil disables it
	slot             string
	slotPollInterval time.Duration // 0: metrics' default
	decodingWorkMem  uint64        // the walsender's logical_decoding_work_mem, exported
	now              func() time.Time
}

// opsConfig is the operational side's share of run's flags.
func (rf runFlags) opsConfig() opsConfig {
	return opsConfig{
		addr:            rf.metricsAddr,
		debugAddr:       rf.opsFlags.debugAddr,
		database:        rf.database,
		slot:            rf.slot,
		decodingWorkMem: rf.cfg.DecodingWorkMem,
	}
}

// Routes of the metrics and probes listener; deploy/'s tests check the manifests against them.
const (
	routeMetrics = "/metrics"
	routeLivez   = "/livez"
	routeReadyz  = "/readyz"
)

// ops is the operational side of `run`: metrics, probes and the opt-in pprof.
type ops struct {
	// observe is to be passed to the pipeline: it feeds the metrics and the probes.
	observe func(pipeline.Event)
	// trendingSettled is to be passed to the payouts scheduler (payouts.Scheduler.Settled).
	trendingSettled func(time.Time)
	// addr is where the listener is bound, empty when it is off.
	addr string
	// debugAddr is where the pprof listener is bound, empty when it is off.
	debugAddr string
	// close stops the listener and the slot poller and waits for them. It may be called more
	// than once.
	close func()
}

// startOps serves /metrics, /livez and /readyz on cfg.addr and polls the slot for the metrics;
// with cfg.debugAddr set, it serves pprof there too, on a listener of its own. With addr "off"
// nothing listens there and nothing polls, but observe still feeds the metrics and probes.
func startOps(ctx context.Context, cfg opsConfig, log *zap.Logger) (ops, error) {
	log = log.Named("ops")
	m := metrics.New(cfg.slot)
	m.DecodingWorkMem(cfg.decodingWorkMem)
	h := health.New(health.Options{Now: cfg.now})
	o := ops{observe: func(e pipeline.Event) { m.Observe(e); h.Observe(e) }, trendingSettled: m.TrendingSettled, close: func() {}}

	var servers []*http.Server
	var listeners []net.Listener
	closeAll := func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}
	if cfg.addr != "off" {
		ln, err := net.Listen("tcp", cfg.addr)
		if err != nil {
			return ops{}, fmt.Errorf("listen on --metrics-addr %s: %w", cfg.addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET "+routeMetrics, m.Handler())
		mux.Handle("GET "+routeLivez, h.LiveHandler())
		mux.Handle("GET "+routeReadyz, h.ReadyHandler())
		servers, listeners = append(servers, newServer(mux, log)), append(listeners, ln)
		o.addr = ln.Addr().String()
	}
	if cfg.debugAddr != "" && cfg.debugAddr != "off" {
		ln, err := net.Listen("tcp", cfg.debugAddr)
		if err != nil {
			closeAll()
			return ops{}, fmt.Errorf("listen on --debug-addr %s: %w", cfg.debugAddr, err)
		}
		servers, listeners = append(servers, newServer(debugMux(), log)), append(listeners, ln)
		o.debugAddr = ln.Addr().String()
	}
	var poller *metrics.SlotPoller
	if cfg.addr != "off" && cfg.database != nil {
		poller = m.NewSlotPoller(cfg.database, cfg.slot, cfg.slotPollInterval, log)
	}

	pollCtx, stopPoll := context.WithCancel(ctx)
	var g errgroup.Group
	for i, srv := range servers {
		ln := listeners[i]
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("listener stopped", zap.String("addr", ln.Addr().String()), zap.Error(err))
			}
			return nil
		})
	}
	if poller != nil {
		g.Go(func() error {
			poller.Run(pollCtx)
			return nil
		})
	}
	o.close = sync.OnceFunc(func() {
		stopPoll()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opsShutdownTimeout)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close() // requests still in flight after the timeout are cut
			}
		}
		_ = g.Wait()
	})
	if o.addr == "" {
		log.Info("metrics and probes are off")
	} else {
		log.Info("serving metrics and probes", zap.String("addr", o.addr))
	}
	if o.debugAddr != "" {
		log.Warn("serving pprof: keep this address private", zap.String("addr", o.debugAddr))
	}
	return o, nil
}

func newServer(h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
}

// debugMux serves net/http/pprof on a mux of its own, never http.DefaultServeMux, so the
// profiles are reachable only on --debug-addr. A CPU profile or trace runs for as long as its
// request asks (?seconds=), hence no write timeout.
func debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
