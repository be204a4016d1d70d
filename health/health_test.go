package health

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func setup(t *testing.T) (*Checker, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	return New(Options{Now: c.now}), c
}

// streaming puts h in the streaming state with a status update just sent.
func streaming(h *Checker) {
	h.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	h.Observe(pipeline.StatusSent{Received: 0x2000, Applied: 0x1000, ServerWALEnd: 0x1000})
}

func TestProbes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		drive    func(h *Checker, c *clock)
		live     bool
		ready    bool
		notReady string // part of Ready's error
	}{
		{
			name:     "starting",
			drive:    func(*Checker, *clock) {},
			live:     true,
			notReady: "not yet leading or standing by: starting",
		},
		{
			name: "never healthy, reconnecting for long",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
				c.advance(time.Hour)
			},
			live:     true,
			notReady: "not yet leading or standing by: reconnecting",
		},
		{
			name: "standby replica is live and ready",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStandby})
				c.advance(time.Hour)
			},
			live:  true,
			ready: true,
		},
		{
			name: "standby retrying the lock passes through starting",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStandby})
				c.advance(5 * time.Second)
				h.Observe(pipeline.StateChanged{State: pipeline.StateStarting})
				c.advance(DefaultReadyGrace)
			},
			live:  true,
			ready: true,
		},
		{
			name: "standby that lost the database, past the grace",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStandby})
				h.Observe(pipeline.StateChanged{State: pipeline.StateStarting})
				h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
				c.advance(DefaultReadyGrace + time.Second)
			},
			live:     true,
			notReady: "out of a healthy role for 31s (now reconnecting), past the grace of 30s",
		},
		{
			name: "catching up for long is live and ready",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateCatchingUp})
				c.advance(time.Hour)
			},
			live:  true,
			ready: true,
		},
		{
			name: "streaming with a recent status update",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(29 * time.Second)
			},
			live:  true,
			ready: true,
		},
		{
			name: "lag is never readiness",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
				h.Observe(pipeline.StatusSent{Received: 0, Applied: 0x1000, ServerWALEnd: 0x1000 + (1 << 40)})
			},
			live:  true,
			ready: true,
		},
		{
			name: "streaming before the first status update",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
				c.advance(DefaultStatusMaxAge)
			},
			live:  true,
			ready: true,
		},
		{
			name: "status update stale, within the grace",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(DefaultStatusMaxAge + DefaultReadyGrace)
			},
			live:  true,
			ready: true,
		},
		{
			name: "status update stale, past the grace",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(DefaultStatusMaxAge + DefaultReadyGrace + time.Second)
			},
			live:     true,
			notReady: "streaming but no status update for 1m1s",
		},
		{
			name: "stalled stream is not live",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(DefaultStallTimeout + time.Second)
			},
			notReady: "streaming but no status update for 2m1s",
		},
		{
			name: "stalled before the first status update",
			drive: func(h *Checker, c *clock) {
				h.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
				c.advance(DefaultStallTimeout + time.Second)
			},
			notReady: "streaming but no status update for 2m1s",
		},
		{
			name: "brief reconnect after streaming stays ready",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(5 * time.Second)
				h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
				c.advance(DefaultReadyGrace)
			},
			live:  true,
			ready: true,
		},
		{
			name: "long reconnect after streaming",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
				c.advance(DefaultReadyGrace + time.Second)
			},
			live:     true,
			notReady: "out of a healthy role for 31s (now reconnecting)",
		},
		{
			name: "reconnect after a stale stream counts from when the stream went stale",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				c.advance(DefaultStatusMaxAge + 20*time.Second)
				h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
				c.advance(11 * time.Second)
			},
			live:     true,
			notReady: "out of a healthy role for 31s (now reconnecting)",
		},
		{
			name: "stopped",
			drive: func(h *Checker, c *clock) {
				streaming(h)
				h.Observe(pipeline.StateChanged{State: pipeline.StateStopped})
			},
			notReady: "pipeline stopped",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, c := setup(t)
			tc.drive(h, c)
			if tc.live {
				require.NoError(t, h.Live())
			} else {
				require.Error(t, h.Live())
			}
			if tc.ready {
				require.NoError(t, h.Ready())
			} else {
				require.ErrorContains(t, h.Ready(), tc.notReady)
			}
		})
	}
}

// TestReadyAgain: a pipeline that fell out of its role is ready as soon as it is back in one,
// and a new outage gets a whole new grace.
func TestReadyAgain(t *testing.T) {
	t.Parallel()
	h, c := setup(t)
	streaming(h)
	h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
	c.advance(time.Hour)
	require.Error(t, h.Ready())

	h.Observe(pipeline.StateChanged{State: pipeline.StateStarting})
	require.Error(t, h.Ready())
	h.Observe(pipeline.StateChanged{State: pipeline.StateStandby}) // another replica took over meanwhile
	require.NoError(t, h.Ready())

	h.Observe(pipeline.StateChanged{State: pipeline.StateStarting})
	c.advance(DefaultReadyGrace)
	require.NoError(t, h.Ready())
	h.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	c.advance(DefaultStatusMaxAge + DefaultReadyGrace + time.Second)
	require.Error(t, h.Ready(), "no status update since taking over")
	h.Observe(pipeline.StatusSent{Received: 0, Applied: 1, ServerWALEnd: 1})
	require.NoError(t, h.Ready())
}

func TestReadyGraceOption(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	h := New(Options{ReadyGrace: time.Second, Now: c.now})
	h.Observe(pipeline.StateChanged{State: pipeline.StateStandby})
	h.Observe(pipeline.StateChanged{State: pipeline.StateReconnecting})
	c.advance(time.Second)
	require.NoError(t, h.Ready())
	c.advance(time.Millisecond)
	require.ErrorContains(t, h.Ready(), "past the grace of 1s")
}

func TestHandlers(t *testing.T) {
	t.Parallel()
	h, _ := setup(t)
	get := func(handler http.Handler) (int, string) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code, rec.Body.String()
	}

	code, body := get(h.LiveHandler())
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get(h.ReadyHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not yet leading or standing by: starting\n", body)

	streaming(h)
	code, _ = get(h.ReadyHandler())
	require.Equal(t, http.StatusOK, code)

	h.Observe(pipeline.StateChanged{State: pipeline.StateStopped})
	code, body = get(h.LiveHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "pipeline stopped\n", body)
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	h := New(Options{})
	require.Equal(t, DefaultReadyGrace, h.opts.ReadyGrace)
	require.Equal(t, DefaultStatusMaxAge, h.opts.StatusMaxAge)
	require.Equal(t, DefaultStallTimeout, h.opts.StallTimeout)
	require.NotNil(t, h.opts.Now)
}
