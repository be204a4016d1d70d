package pipeline

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// The window rule: when the window being filled goes to the flusher, how long it may gather,
// and when the loop must wake up to look again. Its decisions are pure functions of its state
// and a windowView; loop.go does the I/O and tells it what happened (a transaction taken, a
// keepalive between transactions, a flush finished, a WAL-end probe read).
//
// Group commit: with the flusher idle, a window closes as soon as the stream has caught up, so
// at low load every transaction is applied right after its commit and under load batches grow
// by themselves; while the stream keeps delivering it closes on its length or when full.
// FixedWindows keeps only those last two rules.

// When a flush takes more than half a window the flusher is saturated (a backlog after
// downtime, a burst): the next window stretches to flushStretch times that flush, at most
// maxStretch windows. A flush's cost grows with the distinct artists it recomputes, not with
// plays, so fewer, larger flushes leave the CPU to decoding. Catching up ends the stretch.
const (
	flushStretch = 4
	maxStretch   = 8
)

// backlogLag is how old a transaction's commit must be for the stream to count as draining a
// backlog (after downtime, or behind a burst). Windows then take their longest stretch: the
// rows are late already, and each flush recomputes every artist it touches, so fewer, larger
// flushes leave the cores to the walsender's decoding, which is what the drain waits for.
// Catching up ends it. The server's clock against ours: a skew beyond this only stretches
// windows of a stream that never catches up.
//
// It is the second of two "behind" thresholds. The first, replication's backlogAge (1 s), only
// batches socket reads — it costs no latency, so it comes early; this one trades latency for
// fewer flushes, so it waits until the rows are clearly late.
const backlogLag = 5 * time.Second

// While a window is stretched the loop reads the server's WAL end every probeInterval (a
// trivial query on the idle flush connection) and closes the window once the stream will reach
// it within about one flush (see nearingEnd). Without it the last window of a backlog holds
// most of the backlog, and its flush — every artist the backlog touched — only starts once
// the stream has caught up. The pace is measured over at least minPaceSample.
const (
	probeInterval = 100 * time.Millisecond
	probeTimeout  = time.Second
	minPaceSample = 50 * time.Millisecond
)

// windowRule is the policy (from Config) and the state the window decisions read.
type windowRule struct {
	window  time.Duration // Config.Window
	maxSize int           // Config.MaxWindowSize
	fixed   bool          // Config.FixedWindows

	caughtUp  bool          // the last message was a keepalive between transactions
	behind    bool          // the last transaction committed more than backlogLag ago
	lastFlush time.Duration // how long the last flush with changes took
	// closedEarly: a window closed near the backlog's end, or a probe timed out; no more
	// probes until the stream catches up.
	closedEarly bool
	serverEnd   pglogrepl.LSN // the server's WAL end when last probed
	probedAt    time.Time
	paceFrom    time.Time     // the pace of the stream is measured since then,
	paceLSN     pglogrepl.LSN // from this position
}

// windowView is what the rule needs to know of the open window, the flusher and the stream.
type windowView struct {
	flushing   bool
	hasChanges bool
	size       int
	openedAt   time.Time
	received   pglogrepl.LSN
	probeable  bool // the loop can read the server's WAL end
}

func newWindowRule(cfg Config) windowRule {
	return windowRule{window: cfg.Window, maxSize: cfg.MaxWindowSize, fixed: cfg.FixedWindows}
}

// due reports whether the window goes to the flusher now, and whether it goes early: near the
// end of a backlog (see nearingEnd).
func (r *windowRule) due(v windowView, now time.Time) (due, early bool) {
	switch {
	case v.flushing || !v.hasChanges:
		return false, false
	case v.size >= r.maxSize:
		return true, false
	case r.caughtUp && !r.fixed:
		return true, false
	case r.nearingEnd(v, now):
		return true, true
	}
	return !now.Before(v.openedAt.Add(r.length())), false
}

// length is the configured window, stretched while the stream drains a backlog or the flusher
// is saturated.
func (r *windowRule) length() time.Duration {
	switch {
	case r.behind:
		return maxStretch * r.window
	case r.lastFlush <= r.window/2:
		return r.window
	}
	return min(flushStretch*r.lastFlush, maxStretch*r.window)
}

// wakeAt is the earliest time the window rule needs the loop awake: the window's end and the
// next probe. A window that waits for the flusher sets no time: the finishing flush wakes the
// loop itself, and a time already past would spin. The zero time means none.
func (r *windowRule) wakeAt(v windowView) time.Time {
	var at time.Time
	if !v.flushing && v.hasChanges {
		at = v.openedAt.Add(r.length())
	}
	if r.probing(v) {
		at = earliest(at, r.probedAt.Add(probeInterval))
	}
	return at
}

// probing reports whether the loop watches for the end of a backlog: a stretched window with
// changes, the flusher idle and a way to read the server's WAL end. FixedWindows keeps windows
// to their length.
//
// A backlog closes one window early, not one per flush: each flush recomputes nearly every
// artist the backlog touched, whatever its plays, so the windows after the early one wait for
// the stream to catch up (or for their stretch). Closing again whenever the rest was one flush
// away drained 100,000 plays in four flushes of about 1,950 artists each (550 ms in all), two
// of them while the stream still had to be decoded on the same two cores.
func (r *windowRule) probing(v windowView) bool {
	return v.probeable && !r.fixed && !v.flushing && !r.closedEarly && v.hasChanges && r.length() > r.window
}

func (r *windowRule) probeDue(v windowView, now time.Time) bool {
	return r.probing(v) && !now.Before(r.probedAt.Add(probeInterval))
}

// nearingEnd reports whether a stretched window should close because the stream will reach
// the server's WAL end (as last probed) within about one flush, at the pace it has kept since
// the window opened. The window's flush then runs while the stream reads the rest, and the
// last window holds only what arrived meanwhile: its flush, which comes after the stream has
// caught up, is that much smaller. Once a flush has run, its duration is the estimate; before,
// half a window.
func (r *windowRule) nearingEnd(v windowView, now time.Time) bool {
	if !r.probing(v) || r.serverEnd == 0 {
		return false
	}
	if v.received >= r.serverEnd {
		return true
	}
	elapsed := now.Sub(r.paceFrom)
	if elapsed < minPaceSample || v.received <= r.paceLSN {
		return false
	}
	pace := float64(v.received-r.paceLSN) / elapsed.Seconds() // bytes of WAL per second
	eta := time.Duration(float64(r.serverEnd-v.received) / pace * float64(time.Second))
	flush := r.lastFlush
	if flush == 0 {
		flush = r.window / 2
	}
	return eta <= flush
}

// took notes a transaction taken into the window: whether it is late, and, while the window
// holds no change yet, where the pace is measured from.
func (r *windowRule) took(commitTime, now time.Time, windowEmpty bool, received pglogrepl.LSN) {
	r.caughtUp = false
	r.behind = now.Sub(commitTime) > backlogLag
	if windowEmpty {
		r.paceFrom, r.paceLSN = now, received
	}
}

// caughtUpNow notes a keepalive between transactions: the walsender has read all the WAL there
// is, and a stretched window goes back to its length.
func (r *windowRule) caughtUpNow() {
	r.caughtUp = true
	r.lastFlush = 0
	r.behind = false
	r.closedEarly = false
}

// probed notes the server's WAL end read at now.
func (r *windowRule) probed(end pglogrepl.LSN, now time.Time) { r.serverEnd, r.probedAt = end, now }

// stopProbing ends the probing of this backlog until the stream catches up: a window closed
// early, or a probe timed out.
func (r *windowRule) stopProbing() { r.closedEarly = true }

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
