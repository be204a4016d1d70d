package pipeline

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/internal/failpoint"
	"github.com/challenge-stream/challenge-stream/replication"
)

// flushPoll is how often the loop looks for a finished flush while nothing arrives.
const flushPoll = 10 * time.Millisecond

// When a flush takes more than half a window the flusher is saturated (a backlog after
// downtime, a burst): the next window stretches to flushStretch times that flush, at most
// maxStretch windows. A flush's cost grows with the distinct artists it recomputes, not with
// plays, so fewer, larger flushes leave the CPU to decoding. At steady state flushes are far
// shorter than the window and windows keep their configured length.
const (
	flushStretch = 4
	maxStretch   = 8
)

// summaryInterval is how often an info line summarises the work.
const summaryInterval = 10 * time.Second

type flushOutcome struct {
	res FlushResult
	err error
}

// loop is the streaming part of a session. One goroutine (run) owns the replication
// connection: it receives, fills windows and sends status updates. A second (the flusher) owns
// the database connection and applies one window at a time, so decoding goes on while a window
// is being flushed.
type loop struct {
	cfg    Config
	log    *zap.Logger
	stream *replication.Stream
	conn   *pgx.Conn

	window   *Window
	stored   pglogrepl.LSN // durably applied: the flush and apply position we confirm
	walEnd   pglogrepl.LSN // the server's WAL end from the last keepalive
	flushing bool
	work     chan *Window
	done     chan flushOutcome

	lastStatus   time.Time
	oddities     *oddityLog
	lastFlush    time.Duration // how long the last flush with changes took
	resetBackoff func()
	streamedAt   time.Time
	summary      summary
}

type summary struct {
	at                  time.Time
	transactions, plays int
	comments, flushes   int
	inserted, updated   int
	unchanged           int
	maxFlush            time.Duration
}

func newLoop(cfg Config, stream *replication.Stream, conn *pgx.Conn, stored pglogrepl.LSN, oddities *oddityLog, resetBackoff func()) *loop {
	now := cfg.Now()
	return &loop{
		cfg:          cfg,
		log:          cfg.Log.Named("pipeline"),
		stream:       stream,
		conn:         conn,
		window:       NewWindow(),
		stored:       stored,
		work:         make(chan *Window),
		done:         make(chan flushOutcome, 1),
		oddities:     oddities,
		resetBackoff: resetBackoff,
		streamedAt:   now,
		summary:      summary{at: now},
	}
}

func (l *loop) run(ctx context.Context) error {
	// The flusher outlives ctx's cancellation so the final window still commits; it stops when
	// the work channel closes, or is cancelled when the session fails.
	flushCtx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	var g errgroup.Group
	g.Go(func() error {
		for w := range l.work {
			res, err := Flush(flushCtx, l.conn, l.cfg.Slot, w, l.cfg.Now)
			l.done <- flushOutcome{res, err}
		}
		return nil
	})
	err := l.streamUntilStopped(ctx)
	if err == nil {
		err = l.shutdown(ctx, cancelFlush)
	}
	if err != nil {
		cancelFlush()
	}
	close(l.work)
	_ = g.Wait()
	return err
}

// streamUntilStopped runs until ctx is cancelled (nil) or the session fails.
func (l *loop) streamUntilStopped(ctx context.Context) error {
	// The first status update goes out at once: it tells the server where we stand.
	if err := l.sendStatus(ctx, false); err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := l.step(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// step does one round: collect a finished flush, start the next, confirm, receive.
func (l *loop) step(ctx context.Context) error {
	if err := l.collect(); err != nil {
		return err
	}
	now := l.cfg.Now()
	switch {
	case !l.flushing && l.window.Due(now, l.windowLength(), l.cfg.MaxWindowSize):
		l.handOver()
	case l.flushing && l.window.Size() >= l.cfg.MaxWindowSize:
		// Full while the previous window is still flushing: wait for it (backpressure) rather
		// than grow without bound.
		if err := l.waitForFlusher(ctx); err != nil {
			return err
		}
		if !l.flushing {
			l.handOver()
		}
	case !l.flushing && !l.window.HasChanges() && l.statusDue(now):
		l.confirmIdle()
	}
	if l.statusDue(now) {
		if err := l.sendStatus(ctx, false); err != nil {
			return err
		}
		l.logSummary(now)
	}
	return l.receive(ctx, now)
}

// confirmIdle moves the stored position forward when the window holds no changes: past
// transactions that touched nothing of ours, and — when no transaction is open — to the server's
// WAL end, which the server has sent everything before. Without it a slot whose tables are quiet
// holds WAL while the rest of the database writes. The position is stored before it is
// confirmed, so the slot never gets ahead of the stored LSN.
func (l *loop) confirmIdle() {
	target := l.window.EndLSN
	if !l.stream.InTransaction() && l.walEnd > target {
		target = l.walEnd
	}
	if target > l.stored && uint64(target-l.stored) >= l.cfg.IdleConfirmBytes {
		l.window.EndLSN = target
		l.handOver()
	}
}

// windowLength is the configured window, stretched while the flusher is saturated.
func (l *loop) windowLength() time.Duration {
	if l.lastFlush <= l.cfg.Window/2 {
		return l.cfg.Window
	}
	return min(flushStretch*l.lastFlush, maxStretch*l.cfg.Window)
}

func (l *loop) handOver() {
	w := l.window
	l.window = NewWindow()
	l.flushing = true
	l.work <- w
}

// collect takes a finished flush's outcome, if there is one.
func (l *loop) collect() error {
	if !l.flushing {
		return nil
	}
	select {
	case o := <-l.done:
		return l.finish(o)
	default:
		return nil
	}
}

// oddityLog logs the catalog's oddities once, and again only when they change: a catalog
// typo should not repeat on every flush.
type oddityLog struct {
	log  *zap.Logger
	last []string
}

func (o *oddityLog) note(oddities []string) {
	if slices.Equal(oddities, o.last) {
		return
	}
	o.last = oddities
	if len(oddities) > 0 {
		o.log.Warn("challenge catalog has rows the rules interpret", zap.Strings("oddities", oddities))
	}
}

// waitForFlusher waits for the flush in flight — which may sit behind a lock for minutes —
// while still sending status updates, so the server does not drop the connection after
// wal_sender_timeout. It returns early, still flushing, when ctx is cancelled: shutdown waits.
func (l *loop) waitForFlusher(ctx context.Context) error {
	for {
		timer := time.NewTimer(max(l.lastStatus.Add(l.cfg.StatusInterval).Sub(l.cfg.Now()), 0))
		select {
		case o := <-l.done:
			timer.Stop()
			return l.finish(o)
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
			if err := l.sendStatus(ctx, false); err != nil {
				return err
			}
		}
	}
}

// finish records a flush's outcome: from now on its LSN may be confirmed.
func (l *loop) finish(o flushOutcome) error {
	l.flushing = false
	if o.err != nil {
		return o.err
	}
	if o.res.Tracks+o.res.Commenters > 0 { // a window with changes, not an LSN-only one
		failpoint.Hit("after-flush-commit")
		l.oddities.note(o.res.Oddities)
		l.lastFlush = o.res.Duration
	}
	l.stored = o.res.LSN
	l.cfg.Observer.Flushed(o.res)
	l.note(o.res)
	l.log.Debug("flushed window",
		zap.Stringer("lsn", o.res.LSN), zap.Int("tracks", o.res.Tracks), zap.Int("artists", o.res.Artists),
		zap.Int("commenters", o.res.Commenters), zap.Duration("duration", o.res.Duration))
	return nil
}

func (l *loop) note(r FlushResult) {
	s := &l.summary
	s.flushes++
	for _, c := range r.Stats {
		s.inserted += c.Inserted
		s.updated += c.Updated
		s.unchanged += c.Unchanged
	}
	s.maxFlush = max(s.maxFlush, r.Duration)
}

func (l *loop) statusDue(now time.Time) bool {
	return !now.Before(l.lastStatus.Add(l.cfg.StatusInterval))
}

func (l *loop) sendStatus(ctx context.Context, replyRequested bool) error {
	if err := l.stream.SendStatus(ctx, l.stored, replyRequested); err != nil {
		return err
	}
	l.lastStatus = l.cfg.Now()
	l.cfg.Observer.StatusSent(l.stream.Received(), l.stored, l.walEnd)
	return nil
}

// receive waits for the next message until the next thing the loop must do on time.
func (l *loop) receive(ctx context.Context, now time.Time) error {
	deadline := l.lastStatus.Add(l.cfg.StatusInterval)
	if due := l.window.DueAt(l.windowLength()); !due.IsZero() && due.Before(deadline) {
		deadline = due
	}
	if l.flushing && now.Add(flushPoll).Before(deadline) {
		deadline = now.Add(flushPoll)
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	msg, err := l.stream.Next(rctx)
	cancel()
	if err != nil {
		return err
	}
	switch msg.Kind {
	case replication.MessageTransaction:
		l.take(msg.Transaction)
	case replication.MessageKeepalive:
		// The walsender sends keepalives when it waits for WAL: the stream has caught up, so a
		// stretched window goes back to its length.
		l.lastFlush = 0
		l.walEnd = max(l.walEnd, msg.ServerWALEnd)
		if msg.ReplyRequested {
			return l.sendStatus(ctx, false)
		}
	}
	return nil
}

// take adds a committed transaction to the window and counts it.
func (l *loop) take(tx *replication.Transaction) {
	l.cfg.Observer.TransactionReceived(tx)
	l.window.Add(tx, l.cfg.Now())
	l.summary.transactions++
	l.summary.plays += tx.Plays
	l.summary.comments += tx.Comments
}

// shutdown finishes the open transaction (briefly), flushes the window, confirms and returns.
// It runs after ctx is cancelled, under its own timeout.
func (l *loop) shutdown(ctx context.Context, cancelFlush context.CancelFunc) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.ShutdownTimeout)
	defer cancel()
	for l.stream.InTransaction() && sctx.Err() == nil {
		rctx, c := context.WithTimeout(sctx, l.cfg.ShutdownTimeout/2)
		msg, err := l.stream.Next(rctx)
		c()
		if err != nil {
			break
		}
		if msg.Kind == replication.MessageTransaction {
			l.take(msg.Transaction)
		}
		if msg.Kind == replication.MessageTimeout {
			l.log.Warn("stopping without the open transaction; it will be replayed on the next start")
			break
		}
	}
	if err := l.awaitFlush(sctx, cancelFlush); err != nil {
		return err
	}
	if l.window.HasChanges() || l.window.EndLSN > l.stored {
		l.handOver()
		if err := l.awaitFlush(sctx, cancelFlush); err != nil {
			return err
		}
	}
	if err := l.sendStatus(sctx, false); err != nil {
		return err
	}
	l.log.Info("stopped", zap.Stringer("stored_lsn", l.stored))
	return nil
}

// awaitFlush waits for an in-flight flush, cancelling it when the shutdown time runs out.
func (l *loop) awaitFlush(ctx context.Context, cancelFlush context.CancelFunc) error {
	if !l.flushing {
		return nil
	}
	select {
	case o := <-l.done:
		return l.finish(o)
	case <-ctx.Done():
		cancelFlush()
		<-l.done
		l.flushing = false
		return errors.New("final flush did not finish in time; the window will be replayed on the next start")
	}
}

func (l *loop) logSummary(now time.Time) {
	s := &l.summary
	if now.Sub(s.at) < summaryInterval {
		return
	}
	if now.Sub(l.streamedAt) > time.Minute && l.resetBackoff != nil {
		// A session that has streamed for a while is healthy: the next failure starts the
		// backoff afresh.
		l.resetBackoff()
		l.resetBackoff = nil
	}
	l.log.Info("summary",
		zap.Int("transactions", s.transactions), zap.Int("plays", s.plays), zap.Int("comments", s.comments),
		zap.Int("flushes", s.flushes), zap.Int("inserted", s.inserted), zap.Int("updated", s.updated),
		zap.Int("unchanged", s.unchanged), zap.Duration("max_flush", s.maxFlush),
		zap.Stringer("stored_lsn", l.stored), zap.Stringer("server_wal_end", l.walEnd),
		zap.Duration("interval", now.Sub(s.at)))
	l.summary = summary{at: now}
}
