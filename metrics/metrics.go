// Package metrics exports what the pipeline does, and what the server says about its slot, as
// Prometheus metrics. Everything lives on a registry of the Metrics value's own: nothing is
// registered globally, so tests and several pipelines in one process never collide.
//
// Metrics observes the pipeline (Observe); a SlotPoller adds the server's view of the slot (WAL
// retained, lag), which the pipeline cannot see while it is down or standing by.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/challenge-stream/challenge-stream/internal/buildinfo"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

const namespace = "challenge_stream"

// Slot-recreation reasons the pipeline reports (their meanings: pipeline's Reason constants);
// pre-declared so the series exist at zero and alerts on increase() see the first one.
var slotRecreatedReasons = []string{pipeline.ReasonMissing, pipeline.ReasonFailover, pipeline.ReasonLost, pipeline.ReasonPublication,
	pipeline.ReasonPublicationWidened, pipeline.ReasonStoredAhead, pipeline.ReasonConfirmedAhead}

// walStatuses are the values of pg_replication_slots.wal_status.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost"}

var states = []pipeline.State{
	pipeline.StateStarting, pipeline.StateStandby, pipeline.StateCatchingUp,
	pipeline.StateStreaming, pipeline.StateReconnecting, pipeline.StateStopped,
}

// Metrics holds the collectors. Its methods are safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	// slot labels leader: as configured, or as the pipeline named it (SlotNamed).
	mu    sync.Mutex
	slot  string
	leads bool

	events        *prometheus.CounterVec
	truncates     prometheus.Counter
	transactions  prometheus.Counter
	flushes       prometheus.Counter
	flushDuration prometheus.Histogram
	dirtySetSize  prometheus.Histogram
	ruleDuration  *prometheus.HistogramVec
	ruleKeys      *prometheus.HistogramVec
	ruleScratch   *prometheus.CounterVec
	upserts       *prometheus.CounterVec
	commitToFlush prometheus.Histogram
	lastFlush     prometheus.Gauge

	receivedLSN   prometheus.Gauge
	storedLSN     prometheus.Gauge
	confirmedLSN  prometheus.Gauge
	lag           prometheus.Gauge
	statusUpdates prometheus.Counter

	reconnects    prometheus.Counter
	slotRecreated *prometheus.CounterVec
	state         *prometheus.GaugeVec
	leader        *prometheus.GaugeVec

	slotExists     prometheus.Gauge
	slotActive     prometheus.Gauge
	slotWALStatus  *prometheus.GaugeVec
	slotRetained   prometheus.Gauge
	slotLag        prometheus.Gauge
	slotPollErrors prometheus.Counter
	decodedBytes   *prometheus.GaugeVec
	decodedTxns    *prometheus.GaugeVec
	decodingMem    prometheus.Gauge

	challengeOwned *prometheus.GaugeVec
	foreignWrites  *prometheus.CounterVec
	trendingWeek   prometheus.Gauge
}

// decodingHows label the server's decoding counters: spilled to disk before sending, streamed
// while running, and every transaction decoded.
var decodingHows = []string{"spilled", "streamed", "total"}

// New creates the metrics on a new registry, with the Go runtime and process collectors. slot
// labels challenge_stream_leader, so that "no replica leads" can be told per slot across
// replicas and deployments; "" until the pipeline names it (pipeline.SlotNamed), as it does
// when no slot is configured.
func New(slot string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := promauto.With(reg)
	m := &Metrics{
		registry: reg,

		events: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_total",
			Help: "Row changes received from committed transactions and routed to a rule, by source table.",
		}, []string{"table"}),
		truncates: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "truncates_total",
			Help: "TRUNCATEs of source tables received (they change no reward and are only counted).",
		}),
		transactions: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "transactions_total",
			Help: "Committed source transactions received from the slot.",
		}),
		flushes: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "flushes_total",
			Help: "Windows flushed (committed together with their LSN), including LSN-only flushes.",
		}),
		flushDuration: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "flush_duration_seconds",
			Help:    "Time to apply one window in its database transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1ms .. 16s
		}),
		dirtySetSize: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dirty_set_size",
			Help:    "Distinct dirty keys (all rules) in a flushed window.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65536
		}),
		ruleDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rule_flush_duration_seconds",
			Help:    "Time one rule took inside a flush (its gap or from-scratch derivation included), by rule.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5ms .. 16s
		}, []string{"rule"}),
		ruleKeys: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rule_dirty_keys",
			Help:    "Dirty keys one rule was given in a flush, by rule.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}, []string{"rule"}),
		ruleScratch: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rule_from_scratch_total",
			Help: "Full-rescan rules derived from scratch (first sight, re-activation, catch-up), by rule.",
		}, []string{"rule"}),
		upserts: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upserts_total",
			Help: "user_challenges rows recomputed, by challenge and outcome (inserted, updated, unchanged).",
		}, []string{"challenge", "outcome"}),
		commitToFlush: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "commit_to_flush_seconds",
			Help:    "From the commit of a window's oldest source transaction to the commit of its flush.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800},
		}),
		lastFlush: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_flush_timestamp_seconds",
			Help: "Unix time of the last committed flush.",
		}),

		receivedLSN: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "received_lsn",
			Help: "Last WAL position received from the server, as a number (exact below 2^53).",
		}),
		storedLSN: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "stored_lsn",
			Help: "Position stored with the last flush: everything before it is applied.",
		}),
		confirmedLSN: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "confirmed_lsn",
			Help: "Flush position sent in the last standby status update.",
		}),
		lag: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "replication_lag_bytes",
			Help: "Server WAL end (last keepalive) minus the confirmed position, at the last status update.",
		}),
		statusUpdates: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "status_updates_total",
			Help: "Standby status updates sent to the server.",
		}),

		reconnects: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reconnects_total",
			Help: "Sessions that ended with an error and were retried.",
		}),
		slotRecreated: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "slot_recreated_total",
			Help: "Times the slot was found gone (missing, or lost to max_slot_wal_keep_size) and recreated.",
		}, []string{"reason"}),
		state: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "state",
			Help: "1 for the pipeline's current state, 0 for the others.",
		}, []string{"state"}),
		leader: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "leader",
			Help: "1 while this replica holds the slot's leader lock and does the work (catching up or streaming), else 0.",
		}, []string{"slot"}),
		challengeOwned: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "challenge_owned",
			Help: "Per challenges row: 1 while a registered, active rule of the sidecar keeps it current; 0 while the polling job must (no rule) or nobody does (inactive). Read with the slot.",
		}, []string{"challenge"}),
		trendingWeek: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "trending_settled_week_timestamp_seconds",
			Help: "The last Friday (00:00 UTC, Unix time) on which this replica found every active weekly trending payout recorded in trending_results (or none switched on); 0 until this replica's first Friday try.",
		}),
		foreignWrites: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "foreign_checkpoint_writes_total",
			Help: "Flushes that found a legacy checkpoint written by someone else since the sidecar last wrote it: the polling job still runs that processor.",
		}, []string{"checkpoint"}),

		slotExists: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_exists",
			Help: "1 when the replication slot exists on the server (polled).",
		}),
		slotActive: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_active",
			Help: "1 when a walsender streams from the slot (polled).",
		}),
		slotWALStatus: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_wal_status",
			Help: "1 for the slot's pg_replication_slots.wal_status, 0 for the others (polled).",
		}, []string{"status"}),
		slotRetained: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_wal_retained_bytes",
			Help: "WAL kept on the server's disk for the slot: current WAL position minus restart_lsn (polled).",
		}),
		slotLag: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_lag_bytes",
			Help: "Current WAL position minus the slot's confirmed_flush_lsn (polled).",
		}),
		slotPollErrors: f.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "slot_poll_errors_total",
			Help: "Failed attempts to read the slot's row from pg_replication_slots.",
		}),
		decodedBytes: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_decoded_bytes",
			Help: "The server's pg_stat_replication_slots byte counters for the slot: spill_bytes, stream_bytes, total_bytes (polled; they reset with the slot).",
		}, []string{"how"}),
		decodedTxns: f.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "slot_decoded_transactions",
			Help: "The server's pg_stat_replication_slots transaction counters for the slot: spill_txns, stream_txns, total_txns (polled).",
		}, []string{"how"}),
		decodingMem: f.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "decoding_work_mem_bytes",
			Help: "logical_decoding_work_mem set on the sidecar's walsender (--decoding-work-mem): larger transactions are streamed while they run.",
		}),
	}
	// Every registered rule's series exist at zero, so a new rule needs nothing here.
	for _, table := range processors.Tables() {
		m.events.WithLabelValues(table)
	}
	for _, r := range processors.Rules() {
		m.ruleScratch.WithLabelValues(r.Name)
		if c := r.Checkpoint(); c != "" {
			m.foreignWrites.WithLabelValues(c)
		}
		for _, c := range r.Challenges {
			m.challengeOwned.WithLabelValues(c) // 0 until the poller reads the catalog
		}
	}
	for _, r := range slotRecreatedReasons {
		m.slotRecreated.WithLabelValues(r)
	}
	for _, s := range walStatuses {
		m.slotWALStatus.WithLabelValues(s)
	}
	for _, how := range decodingHows {
		m.decodedBytes.WithLabelValues(how)
		m.decodedTxns.WithLabelValues(how)
	}
	bi := buildinfo.Get()
	f.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; its labels name the running build.",
	}, []string{"version", "revision", "goversion"}).WithLabelValues(bi.Version, bi.Revision, bi.GoVersion).Set(1)
	m.slot = slot
	m.stateChanged(pipeline.StateStarting)
	return m
}

// DecodingWorkMem exports the walsender's logical_decoding_work_mem, in bytes.
func (m *Metrics) DecodingWorkMem(bytes uint64) { m.decodingMem.Set(float64(bytes)) }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.registry, // counts its own errors
	})
}

// Observe updates the metrics from a pipeline event (pipeline.Config.Observe).
func (m *Metrics) Observe(e pipeline.Event) {
	switch e := e.(type) {
	case pipeline.StateChanged:
		m.stateChanged(e.State)
	case pipeline.TransactionReceived:
		m.transactionReceived(e.Tx, e.Tables)
	case pipeline.Flushed:
		m.flushed(e)
	case pipeline.StatusSent:
		m.statusUpdates.Inc()
		m.receivedLSN.Set(lsnFloat(e.Received))
		m.confirmedLSN.Set(lsnFloat(e.Applied))
		m.lag.Set(float64(lagBytes(e.Applied, e.ServerWALEnd)))
	case pipeline.Reconnecting:
		m.reconnects.Inc()
	case pipeline.SlotRecreated:
		m.slotRecreated.WithLabelValues(e.Reason).Inc()
	case pipeline.SlotNamed:
		m.slotNamed(e.Slot)
	}
}

// slotNamed moves the leader series to the slot's chosen name.
func (m *Metrics) slotNamed(slot string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.slot != "" {
		m.leader.DeleteLabelValues(m.slot)
	}
	m.slot = slot
	m.leader.WithLabelValues(slot).Set(boolFloat(m.leads))
}

// namedSlot is the slot's name as configured or chosen, "" until the pipeline has chosen one.
func (m *Metrics) namedSlot() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slot
}

func (m *Metrics) stateChanged(s pipeline.State) {
	for _, st := range states {
		m.state.WithLabelValues(st.String()).Set(boolFloat(st == s))
	}
	// Only the lock holder catches up or streams; "no replica leads" is an alert over the
	// replicas' max of this gauge, never a probe.
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leads = s == pipeline.StateCatchingUp || s == pipeline.StateStreaming
	if m.slot != "" {
		m.leader.WithLabelValues(m.slot).Set(boolFloat(m.leads))
	}
}

func (m *Metrics) transactionReceived(tx *replication.Transaction, tables []string) {
	m.transactions.Inc()
	for i, n := range tx.Rows {
		if n > 0 && i < len(tables) {
			m.events.WithLabelValues(tables[i]).Add(float64(n))
		}
	}
	if tx.Truncates > 0 {
		m.truncates.Add(float64(tx.Truncates))
	}
}

func (m *Metrics) flushed(r pipeline.Flushed) {
	m.flushes.Inc()
	m.flushDuration.Observe(r.Duration.Seconds())
	m.dirtySetSize.Observe(float64(r.Keys))
	for _, rr := range r.Rules {
		m.ruleDuration.WithLabelValues(rr.Rule).Observe(rr.Duration.Seconds())
		m.ruleKeys.WithLabelValues(rr.Rule).Observe(float64(rr.Keys))
		if rr.FromScratch {
			m.ruleScratch.WithLabelValues(rr.Rule).Inc()
		}
	}
	for challenge, c := range r.Stats {
		m.upserts.WithLabelValues(challenge, "inserted").Add(float64(c.Inserted))
		m.upserts.WithLabelValues(challenge, "updated").Add(float64(c.Updated))
		m.upserts.WithLabelValues(challenge, "unchanged").Add(float64(c.Unchanged))
	}
	// LSN-only flushes (idle confirmation) carry no commit time: they measure nothing.
	if !r.FirstCommit.IsZero() && !r.CommittedAt.IsZero() {
		m.commitToFlush.Observe(max(r.CommittedAt.Sub(r.FirstCommit).Seconds(), 0))
	}
	if !r.CommittedAt.IsZero() {
		m.lastFlush.Set(float64(r.CommittedAt.UnixNano()) / 1e9)
	}
	m.storedLSN.Set(lsnFloat(r.LSN))
	for _, c := range r.ForeignCheckpoints {
		m.foreignWrites.WithLabelValues(c).Inc()
	}
}

// TrendingSettled exports the last week whose weekly payouts are all recorded.
func (m *Metrics) TrendingSettled(week time.Time) {
	m.trendingWeek.Set(float64(week.Unix()))
}

// OwnersPolled exports who keeps each challenge current (processors.Owners).
func (m *Metrics) OwnersPolled(owners []processors.Ownership) {
	for _, o := range owners {
		m.challengeOwned.WithLabelValues(o.Challenge).Set(boolFloat(o.Owner == processors.OwnedBySidecar))
	}
}

// lagBytes is how far applied trails the server's WAL end; zero when the WAL end is not known
// yet (no keepalive so far) or not ahead.
func lagBytes(applied, serverWALEnd pglogrepl.LSN) uint64 {
	if serverWALEnd <= applied {
		return 0
	}
	return uint64(serverWALEnd - applied)
}

// lsnFloat exports an LSN as a gauge value; float64 is exact up to 2^53 bytes of WAL (8 PiB).
func lsnFloat(lsn pglogrepl.LSN) float64 { return float64(uint64(lsn)) }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
