// Package health answers the liveness and readiness probes from what the pipeline reports.
//
// Live means the process's pipeline has not stopped and, while it streams, is still turning:
// it sends a standby status update at least every status interval (10 s), so a streaming loop
// that has sent none for StallTimeout is stuck (a hung flush, say) and restarting it helps.
// Every other state is live: a standby replica waits on purpose, and a catch-up or a
// reconnect backoff can legitimately take long.
//
// Ready means this replica is doing the work: streaming, a status update sent within
// StatusMaxAge, and the confirmed position no more than MaxLagBytes behind the server's WAL
// end. A standby replica is live but not ready, so a readiness-based alert or load balancer
// sees exactly one ready replica per slot.
package health

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// Defaults for Options.
const (
	DefaultMaxLagBytes  int64 = 1 << 30 // 1 GiB
	DefaultStatusMaxAge       = 30 * time.Second
	// DefaultStallTimeout is twice the server's default wal_sender_timeout: by then a loop that
	// is merely disconnected has reported a reconnect.
	DefaultStallTimeout = 2 * time.Minute
)

// Options configure a Checker. Zero values take the defaults.
type Options struct {
	// MaxLagBytes is the largest replication lag at which the replica is ready.
	MaxLagBytes int64
	// StatusMaxAge is how recent the last status update must be for the replica to be ready.
	StatusMaxAge time.Duration
	// StallTimeout is how long a streaming pipeline may go without a status update before it
	// is no longer live.
	StallTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Checker follows the pipeline as a pipeline.Observer and answers the probes. It is safe for
// concurrent use.
type Checker struct {
	opts Options

	mu         sync.Mutex
	state      pipeline.State
	since      time.Time // when state was entered
	lastStatus time.Time
	lag        uint64
}

var _ pipeline.Observer = (*Checker)(nil)

// New returns a Checker in the starting state.
func New(opts Options) *Checker {
	if opts.MaxLagBytes == 0 {
		opts.MaxLagBytes = DefaultMaxLagBytes
	}
	if opts.StatusMaxAge == 0 {
		opts.StatusMaxAge = DefaultStatusMaxAge
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Checker{opts: opts, state: pipeline.StateStarting, since: opts.Now()}
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
		// The loop sends its first status update as it starts streaming; measure from the
		// later of that and entering the state.
		last := c.lastStatus
		if c.since.After(last) {
			last = c.since
		}
		if age := now.Sub(last); age > c.opts.StallTimeout {
			return fmt.Errorf("streaming but no status update for %s", age.Round(time.Second))
		}
	}
	return nil
}

// Ready returns nil when this replica streams and keeps up, else why not.
func (c *Checker) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	switch {
	case c.state != pipeline.StateStreaming:
		return fmt.Errorf("not streaming: %s", c.state)
	case c.lastStatus.IsZero():
		return errors.New("no status update sent yet")
	case now.Sub(c.lastStatus) > c.opts.StatusMaxAge:
		return fmt.Errorf("last status update %s ago (limit %s)", now.Sub(c.lastStatus).Round(time.Second), c.opts.StatusMaxAge)
	case c.lag > uint64(c.opts.MaxLagBytes):
		return fmt.Errorf("replication lag %d bytes above the limit of %d", c.lag, c.opts.MaxLagBytes)
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

// StateChanged implements pipeline.Observer.
func (c *Checker) StateChanged(s pipeline.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != c.state {
		c.state, c.since = s, c.opts.Now()
	}
}

// StatusSent implements pipeline.Observer.
func (c *Checker) StatusSent(_, applied, serverWALEnd pglogrepl.LSN) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastStatus = c.opts.Now()
	c.lag = 0
	if serverWALEnd > applied {
		c.lag = uint64(serverWALEnd - applied)
	}
}

// TransactionReceived implements pipeline.Observer.
func (c *Checker) TransactionReceived(*replication.Transaction) {}

// Flushed implements pipeline.Observer.
func (c *Checker) Flushed(pipeline.FlushResult) {}

// Reconnecting implements pipeline.Observer.
func (c *Checker) Reconnecting(error) {}

// SlotRecreated implements pipeline.Observer.
func (c *Checker) SlotRecreated(string) {}
