package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTrendingPayoutKilledAndTakenOver: on a Friday the leader dies in the middle of the weekly
// payout (its transaction open, winners written but not committed); the standby takes over and
// pays the week, once; a restart pays nothing more.
func TestTrendingPayoutKilledAndTakenOver(t *testing.T) {
	e := setup(t)
	for i := 1; i <= 12; i++ {
		e.db.Exec(t, `INSERT INTO tracks (track_id, owner_id, is_current, is_delete) VALUES ($1, $1, true, false)`, i)
		e.db.Exec(t, `INSERT INTO track_trending_scores (track_id, type, version, time_range, score)
			VALUES ($1, 'TRACKS', 'pnagD', 'week', $2)`, i, float64(i))
	}
	friday := "CHALLENGE_STREAM_CLOCK=2026-12-04T00:00:05Z"
	flags := []string{"--window", "100ms", "--payout-retry", "100ms"}
	first := e.run([]string{friday, "CHALLENGE_STREAM_FAILPOINT=in-trending-payout:1"}, flags...)
	e.waitStreaming(first)
	second := e.run([]string{friday}, flags...)
	// The payouts are switched on while both run: the leader finds them at its next try.
	e.db.Exec(t, `UPDATE challenges SET active = true WHERE id IN ('tt', 'tp')`)
	require.NotEqual(t, 0, first.exited(90*time.Second), "killed in the payout")
	require.Contains(t, first.out.String(), "failpoint reached")
	killedAt := time.Now()

	paid := func() int64 { return e.count(`SELECT count(*) FROM user_challenges WHERE challenge_id = 'tt'`) }
	eventually(t, "the standby to take over and pay", func() bool { return paid() == 10 })
	t.Logf("paid %s after the leader died", time.Since(killedAt).Round(time.Millisecond))
	require.EqualValues(t, 10, e.count(`SELECT count(*) FROM trending_results WHERE type = 'TRACKS'`))
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM trending_results WHERE type = 'PLAYLISTS'`),
		"nothing ranked: tp is tried again, not recorded")
	require.Contains(t, second.out.String(), "paid the weekly trending rewards")

	second.kill9()
	e.db.Exec(t, `UPDATE track_trending_scores SET score = -score`)
	third := e.run([]string{friday}, flags...)
	e.waitStreaming(third)
	eventually(t, "the new leader to try the payouts", func() bool {
		return strings.Contains(third.out.String(), "tried the weekly trending payouts")
	})
	require.EqualValues(t, 10, paid(), "the week is recorded: nothing paid twice")
	require.EqualValues(t, 12, e.count(`SELECT user_id FROM user_challenges WHERE specifier = '2026-12-04:1'`))
}
