package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
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
			require.EqualValues(t, e.count(`SELECT max(id) FROM plays`), legacy[checkpoints.PlaysCheckpoint])
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

// TestBackpressureOutlastsShortWalSenderTimeout: the server's wal_sender_timeout (2 s here,
// set on the sidecar's own connections as a DBA might set it on the role) is shorter than the
// status interval (10 s). A flush waits 5 s behind a row lock while the next window fills, so
// the loop stops reading (backpressure) and sends only its scheduled status updates. Unless
// those come within the timeout, the walsender ends the session and the backlog behind every
// slow flush is dropped and replayed. The session must stay up: the same walsender before and
// after, and the window applied.
func TestBackpressureOutlastsShortWalSenderTimeout(t *testing.T) {
	e := setup(t)
	s := e.streamingArtist(0x40, 400, func(c *pipeline.Config) {
		c.Database.RuntimeParams["wal_sender_timeout"] = "2s"
		c.StatusInterval = 10 * time.Second
		c.MaxWindowSize = 5
	})
	e.plays(400, 300)
	e.caughtUp()
	walsender, _ := e.sidecarBackends()
	require.NotZero(t, walsender)

	lock, err := e.db.Pool.Begin(e.ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(context.WithoutCancel(e.ctx)) }()
	tag, err := lock.Exec(e.ctx, `SELECT 1 FROM user_challenges WHERE challenge_id = 'p2' AND specifier = '40:1000' FOR UPDATE`)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected(), "the p2 row is locked")
	e.plays(400, 1) // its flush waits for the lock
	eventually(t, "the flush to wait for the lock", func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2
			AND wait_event_type = 'Lock'`, e.db.Name, pipeline.FlushApplicationName) == 1
	})
	for track := int64(1000); track < 1010; track++ { // distinct tracks: the next window fills
		e.plays(track, 1)
	}
	time.Sleep(5 * time.Second) // the condition under test: a flush blocked for 2.5 timeouts
	require.NoError(t, lock.Rollback(e.ctx))

	e.caughtUp()
	after, _ := e.sidecarBackends()
	require.Equal(t, walsender, after, "the walsender outlived the slow flush")
	e.verified()
	s.stop()
}
