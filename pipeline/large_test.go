package pipeline_test

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// TestMillionRowTransaction streams one large transaction of plays and checks the heap grows
// by O(distinct IDs), not O(rows). It is not parallel, so the heap it measures is its own. The
// host's per-row trigger makes inserting 1,000,000 rows take minutes, so the default is
// 100,000; `make test-large` (CI runs it) sets LARGE_TX_ROWS=1000000.
func TestMillionRowTransaction(t *testing.T) {
	rows := int64(100_000)
	if v := os.Getenv("LARGE_TX_ROWS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		require.NoError(t, err)
		rows = n
	}
	const tracks = 10_000 // spread over many tracks: one track's aggregate row would chain 1M versions in the host trigger
	e := newEnv(t)
	e.exec(`INSERT INTO users (user_id, is_current, is_verified, txhash) SELECT g, true, g % 2 = 0, 'u' || g FROM generate_series(1, 100) g`)
	e.exec(`INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash) SELECT g, g % 100 + 1, true, false, 't' || g FROM generate_series(1, $1::int) g`, tracks)
	s := e.start()
	s.waitStreaming()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()

	insertStart := time.Now()
	e.exec(`INSERT INTO plays (play_item_id, created_at, user_id)
		SELECT g % $2::int + 1, '2025-04-01'::timestamp, g FROM generate_series(1, $1::int) g`, rows, tracks)
	committed := time.Now()
	maxID := e.count(`SELECT max(id) FROM plays`)
	eventually(t, "the transaction applied", func() bool {
		legacy, err := checkpoints.ReadLegacy(e.ctx, e.db.Pool)
		return err == nil && legacy[checkpoints.PlaysCheckpoint] == maxID
	})
	applied := time.Now()
	close(stop)
	<-sampled
	_, _, received, _, _ := s.obs.get()
	require.EqualValues(t, rows, received, "every play decoded")

	growth := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("1 transaction, %d rows, %d distinct tracks: insert (host trigger) %s, commit to applied %s, peak heap in use grew by %.1f MiB",
		rows, tracks, committed.Sub(insertStart).Round(time.Millisecond), applied.Sub(committed).Round(time.Millisecond), float64(growth)/(1<<20))
	require.Less(t, growth, int64(32<<20), "heap grows with distinct IDs, not rows")
	e.caughtUp()
	e.verified()
	s.stop()
}
