package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// DefaultSlotPollInterval is how often a SlotPoller reads the slot by default.
const DefaultSlotPollInterval = 15 * time.Second

// slotPollTimeout bounds one poll: connecting and reading the slot's row.
const slotPollTimeout = 10 * time.Second

// SlotPoller periodically reads the slot's row from pg_replication_slots, the server's decoding
// counters for it and the challenges' owners (processors.Owners), and exports them. It
// opens a short-lived connection per poll: idle between polls, and a database that is down
// costs a failed poll, never the process.
type SlotPoller struct {
	m        *Metrics
	conn     *pgx.ConnConfig
	slot     string
	interval time.Duration
	log      *zap.Logger
}

// NewSlotPoller prepares a poller of slot on the database (its settings are copied), or with
// slot "" of the slot the pipeline names (pipeline.SlotNamed);
// interval 0 means DefaultSlotPollInterval. Start it with Run.
func (m *Metrics) NewSlotPoller(database *pgx.ConnConfig, slot string, interval time.Duration, log *zap.Logger) *SlotPoller {
	cfg := database.Copy()
	cfg.RuntimeParams["application_name"] = "challenge-stream-metrics"
	if interval <= 0 {
		interval = DefaultSlotPollInterval
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &SlotPoller{m: m, conn: cfg, slot: slot, interval: interval, log: log}
}

// Run polls at once and then every interval until ctx is cancelled. Failures are counted
// (challenge_stream_slot_poll_errors_total) and logged when polling starts failing, not at
// every attempt.
func (p *SlotPoller) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	failing := false
	for {
		err := p.Poll(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			p.m.slotPollErrors.Inc()
			if !failing {
				p.log.Warn("cannot read the replication slot; retrying", zap.String("slot", p.slot),
					zap.String("error", redact.Secret(err.Error(), p.conn.Password)), zap.Duration("every", p.interval))
			}
			failing = true
		case failing:
			p.log.Info("reading the replication slot again", zap.String("slot", p.slot))
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads the slot once and updates the slot gauges.
func (p *SlotPoller) Poll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, slotPollTimeout)
	defer cancel()
	slot := p.slot
	if slot == "" {
		if slot = p.m.namedSlot(); slot == "" {
			return nil // the pipeline has not chosen its slot's name yet
		}
	}
	conn, err := pgx.ConnectConfig(ctx, p.conn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	info, err := replication.InspectSlot(ctx, conn, slot)
	if err != nil {
		return err
	}
	p.m.SlotPolled(info)
	stats, err := replication.InspectDecoding(ctx, conn, slot)
	if err != nil {
		return err
	}
	p.m.DecodingPolled(stats)
	owners, err := processors.Owners(ctx, conn)
	if err != nil {
		return err
	}
	p.m.OwnersPolled(owners)
	return nil
}

// DecodingPolled exports the server's decoding counters for the slot.
func (m *Metrics) DecodingPolled(s replication.DecodingStats) {
	set := func(how string, bytes, txns int64) {
		m.decodedBytes.WithLabelValues(how).Set(float64(bytes))
		m.decodedTxns.WithLabelValues(how).Set(float64(txns))
	}
	set("spilled", s.SpilledBytes, s.SpilledTxns)
	set("streamed", s.StreamedBytes, s.StreamedTxns)
	set("total", s.TotalBytes, s.TotalTxns)
}

// SlotPolled exports what the server said about the slot.
func (m *Metrics) SlotPolled(info replication.SlotInfo) {
	m.slotExists.Set(boolFloat(info.Exists))
	m.slotActive.Set(boolFloat(info.Active))
	for _, s := range walStatuses {
		m.slotWALStatus.WithLabelValues(s).Set(boolFloat(info.Exists && s == info.WALStatus))
	}
	m.slotRetained.Set(float64(max(info.RetainedBytes, 0)))
	m.slotLag.Set(float64(max(info.LagBytes, 0)))
}
