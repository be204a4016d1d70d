package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/replication"
)

// The loop's rules, driven without a database: a scripted source, a fake clock, and windows
// handed over into a buffered channel the test empties itself, so every decision is observed
// in order and nothing sleeps.

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// after is a timer that has fired: the clock moves on by d at once.
func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.t = c.t.Add(max(d, 0))
	fired := make(chan time.Time, 1)
	fired <- c.t
	return fired
}

// scripted is one thing the fake source delivers: a message at a time.
type scripted struct {
	at  time.Time
	msg replication.Message
	err error
}

// status is one standby status update the loop sent.
type status struct {
	flushed        pglogrepl.LSN
	replyRequested bool
	at             time.Time
}

// fakeSource delivers its script in order. A message scheduled after Next's deadline waits;
// Next then advances the clock to the deadline and times out, as a quiet server would.
type fakeSource struct {
	t         *testing.T
	clock     *fakeClock
	script    []scripted
	inTx      bool
	received  pglogrepl.LSN
	deadlines []time.Time
	entered   []time.Time // the clock at each Next: a round's hand-over happened then
	sent      []status
}

func (s *fakeSource) Next(deadline time.Time) (replication.Message, error) {
	s.t.Helper()
	require.True(s.t, deadline.After(s.clock.t), "Next's deadline %s is not after now %s: the loop would spin", deadline, s.clock.t)
	s.deadlines = append(s.deadlines, deadline)
	s.entered = append(s.entered, s.clock.t)
	if len(s.script) == 0 || s.script[0].at.After(deadline) {
		s.clock.t = deadline
		return replication.Message{Kind: replication.MessageTimeout}, nil
	}
	next := s.script[0]
	s.script = s.script[1:]
	if next.at.After(s.clock.t) {
		s.clock.t = next.at
	}
	switch next.msg.Kind {
	case replication.MessageTransaction:
		s.received = max(s.received, next.msg.Transaction.EndLSN)
		if next.msg.Transaction.CommitTime.IsZero() {
			next.msg.Transaction.CommitTime = next.at // committed just now, unless the script says
		}
	case replication.MessageKeepalive:
		if !s.inTx {
			s.received = max(s.received, next.msg.ServerWALEnd)
		}
	}
	return next.msg, next.err
}

func (s *fakeSource) Interrupt() {}

func (s *fakeSource) SkipSets([]bool) {}

func (s *fakeSource) SendStatus(flushed pglogrepl.LSN, replyRequested bool) error {
	s.sent = append(s.sent, status{flushed, replyRequested, s.clock.t})
	return nil
}

func (s *fakeSource) InTransaction() bool     { return s.inTx }
func (s *fakeSource) Received() pglogrepl.LSN { return s.received }

// lastWait is when the last round began waiting for a message: the time of its hand-over.
func (s *fakeSource) lastWait() time.Time {
	s.t.Helper()
	require.NotEmpty(s.t, s.entered)
	return s.entered[len(s.entered)-1]
}

func (s *fakeSource) lastStatus() status {
	s.t.Helper()
	require.NotEmpty(s.t, s.sent)
	return s.sent[len(s.sent)-1]
}

// flushFunc is a flusher made of a function.
type flushFunc func(ctx context.Context, w *window) (Flushed, error)

func (f flushFunc) flush(ctx context.Context, w *window) (Flushed, error) { return f(ctx, w) }

// instantFlush commits every window at once.
var instantFlush = flushFunc(func(_ context.Context, w *window) (Flushed, error) {
	return Flushed{LSN: w.endLSN, Changes: w.changes, Keys: w.size()}, nil
})

type loopBundle struct {
	l     *loop
	src   *fakeSource
	clock *fakeClock
	t0    time.Time
}

func setupLoop(t *testing.T, tweak ...func(*Config)) loopBundle {
	t.Helper()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	cfg := Config{Database: mustParse(t, "postgres://localhost/db"), Log: zaptest.NewLogger(t), Now: clock.now}
	for _, f := range tweak {
		f(&cfg)
	}
	cfg = cfg.withDefaults()
	require.NoError(t, cfg.Validate())
	src := &fakeSource{t: t, clock: clock, received: 1000}
	l := newLoop(cfg, loopDeps{src: src, flusher: instantFlush, stored: 1000})
	l.after = clock.after
	// Windows land here instead of in a flusher goroutine; the test plays the flusher.
	l.work = make(chan *window, 1)
	require.NoError(t, l.sendStatus())
	return loopBundle{l: l, src: src, clock: clock, t0: t0}
}

func (b loopBundle) at(d time.Duration) time.Time { return b.t0.Add(d) }

// play is a committed transaction with one play of track at end.
// Its commit time is left for the source to set to its delivery: the stream is not behind.
func play(end pglogrepl.LSN, track int64) replication.Message {
	t := tx(end, []int64{track}, int64(end), nil, 0)
	t.CommitTime = time.Time{}
	return replication.Message{Kind: replication.MessageTransaction, Transaction: t}
}

func keepalive(walEnd pglogrepl.LSN, replyRequested bool) replication.Message {
	return replication.Message{Kind: replication.MessageKeepalive, ServerWALEnd: walEnd, ReplyRequested: replyRequested}
}

// steps runs n rounds of the loop.
func (b loopBundle) steps(t *testing.T, n int) {
	t.Helper()
	for range n {
		require.NoError(t, b.l.step(context.Background()))
	}
}

// handedOver returns the window the loop handed to the flusher, or nil.
func (b loopBundle) handedOver() *window {
	select {
	case w := <-b.l.work:
		return w
	default:
		return nil
	}
}

// flushed plays the flusher finishing w.
func (b loopBundle) flushed(w *window) {
	b.l.done <- flushOutcome{res: Flushed{LSN: w.endLSN, Changes: w.changes, Keys: w.size(), Duration: time.Millisecond}}
}

func TestLoneTransactionFlushedOnceCaughtUp(t *testing.T) {
	b := setupLoop(t)
	b.src.script = []scripted{
		{at: b.at(10 * time.Millisecond), msg: play(2000, 7)},
		{at: b.at(10 * time.Millisecond), msg: keepalive(2100, false)},
	}
	b.steps(t, 2) // the transaction, then the keepalive saying the walsender waits for WAL
	require.Nil(t, b.handedOver(), "nothing is handed over before the next round")
	b.steps(t, 1)
	w := b.handedOver()
	require.NotNil(t, w, "a caught-up stream closes the window at once")
	require.Equal(t, pglogrepl.LSN(2000), w.endLSN)
	require.Equal(t, b.at(10*time.Millisecond), b.src.lastWait(), "without waiting for the window's length")
}

func TestFixedWindowsWaitForTheirLength(t *testing.T) {
	b := setupLoop(t, func(c *Config) { c.FixedWindows = true })
	b.src.script = []scripted{
		{at: b.at(10 * time.Millisecond), msg: play(2000, 7)},
		{at: b.at(10 * time.Millisecond), msg: keepalive(2100, false)},
	}
	b.steps(t, 3) // the transaction, the keepalive, then a wait until the window's end
	require.Nil(t, b.handedOver(), "a fixed window ignores the caught-up signal")
	require.Equal(t, b.at(time.Second+10*time.Millisecond), b.clock.t)
	b.steps(t, 1)
	require.NotNil(t, b.handedOver())
	require.Equal(t, b.at(time.Second+10*time.Millisecond), b.src.lastWait())
}

func TestContinuousStreamBoundedByWindow(t *testing.T) {
	b := setupLoop(t, func(c *Config) { c.Window = 950 * time.Millisecond })
	// A transaction every 100 ms and never a keepalive: the walsender always has more to send.
	for i := range 30 {
		b.src.script = append(b.src.script, scripted{at: b.at(time.Duration(i+1) * 100 * time.Millisecond),
			msg: play(pglogrepl.LSN(2000+i), int64(i))})
	}
	var got *window
	for got == nil {
		b.steps(t, 1)
		got = b.handedOver()
	}
	require.Equal(t, b.at(1050*time.Millisecond), b.src.lastWait(), "closed one window length after its first change")
	require.Equal(t, 10, got.transactions, "the transactions of that window, not one more")
}

func TestFlushInProgressMakesTheNextWindowWait(t *testing.T) {
	b := setupLoop(t)
	b.src.script = []scripted{
		{at: b.at(10 * time.Millisecond), msg: play(2000, 1)},
		{at: b.at(10 * time.Millisecond), msg: keepalive(2000, false)},
		{at: b.at(20 * time.Millisecond), msg: play(2100, 2)},
		{at: b.at(20 * time.Millisecond), msg: keepalive(2100, false)},
	}
	b.steps(t, 3)
	first := b.handedOver()
	require.NotNil(t, first)
	b.steps(t, 2) // the second transaction arrives and the stream catches up while flushing
	require.Nil(t, b.handedOver(), "one flush at a time")
	// Waiting for the flusher sets no window deadline (a past one would spin; the fake source
	// fails the test on it): the wait ends at the next status update unless the flush wakes it.
	b.flushed(first)
	b.steps(t, 1)
	second := b.handedOver()
	require.NotNil(t, second, "the next window goes as soon as the flush is collected")
	require.Equal(t, pglogrepl.LSN(2100), second.endLSN)
	require.Equal(t, pglogrepl.LSN(2000), b.l.stored)
}

func TestDueWindowWhileFlushingDoesNotSpin(t *testing.T) {
	// The busy-spin of issue 13: a window already past its time while the flusher is stuck.
	b := setupLoop(t, func(c *Config) { c.FixedWindows = true })
	b.src.script = []scripted{
		{at: b.at(10 * time.Millisecond), msg: play(2000, 1)},
		{at: b.at(1100 * time.Millisecond), msg: play(2100, 2)},
	}
	b.steps(t, 2) // the first transaction, then a wait until its window's end
	b.steps(t, 1) // the window goes; the second transaction opens the next one
	require.NotNil(t, b.handedOver())
	b.clock.t = b.at(5 * time.Second) // the next window is overdue; the flush is still running
	before := len(b.src.deadlines)
	b.steps(t, 1)
	require.Len(t, b.src.deadlines, before+1)
	require.Equal(t, b.at(10*time.Second), b.src.deadlines[before], "it sleeps until the next status update")
}

func TestReplyConfirmsNothing(t *testing.T) {
	b := setupLoop(t)
	b.l.stored = 1500
	next := b.l.nextStatus
	b.src.script = []scripted{{at: b.at(time.Second), msg: keepalive(5000, true)}}
	b.steps(t, 1)
	require.Equal(t, status{flushed: 0, at: b.at(time.Second)}, b.src.lastStatus(),
		"a reply leaves flush invalid, so a shutting-down walsender can finish without the slot moving")
	require.Equal(t, pglogrepl.LSN(5000), b.src.Received(), "and reports as written what was sent")
	require.Equal(t, next, b.l.nextStatus, "replies do not move the scheduled confirmations")
}

func TestIdleConfirm(t *testing.T) {
	for _, c := range []struct {
		name   string
		walEnd pglogrepl.LSN
		inTx   bool
		want   pglogrepl.LSN // the LSN-only window handed over, 0 for none
	}{
		{"past the floor", 1000 + 2<<20, false, 1000 + 2<<20},
		{"below the floor", 1000 + 1<<10, false, 0},
		{"a transaction is open", 1000 + 2<<20, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := setupLoop(t)
			b.src.inTx = c.inTx
			b.src.script = []scripted{{at: b.at(time.Second), msg: keepalive(c.walEnd, false)}}
			b.steps(t, 1)
			b.clock.t = b.at(10 * time.Second) // the status update is due
			b.steps(t, 1)
			w := b.handedOver()
			if c.want == 0 {
				require.Nil(t, w)
				return
			}
			require.NotNil(t, w)
			require.False(t, w.hasChanges())
			require.Equal(t, c.want, w.endLSN, "stored first, confirmed with a later update")
			require.Equal(t, pglogrepl.LSN(1000), b.src.lastStatus().flushed)
		})
	}
}

func TestQuietServerIsAskedThenDropped(t *testing.T) {
	b := setupLoop(t) // status every 10 s, receive timeout 60 s
	var err error
	for err == nil {
		err = b.l.step(context.Background())
	}
	require.ErrorIs(t, err, errServerSilent)
	require.Equal(t, b.at(time.Minute), b.clock.t)
	asked := 0
	for _, s := range b.src.sent[1:] {
		if s.replyRequested {
			asked++
		}
	}
	require.Equal(t, 6, asked, "every scheduled update of a quiet stream asks for a reply, 10 s to 60 s")
}

func TestAnsweredServerStaysConnected(t *testing.T) {
	b := setupLoop(t)
	for i := range 12 { // a keepalive every 10 s for two minutes
		b.src.script = append(b.src.script, scripted{at: b.at(time.Duration(i+1) * 10 * time.Second), msg: keepalive(1000, false)})
	}
	b.steps(t, 12) // each round sends the status update due and reads the next keepalive
	require.Equal(t, b.at(2*time.Minute), b.clock.t, "two minutes on, still connected")
}

func TestFullWindowWaitsForTheFlusher(t *testing.T) {
	b := setupLoop(t, func(c *Config) { c.MaxWindowSize = 2 })
	b.src.script = []scripted{
		{at: b.at(time.Millisecond), msg: play(2000, 1)},
		{at: b.at(time.Millisecond), msg: play(2001, 2)},
		{at: b.at(2 * time.Millisecond), msg: play(2002, 3)},
		{at: b.at(2 * time.Millisecond), msg: play(2003, 4)},
		{at: b.at(3 * time.Millisecond), msg: play(2004, 5)},
	}
	b.steps(t, 3) // two plays fill the window, which goes at once; the third is read
	first := b.handedOver()
	require.NotNil(t, first)
	b.steps(t, 1) // the fourth fills the next window while the first flushes
	b.steps(t, 1) // full and flushing: the loop waits for the flush instead of reading on
	require.Len(t, b.src.script, 1, "nothing more is read while the window is full")
	require.Equal(t, b.at(10*time.Second), b.clock.t, "until the next status update is due")
	// The flush is slow: every round sends the status update that is due and waits for the next
	// one, without reading and without spinning (the fake timer moves the clock).
	sent := len(b.src.sent)
	b.steps(t, 2)
	require.Len(t, b.src.sent, sent+2)
	require.Equal(t, b.at(20*time.Second), b.src.lastStatus().at)
	require.Equal(t, b.at(30*time.Second), b.clock.t)
	require.Len(t, b.src.script, 1)
	b.steps(t, 6) // a minute and a half behind a lock: longer than the receive timeout
	require.Equal(t, b.at(90*time.Second), b.clock.t)
	b.flushed(first)
	b.steps(t, 1)
	second := b.handedOver()
	require.NotNil(t, second, "once the flush is collected the full window goes")
	require.Equal(t, pglogrepl.LSN(2003), second.endLSN)
	require.Equal(t, b.at(90*time.Second), b.src.lastStatus().at, "and the due status update is sent")
	require.Empty(t, b.src.script, "reading resumes: the silence while we did not listen does not count")
}

func TestServerStoppingEndsTheStream(t *testing.T) {
	b := setupLoop(t)
	stopping := make(chan struct{})
	b.l.stopping = stopping
	close(stopping)
	require.ErrorIs(t, b.l.stream(t.Context()), errServerStopping)
}

// runLoop builds a loop for run(): a real flusher goroutine with the given flusher.
func runLoop(t *testing.T, f flusher, tweak ...func(*Config)) loopBundle {
	t.Helper()
	b := setupLoop(t, tweak...)
	b.l.work = make(chan *window)
	b.l.flusher = f
	return b
}

func TestShutdownFlushesAndConfirms(t *testing.T) {
	b := runLoop(t, instantFlush)
	b.src.script = []scripted{{at: b.at(time.Millisecond), msg: play(2000, 1)}}
	b.steps(t, 1) // a window with a change, not yet due
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.NoError(t, b.l.run(ctx))
	require.Equal(t, pglogrepl.LSN(2000), b.l.stored)
	require.Equal(t, pglogrepl.LSN(2000), b.src.lastStatus().flushed, "the final update confirms the final flush")
}

// TestShutdownTakesWhatWasSent: a transaction the server sent just before the stop is in the
// final flush; one that comes after the brief drain is left for the next start.
func TestShutdownTakesWhatWasSent(t *testing.T) {
	for name, tc := range map[string]struct {
		arrives time.Duration
		stored  pglogrepl.LSN
	}{
		"already in the socket": {arrives: 2 * time.Millisecond, stored: 3000},
		"after the drain":       {arrives: time.Second, stored: 2000},
	} {
		t.Run(name, func(t *testing.T) {
			b := runLoop(t, instantFlush)
			b.src.script = []scripted{
				{at: b.at(time.Millisecond), msg: play(2000, 1)},
				{at: b.at(tc.arrives), msg: play(3000, 2)},
			}
			b.steps(t, 1)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			require.NoError(t, b.l.run(ctx))
			require.Equal(t, tc.stored, b.l.stored)
			require.Equal(t, tc.stored, b.src.lastStatus().flushed)
		})
	}
}

func TestShutdownTimeoutIsAnError(t *testing.T) {
	stuck := flushFunc(func(ctx context.Context, _ *window) (Flushed, error) {
		<-ctx.Done() // behind a lock until the shutdown gives up
		return Flushed{}, ctx.Err()
	})
	b := runLoop(t, stuck, func(c *Config) { c.ShutdownTimeout = 50 * time.Millisecond })
	b.src.script = []scripted{{at: b.at(time.Millisecond), msg: play(2000, 1)}}
	b.steps(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := b.l.run(ctx)
	require.ErrorIs(t, err, ErrShutdownIncomplete)
	require.Equal(t, pglogrepl.LSN(1000), b.l.stored, "nothing is confirmed past what was stored")
	for _, s := range b.src.sent {
		require.LessOrEqual(t, s.flushed, pglogrepl.LSN(1000))
	}
}

func TestFlushErrorEndsTheSession(t *testing.T) {
	boom := errors.New("boom")
	b := setupLoop(t)
	b.src.script = []scripted{
		{at: b.at(time.Millisecond), msg: play(2000, 1)},
		{at: b.at(time.Millisecond), msg: keepalive(2000, false)},
	}
	b.steps(t, 3)
	require.NotNil(t, b.handedOver())
	b.l.done <- flushOutcome{err: boom}
	require.ErrorIs(t, b.l.step(context.Background()), boom)
	require.Equal(t, pglogrepl.LSN(1000), b.l.stored)
}

func TestBacklogStretchesWindows(t *testing.T) {
	b := setupLoop(t)
	// Transactions committed a minute ago, one every 100 ms and never a keepalive: a backlog.
	for i := range 100 {
		m := play(pglogrepl.LSN(2000+i), int64(i))
		m.Transaction.CommitTime = b.t0.Add(-time.Minute)
		b.src.script = append(b.src.script, scripted{at: b.at(time.Duration(i+1) * 100 * time.Millisecond), msg: m})
	}
	b.src.script = append(b.src.script, scripted{at: b.at(10050 * time.Millisecond), msg: keepalive(3000, false)})
	var got *window
	for got == nil {
		b.steps(t, 1)
		got = b.handedOver()
	}
	require.Equal(t, b.at(8100*time.Millisecond), b.src.lastWait(), "the longest stretch, 8 windows")
	b.flushed(got)
	for got = nil; got == nil; got = b.handedOver() {
		b.steps(t, 1)
	}
	require.Equal(t, b.at(10050*time.Millisecond), b.src.lastWait(), "caught up: the rest goes at once")
}

func TestBacklogWindowClosesNearItsEnd(t *testing.T) {
	b := setupLoop(t)
	// A backlog of 100 transactions, 1,000 bytes of WAL apart and read one every 10 ms (100 kB/s);
	// the server's WAL ends at the last one.
	var probes int
	b.l.serverWALEnd = func(context.Context) (pglogrepl.LSN, error) {
		probes++
		return 101_000, nil
	}
	b.src.script = backlog(b, 100)

	var first *window
	for first == nil {
		b.steps(t, 1)
		first = b.handedOver()
	}
	// Before any flush the estimate of one is half a window: 50 transactions from the end.
	require.Equal(t, pglogrepl.LSN(51_000), first.endLSN, "closed half a second before the stream reaches the WAL end")
	require.Equal(t, b.at(500*time.Millisecond), b.src.lastWait(), "not after the 8-window stretch of a backlog")
	require.Positive(t, probes)

	// That flush took 600 ms, longer than the rest of the stream: the next window still waits
	// for the stream to catch up (the keepalive), not for the rest to be a flush away again,
	// and the loop no longer probes.
	b.l.done <- flushOutcome{res: Flushed{LSN: first.endLSN, Changes: first.changes, Keys: first.size(), Duration: 600 * time.Millisecond}}
	probesAtClose := probes
	var second *window
	for second == nil {
		b.steps(t, 1)
		second = b.handedOver()
	}
	require.Equal(t, pglogrepl.LSN(101_000), second.endLSN)
	require.Equal(t, b.at(1010*time.Millisecond), b.src.lastWait(), "closed by the keepalive")
	require.Equal(t, probesAtClose, probes, "one early close per backlog")

	// Caught up, the next backlog may close early again.
	require.False(t, b.l.rule.closedEarly)
}

// backlog is n transactions that committed a minute ago, 1,000 bytes of WAL apart and read one
// every 10 ms, then the keepalive of a stream that has caught up: the server's WAL ends at the
// last one.
func backlog(b loopBundle, n int) []scripted {
	var script []scripted
	for i := 1; i <= n; i++ {
		m := play(pglogrepl.LSN(1000+1000*i), int64(i))
		m.Transaction.CommitTime = b.t0.Add(-time.Minute)
		script = append(script, scripted{at: b.at(time.Duration(i) * 10 * time.Millisecond), msg: m})
	}
	end := pglogrepl.LSN(1000 + 1000*n)
	return append(script, scripted{at: b.at(time.Duration(n+1) * 10 * time.Millisecond), msg: keepalive(end, false)})
}

func TestFailedProbeEndsTheSession(t *testing.T) {
	b := setupLoop(t)
	boom := errors.New("connection reset")
	b.l.serverWALEnd = func(context.Context) (pglogrepl.LSN, error) { return 0, boom }
	m := play(2000, 1)
	m.Transaction.CommitTime = b.t0.Add(-time.Minute)
	b.src.script = []scripted{{at: b.at(10 * time.Millisecond), msg: m}}
	b.steps(t, 1)
	require.ErrorIs(t, b.l.step(context.Background()), boom, "a failed probe is a broken flush connection: the session ends")
}

func TestFixedWindowsDoNotWatchTheWALEnd(t *testing.T) {
	b := setupLoop(t, func(c *Config) { c.FixedWindows = true })
	b.l.serverWALEnd = func(context.Context) (pglogrepl.LSN, error) {
		t.Fatal("a fixed window closes on its length only: no probe")
		return 0, nil
	}
	for i := 1; i <= 20; i++ {
		m := play(pglogrepl.LSN(1000+1000*i), int64(i))
		m.Transaction.CommitTime = b.t0.Add(-time.Minute)
		b.src.script = append(b.src.script, scripted{at: b.at(time.Duration(i) * 10 * time.Millisecond), msg: m})
	}
	b.steps(t, 21)
	require.Nil(t, b.handedOver(), "the backlog's last transaction is in, and the stretch is not over")
}

// backpressured brings the loop to a full window waiting for a flush in flight: the first window
// (tracks 1 and 2) was handed over and is still flushing, the second (3 and 4) is full. The
// next status update never comes (the timer never fires), so only the flush or a stop can end
// the wait.
func backpressured(t *testing.T) (loopBundle, *window) {
	t.Helper()
	b := setupLoop(t, func(c *Config) { c.MaxWindowSize = 2 })
	b.l.after = func(time.Duration) <-chan time.Time { return nil }
	b.src.script = []scripted{
		{at: b.at(time.Millisecond), msg: play(2000, 1)},
		{at: b.at(time.Millisecond), msg: play(2001, 2)},
		{at: b.at(2 * time.Millisecond), msg: play(2002, 3)},
		{at: b.at(2 * time.Millisecond), msg: play(2003, 4)},
	}
	b.steps(t, 3)
	first := b.handedOver()
	require.NotNil(t, first)
	b.steps(t, 1)
	require.Empty(t, b.src.script)
	require.Equal(t, 2, b.l.window.size(), "the second window is full")
	return b, first
}

// TestStopEndsBackpressureAtOnce: a stop while the loop waits for a slow flush hands over to
// the shutdown at once; it used to wait for the next status update (up to 10 s, 18 s in all
// with the shutdown's own wait).
func TestStopEndsBackpressureAtOnce(t *testing.T) {
	b, _ := backpressured(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	returned := make(chan error, 1)
	go func() { returned <- b.l.step(ctx) }()
	select {
	case err := <-returned:
		require.NoError(t, err)
	case <-time.After(10 * time.Second): // a liveness bound, not a timing: the wait never ends by itself
		t.Fatal("backpressure did not end on the stop")
	}
	require.True(t, b.l.flushing, "the flush in flight is the shutdown's to wait for")
}

// TestFlushFailingAtStopIsNotSwallowed: the flush in flight fails after the stop (a
// statement_timeout, a cancel, a deadlock). The stream must return that error — it used to turn
// it into a clean stop, whose shutdown then flushed the next window and stored its LSN past the
// failed window's transactions — and the shutdown must flush nothing after it.
func TestFlushFailingAtStopIsNotSwallowed(t *testing.T) {
	boom := errors.New("canceling statement due to user request")
	t.Run("through run", func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var later []pglogrepl.LSN
		calls := 0
		f := flushFunc(func(_ context.Context, w *window) (Flushed, error) {
			mu.Lock()
			calls++
			first := calls == 1
			if !first {
				later = append(later, w.endLSN)
			}
			mu.Unlock()
			if first {
				<-release
				return Flushed{}, boom
			}
			return Flushed{LSN: w.endLSN, Changes: w.changes, Keys: w.size()}, nil
		})
		b := runLoop(t, f, func(c *Config) { c.MaxWindowSize = 2 })
		ctx, cancel := context.WithCancel(t.Context())
		// The loop waits in backpressure: the stop comes, and then the flush fails.
		b.l.after = func(time.Duration) <-chan time.Time {
			cancel()
			close(release)
			b.l.after = func(time.Duration) <-chan time.Time { return nil }
			return nil
		}
		b.src.script = []scripted{
			{at: b.at(time.Millisecond), msg: play(2000, 1)},
			{at: b.at(time.Millisecond), msg: play(2001, 2)},
			{at: b.at(2 * time.Millisecond), msg: play(2002, 3)},
			{at: b.at(2 * time.Millisecond), msg: play(2003, 4)},
		}
		err := b.l.run(ctx)
		require.ErrorIs(t, err, ErrStopFlushFailed, "a stop that could not flush is not a clean exit")
		require.ErrorIs(t, err, boom)
		mu.Lock()
		defer mu.Unlock()
		require.Empty(t, later, "no window is flushed after a failed one")
		require.Equal(t, pglogrepl.LSN(1000), b.l.stored)
		for _, s := range b.src.sent {
			require.LessOrEqual(t, s.flushed, pglogrepl.LSN(1000))
		}
	})
	t.Run("collected by the shutdown", func(t *testing.T) {
		b, _ := backpressured(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.NoError(t, b.l.step(ctx))
		b.l.done <- flushOutcome{err: boom}
		require.ErrorIs(t, b.l.shutdown(ctx, func() {}), boom)
		requireNothingPast(t, b, 1000)
	})
}

// requireNothingPast checks that nothing was stored, confirmed or handed over past stored.
func requireNothingPast(t *testing.T, b loopBundle, stored pglogrepl.LSN) {
	t.Helper()
	require.Equal(t, stored, b.l.stored)
	for _, s := range b.src.sent {
		require.LessOrEqual(t, s.flushed, stored)
	}
	require.Nil(t, b.handedOver(), "no window is flushed after a failed one")
}

// TestSlowProbeIsNotTheSessionsEnd: a WAL-end probe that outlasts its timeout (a busy server)
// only costs the estimate: the loop stops probing for this backlog and the window closes by its
// other rules. Ending the session would throw away what was decoded and replay it on the same
// busy server.
func TestSlowProbeIsNotTheSessionsEnd(t *testing.T) {
	b := setupLoop(t)
	var probes int
	b.l.serverWALEnd = func(ctx context.Context) (pglogrepl.LSN, error) {
		probes++
		return 0, fmt.Errorf("read: %w", context.DeadlineExceeded)
	}
	b.src.script = backlog(b, 20)
	var w *window
	for w == nil {
		b.steps(t, 1)
		w = b.handedOver()
	}
	require.Equal(t, 1, probes, "one timed-out probe, then none for this backlog")
	require.Equal(t, pglogrepl.LSN(21_000), w.endLSN, "the window closed once the stream caught up")
}
