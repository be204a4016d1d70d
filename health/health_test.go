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
	return New(Options{MaxLagBytes: 1000, Now: c.now}), c
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
			notReady: "not streaming: starting",
		},
		{
			name: "standby replica is live but not ready",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStandby)
				c.advance(time.Hour)
			},
			live:     true,
			notReady: "not streaming: standby",
		},
		{
			name: "catching up for long is live",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateCatchingUp)
				c.advance(time.Hour)
			},
			live:     true,
			notReady: "not streaming: catching_up",
		},
		{
			name: "streaming with a recent status update",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0x2000, 0x1000, 0x1000+1000)
				c.advance(29 * time.Second)
			},
			live:  true,
			ready: true,
		},
		{
			name: "streaming before the first status update",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
			},
			live:     true,
			notReady: "no status update sent yet",
		},
		{
			name: "status update too old",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0, 0x1000, 0x1000)
				c.advance(31 * time.Second)
			},
			live:     true,
			notReady: "last status update 31s ago",
		},
		{
			name: "lag above the bound",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0, 0x1000, 0x1000+1001)
			},
			live:     true,
			notReady: "replication lag 1001 bytes",
		},
		{
			name: "stalled stream is not live",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0, 0x1000, 0x1000)
				c.advance(DefaultStallTimeout + time.Second)
			},
			notReady: "last status update",
		},
		{
			name: "stalled before the first status update",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				c.advance(DefaultStallTimeout + time.Second)
			},
			notReady: "no status update sent yet",
		},
		{
			name: "reconnecting after streaming",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0, 0x1000, 0x1000)
				h.StateChanged(pipeline.StateReconnecting)
				c.advance(DefaultStallTimeout + time.Second)
			},
			live:     true,
			notReady: "not streaming: reconnecting",
		},
		{
			name: "stopped",
			drive: func(h *Checker, c *clock) {
				h.StateChanged(pipeline.StateStreaming)
				h.StatusSent(0, 0x1000, 0x1000)
				h.StateChanged(pipeline.StateStopped)
			},
			notReady: "not streaming: stopped",
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

func TestReadyAgainAfterCatchingUp(t *testing.T) {
	t.Parallel()
	h, c := setup(t)
	h.StateChanged(pipeline.StateStreaming)
	h.StatusSent(0, 0x1000, 0x1000+5000)
	require.Error(t, h.Ready())
	c.advance(10 * time.Second)
	h.StatusSent(0, 0x1000+5000, 0x1000+5000)
	require.NoError(t, h.Ready())
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
	require.Equal(t, "not streaming: starting\n", body)

	h.StateChanged(pipeline.StateStreaming)
	h.StatusSent(0, 1, 1)
	code, _ = get(h.ReadyHandler())
	require.Equal(t, http.StatusOK, code)

	h.StateChanged(pipeline.StateStopped)
	code, body = get(h.LiveHandler())
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "pipeline stopped\n", body)
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	h := New(Options{})
	require.Equal(t, DefaultMaxLagBytes, h.opts.MaxLagBytes)
	require.Equal(t, DefaultStatusMaxAge, h.opts.StatusMaxAge)
	require.Equal(t, DefaultStallTimeout, h.opts.StallTimeout)
	require.NotNil(t, h.opts.Now)
}
