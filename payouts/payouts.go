// Package payouts runs the weekly trending payouts (tt, tut, tp) inside the sidecar. No row
// change triggers them, so they run on a clock: on Fridays (UTC), on the replica that leads,
// each payout once per week. The trending_results rows are the record of a paid week and the
// payout commits with them, so a restart, a takeover or a second replica paying at the same
// moment pays nothing twice (processors.PayTrending).
package payouts

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/internal/failpoint"
	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

// DefaultRetry is how often a Friday's payouts are tried until every active one is recorded:
// the payouts are due at Friday 00:00 UTC and land within this of it (or of the leader
// starting), and a ranking still empty is tried again, as upstream's every tick.
const DefaultRetry = 15 * time.Second

// inactiveRetries spaces the tries of a Friday on which no payout is switched on (yet).
const inactiveRetries = 4

// payoutTimeout bounds one attempt: connecting, the lock wait and the payouts.
const payoutTimeout = time.Minute

// Scheduler runs the payouts while the pipeline leads. Feed it the pipeline's events
// (Observe) and start it with Run.
type Scheduler struct {
	conn    *pgx.ConnConfig
	log     *zap.Logger
	retry   time.Duration
	now     func() time.Time
	leading atomic.Bool
	// wake is signalled when the replica starts to lead, so a takeover on a Friday pays at
	// once rather than at the next retry.
	wake chan struct{}
	// paid is the last week (a Friday) every active payout was recorded for.
	paid time.Time
	// Settled, when set, is told each Friday's week once every active payout is recorded (or
	// none is switched on): the metric an alert on a late payout reads.
	Settled func(week time.Time)
}

// New prepares a scheduler paying on the database (its settings are copied); retry 0 means
// DefaultRetry.
func New(database *pgx.ConnConfig, retry time.Duration, log *zap.Logger) *Scheduler {
	cfg := database.Copy()
	cfg.RuntimeParams["application_name"] = "challenge-stream-payouts"
	if retry <= 0 {
		retry = DefaultRetry
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Scheduler{conn: cfg, log: log, retry: retry, now: failpoint.Now, wake: make(chan struct{}, 1)}
}

// Observe follows the pipeline's state: the payouts run only on the replica that holds the
// leader lock (catching up or streaming).
func (s *Scheduler) Observe(e pipeline.Event) {
	c, ok := e.(pipeline.StateChanged)
	if !ok {
		return
	}
	leads := c.State == pipeline.StateCatchingUp || c.State == pipeline.StateStreaming
	if !s.leading.Swap(leads) && leads {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Run pays each Friday's payouts until ctx is cancelled.
func (s *Scheduler) Run(ctx context.Context) {
	for {
		wait := s.step(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.wake:
			t.Stop()
		}
	}
}

// step tries the payouts if they are due and says how long to wait for the next try.
func (s *Scheduler) step(ctx context.Context) time.Duration {
	now := s.now().UTC()
	week := friday(now)
	switch {
	case week.IsZero() || week.Equal(s.paid):
		return min(untilNextFriday(now), time.Hour) // re-read the clock at least hourly
	case !s.leading.Load():
		return s.retry
	}
	p, err := s.pay(ctx, now)
	switch {
	case ctx.Err() != nil:
		return s.retry
	case err != nil:
		s.log.Warn("weekly trending payouts failed; retrying",
			zap.String("error", redact.Secret(err.Error(), s.conn.Password)), zap.Duration("in", s.retry))
		return s.retry
	}
	if len(p.Paid) > 0 {
		s.log.Info("paid the weekly trending rewards", zap.String("week", p.Week.Format(time.DateOnly)),
			zap.Any("winners", p.Paid), zap.Int("rows_inserted", p.Stats.Total().Inserted))
	}
	s.log.Debug("tried the weekly trending payouts", zap.String("week", p.Week.Format(time.DateOnly)),
		zap.Strings("recorded", p.Done), zap.Int("active", p.Active))
	if p.Complete() && s.Settled != nil {
		s.Settled(week)
	}
	switch {
	case p.Active == 0:
		return inactiveRetries * s.retry // one may be switched on later in the day
	case !p.Complete():
		return s.retry // a ranking still empty
	}
	s.paid = week
	return min(untilNextFriday(now), time.Hour)
}

// pay runs the payouts in one transaction on a connection of its own.
func (s *Scheduler) pay(ctx context.Context, now time.Time) (processors.TrendingPayout, error) {
	ctx, cancel := context.WithTimeout(ctx, payoutTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.conn)
	if err != nil {
		return processors.TrendingPayout{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var p processors.TrendingPayout
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		p, err = processors.PayTrending(ctx, tx, now)
		if len(p.Paid) > 0 {
			failpoint.Hit("in-trending-payout") // winners written, not committed
		}
		return err
	})
	return p, err
}

// friday is the day's midnight (UTC) when t is a Friday, else zero.
func friday(t time.Time) time.Time {
	if t.Weekday() != time.Friday {
		return time.Time{}
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// untilNextFriday is the time from t to the next Friday 00:00 UTC.
func untilNextFriday(t time.Time) time.Duration {
	days := (int(time.Friday) - int(t.Weekday()) + 7) % 7
	if days == 0 {
		days = 7
	}
	next := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, days)
	return next.Sub(t)
}
