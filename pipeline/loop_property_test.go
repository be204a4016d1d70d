package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/replication"
)

// propertySeedEnv names the environment variable that replays one case of TestLoopProperty,
// with the loop's debug logs: LOOP_PROPERTY_SEED=<seed> go test -run TestLoopProperty ./pipeline/
const propertySeedEnv = "LOOP_PROPERTY_SEED"

const propertyCases = 300

// TestLoopProperty runs the loop (run, with its real flusher goroutine) through random
// interleavings of transactions with and without changes, keepalives, flushes that commit,
// fail, take a while or hang, a stop and the server's shutdown, and checks the rules that make
// the stream exactly-once (see checkCase): no stored or confirmed position passes a transaction
// with changes that no committed flush carried, positions never go back, nothing is flushed
// after a failed flush, and a clean exit has applied everything it received. The table tests
// pin those rules one interleaving at a time; this looks for the interleaving nobody wrote
// down. The seeds are logged; propertySeedEnv replays one.
func TestLoopProperty(t *testing.T) {
	t.Parallel()
	seeds, log := propertySeeds(t)
	for _, seed := range seeds {
		c := generateCase(seed)
		out := runPropertyCase(t, c, nil, log)
		if len(seeds) == 1 {
			t.Logf("%s\nrun returned: %v\n%s", c, out.err, out.describe())
		}
		require.Empty(t, checkCase(c, out), "the loop broke its LSN rules; replay with %s=%d\n%s\nrun returned: %v\n%s",
			propertySeedEnv, seed, c, out.err, out.describe())
	}
}

// TestLoopPropertyCheckerCatchesViolations shows each rule of checkCase can fail, so a passing
// TestLoopProperty means something.
func TestLoopPropertyCheckerCatchesViolations(t *testing.T) {
	t.Parallel()
	t.Run("a flush that stores past its window", func(t *testing.T) {
		// The first window (2000) commits but reports 3000: past the next transaction (2500),
		// which the second flush then fails to apply.
		c := propertyCase{
			events: []caseEvent{
				{at: time.Millisecond, kind: txWithChanges, lsn: 2000, tag: tagBase + 1},
				{at: time.Millisecond, kind: keepaliveEvent, lsn: 2000},
				{at: 2 * time.Millisecond, kind: txWithChanges, lsn: 2500, tag: tagBase + 2},
				{at: 2 * time.Millisecond, kind: keepaliveEvent, lsn: 2500},
			},
			flushes:         []flushPlan{{}, {fails: true}},
			shutdownTimeout: time.Second,
			maxTicks:        50,
		}
		storesTooFar := func(w *window) pglogrepl.LSN { return w.endLSN + 1000 }
		out := runPropertyCase(t, c, storesTooFar, zap.NewNop())
		v := checkCase(c, out)
		require.NotEmpty(t, v, "run returned %v\n%s", out.err, out.describe())
		require.Contains(t, v[0], "stored 0/BB8 passes transaction 0/9C4", "%s", out.describe())
	})

	c := propertyCase{events: []caseEvent{
		{kind: txWithChanges, lsn: 2000, tag: tagBase + 1},
		{kind: txWithChanges, lsn: 2100, tag: tagBase + 2},
	}}
	committed := func(call int, lsn pglogrepl.LSN, tags ...int64) []entry {
		return []entry{{kind: flushCalled, call: call, lsn: lsn}, {kind: flushCommitted, call: call, lsn: lsn, carried: tags},
			{kind: positionStored, lsn: lsn}}
	}
	for name, tc := range map[string]struct {
		out  caseOutcome
		want string
	}{
		"a confirmation ahead of what is stored": {
			out: caseOutcome{entries: append(committed(0, 2000, tagBase+1), entry{kind: statusSent, lsn: 2100}),
				stored: 2000, err: ErrShutdownIncomplete},
			want: "confirmed 0/834 ahead of stored 0/7D0",
		},
		"a confirmation past an unapplied transaction": {
			out: caseOutcome{entries: append(committed(0, 2100, tagBase+1), entry{kind: statusSent, lsn: 2100}),
				stored: 2100, err: ErrShutdownIncomplete},
			want: "confirmed 0/834 passes transaction 0/834",
		},
		"a position that goes back": {
			out: caseOutcome{entries: slices.Concat(committed(0, 2100, tagBase+1, tagBase+2), committed(1, 2000)),
				stored: 2000, err: ErrShutdownIncomplete},
			want: "stored went back from 0/834 to 0/7D0",
		},
		"a flush after a failed one": {
			out: caseOutcome{entries: append([]entry{{kind: flushCalled, call: 0, lsn: 2000}, {kind: flushFailed, call: 0}},
				committed(1, 2100, tagBase+1, tagBase+2)...), stored: 2100, err: errPlannedFlush},
			want: "flush 1 was called after flush 0 failed",
		},
		"a clean exit that left a received transaction unapplied": {
			out:  caseOutcome{entries: committed(0, 2000, tagBase+1), stored: 2000, delivered: 2},
			want: "a clean exit left transaction 0/834",
		},
		"a clean exit after a failed flush": {
			out: caseOutcome{entries: append(committed(0, 2100, tagBase+1, tagBase+2),
				entry{kind: flushCalled, call: 1, lsn: 2100}, entry{kind: flushFailed, call: 1}), stored: 2100, delivered: 2},
			want: "a clean exit after flush 1 failed",
		},
		"a stored position the loop does not report": {
			out:  caseOutcome{entries: committed(0, 2000, tagBase+1), stored: 2100, err: ErrShutdownIncomplete},
			want: "final stored 0/834 passes transaction 0/834",
		},
		"an error the loop should not return": {
			out:  caseOutcome{err: errors.New("surprise"), stored: 1000},
			want: "unexpected error",
		},
	} {
		t.Run(name, func(t *testing.T) {
			v := checkCase(c, tc.out)
			require.NotEmpty(t, v)
			require.Contains(t, strings.Join(v, "\n"), tc.want)
		})
	}
}

// propertySeeds returns the seeds to run and the logger for the loop: one seed with debug
// logs when propertySeedEnv is set, else propertyCases from a random base.
func propertySeeds(t *testing.T) ([]uint64, *zap.Logger) {
	t.Helper()
	if s := os.Getenv(propertySeedEnv); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "%s=%q", propertySeedEnv, s)
		t.Logf("replaying seed %d", seed)
		return []uint64{seed}, zaptest.NewLogger(t)
	}
	base := rand.Uint64() >> 1 // room for base+i
	t.Logf("%d cases, seeds %d to %d; replay one with %s=<seed>", propertyCases, base, base+propertyCases-1, propertySeedEnv)
	seeds := make([]uint64, propertyCases)
	for i := range seeds {
		seeds[i] = base + uint64(i)
	}
	return seeds, zap.NewNop()
}

// tagBase starts the IDs that each transaction with changes carries alone, so a flushed window
// tells which transactions it held. The shared track IDs of a case stay below it.
const tagBase = 1_000_000

type eventKind int

const (
	txWithChanges eventKind = iota
	txWithout               // touched nothing of ours
	keepaliveEvent
	connectionLost // the source fails: the session ends
)

// caseEvent is one message of a case's script.
type caseEvent struct {
	at      time.Duration // after the loop's start
	kind    eventKind
	lsn     pglogrepl.LSN // a transaction's end LSN, or a keepalive's server WAL end
	tag     int64         // txWithChanges: the ID only this transaction carries
	tracks  []int64       // txWithChanges: shared track IDs it played as well
	comment bool          // txWithChanges: the tag is a commenter, not a track
	behind  bool          // a transaction committed a minute before it arrives: a backlog
	reply   bool          // a keepalive that asks for a reply
	midTx   bool          // a keepalive that arrives while a transaction is being received
}

func (e caseEvent) scripted(t0 time.Time) scripted {
	switch e.kind {
	case keepaliveEvent:
		return scripted{at: t0.Add(e.at), msg: keepalive(e.lsn, e.reply)}
	case connectionLost:
		return scripted{at: t0.Add(e.at), err: errConnectionLost}
	}
	t := tx(e.lsn, nil, 0, nil, 0)
	if e.kind == txWithChanges {
		tracks := slices.Clone(e.tracks)
		var commenters []int64
		var block int64
		if e.comment {
			commenters, block = []int64{e.tag}, int64(e.lsn)
		} else {
			tracks = append(tracks, e.tag)
		}
		t = tx(e.lsn, tracks, int64(e.lsn), commenters, block)
		t.Xid = uint32(e.tag - tagBase)
	}
	t.CommitTime = time.Time{} // the source sets it to the delivery: not behind
	if e.behind {
		t.CommitTime = t0.Add(e.at - time.Minute)
	}
	return scripted{at: t0.Add(e.at), msg: replication.Message{Kind: replication.MessageTransaction, Transaction: t}}
}

func (e caseEvent) String() string {
	var s string
	switch e.kind {
	case txWithChanges:
		what := "track"
		if e.comment {
			what = "commenter"
		}
		s = fmt.Sprintf("tx %s with changes: %s %d, tracks %v", e.lsn, what, e.tag, e.tracks)
	case txWithout:
		s = fmt.Sprintf("tx %s without changes", e.lsn)
	case keepaliveEvent:
		s = fmt.Sprintf("keepalive %s", e.lsn)
		if e.reply {
			s += ", reply requested"
		}
		if e.midTx {
			s += ", inside a transaction"
		}
	case connectionLost:
		s = "the connection is lost"
	}
	if e.behind {
		s += ", committed a minute earlier"
	}
	return fmt.Sprintf("+%-8s %s", e.at, s)
}

// flushPlan is how one flush call goes. The harness lets it finish ticks rounds after it
// starts (0: at the next round), or once the session stops; a stuck flush only ends when the
// loop cancels it.
type flushPlan struct {
	fails    bool
	ticks    int
	stuck    bool
	duration time.Duration // the duration it reports: a long one stretches the next windows
}

func (p flushPlan) String() string {
	s := "commits"
	if p.fails {
		s = "fails"
	}
	switch {
	case p.stuck:
		s = "hangs until cancelled"
	case p.ticks > 0:
		s += fmt.Sprintf(" after %d rounds", p.ticks)
	}
	return fmt.Sprintf("%s, reports %s", s, p.duration)
}

// propertyCase is one generated interleaving. A tick is one call from the loop into the
// harness: the source's Next or the backpressure's timer.
type propertyCase struct {
	seed             uint64
	maxWindowSize    int // 0: the default
	fixedWindows     bool
	probes           bool // the loop may read the server's WAL end to close a stretched window early
	idleConfirmBytes uint64
	shutdownTimeout  time.Duration
	events           []caseEvent
	flushes          []flushPlan // flush call k follows flushes[k]; later calls commit at once
	stopAt           int         // the tick that cancels run's context; 0: none before the case ends
	serverStopAt     int         // the tick at which the server starts shutting down; 0: never
	quietTicks       int         // ticks after the script is delivered before the case's own stop
	maxTicks         int         // the case stops at this tick whatever happens
	// together stops the session (run's context) in the same tick as the first failing flush
	// finishes, so the loop finds both ready (backpressure's select then picks either): a stop
	// arriving while a slow flush fails. Such cases do not replay exactly; the invariants hold
	// either way.
	together bool
}

func (c propertyCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "case %d: max window size %d, fixed windows %t, probes %t, idle confirm %d bytes, shutdown timeout %s\n",
		c.seed, c.maxWindowSize, c.fixedWindows, c.probes, c.idleConfirmBytes, c.shutdownTimeout)
	fmt.Fprintf(&b, "stop at tick %d, server shutdown at tick %d (0: none), the case ends %d ticks after the script or at tick %d, stop and flush together %t\n",
		c.stopAt, c.serverStopAt, c.quietTicks, c.maxTicks, c.together)
	b.WriteString("script:\n")
	for i, e := range c.events {
		fmt.Fprintf(&b, "  %2d %s\n", i, e)
	}
	b.WriteString("flushes:\n")
	for i, p := range c.flushes {
		fmt.Fprintf(&b, "  %2d %s\n", i, p)
	}
	return b.String()
}

// generateCase draws a case from seed. The script keeps the walsender's promises the loop
// relies on: end LSNs increase, and a keepalive's WAL end is at or past every transaction sent
// before it and before every transaction sent after it.
func generateCase(seed uint64) propertyCase {
	r := rand.New(rand.NewPCG(seed, 0x10095))
	c := propertyCase{seed: seed, shutdownTimeout: time.Second}
	if r.IntN(2) == 0 {
		c.maxWindowSize = 1 + r.IntN(4) // backpressure
	}
	c.fixedWindows = r.IntN(5) == 0
	c.together = r.IntN(3) == 0
	c.probes = r.IntN(2) == 0
	c.idleConfirmBytes = []uint64{1, 1000, DefaultIdleConfirmBytes}[r.IntN(3)]

	var at time.Duration
	end, walEnd := pglogrepl.LSN(1000), pglogrepl.LSN(1000) // the loop starts stored at 1000
	inTx := false
	tag := int64(tagBase)
	for range r.IntN(31) {
		at += pick(r, []time.Duration{0, time.Millisecond, 30 * time.Millisecond, 400 * time.Millisecond, 3 * time.Second, 11 * time.Second},
			[]int{15, 25, 20, 20, 12, 8})
		step := pick(r, []pglogrepl.LSN{10, 500, 5000, 3 << 20}, []int{30, 35, 30, 5})
		kind := pick(r, []eventKind{txWithChanges, txWithout, keepaliveEvent, connectionLost}, []int{40, 20, 40, 1})
		if inTx && kind == keepaliveEvent && r.IntN(2) == 0 {
			kind = txWithChanges // mostly the transaction being received comes next
		}
		e := caseEvent{at: at, kind: kind}
		switch kind {
		case txWithChanges, txWithout:
			end = max(end, walEnd) + 1 + pglogrepl.LSN(r.IntN(int(step)))
			e.lsn, e.behind = end, r.IntN(10) == 0
			inTx = false
			if kind == txWithChanges {
				tag++
				e.tag, e.comment = tag, r.IntN(4) == 0
				for range r.IntN(3) {
					e.tracks = append(e.tracks, 1+int64(r.IntN(5)))
				}
			}
		case keepaliveEvent:
			walEnd = max(end, walEnd) + pglogrepl.LSN(r.IntN(int(step)))
			e.lsn, e.reply = walEnd, r.IntN(3) == 0
			e.midTx = inTx || r.IntN(5) == 0
			inTx = e.midTx
		}
		c.events = append(c.events, e)
		if kind == connectionLost {
			break // nothing comes after it
		}
	}

	for range 10 {
		p := flushPlan{duration: time.Millisecond}
		if r.IntN(5) == 0 {
			p.duration = 700 * time.Millisecond
		}
		switch k := r.IntN(20); {
		case k < 2:
			p.fails = true
		case k < 6:
			p.ticks = 1 + r.IntN(12)
		case k < 7:
			p.ticks, p.fails = 1+r.IntN(12), true
		case k < 8:
			p.stuck = true
			c.shutdownTimeout = 20 * time.Millisecond // the shutdown gives up on it in real time
		}
		c.flushes = append(c.flushes, p)
	}

	n := len(c.events)
	if r.IntN(2) == 0 {
		c.stopAt = 1 + r.IntN(n+8)
	}
	if r.IntN(4) == 0 {
		c.serverStopAt = 1 + r.IntN(n+8)
	}
	c.quietTicks = r.IntN(6)
	c.maxTicks = 4*n + 60
	return c
}

// pick draws one of choices with the given weights.
func pick[T any](r *rand.Rand, choices []T, weights []int) T {
	n := r.IntN(sumOf(weights))
	for i, w := range weights {
		if n < w {
			return choices[i]
		}
		n -= w
	}
	panic("unreachable")
}

func sumOf(ws []int) int {
	s := 0
	for _, w := range ws {
		s += w
	}
	return s
}

// serverWALEnd is the server's WAL end at a time after the loop's start: the end of what it
// sends within the next second, a backlog's worth.
func (c propertyCase) serverWALEnd(at time.Duration) pglogrepl.LSN {
	end := pglogrepl.LSN(1000)
	for _, e := range c.events {
		if e.at <= at+time.Second {
			end = max(end, e.lsn)
		}
	}
	return end
}

// changeEnds maps the tag of each transaction with changes to its end LSN.
func (c propertyCase) changeEnds() map[int64]pglogrepl.LSN {
	ends := map[int64]pglogrepl.LSN{}
	for _, e := range c.events {
		if e.kind == txWithChanges {
			ends[e.tag] = e.lsn
		}
	}
	return ends
}

// errPlannedFlush is the failure of a flush the case planned to fail.
var errPlannedFlush = errors.New("planned flush failure")

// errConnectionLost is the source's failure in a case's script.
var errConnectionLost = errors.New("connection lost")

// errLoopWouldSpin ends a session whose loop waited for a message with a deadline already past.
var errLoopWouldSpin = errors.New("the loop would spin: Next's deadline is not after now")

type entryKind int

const (
	flushCalled    entryKind = iota
	flushFailed              // the flush returned an error
	flushCommitted           // the flush returned its result: its window is applied
	positionStored           // the loop's stored position is now lsn (a Flushed event)
	statusSent               // a status update confirming lsn; 0 for a reply, which confirms nothing
	txReceived               // the loop took the transaction ending at lsn
)

// entry is one thing that happened in a case, in the order it happened.
type entry struct {
	kind    entryKind
	call    int
	lsn     pglogrepl.LSN
	carried []int64 // flushCommitted: the tags of the transactions its window held
}

func (e entry) String() string {
	switch e.kind {
	case flushCalled:
		return fmt.Sprintf("flush %d called, window ends %s", e.call, e.lsn)
	case flushFailed:
		return fmt.Sprintf("flush %d failed", e.call)
	case flushCommitted:
		return fmt.Sprintf("flush %d committed, stores %s, carried %v", e.call, e.lsn, e.carried)
	case positionStored:
		return fmt.Sprintf("stored %s", e.lsn)
	case statusSent:
		return fmt.Sprintf("status update confirms %s", e.lsn)
	case txReceived:
		return fmt.Sprintf("received tx %s", e.lsn)
	}
	return "?"
}

// caseLog records entries from the loop's and the flusher's goroutines in one order: a flush's
// commit is recorded before it returns, so before the loop can store its LSN. A flush call's
// start is recorded by the flusher goroutine, so it may come after what the loop did right
// after handing the window over: the one thing a replayed seed may order differently.
type caseLog struct {
	mu      sync.Mutex
	entries []entry
}

func (r *caseLog) add(e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, e)
}

func (r *caseLog) observe(ev Event) {
	switch ev := ev.(type) {
	case Flushed:
		r.add(entry{kind: positionStored, lsn: ev.LSN})
	case TransactionReceived:
		r.add(entry{kind: txReceived, lsn: ev.Tx.EndLSN})
	}
}

func (r *caseLog) snapshot() []entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

// wake signals ch without blocking; a signal already pending stands for this one. Waiters
// re-check their condition after every signal.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// flushCall is one call of the planned flusher.
type flushCall struct {
	index     int
	plan      flushPlan
	afterStop bool          // started after the stop: no harness round may come to let it finish
	release   chan struct{} // closed by the harness: the flush may finish
	// The harness's own, on the loop's goroutine.
	releaseAt int
	released  bool
	// Under plannedFlusher.mu.
	returned bool
}

// plannedFlusher is a flusher whose calls follow the case's plans. A call waits until the
// harness releases it (or, started after the stop, goes at once), so flushes finish at chosen
// rounds of the loop.
type plannedFlusher struct {
	plans  []flushPlan
	report func(*window) pglogrepl.LSN // the LSN a committed flush stores; nil: the window's end
	log    *caseLog
	woken  chan struct{}

	mu      sync.Mutex
	calls   []*flushCall
	stopped bool
}

func (f *plannedFlusher) flush(ctx context.Context, w *window) (Flushed, error) {
	c := f.begin(w)
	if !c.afterStop || c.plan.stuck {
		select {
		case <-c.release:
		case <-ctx.Done():
			return f.fail(c, ctx.Err())
		}
	}
	if c.plan.fails {
		return f.fail(c, errPlannedFlush)
	}
	res := Flushed{LSN: w.endLSN, Changes: w.changes, Keys: w.size(), Duration: c.plan.duration}
	if f.report != nil {
		res.LSN = f.report(w)
	}
	var carried []int64
	for _, set := range []map[int64]struct{}{w.tracks(), w.commenters()} {
		for id := range set {
			if id >= tagBase {
				carried = append(carried, id)
			}
		}
	}
	slices.Sort(carried)
	f.log.add(entry{kind: flushCommitted, call: c.index, lsn: res.LSN, carried: carried})
	f.finished(c)
	return res, nil
}

func (f *plannedFlusher) begin(w *window) *flushCall {
	f.mu.Lock()
	c := &flushCall{index: len(f.calls), plan: flushPlan{duration: time.Millisecond}, afterStop: f.stopped,
		release: make(chan struct{})}
	if c.index < len(f.plans) {
		c.plan = f.plans[c.index]
	}
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	f.log.add(entry{kind: flushCalled, call: c.index, lsn: w.endLSN})
	wake(f.woken)
	return c
}

func (f *plannedFlusher) fail(c *flushCall, err error) (Flushed, error) {
	f.log.add(entry{kind: flushFailed, call: c.index})
	f.finished(c)
	return Flushed{}, err
}

func (f *plannedFlusher) finished(c *flushCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.returned = true
}

// call returns call k once it has started, else nil.
func (f *plannedFlusher) call(k int) *flushCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k < len(f.calls) {
		return f.calls[k]
	}
	return nil
}

func (f *plannedFlusher) hasReturned(c *flushCall) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return c.returned
}

func (f *plannedFlusher) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
}

// drivenSource is the loop's source for a case. The harness acts only from the loop's
// goroutine — in Next and in the backpressure's timer (after), each call a tick — because the
// fake source and clock are not safe from others. Each tick it lets the flush in flight finish
// when its plan says and waits until the outcome is in the loop's done channel, or else fires
// a stop that is due, so a seed replays the same interleaving.
type drivenSource struct {
	t        *testing.T
	c        propertyCase
	src      *fakeSource
	l        *loop
	flusher  *plannedFlusher
	log      *caseLog
	cancel   context.CancelFunc
	stopping chan struct{}
	woken    chan struct{} // the loop's Interrupt and a flush call's start signal it
	midTx    []bool        // for each message of src.script: a keepalive inside a transaction

	ticks         int
	deliveredAt   int // the tick at which the script had been delivered; 0: not yet
	followed      int // flush calls seen
	current       *flushCall
	cancelled     bool
	serverStopped bool
	spun          string // why the loop would have spun, if it would have
}

func (d *drivenSource) Next(deadline time.Time) (replication.Message, error) {
	if !deadline.After(d.src.clock.t) {
		d.spun = fmt.Sprintf("Next's deadline %s is not after now %s", deadline, d.src.clock.t)
		return replication.Message{}, errLoopWouldSpin
	}
	if d.tick() {
		// A finished flush or the stop interrupts the wait.
		return replication.Message{Kind: replication.MessageTimeout}, nil
	}
	if len(d.src.script) > 0 && !d.src.script[0].at.After(deadline) {
		d.src.inTx, d.midTx = d.midTx[0], d.midTx[1:]
	}
	return d.src.Next(deadline)
}

// after is the backpressure's timer: it fires at once, moving the clock on, unless a finished
// flush or the stop ends the wait.
func (d *drivenSource) after(dur time.Duration) <-chan time.Time {
	if d.tick() {
		return nil
	}
	return d.src.clock.after(dur)
}

func (d *drivenSource) Interrupt() { wake(d.woken) }

func (d *drivenSource) SkipSets([]bool) {}

func (d *drivenSource) SendStatus(flushed pglogrepl.LSN, replyRequested bool) error {
	d.log.add(entry{kind: statusSent, lsn: flushed})
	return d.src.SendStatus(flushed, replyRequested)
}

func (d *drivenSource) InTransaction() bool     { return d.src.InTransaction() }
func (d *drivenSource) Received() pglogrepl.LSN { return d.src.Received() }

// tick is one round of the harness. It reports whether it woke the loop: a flush finished or
// a stop fired. Unless the case has them together, at most one of them happens per tick, so
// the loop never has two ready at once and a select of them does not choose at random.
func (d *drivenSource) tick() bool {
	d.ticks++
	if d.deliveredAt == 0 && len(d.src.script) == 0 {
		d.deliveredAt = d.ticks
	}
	d.follow()
	if d.releaseDue() {
		if d.c.together && d.current.plan.fails && !d.cancelled {
			d.flusher.stop()
			d.cancelled = true
			d.cancel()
		}
		return true
	}
	return d.stopDue()
}

// follow learns of a window handed over since the last tick. Its flush call is started by the
// flusher goroutine, which may not have got there yet.
func (d *drivenSource) follow() {
	// Woken by a call starting, or by the one followed delivering its outcome.
	d.await(func() bool {
		for d.l.flushing && len(d.l.done) == 0 {
			c := d.flusher.call(d.followed)
			if c == nil {
				return d.current != nil && !d.flusher.hasReturned(d.current) // the one in flight
			}
			d.followed++
			d.current, c.releaseAt = c, d.ticks+c.plan.ticks
		}
		return true
	})
}

// releaseDue lets the flush in flight finish when its plan says, or once the session has
// stopped, and waits until the loop can collect its outcome.
func (d *drivenSource) releaseDue() bool {
	c := d.current
	stopped := d.cancelled || d.serverStopped
	if c == nil || c.released || c.plan.stuck || (d.ticks < c.releaseAt && !stopped) {
		return false
	}
	close(c.release)
	c.released = true
	d.await(func() bool { return len(d.l.done) > 0 }) // the flusher interrupts once it is in
	return true
}

// await waits on woken until cond holds. The bound is for liveness, not timing: a harness
// waiting for a flush that never comes fails the test rather than hanging it.
func (d *drivenSource) await(cond func() bool) {
	for !cond() {
		select {
		case <-d.woken:
		case <-time.After(10 * time.Second):
			d.t.Fatalf("the harness waits for a flush that does not come; replay with %s=%d\n%s", propertySeedEnv, d.c.seed, d.c)
		}
	}
}

func (d *drivenSource) stopDue() bool {
	switch {
	case !d.cancelled && (d.c.stopAt > 0 && d.ticks >= d.c.stopAt || d.ticks >= d.c.maxTicks ||
		d.deliveredAt > 0 && d.ticks >= d.deliveredAt+d.c.quietTicks):
		d.flusher.stop()
		d.cancelled = true
		d.cancel()
		return true
	case !d.serverStopped && d.c.serverStopAt > 0 && d.ticks >= d.c.serverStopAt:
		d.flusher.stop()
		d.serverStopped = true
		close(d.stopping)
		return true
	}
	return false
}

// caseOutcome is what a case's run left behind.
type caseOutcome struct {
	entries   []entry
	err       error
	stored    pglogrepl.LSN // the loop's stored position once run returned
	delivered int           // script events the source delivered
	spun      string
}

func (o caseOutcome) describe() string {
	var b strings.Builder
	b.WriteString("what happened:\n")
	for _, e := range o.entries {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	fmt.Fprintf(&b, "final stored %s, %d events delivered", o.stored, o.delivered)
	return b.String()
}

// runPropertyCase runs one case through run. report, when set, replaces the LSN each committed
// flush stores.
func runPropertyCase(t *testing.T, c propertyCase, report func(*window) pglogrepl.LSN, log *zap.Logger) caseOutcome {
	t.Helper()
	rec := &caseLog{}
	woken := make(chan struct{}, 1)
	f := &plannedFlusher{plans: c.flushes, report: report, log: rec, woken: woken}
	b := runLoop(t, f, func(cfg *Config) {
		cfg.MaxWindowSize = c.maxWindowSize
		cfg.FixedWindows = c.fixedWindows
		cfg.IdleConfirmBytes = c.idleConfirmBytes
		cfg.ShutdownTimeout = c.shutdownTimeout
		cfg.Log = log
		cfg.Observe = rec.observe
	})
	d := &drivenSource{t: t, c: c, src: b.src, l: b.l, flusher: f, log: rec, stopping: make(chan struct{}), woken: woken}
	for _, e := range c.events {
		b.src.script = append(b.src.script, e.scripted(b.t0))
		d.midTx = append(d.midTx, e.midTx)
	}
	b.l.src, b.l.after, b.l.stopping = d, d.after, d.stopping
	if c.probes {
		b.l.serverWALEnd = func(context.Context) (pglogrepl.LSN, error) { return c.serverWALEnd(b.clock.t.Sub(b.t0)), nil }
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	d.cancel = cancel

	err := b.l.run(ctx)
	return caseOutcome{entries: rec.snapshot(), err: err, stored: b.l.stored,
		delivered: len(c.events) - len(b.src.script), spun: d.spun}
}

// checkCase returns the ways the loop broke its rules in a case, in the order they happened.
// Only transactions with changes count: passing one that touched nothing of ours is what the
// idle confirmation is for.
//
//  1. No stored position (a Flushed event, and the loop's stored field at the end) and no
//     confirmed one (a status update) is at or past a transaction with changes that no flush
//     committed before it: the slot or a restart would skip that transaction.
//  2. Stored and confirmed positions never go back, and nothing is confirmed before it is stored.
//  3. No flush starts after one failed: a failed flush ends the session.
//  4. A clean exit (nil, errServerStopping) has committed and stored every transaction with
//     changes it received, confirmed what it stored, and no flush of it failed.
//  5. run returns only the errors a case can cause, and never waits with a deadline already past.
func checkCase(c propertyCase, out caseOutcome) []string {
	var violations []string
	violate := func(format string, args ...any) { violations = append(violations, fmt.Sprintf(format, args...)) }
	ends := c.changeEnds()
	tags := make([]int64, 0, len(ends))
	for tag := range ends {
		tags = append(tags, tag)
	}
	slices.SortFunc(tags, func(a, b int64) int { return cmp.Compare(ends[a], ends[b]) })
	committed := map[int64]bool{}
	passes := func(what string, p pglogrepl.LSN) {
		for _, tag := range tags {
			if ends[tag] <= p && !committed[tag] {
				violate("%s %s passes transaction %s (tag %d), which no committed flush carried", what, p, ends[tag], tag)
				return
			}
		}
	}

	stored, confirmed := pglogrepl.LSN(1000), pglogrepl.LSN(0)
	failed := -1
	for _, e := range out.entries {
		switch e.kind {
		case flushCalled:
			if failed >= 0 {
				violate("flush %d was called after flush %d failed", e.call, failed)
			}
		case flushFailed:
			if failed < 0 {
				failed = e.call
			}
		case flushCommitted:
			for _, tag := range e.carried {
				committed[tag] = true
			}
		case positionStored:
			if e.lsn < stored {
				violate("stored went back from %s to %s", stored, e.lsn)
			}
			stored = e.lsn
			passes("stored", e.lsn)
		case statusSent:
			if e.lsn == 0 {
				continue // a reply confirms nothing
			}
			switch {
			case e.lsn < confirmed:
				violate("confirmed went back from %s to %s", confirmed, e.lsn)
			case e.lsn > stored:
				violate("confirmed %s ahead of stored %s", e.lsn, stored)
			}
			confirmed = e.lsn
			passes("confirmed", e.lsn)
		}
	}
	if out.stored != stored {
		violate("the loop's stored position %s is not the last one it reported, %s", out.stored, stored)
	}
	passes("final stored", out.stored)

	if out.err == nil || errors.Is(out.err, errServerStopping) {
		if failed >= 0 {
			violate("a clean exit after flush %d failed", failed)
		}
		for _, e := range c.events[:out.delivered] {
			if e.kind != txWithChanges {
				continue
			}
			if !committed[e.tag] || out.stored < e.lsn {
				violate("a clean exit left transaction %s (tag %d) unapplied (stored %s)", e.lsn, e.tag, out.stored)
			}
		}
		if confirmed != out.stored {
			violate("a clean exit's last status update confirms %s, not the stored %s", confirmed, out.stored)
		}
	} else if !slices.ContainsFunc([]error{ErrShutdownIncomplete, ErrStopFlushFailed, errPlannedFlush, errServerSilent, errConnectionLost},
		func(want error) bool { return errors.Is(out.err, want) }) {
		violate("unexpected error: %v", out.err)
	}
	if out.spun != "" {
		violate("%s", out.spun)
	}
	return violations
}
