package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pollingjob"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// steadyRun is one applier under a steady load.
type steadyRun struct {
	plays, blocks int
	lat           Latencies
	keepsUp       bool
	detail        string // how it kept up or fell behind
	// flushes are the durations of the sidecar's flushes with changes, sorted; artists and
	// commenters the distinct IDs each of them recomputed, sorted: the work a flush does, to
	// compare runs on databases of different sizes.
	flushes             []time.Duration
	artists, commenters []int
	// rules are the latencies of the rule load's rewards by challenge (empty without it).
	rules map[string]Latencies
}

// ruleChallenges are the challenges of the rule load, in report order.
var ruleChallenges = []string{"v", "t", "cp", "w", "m", "rd", "b", "fp"}

// traffic is the steady load: comments at a 25th of the plays, blocks every BlockInterval.
func (b *bench) traffic(rate float64) workload.Traffic {
	return workload.Traffic{Rate: rate, CommentRate: rate / 25, BlockInterval: b.cfg.BlockInterval}
}

// streaming runs the sidecar under a steady load on a fresh copy of the database. The load
// runs for warmup before the measured duration; milestones crossed and flushes started in the
// warm-up are not measured.
func (b *bench) streaming(ctx context.Context, tag string, rate float64, window, warmup, duration time.Duration) (steadyRun, error) {
	name, url, host, err := b.clone(ctx, tag)
	if err != nil {
		return steadyRun{}, err
	}
	defer b.drop(ctx, name)
	rec := NewRecorder(false)
	sc := StartSidecar(ctx, url, name, window, rec, b.log)
	defer sc.Stop()
	if err := sc.WaitStreaming(ctx); err != nil {
		return steadyRun{}, fmt.Errorf("start sidecar: %w", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return steadyRun{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var (
		run       steadyRun
		crossings []workload.Crossing
		rules     rulesRun
	)
	measureFrom := time.Now().Add(warmup)
	if b.cfg.RuleInterval > 0 {
		rules.start(ctx, url, workload.RuleLoad{Interval: b.cfg.RuleInterval, Seed: 1}, measureFrom, warmup+duration)
	}
	err = host.Drive(ctx, conn, b.traffic(rate), warmup+duration, func(a workload.Applied) {
		run.blocks++
		run.plays += len(a.Block.Plays)
		if !a.Written.CommittedAt.Before(measureFrom) {
			crossings = append(crossings, a.Crossings...)
		}
	})
	if err == nil {
		err = rules.wait(ctx, conn, window+30*time.Second)
	}
	if err != nil {
		return steadyRun{}, err
	}
	// Keeping up means the last block is applied about a window after it committed.
	ended := time.Now()
	wctx, cancel := context.WithTimeout(ctx, window+30*time.Second)
	err = sc.WaitApplied(wctx, int64(run.plays))
	cancel()
	behind := time.Since(ended)
	switch {
	case err == nil:
		run.keepsUp = behind <= window+time.Second
		run.detail = "last block applied " + seconds(behind) + " after the load stopped"
	case ctx.Err() == nil && wctx.Err() != nil:
		run.detail = "still behind " + seconds(behind) + " after the load stopped"
	default:
		return steadyRun{}, err
	}
	measured := time.Now()
	if err := sc.Stop(); err != nil {
		return steadyRun{}, fmt.Errorf("sidecar: %w", err)
	}
	for _, f := range rec.Flushes() {
		if f.Result.Changes > 0 && !f.Start.Before(measureFrom) {
			run.flushes = append(run.flushes, f.Result.Duration)
			run.artists = append(run.artists, f.Result.Artists)
			run.commenters = append(run.commenters, ruleKeys(f.Result, "comments"))
		}
	}
	slices.Sort(run.flushes)
	slices.Sort(run.artists)
	slices.Sort(run.commenters)
	run.lat, err = MeasureLatencies(ctx, conn, crossings, FlushIntervals(rec.Flushes()), measured)
	if err != nil {
		return steadyRun{}, err
	}
	if b.cfg.RuleInterval > 0 {
		run.rules = map[string]Latencies{}
		for _, id := range ruleChallenges {
			var of []workload.Crossing
			for _, c := range rules.crossings {
				if c.ChallengeID == id {
					of = append(of, c)
				}
			}
			if run.rules[id], err = MeasureLatencies(ctx, conn, of, FlushIntervals(rec.Flushes()), measured); err != nil {
				return steadyRun{}, err
			}
		}
	}
	if err := b.verify(ctx, url, tag); err != nil {
		return steadyRun{}, err
	}
	return run, nil
}

// tick is one run of the polling job.
type tick struct {
	Interval
	res pollingjob.Result
}

// polling runs the polling job — pollingjob.Tick with PollRows every PollTick, writing with
// the reference upsert as the job did — under a steady load on a fresh copy of the database. Its
// first tick comes half a tick after the load starts (the job's phase is arbitrary); the run
// ends with the first tick that starts after the load stopped, which decides whether it keeps
// up: that tick must reach the last play.
func (b *bench) polling(ctx context.Context, tag string, rate float64) (steadyRun, error) {
	name, url, host, err := b.clone(ctx, tag)
	if err != nil {
		return steadyRun{}, err
	}
	defer b.drop(ctx, name)
	driverConn, err := pgx.Connect(ctx, url)
	if err != nil {
		return steadyRun{}, fmt.Errorf("connect: %w", err)
	}
	defer driverConn.Close(context.WithoutCancel(ctx))
	jobConn, err := pgx.Connect(ctx, url)
	if err != nil {
		return steadyRun{}, fmt.Errorf("connect: %w", err)
	}
	defer jobConn.Close(context.WithoutCancel(ctx))

	var (
		run       steadyRun
		crossings []workload.Crossing
		ticks     []tick
		ended     = make(chan struct{})
		endedAt   time.Time
	)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ended)
		err := host.Drive(gctx, driverConn, b.traffic(rate), b.cfg.PollDuration, func(a workload.Applied) {
			run.blocks++
			run.plays += len(a.Block.Plays)
			crossings = append(crossings, a.Crossings...)
		})
		endedAt = time.Now()
		return err
	})
	g.Go(func() error {
		next := start.Add(b.cfg.PollTick / 2)
		for {
			select {
			case <-gctx.Done():
				return gctx.Err()
			case <-time.After(time.Until(next)):
			}
			t := tick{Interval: Interval{Start: time.Now()}}
			err := pgx.BeginFunc(gctx, jobConn, func(tx pgx.Tx) error {
				var err error
				t.res, err = pollingjob.Tick(gctx, tx, b.cfg.PollRows)
				return err
			})
			if err != nil {
				return fmt.Errorf("polling tick: %w", err)
			}
			t.Commit = time.Now()
			ticks = append(ticks, t)
			select {
			case <-ended:
				if t.Start.After(endedAt) {
					return nil
				}
			default:
			}
			// A tick that overruns its interval delays the next one, as a timer loop would.
			next = next.Add(b.cfg.PollTick)
			if now := time.Now(); next.Before(now) {
				next = now
			}
		}
	})
	if err := g.Wait(); err != nil {
		return steadyRun{}, err
	}
	measured := time.Now()

	last := ticks[len(ticks)-1]
	var maxID int64
	if err := jobConn.QueryRow(ctx, "SELECT COALESCE(MAX(id), 0) FROM plays").Scan(&maxID); err != nil {
		return steadyRun{}, fmt.Errorf("read plays: %w", err)
	}
	behind := maxID - last.res.Legacy[checkpoints.PlaysCheckpoint]
	run.keepsUp = last.res.Complete
	if run.keepsUp {
		run.detail = fmt.Sprintf("tick %s after the load stopped reached the last play", seconds(last.Start.Sub(endedAt)))
	} else {
		run.detail = fmt.Sprintf("%s plays not yet read %s after the load stopped", count(behind), seconds(last.Commit.Sub(endedAt)))
	}
	intervals := make([]Interval, len(ticks))
	for i, t := range ticks {
		intervals[i] = t.Interval
	}
	run.lat, err = MeasureLatencies(ctx, jobConn, crossings, intervals, measured)
	if err != nil {
		return steadyRun{}, err
	}
	// Let the job finish the backlog without a row limit, so verify judges its rows and not
	// its lag.
	err = pgx.BeginFunc(ctx, jobConn, func(tx pgx.Tx) error {
		_, err := pollingjob.Tick(ctx, tx, 0)
		return err
	})
	if err != nil {
		return steadyRun{}, fmt.Errorf("final catch-up: %w", err)
	}
	if err := b.verify(ctx, url, tag); err != nil {
		return steadyRun{}, err
	}
	return run, nil
}

func (b *bench) latencySection(ctx context.Context) error {
	for _, w := range b.cfg.Windows {
		b.progress("latency: window %s at %s plays/s for %s", w, rate(b.cfg.Rate), b.cfg.Duration)
		run, err := b.streaming(ctx, fmt.Sprintf("lat%dms", w.Milliseconds()), b.cfg.Rate, w, b.warmup(), b.cfg.Duration)
		if err != nil {
			return err
		}
		// Group commit applies a caught-up stream at once, so the window does not set the
		// latency at this load (issue 11's targets hold for every window).
		p50, censored50, ok := run.lat.Percentile(0.50)
		p99, censored99, _ := run.lat.Percentile(0.99)
		b.report.add(Row{
			Section: "latency",
			Measure: fmt.Sprintf("milestone p50 / p99, window %s, %s plays/s", w, rate(b.cfg.Rate)),
			Sidecar: fmt.Sprintf("%s (%d milestones); flush p50 / p99 %s / %s", percentiles(run.lat), run.lat.Total(),
				seconds(quantileOf(run.flushes, 0.5)), seconds(quantileOf(run.flushes, 0.99))),
			Target: "p50 <= 50ms, p99 <= 100ms",
			Met: yesNo(ok && !censored50 && !censored99 &&
				p50 <= 50*time.Millisecond && p99 <= 100*time.Millisecond),
		})
		b.report.note("latency %s: after a warm-up of %s, %d flushes with changes; distinct artists per flush p50 / p99 %d / %d, commenters %d / %d",
			w, b.warmup(), len(run.flushes), quantileOf(run.artists, 0.5), quantileOf(run.artists, 0.99),
			quantileOf(run.commenters, 0.5), quantileOf(run.commenters, 0.99))
		b.noteOddities("latency "+w.String(), run.lat)
		for _, id := range ruleChallenges {
			l, ok := run.rules[id]
			if !ok {
				continue
			}
			p99, censored, measured := l.Percentile(0.99)
			b.report.add(Row{
				Section: "latency",
				Measure: fmt.Sprintf("%s reward p50 / p99, window %s, with the rule load", id, w),
				Sidecar: fmt.Sprintf("%s (%d rewards)", percentiles(l), l.Total()),
				Target:  "p99 <= 100ms",
				Met:     yesNo(measured && !censored && l.Total() > 0 && p99 <= 100*time.Millisecond),
			})
			b.noteOddities(fmt.Sprintf("latency %s %s", w, id), l)
		}
	}
	return nil
}

func (b *bench) pollingSection(ctx context.Context) error {
	for _, r := range b.cfg.PollRates {
		b.progress("polling: %s plays/s, streaming for %s", rate(r), b.cfg.Duration)
		stream, err := b.streaming(ctx, fmt.Sprintf("str%d", int64(r)), r, time.Second, 0, b.cfg.Duration)
		if err != nil {
			return err
		}
		b.progress("polling: %s plays/s, polling job (tick %s, %s rows) for %s", rate(r), b.cfg.PollTick, count(b.cfg.PollRows), b.cfg.PollDuration)
		poll, err := b.polling(ctx, fmt.Sprintf("poll%d", int64(r)), r)
		if err != nil {
			return err
		}
		row := Row{
			Section:   "polling",
			Measure:   fmt.Sprintf("%s plays/s: milestone p50 / p99, keeps up", rate(r)),
			Sidecar:   fmt.Sprintf("%s, %s", percentiles(stream.lat), keeps(stream.keepsUp)),
			Reference: fmt.Sprintf("%s, %s", percentiles(poll.lat), keeps(poll.keepsUp)),
			Target:    "keeps up, lower p99",
		}
		sp99, sc, sok := stream.lat.Percentile(0.99)
		pp99, _, pok := poll.lat.Percentile(0.99)
		switch {
		case sok && pok:
			if sp99 > 0 {
				row.Ratio = ratio(pp99.Seconds()/sp99.Seconds()) + "x"
			}
			row.Met = yesNo(stream.keepsUp && !sc && sp99 < pp99)
		default:
			// No milestone was crossed: only keeping up can be judged.
			row.Met = yesNo(stream.keepsUp)
		}
		b.report.add(row)
		b.report.note("polling %s plays/s: streaming %s (%s plays, %d milestones); polling job %s (%s plays in %s, %d milestones)",
			rate(r), stream.detail, count(int64(stream.plays)), stream.lat.Total(),
			poll.detail, count(int64(poll.plays)), b.cfg.PollDuration, poll.lat.Total())
		b.noteOddities(fmt.Sprintf("streaming %s plays/s", rate(r)), stream.lat)
		b.noteOddities(fmt.Sprintf("polling %s plays/s", rate(r)), poll.lat)
	}
	b.report.note("polling job: pollingjob.Tick reading %s rows every %s (capacity %s plays/s) and the reference upsert; streaming: window 1s; ratio = the job's p99 / the sidecar's p99",
		count(b.cfg.PollRows), b.cfg.PollTick, rate(float64(b.cfg.PollRows)/b.cfg.PollTick.Seconds()))
	return nil
}

func keeps(ok bool) string {
	if ok {
		return "keeps up"
	}
	return "falls behind"
}

func (b *bench) noteOddities(what string, l Latencies) {
	if l.Unattributed > 0 || l.Early > 0 {
		b.report.note("%s: %d milestones completed outside any recorded transaction, %d before their play committed",
			what, l.Unattributed, l.Early)
	}
}

// quantileOf is the q-quantile (nearest rank) of sorted values, 0 when there are none.
func quantileOf[T any](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	return sorted[nearestRank(q, len(sorted))]
}

// ruleKeys is the number of dirty keys a flush gave the rule.
func ruleKeys(f pipeline.Flushed, rule string) int {
	for _, r := range f.Rules {
		if r.Rule == rule {
			return r.Keys
		}
	}
	return 0
}

// rulesRun drives a rule load on its own connection beside the plays.
type rulesRun struct {
	done      chan error
	mu        sync.Mutex
	crossings []workload.Crossing // committed after measureFrom
}

func (r *rulesRun) start(ctx context.Context, url string, load workload.RuleLoad, measureFrom time.Time, d time.Duration) {
	r.done = make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			r.done <- fmt.Errorf("rule load: connect: %w", err)
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		r.done <- load.DriveRules(ctx, conn, d, func(c workload.Crossing) {
			if !c.CommittedAt.Before(measureFrom) {
				r.mu.Lock()
				r.crossings = append(r.crossings, c)
				r.mu.Unlock()
			}
		})
	}()
}

// wait waits for the load to end, then (up to timeout) for the rewards of all its committed
// transactions: the sidecar is stopped once the plays are applied, and a rule transaction
// committed after the last play would otherwise be left for a next start that never comes.
// A reward still missing at the timeout is measured as pending.
func (r *rulesRun) wait(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	if r.done == nil {
		return nil
	}
	if err := <-r.done; err != nil {
		return err
	}
	ids := make([]string, len(r.crossings))
	specs := make([]string, len(r.crossings))
	for i, c := range r.crossings {
		ids[i], specs[i] = c.ChallengeID, c.Specifier
	}
	by := time.Now().Add(timeout)
	for time.Now().Before(by) {
		var missing int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[], $2::text[]) AS c(id, spec)
			WHERE NOT EXISTS (SELECT 1 FROM user_challenges uc
			                  WHERE uc.challenge_id = c.id AND uc.specifier = c.spec AND uc.is_complete)`,
			ids, specs).Scan(&missing)
		if err != nil || missing == 0 {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
