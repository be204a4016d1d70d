package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/internal/failpoint"
	"github.com/challenge-stream/challenge-stream/replication"
)

// source is the replication stream as the loop consumes it (*replication.Stream).
type source interface {
	// Next returns the next committed transaction or keepalive, or MessageTimeout once the
	// deadline passes or Interrupt is called.
	Next(deadline time.Time) (replication.Message, error)
	// Interrupt wakes a waiting Next; it is the one method safe from other goroutines.
	Interrupt()
	// SendStatus reports what was received and confirms flushed; zero confirms nothing.
	SendStatus(flushed pglogrepl.LSN, replyRequested bool) error
	InTransaction() bool
	Received() pglogrepl.LSN
	// SkipSets stops keeping the plan's key sets marked (those of the rules switched off).
	SkipSets(skip []bool)
}

// flusher applies a window in one database transaction and stores its end LSN with it.
type flusher interface {
	flush(ctx context.Context, w *window) (Flushed, error)
}

// ErrShutdownIncomplete means the stop signal's final flush did not commit in time. Nothing is
// lost — the window is replayed on the next start — but the exit is not clean.
var ErrShutdownIncomplete = errors.New("final flush did not finish in time; the window will be replayed on the next start")

// ErrStopFlushFailed means a flush failed while the session was stopping. Nothing after the
// failed window was stored or confirmed: it and everything after it are replayed on the next
// start. The exit is not clean, so the operator sees the flush's error.
var ErrStopFlushFailed = errors.New("a flush failed while stopping; its window is replayed on the next start")

// errServerSilent ends a session whose server sent nothing, not even an answer to a reply
// request, for the receive timeout: a dead host or a black hole, which TCP may take minutes
// to notice.
var errServerSilent = errors.New("no message from the server")

// summaryInterval is how often an info line summarises the work.
const summaryInterval = 10 * time.Second

// healthyAfter is how long a session must stream before the reconnect backoff starts afresh.
const healthyAfter = time.Minute

type flushOutcome struct {
	res Flushed
	err error
}

// loop is the streaming part of a session; doc.go tells its rules. One goroutine (run) owns
// the source: it receives, fills windows and sends status updates. A second (the flusher)
// applies one window at a time, so decoding goes on while a window is being flushed.
type loop struct {
	cfg     Config
	log     *zap.Logger
	src     source
	flusher flusher
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time // a timer; tests pass a fake clock's

	window *window
	// inactive are the rules the last flush found switched off. A new window keeps none of
	// their keys: an inactive rule costs nothing, and re-activating it derives what it missed
	// (processors' doc).
	inactive []string
	rule     windowRule    // when the window goes (windowrule.go)
	stored   pglogrepl.LSN // durably applied: the flush and apply position we confirm
	walEnd   pglogrepl.LSN // the server's WAL end from the last keepalive
	flushing bool
	// failed is the first flush error. Once a flush fails no later window may be flushed in
	// this session: its LSN would be stored past the failed window's transactions.
	failed error
	work   chan *window
	done   chan flushOutcome

	nextStatus   time.Time     // when the next scheduled status update is due
	heardAt      time.Time     // when the server last sent anything
	heardLSN     pglogrepl.LSN // src.Received() then
	serverWALEnd func(context.Context) (pglogrepl.LSN, error)
	stopping     <-chan struct{}
	oddities     *oddityLog
	resetBackoff func()
	streamedAt   time.Time
	summary      summary
}

type summary struct {
	at                    time.Time
	transactions, changes int
	flushes               int
	inserted, updated     int
	unchanged             int
	maxFlush              time.Duration
}

// loopDeps are the loop's collaborators besides its configuration.
type loopDeps struct {
	src     source
	flusher flusher
	stored  pglogrepl.LSN
	// stopping is closed when the server is shutting down (see watchShutdown); nil never is.
	stopping     <-chan struct{}
	oddities     *oddityLog
	resetBackoff func()
	// serverWALEnd reads the server's WAL end on the flush connection; the loop calls it only
	// while the flusher is idle. Nil leaves windows to their other rules.
	serverWALEnd func(context.Context) (pglogrepl.LSN, error)
	// inactive are the rules the catalog has switched off at the start.
	inactive []string
}

func newLoop(cfg Config, d loopDeps) *loop {
	now := cfg.Now()
	if d.oddities == nil {
		d.oddities = &oddityLog{log: cfg.Log}
	}
	d.src.SkipSets(skippedSets(registryPlan(), d.inactive))
	return &loop{
		cfg:          cfg,
		log:          cfg.Log.Named("pipeline"),
		src:          d.src,
		flusher:      d.flusher,
		now:          cfg.Now,
		after:        time.After,
		inactive:     d.inactive,
		window:       newWindow(registryPlan(), d.inactive),
		rule:         newWindowRule(cfg),
		stored:       d.stored,
		work:         make(chan *window),
		done:         make(chan flushOutcome, 1),
		heardAt:      now,
		heardLSN:     d.src.Received(),
		stopping:     d.stopping,
		oddities:     d.oddities,
		resetBackoff: d.resetBackoff,
		serverWALEnd: d.serverWALEnd,
		streamedAt:   now,
		summary:      summary{at: now},
	}
}

// run streams until ctx is cancelled or the server shuts down, then flushes what it holds and
// confirms it. It returns nil after a clean stop, errServerStopping after the server's, and
// the session's error otherwise.
func (l *loop) run(ctx context.Context) error {
	// The flusher outlives ctx's cancellation so the final window still commits; it stops when
	// the work channel closes, or is cancelled when the session fails.
	flushCtx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	var g errgroup.Group
	g.Go(func() error {
		for w := range l.work {
			res, err := l.flusher.flush(flushCtx, w)
			l.done <- flushOutcome{res, err}
			l.src.Interrupt() // the loop may be waiting for a message: wake it to collect
		}
		return nil
	})
	stopWaking := context.AfterFunc(ctx, l.src.Interrupt)
	defer stopWaking()

	err := l.stream(ctx)
	if err == nil || errors.Is(err, errServerStopping) {
		if serr := l.shutdown(ctx, cancelFlush); serr != nil {
			err = serr
		}
	}
	if l.failed != nil && ctx.Err() != nil {
		// Stopped, but not cleanly: a clean exit would hide the failed flush from the operator.
		err = fmt.Errorf("%w: %w", ErrStopFlushFailed, l.failed)
	}
	if err != nil {
		cancelFlush()
	}
	close(l.work)
	_ = g.Wait()
	return err
}

// stream runs until ctx is cancelled (nil), the server shuts down (errServerStopping) or the
// session fails.
func (l *loop) stream(ctx context.Context) error {
	// The first status update goes out at once: it tells the server where we stand.
	if err := l.sendStatus(); err != nil {
		return err
	}
	for ctx.Err() == nil {
		select {
		case <-l.stopping:
			return errServerStopping
		default:
		}
		if err := l.step(ctx); err != nil {
			if ctx.Err() != nil && l.failed == nil {
				return nil // the stop's own wake-up; shutdown takes over
			}
			return err
		}
	}
	return nil
}

// step does one round: collect a finished flush, hand over a due window, send a due status
// update, then wait for the next message until the next thing that is due.
func (l *loop) step(ctx context.Context) error {
	if err := l.collect(); err != nil {
		return err
	}
	now := l.now()
	v := l.view() // a probe changes none of it
	if l.rule.probeDue(v, now) {
		if err := l.probe(now); err != nil {
			return err
		}
	}
	if due, early := l.rule.due(v, now); due {
		if early {
			l.rule.stopProbing() // one early close per backlog
		}
		l.handOver()
	}
	if !now.Before(l.nextStatus) {
		if !l.flushing && !l.window.hasChanges() {
			l.confirmIdle()
		}
		// Ask for a reply when the server has been quiet: its answer proves it is alive.
		if err := l.sendScheduledStatus(now.Sub(l.heardAt) >= l.cfg.StatusInterval); err != nil {
			return err
		}
		l.noteHealthy(now)
		l.logSummary(now)
	}
	if l.flushing && l.window.size() >= l.cfg.MaxWindowSize {
		// Full while the previous window is still flushing: stop reading until it is done
		// (backpressure) rather than grow without bound.
		return l.backpressure(ctx)
	}
	if silent := now.Sub(l.heardAt); silent >= l.cfg.ReceiveTimeout {
		return fmt.Errorf("%w for %s (receive timeout %s)", errServerSilent, silent.Round(time.Second), l.cfg.ReceiveTimeout)
	}
	msg, err := l.src.Next(l.wakeAt())
	if err != nil {
		return err
	}
	return l.handle(msg)
}

// wakeAt is when a wait for the next message must end: the next status update, the receive
// timeout, or what the window rule is waiting for.
func (l *loop) wakeAt() time.Time {
	at := earliest(l.nextStatus, l.heardAt.Add(l.cfg.ReceiveTimeout))
	return earliest(at, l.rule.wakeAt(l.view()))
}

// view is what the window rule reads of the loop.
func (l *loop) view() windowView {
	return windowView{flushing: l.flushing, hasChanges: l.window.hasChanges(), size: l.window.size(),
		openedAt: l.window.openedAt, received: l.src.Received(), probeable: l.serverWALEnd != nil}
}

// handle takes one message from the source.
func (l *loop) handle(msg replication.Message) error {
	if r := l.src.Received(); r != l.heardLSN || msg.Kind != replication.MessageTimeout {
		// Bytes of a transaction still being received count too: a large one can take longer
		// than the receive timeout to arrive.
		l.heardAt, l.heardLSN = l.now(), r
	}
	switch msg.Kind {
	case replication.MessageTransaction:
		l.take(msg.Transaction)
	case replication.MessageKeepalive:
		l.walEnd = max(l.walEnd, msg.ServerWALEnd)
		if !l.src.InTransaction() {
			// The walsender sends a keepalive when it has read all the WAL there is.
			l.rule.caughtUpNow()
		}
		if msg.ReplyRequested {
			return l.reply()
		}
	}
	return nil
}

// reply answers a keepalive that asks for one. It reports what was received and confirms
// nothing (flush invalid): a walsender that finishes a fast or smart shutdown waits for the
// reported flush, or write while flush is invalid, to reach the end of what it sent — WAL
// that carried nothing for us included — and the store that confirming it would need is
// impossible then, because the server has already ended our flush session. Confirmations go
// in the scheduled updates, which the reply does not move.
func (l *loop) reply() error {
	if err := l.src.SendStatus(0, false); err != nil {
		return err
	}
	l.cfg.Observe(StatusSent{Received: l.src.Received(), Applied: l.stored, ServerWALEnd: l.walEnd})
	return nil
}

// confirmIdle moves the stored position forward when the window holds no changes: past
// transactions that touched nothing of ours, and — when no transaction is open — to the server's
// WAL end, which the server has sent everything before. Without it a slot whose tables are quiet
// holds WAL while the rest of the database writes. The position is stored before it is
// confirmed, so the slot never gets ahead of the stored LSN.
func (l *loop) confirmIdle() {
	target := l.window.endLSN
	if !l.src.InTransaction() && l.walEnd > target {
		target = l.walEnd
	}
	if target > l.stored && uint64(target-l.stored) >= l.cfg.IdleConfirmBytes {
		l.window.endLSN = target
		l.handOver()
	}
}

// probe reads the server's WAL end. The flush connection is idle (no flush in flight), and a
// failure means it is broken: the session ends as a failed flush would end it. A probe slower
// than probeTimeout (a busy server) is only an estimate missed: the statement is cancelled on
// the server (the flush connection survives a cancel, see connectFlush), the loop stops probing
// until the stream catches up, and the window closes by its other rules. Ending the session
// would throw away everything decoded so far and replay it on the same busy server.
func (l *loop) probe(now time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	end, err := l.serverWALEnd(ctx)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || isQueryCanceled(err)) {
		l.log.Info("the server's WAL end took too long to read; this backlog's windows close by their length",
			zap.Duration("probe_timeout", probeTimeout))
		l.rule.stopProbing()
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the server's WAL end: %w", err)
	}
	l.rule.probed(end, now)
	return nil
}

// isQueryCanceled reports the server's query_canceled error (a statement cancelled by a
// cancel request or statement_timeout).
func isQueryCanceled(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

func (l *loop) handOver() {
	w := l.window
	l.window = newWindow(registryPlan(), l.inactive)
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

// backpressure waits for the flush in flight — which may sit behind a lock for minutes — until
// the next status update is due, so the next round still sends it and the server does not drop
// the connection after wal_sender_timeout. Shutdown's own wait takes over when the session is
// stopped, at once: the stop does not wait for the next status update.
func (l *loop) backpressure(ctx context.Context) error {
	// The server's silence counts only while we listen: reading resumes with a fresh clock.
	defer func() { l.heardAt = l.now() }()
	select {
	case o := <-l.done:
		return l.finish(o)
	case <-l.stopping:
		return nil
	case <-ctx.Done():
		return nil
	case <-l.after(l.nextStatus.Sub(l.now())):
		return nil
	}
}

// finish records a flush's outcome: from now on its LSN may be confirmed. A failed flush is
// the session's end: nothing is stored or confirmed past it, and no later window is flushed.
func (l *loop) finish(o flushOutcome) error {
	l.flushing = false
	if o.err != nil {
		if l.failed == nil {
			l.failed = o.err
		}
		return o.err
	}
	if o.res.Changes > 0 { // a window with changes, not an LSN-only one
		failpoint.Hit("after-flush-commit")
		l.oddities.note(o.res.Oddities)
		l.rule.lastFlush = o.res.Duration
		if !slices.Equal(l.inactive, o.res.Inactive) {
			l.src.SkipSets(skippedSets(registryPlan(), o.res.Inactive))
		}
		l.inactive = o.res.Inactive
	}
	if len(o.res.ForeignCheckpoints) > 0 {
		l.log.Warn("a legacy checkpoint was written by someone else: is the polling job still running? "+
			"Stop it; its late writes can leave older counts until the artist's next play",
			zap.Strings("checkpoints", o.res.ForeignCheckpoints))
	}
	l.stored = o.res.LSN
	l.cfg.Observe(o.res)
	l.note(o.res)
	l.log.Debug("flushed window",
		zap.Stringer("lsn", o.res.LSN), zap.Int("keys", o.res.Keys), zap.Int("artists", o.res.Artists),
		zap.Duration("duration", o.res.Duration))
	return nil
}

func (l *loop) note(r Flushed) {
	s := &l.summary
	s.flushes++
	for _, c := range r.Stats {
		s.inserted += c.Inserted
		s.updated += c.Updated
		s.unchanged += c.Unchanged
	}
	s.maxFlush = max(s.maxFlush, r.Duration)
}

// sendStatus confirms the stored position and schedules the next update.
func (l *loop) sendStatus() error { return l.sendScheduledStatus(false) }

func (l *loop) sendScheduledStatus(replyRequested bool) error {
	if err := l.src.SendStatus(l.stored, replyRequested); err != nil {
		return err
	}
	l.nextStatus = l.now().Add(l.cfg.StatusInterval)
	l.cfg.Observe(StatusSent{Received: l.src.Received(), Applied: l.stored, ServerWALEnd: l.walEnd})
	return nil
}

// take adds a committed transaction to the window and counts it.
func (l *loop) take(tx *replication.Transaction) {
	l.cfg.Observe(TransactionReceived{Tx: tx, Tables: registryPlan().tables()})
	now := l.now()
	l.rule.took(tx.CommitTime, now, !l.window.hasChanges(), l.src.Received())
	l.window.add(tx, now)
	l.summary.transactions++
	l.summary.changes += tx.Changes
}

// shutdownDrain is how long a stop keeps taking transactions the server has already sent.
const shutdownDrain = 100 * time.Millisecond

// shutdown takes what the server already sent and finishes the open transaction (briefly),
// flushes the window, confirms and returns.
// It runs after the stop, under its own timeout.
func (l *loop) shutdown(ctx context.Context, cancelFlush context.CancelFunc) error {
	// Said at once: a final flush may wait (a lock, a slow server) for up to the timeout.
	l.log.Info("stopping: applying what was received", zap.Bool("flush_in_flight", l.flushing),
		zap.Duration("shutdown_timeout", l.cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.ShutdownTimeout)
	defer cancel()
	// What the server has already sent is taken first, briefly: a transaction whose COMMIT
	// sits in the socket would otherwise be left for the next start (replayed, nothing lost,
	// but the stop would leave it unapplied). Half the time may go to receiving the rest of a
	// transaction already begun.
	now := l.now()
	txBy := now.Add(l.cfg.ShutdownTimeout / 2)
	sentBy := now.Add(min(shutdownDrain, l.cfg.ShutdownTimeout/2))
	for {
		by := sentBy
		if l.src.InTransaction() {
			by = txBy
		}
		if !l.now().Before(by) {
			if l.src.InTransaction() {
				l.log.Warn("stopping without the open transaction; it will be replayed on the next start")
			}
			break
		}
		// A timeout before the deadline is the stop's own wake-up (Interrupt): go round.
		msg, err := l.src.Next(by)
		if err != nil {
			break
		}
		if msg.Kind == replication.MessageTransaction {
			l.take(msg.Transaction)
		}
		if msg.Kind == replication.MessageKeepalive && !l.src.InTransaction() {
			break // the server has sent everything it has
		}
	}
	if err := l.awaitFlushAtStop(sctx, cancelFlush); err != nil {
		return err
	}
	if l.window.hasChanges() || l.window.endLSN > l.stored {
		l.handOver()
		if err := l.awaitFlushAtStop(sctx, cancelFlush); err != nil {
			return err
		}
	}
	if err := l.sendStatus(); err != nil {
		return err
	}
	l.log.Info("stopped", zap.Stringer("stored_lsn", l.stored))
	return nil
}

// awaitFlushAtStop waits for an in-flight flush during shutdown, cancelling it when the shutdown
// time runs out.
func (l *loop) awaitFlushAtStop(ctx context.Context, cancelFlush context.CancelFunc) error {
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
		return ErrShutdownIncomplete
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

// noteHealthy resets the reconnect backoff once the session has streamed for a while: the next
// failure then starts the backoff afresh.
func (l *loop) noteHealthy(now time.Time) {
	if now.Sub(l.streamedAt) > healthyAfter && l.resetBackoff != nil {
		l.resetBackoff()
		l.resetBackoff = nil
	}
}

func (l *loop) logSummary(now time.Time) {
	s := &l.summary
	if now.Sub(s.at) < summaryInterval {
		return
	}
	l.log.Info("summary",
		zap.Int("transactions", s.transactions), zap.Int("changes", s.changes),
		zap.Int("flushes", s.flushes), zap.Int("inserted", s.inserted), zap.Int("updated", s.updated),
		zap.Int("unchanged", s.unchanged), zap.Duration("max_flush", s.maxFlush),
		zap.Stringer("stored_lsn", l.stored), zap.Stringer("server_wal_end", l.walEnd),
		zap.Duration("interval", now.Sub(s.at)))
	l.summary = summary{at: now}
}
