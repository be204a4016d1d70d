package processors

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The weekly trending payouts (upstream trending.go): on Fridays (UTC) the top 10 of the week's
// ranking earn a reward by rank, and a trending_results row per winner records the week as
// paid. No row change triggers them; the sidecar runs them on a clock (package payouts).
const (
	ChallengeTrendingTrack       = "tt"
	ChallengeTrendingUnderground = "tut"
	ChallengeTrendingPlaylist    = "tp"
)

// WeeklyTrendingPayouts names the payouts where a rule's name would be (status, logs).
const WeeklyTrendingPayouts = "weekly_trending"

// trendingVersion is the ranking strategy the payouts read, and trendingWinners how many of
// its top entries earn.
const (
	trendingVersion = "pnagD"
	trendingWinners = 10
)

// trendingKind is one of the three payouts.
type trendingKind struct {
	challenge string
	// resultType is the trending_results.type the payout records.
	resultType string
	// top lists (entity id, owner) of the week's winners in rank order: $1 the version, $2 the
	// number of winners.
	top string
	// amounts are the rewards of ranks 1–5 and 6–10.
	amounts [2]int64
}

// trendingKinds are the payouts in the order they run.
func trendingKinds() []trendingKind {
	live := `t.is_current = true AND t.is_delete = false AND t.is_unlisted = false AND t.is_available = true`
	return []trendingKind{
		{
			challenge: ChallengeTrendingTrack, resultType: "TRACKS", amounts: [2]int64{1000, 100},
			top: `SELECT s.track_id::bigint, t.owner_id::bigint FROM track_trending_scores s
				JOIN tracks t ON t.track_id = s.track_id AND t.is_current = true
				WHERE s.type = 'TRACKS' AND s.version = $1 AND s.time_range = 'week'
				ORDER BY s.score DESC, s.track_id DESC LIMIT $2`,
		},
		{
			// Underground: the week's TRACKS ranking without its top 20, by artists under 1,500
			// followers and followings.
			challenge: ChallengeTrendingUnderground, resultType: "UNDERGROUND_TRACKS", amounts: [2]int64{1000, 100},
			top: `WITH top20 AS (
				    SELECT s.track_id FROM track_trending_scores s JOIN tracks t ON t.track_id = s.track_id AND ` + live + `
				    WHERE s.type = 'TRACKS' AND s.version = $1 AND s.time_range = 'week'
				    ORDER BY s.score DESC, s.track_id DESC LIMIT 20)
				SELECT s.track_id::bigint, t.owner_id::bigint FROM track_trending_scores s
				JOIN tracks t ON t.track_id = s.track_id AND ` + live + `
				JOIN aggregate_user au ON au.user_id = t.owner_id
				WHERE s.type = 'TRACKS' AND s.version = $1 AND s.time_range = 'week'
				  AND au.follower_count < 1500 AND au.following_count < 1500
				  AND s.track_id NOT IN (SELECT track_id FROM top20)
				ORDER BY s.score DESC, s.track_id DESC LIMIT $2`,
		},
		{
			challenge: ChallengeTrendingPlaylist, resultType: "PLAYLISTS", amounts: [2]int64{100, 10},
			top: `SELECT s.playlist_id::bigint, pl.playlist_owner_id::bigint FROM playlist_trending_scores s
				JOIN playlists pl ON pl.playlist_id = s.playlist_id AND pl.is_current = true
				WHERE s.type = 'PLAYLISTS' AND s.version = $1 AND s.time_range = 'week'
				ORDER BY s.score DESC, s.playlist_id DESC LIMIT $2`,
		},
	}
}

// trendingIDs are the payouts' challenge ids.
func trendingIDs() []string {
	var ids []string
	for _, k := range trendingKinds() {
		ids = append(ids, k.challenge)
	}
	return ids
}

// TrendingPayout is what one PayTrending call did.
type TrendingPayout struct {
	// Week is the Friday (UTC) paid for; zero when now is no Friday.
	Week time.Time
	// Paid counts the winners paid by challenge; Done lists the active payouts the week is
	// recorded for (paid now or before). An active payout with an empty ranking is in neither:
	// upstream tries again at its next tick, and so does the scheduler.
	Paid map[string]int
	Done []string
	// Active counts the payouts the catalog has switched on.
	Active int
	Stats  Stats
}

// Complete says every active payout is recorded for the week: nothing is left to try.
func (p TrendingPayout) Complete() bool { return len(p.Done) == p.Active }

// trendingLock serialises payers (two replicas, a takeover): the second waits, then finds the
// week recorded. The trending_results rows are the record, so a payer that dies before its
// COMMIT leaves nothing behind.
const trendingLock = `SELECT pg_advisory_xact_lock(hashtext('challenge-stream: weekly trending payouts'))`

// PayTrending runs the weekly payouts due at now in the caller's transaction, as upstream's
// processors do on a Friday: each active one not yet recorded for the week pays its winners.
// It is safe to call at any time and any number of times.
func PayTrending(ctx context.Context, tx pgx.Tx, now time.Time) (TrendingPayout, error) {
	out := TrendingPayout{Paid: map[string]int{}, Stats: Stats{}}
	now = now.UTC()
	if now.Weekday() != time.Friday {
		return out, nil
	}
	out.Week = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	cat, err := LoadCatalog(ctx, tx)
	if err != nil {
		return out, fmt.Errorf("trending payouts: %w", err)
	}
	if _, err := tx.Exec(ctx, trendingLock); err != nil {
		return out, fmt.Errorf("trending payouts: lock: %w", err)
	}
	for _, k := range trendingKinds() {
		if _, ok := cat.Active[k.challenge]; !ok {
			continue
		}
		out.Active++
		n, err := k.pay(ctx, tx, out.Week, out.Stats)
		if err != nil {
			return out, fmt.Errorf("trending payout %s: %w", k.challenge, err)
		}
		if n < 0 {
			out.Done = append(out.Done, k.challenge)
			continue
		}
		if n > 0 {
			out.Paid[k.challenge] = n
			out.Done = append(out.Done, k.challenge)
		}
	}
	return out, nil
}

// pay pays the week's winners unless the week is recorded (-1); 0 means an empty ranking.
func (k trendingKind) pay(ctx context.Context, tx pgx.Tx, week time.Time, stats Stats) (int, error) {
	var recorded bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM trending_results WHERE type = $1 AND version = $2 AND week = $3)`,
		k.resultType, trendingVersion, week).Scan(&recorded)
	if err != nil || recorded {
		return -1, err
	}
	rows, err := tx.Query(ctx, k.top, trendingVersion, trendingWinners)
	if err != nil {
		return 0, err
	}
	type winner struct{ Entity, Owner int64 }
	winners, err := pgx.CollectRows(rows, pgx.RowToStructByPos[winner])
	if err != nil || len(winners) == 0 {
		return 0, err
	}
	day := week.Format("2006-01-02")
	var (
		users, amounts []int64
		specs          []string
	)
	for i, w := range winners {
		rank := i + 1
		_, err := tx.Exec(ctx, `INSERT INTO trending_results (user_id, id, rank, type, version, week)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			w.Owner, fmt.Sprint(w.Entity), rank, k.resultType, trendingVersion, week)
		if err != nil {
			return 0, err
		}
		amount := k.amounts[0]
		if rank > 5 {
			amount = k.amounts[1]
		}
		users, amounts, specs = append(users, w.Owner), append(amounts, amount), append(specs, fmt.Sprintf("%s:%d", day, rank))
	}
	// One write per winner, complete, stamped with the current indexed block: the disburser
	// pages rewards by completed_blocknumber, so a NULL one is never swept. (Upstream upserts,
	// then stamps with an UPDATE, and the host's trigger on user_challenges fires twice.) A row
	// the week already has is left as it is: the week is unrecorded, so only a payer that wrote
	// the rows without trending_results could have made it.
	tag, err := tx.Exec(ctx, `
INSERT INTO user_challenges (challenge_id, user_id, specifier, is_complete, current_step_count, amount,
    completed_at, completed_blocknumber)
SELECT $1, w.user_id, w.specifier, true, 1, w.amount, now()::timestamp,
       GREATEST(COALESCE((SELECT max(blocknumber) FROM tracks), 0), COALESCE((SELECT max(blocknumber) FROM playlists), 0))
FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS w(user_id, specifier, amount)
ON CONFLICT (challenge_id, specifier) DO NOTHING`, k.challenge, users, specs, amounts)
	if err != nil {
		return 0, err
	}
	c := stats[k.challenge]
	c.Inserted += int(tag.RowsAffected())
	c.Unchanged += len(winners) - int(tag.RowsAffected())
	stats[k.challenge] = c
	return len(winners), nil
}
