package pipeline_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/hostdb"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// TestConnectionsTerminatedWhilePlaysArrive: an operator (or a failover tool) terminates the
// sidecar's backends with pg_terminate_backend while plays keep arriving. The session ends, the
// pipeline reconnects with backoff and replays what it had not applied; nothing is lost and a
// from-scratch recompute finds no difference.
func TestConnectionsTerminatedWhilePlaysArrive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		walsender, flushing bool
	}{
		{name: "walsender", walsender: true},
		{name: "flush connection", flushing: true},
		{name: "both", walsender: true, flushing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			e.artist(0x30, true)
			e.track(300, 0x30)
			s := e.start()
			s.waitStreaming()

			plays := e.playsUntil(300, 10)
			eventually(t, "some play transactions received", func() bool {
				_, txs, _, _, _ := s.obs.get()
				return txs >= 5
			})
			walsender, flush := e.sidecarBackends()
			require.NotZero(t, walsender)
			require.NotZero(t, flush)
			var victims []int32
			if tc.walsender {
				victims = append(victims, walsender)
			}
			if tc.flushing {
				victims = append(victims, flush)
			}
			e.terminate(victims...)
			eventually(t, "a new session streaming", func() bool {
				w, f := e.sidecarBackends()
				return w != 0 && w != walsender && f != 0 && f != flush
			})
			_, before, _, _, _ := s.obs.get()
			eventually(t, "plays received in the new session", func() bool {
				_, txs, _, _, _ := s.obs.get()
				return txs >= before+5
			})
			require.NoError(t, plays())

			e.caughtUp()
			legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
			require.NoError(t, err)
			require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), legacy.LastPlayID)
			require.EqualValues(t, min(e.count(`SELECT count(*) FROM plays`), 1000),
				e.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '30:1000'`))
			e.verified()
			s.stop()
		})
	}
}

// playsUntil inserts batches of n plays of a track, one transaction each, until the returned
// function is called; that waits for the batch in flight (a cancelled INSERT could still
// commit after the test moved on) and returns the writer's error.
func (e *env) playsUntil(track, n int64) (stop func() error) {
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-quit:
				done <- nil
				return
			default:
			}
			if err := hostdb.InsertPlays(e.ctx, e.db.Pool, track, n, in2025); err != nil {
				done <- err
				return
			}
		}
	}()
	stop = sync.OnceValue(func() error {
		close(quit)
		return <-done
	})
	e.t.Cleanup(func() { _ = stop() })
	return stop
}

// sidecarBackends returns the PIDs of the sidecar's walsender and flush connection (0 when
// absent).
func (e *env) sidecarBackends() (walsender, flush int32) {
	e.t.Helper()
	err := e.db.Pool.QueryRow(e.ctx, `SELECT
			coalesce((SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1), 0),
			coalesce((SELECT max(pid) FROM pg_stat_activity WHERE datname = $2 AND application_name = $3), 0)`,
		e.db.Slot, e.db.Name, pipeline.FlushApplicationName).Scan(&walsender, &flush)
	require.NoError(e.t, err)
	return walsender, flush
}

// terminate signals the backends all at once (one ending makes the sidecar close the other)
// and waits until they have exited.
func (e *env) terminate(pids ...int32) {
	e.t.Helper()
	// pg_terminate_backend is false for a PID that has already exited: the sidecar closes its
	// other connection as soon as the first one ends, which can beat the second signal.
	var signalled bool
	require.NoError(e.t, e.db.Pool.QueryRow(e.ctx,
		`SELECT bool_and(pg_terminate_backend(pid)
		                 OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p.pid))
		 FROM unnest($1::int4[]) AS p(pid)`, pids).Scan(&signalled))
	require.True(e.t, signalled, "backends %v signalled or already gone", pids)
	eventually(e.t, "terminated backends to exit", func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int4[])`, pids) == 0
	})
}
