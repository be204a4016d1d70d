package payouts_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/payouts"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// TestMain starts the test cluster and checks that no scheduler goroutine outlives its test.
func TestMain(m *testing.M) {
	code := pgtest.Run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestUntilNextFriday(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		at   string
		want time.Duration
	}{
		{"2026-12-03T23:59:30Z", 30 * time.Second}, // Thursday night
		{"2026-12-04T00:00:00Z", 7 * 24 * time.Hour},
		{"2026-12-04T12:00:00Z", 6*24*time.Hour + 12*time.Hour},
		{"2026-12-05T00:00:00Z", 6 * 24 * time.Hour},
	} {
		at, err := time.Parse(time.RFC3339, tc.at)
		require.NoError(t, err)
		require.Equal(t, tc.want, payouts.UntilNextFriday(at), tc.at)
	}
}

// TestSchedulerPaysOnFridayAsLeader: a standby pays nothing; the leader pays the week once,
// however often it tries; a restarted scheduler finds the week paid.
func TestSchedulerPaysOnFridayAsLeader(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	db.Exec(t, `UPDATE challenges SET active = true WHERE id = 'tt'`)
	for i := 1; i <= 12; i++ {
		db.Exec(t, `INSERT INTO tracks (track_id, owner_id, is_current, is_delete) VALUES ($1, $1, true, false)`, i)
		db.Exec(t, `INSERT INTO track_trending_scores (track_id, type, version, time_range, score)
			VALUES ($1, 'TRACKS', 'pnagD', 'week', $2)`, i, float64(i))
	}
	friday := time.Date(2026, 12, 4, 0, 0, 5, 0, time.UTC)
	var (
		mu      sync.Mutex
		settled []time.Time
	)
	run := func(leading bool, d time.Duration) {
		s := payouts.New(db.ConnConfig(t), 20*time.Millisecond, zaptest.NewLogger(t))
		s.SetClock(func() time.Time { return friday })
		s.Settled = func(week time.Time) { mu.Lock(); settled = append(settled, week); mu.Unlock() }
		state := pipeline.StateStandby
		if leading {
			state = pipeline.StateStreaming
		}
		s.Observe(pipeline.StateChanged{State: state})
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		wg.Go(func() { s.Run(ctx) })
		wg.Wait()
	}
	run(false, 300*time.Millisecond)
	require.EqualValues(t, 0, db.QueryInt(t, `SELECT count(*) FROM user_challenges`), "a standby pays nothing")
	require.Empty(t, settled, "a standby settles nothing")
	run(true, 300*time.Millisecond)
	require.Equal(t, []time.Time{time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)}, settled, "settled once: the week is then done")
	require.EqualValues(t, 10, db.QueryInt(t, `SELECT count(*) FROM user_challenges WHERE challenge_id = 'tt'`))
	require.EqualValues(t, 12, db.QueryInt(t, `SELECT min(user_id) FROM user_challenges WHERE specifier = '2026-12-04:1'`))
	db.Exec(t, `UPDATE track_trending_scores SET score = -score`)
	run(true, 300*time.Millisecond)
	require.EqualValues(t, 10, db.QueryInt(t, `SELECT count(*) FROM user_challenges`), "the week is paid: a restart pays nothing")
	require.EqualValues(t, 10, db.QueryInt(t, `SELECT count(*) FROM trending_results`))
}
