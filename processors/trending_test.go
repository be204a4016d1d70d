package processors_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/processors"
)

// A Friday and the Thursday before it (UTC).
var (
	payday   = time.Date(2026, 12, 4, 0, 0, 20, 0, time.UTC)
	thursday = payday.Add(-time.Hour)
)

// trendingFixture: 25 tracks ranked for the week (track i scores 100 − i; owner 3000 + i, the
// first five with many followers), 12 ranked playlists, and the three payouts switched on.
func trendingFixture(t *testing.T) *fixture {
	t.Helper()
	f := setup(t)
	f.exec(`UPDATE challenges SET active = true WHERE id IN ('tt', 'tut', 'tp')`)
	for i := int64(1); i <= 25; i++ {
		f.exec(`INSERT INTO tracks (track_id, owner_id, is_current, is_delete, blocknumber) VALUES ($1, $2, true, false, $1)`, i, 3000+i)
		f.exec(`INSERT INTO track_trending_scores (track_id, type, version, time_range, score) VALUES
			($1, 'TRACKS', 'pnagD', 'week', $2), ($1, 'TRACKS', 'pnagD', 'month', $3)`, i, float64(100-i), float64(i))
		followers := 10
		if i <= 5 || i == 22 {
			followers = 5000
		}
		f.exec(`INSERT INTO aggregate_user (user_id, follower_count) VALUES ($1, $2)`, 3000+i, followers)
	}
	for i := int64(1); i <= 12; i++ {
		f.exec(`INSERT INTO playlists (playlist_id, playlist_owner_id, is_current, is_delete, blocknumber) VALUES ($1, $2, true, false, 7)`, i, 4000+i)
		f.exec(`INSERT INTO playlist_trending_scores (playlist_id, type, version, time_range, score) VALUES ($1, 'PLAYLISTS', 'pnagD', 'week', $2)`, i, float64(i))
	}
	return f
}

func (f *fixture) payTrending(now time.Time) processors.TrendingPayout {
	f.t.Helper()
	var p processors.TrendingPayout
	f.inTx(func(tx pgx.Tx) {
		var err error
		p, err = processors.PayTrending(f.ctx, tx, now)
		require.NoError(f.t, err)
	})
	return p
}

func TestTrendingPayouts(t *testing.T) {
	t.Parallel()
	f := trendingFixture(t)
	require.Zero(t, f.payTrending(thursday).Active, "nothing is due on a Thursday")
	require.EqualValues(t, 0, f.count(`SELECT count(*) FROM user_challenges`))

	p := f.payTrending(payday)
	require.True(t, p.Complete())
	require.Equal(t, map[string]int{"tt": 10, "tut": 4, "tp": 10}, p.Paid)
	rows := f.progressRows()
	// tt: tracks 1–10 by score; ranks 1–5 earn 1000, 6–10 earn 100.
	require.Equal(t, progress{User: 3001, Current: 1, Complete: true, Amount: 1000}, rows["tt 2026-12-04:1"])
	require.Equal(t, progress{User: 3010, Current: 1, Complete: true, Amount: 100}, rows["tt 2026-12-04:10"])
	// tut: the top 20 and artists with 1,500 followers or more are out: tracks 21, 23, 24, 25.
	require.Equal(t, progress{User: 3021, Current: 1, Complete: true, Amount: 1000}, rows["tut 2026-12-04:1"])
	require.Equal(t, progress{User: 3023, Current: 1, Complete: true, Amount: 1000}, rows["tut 2026-12-04:2"])
	// tp: the playlists by score, 100 and 10.
	require.Equal(t, progress{User: 4012, Current: 1, Complete: true, Amount: 100}, rows["tp 2026-12-04:1"])
	require.Equal(t, progress{User: 4003, Current: 1, Complete: true, Amount: 10}, rows["tp 2026-12-04:10"])
	require.EqualValues(t, 24, f.count(`SELECT count(*) FROM trending_results WHERE week = '2026-12-04' AND version = 'pnagD'`))
	require.EqualValues(t, 0, f.count(`SELECT count(*) FROM user_challenges WHERE completed_blocknumber IS DISTINCT FROM 25`),
		"every winner stamped with the highest indexed block")

	// Later the same Friday, with the ranking moved: the week is recorded, nothing is paid again.
	f.exec(`UPDATE track_trending_scores SET score = score + track_id * 10`)
	writes := f.countWrites()
	again := f.payTrending(payday.Add(10 * time.Hour))
	require.True(t, again.Complete())
	require.Empty(t, again.Paid)
	require.EqualValues(t, 0, writes())

	// The next Friday is a new week.
	next := f.payTrending(payday.AddDate(0, 0, 7))
	require.Equal(t, 10, next.Paid["tt"])
	require.Equal(t, progress{User: 3025, Current: 1, Complete: true, Amount: 1000}, f.progressRows()["tt 2026-12-11:1"])
}

// TestTrendingPayoutEmptyRanking: an active payout with nothing ranked pays nothing and is not
// recorded, so it is tried again (upstream: at its next tick).
func TestTrendingPayoutEmptyRanking(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET active = true WHERE id = 'tp'`)
	p := f.payTrending(payday)
	require.Equal(t, 1, p.Active)
	require.False(t, p.Complete())
	require.EqualValues(t, 0, f.count(`SELECT count(*) FROM trending_results`))
}

// TestTrendingPayoutsConcurrent: two payers at once (two replicas, a takeover that overlaps
// the old leader's last transaction) pay each winner once: the second waits on the lock,
// then finds the week recorded.
func TestTrendingPayoutsConcurrent(t *testing.T) {
	t.Parallel()
	f := trendingFixture(t)
	writes := f.countWrites()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		paid []map[string]int
	)
	for range 4 {
		wg.Go(func() {
			err := pgx.BeginFunc(context.Background(), f.db.Pool, func(tx pgx.Tx) error {
				p, err := processors.PayTrending(context.Background(), tx, payday)
				mu.Lock()
				paid = append(paid, p.Paid)
				mu.Unlock()
				return err
			})
			require.NoError(t, err)
		})
	}
	wg.Wait()
	payers := 0
	for _, p := range paid {
		if len(p) > 0 {
			payers++
		}
	}
	require.Equal(t, 1, payers, fmt.Sprint(paid))
	require.EqualValues(t, 24, writes(), "each winner's row written once, with its block")
}
