// Package health answers the liveness and readiness probes from what the pipeline reports.
//
// Live means the process's pipeline has not stopped and, while it streams, is still turning:
// it sends a standby status update at least every status interval (10 s), so a streaming loop
// that has sent none for StallTimeout is stuck (a hung flush, say) and restarting it helps.
// Every other state is live: a standby replica waits on purpose, and a catch-up or a
// reconnect backoff can legitimately take long.
//
// Ready means the process is healthy in its role, whichever role that is:
//   - leading: catching up inside a new slot's snapshot, or streaming with a status update
//     sent within StatusMaxAge;
//   - standing by: another replica holds the leader lock. The pipeline only gets there by
//     asking the server for the lock, so the database connection works.
//
// Leadership, lag and "no replica streams" are never readiness. The sidecar runs inside the
// host API's pod: a failing readiness probe takes the whole pod out of its Service, so a
// readiness tied to leadership would leave N-1 of N API pods serving nothing, and a lag spike
// would take out the leader's. Those are metrics (challenge_stream_leader,
// challenge_stream_slot_lag_bytes) and alerts instead.
//
// A reconnect must not flip readiness at once either: a standby passes through "starting"
// every few seconds as it retries the lock, and a leader reconnects after a server restart.
// So readiness fails only once the pipeline has been out of a healthy role for longer than
// ReadyGrace (default 30 s; with the kubelet's default three failed probes 10 s apart, a
// broken sidecar leaves its Service about a minute after it broke). A process that has never
// reached a healthy role is not ready, and neither is a stopped pipeline.
package health

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

// Defaults for Options.
const (
	// DefaultStatusMaxAge is three status intervals: a streaming loop that has sent no status
	// update for that long is not doing its job, whatever its state says.
	DefaultStatusMaxAge = 30 * time.Second
	// DefaultReadyGrace covers a reconnect after a server restart or a network blip, and the
	// "starting" a standby passes through on every retry of the lock.
	DefaultReadyGrace = 30 * time.Second
	// DefaultStallTimeout is twice the server's default wal_sender_timeout: by then a loop that
	// is merely disconnected has reported a reconnect.
	DefaultStallTimeout = 2 * time.Minute
)

// Options configure a Checker. Zero values take the defaults.
type Options struct {
	// StatusMaxAge is how recent the last status update of a streaming pipeline must be for
	// it to count as healthy.
	StatusMaxAge time.Duration
	// ReadyGrace is how long the pipeline may be out of a healthy role (reconnecting,
	// starting, streaming without status updates) and still be ready.
	ReadyGrace time.Duration
	// StallTimeout is how long a streaming pipeline may go without a status update before it
	// is no longer live.
	StallTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Checker follows the pipeline (Observe) and answers the probes. It is safe for
// concurrent use.
type Checker struct {
	opts Options

	mu         sync.Mutex
	state      pipeline.State
	since      time.Time // when state was entered
	lastStatus time.Time
	// healthyAt is the last moment a state left behind was healthy; zero until the pipeline
	// first reaches a healthy role.
	healthyAt time.Time
}

// New returns a Checker in the starting state.
func New(opts Options) *Checker {
	if opts.StatusMaxAge == 0 {
		opts.StatusMaxAge = DefaultStatusMaxAge
	}
	if opts.ReadyGrace == 0 {
		opts.ReadyGrace = DefaultReadyGrace
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Checker{opts: opts, state: pipeline.StateStarting, since: opts.Now()}
}

// lastProgress is when a streaming pipeline last showed it turns: the loop sends its first
// status update as it starts streaming, so measure from the later of that and entering the
// state.
func (c *Checker) lastProgress() time.Time {
	if c.since.After(c.lastStatus) {
		return c.since
	}
	return c.lastStatus
}

// lastHealthy is the last moment up to now at which the pipeline was healthy in its role;
// zero if never.
func (c *Checker) lastHealthy(now time.Time) time.Time {
	switch c.state {
	case pipeline.StateStandby, pipeline.StateCatchingUp:
		return now
	case pipeline.StateStreaming:
		if until := c.lastProgress().Add(c.opts.StatusMaxAge); until.Before(now) {
			return latest(until, c.healthyAt)
		}
		return now
	}
	return c.healthyAt
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Live returns nil when the pipeline is alive, else why not.
func (c *Checker) Live() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	switch {
	case c.state == pipeline.StateStopped:
		return errors.New("pipeline stopped")
	case c.state == pipeline.StateStreaming:
		if age := now.Sub(c.lastProgress()); age > c.opts.StallTimeout {
			return fmt.Errorf("streaming but no status update for %s", age.Round(time.Second))
		}
	}
	return nil
}

// Ready returns nil when the pipeline is healthy in its role (leading and streaming, or
// standing by), or left such a role no more than ReadyGrace ago; else why not.
func (c *Checker) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if c.state == pipeline.StateStopped {
		return errors.New("pipeline stopped")
	}
	healthy := c.lastHealthy(now)
	if healthy.IsZero() {
		return fmt.Errorf("not yet leading or standing by: %s", c.state)
	}
	if out := now.Sub(healthy); out > c.opts.ReadyGrace {
		if c.state == pipeline.StateStreaming {
			return fmt.Errorf("streaming but no status update for %s", now.Sub(c.lastProgress()).Round(time.Second))
		}
		return fmt.Errorf("out of a healthy role for %s (now %s), past the grace of %s", out.Round(time.Second), c.state, c.opts.ReadyGrace)
	}
	return nil
}

// LiveHandler serves /livez: 200 "ok", or 503 and the reason.
func (c *Checker) LiveHandler() http.Handler { return probeHandler(c.Live) }

// ReadyHandler serves /readyz: 200 "ok", or 503 and the reason.
func (c *Checker) ReadyHandler() http.Handler { return probeHandler(c.Ready) }

func probeHandler(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// Observe follows the pipeline's state and status updates (pipeline.Config.Observe).
func (c *Checker) Observe(e pipeline.Event) {
	switch e := e.(type) {
	case pipeline.StateChanged:
		c.stateChanged(e.State)
	case pipeline.StatusSent:
		c.statusSent()
	}
}

func (c *Checker) stateChanged(s pipeline.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s == c.state {
		return
	}
	now := c.opts.Now()
	c.healthyAt = c.lastHealthy(now)
	c.state, c.since = s, now
}

func (c *Checker) statusSent() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	// A status update after a stale stretch makes the pipeline healthy again; remember how
	// long the earlier stretch was healthy, in case the state changes before the next probe.
	c.healthyAt = c.lastHealthy(now)
	c.lastStatus = now
}
