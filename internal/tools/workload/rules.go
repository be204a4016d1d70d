package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// RuleLoad is a steady rate of the changes the other rules read, beside the plays and
// comments of Drive: each tick commits one transaction that earns one reward of v, t, cp, w,
// m, rd, b or fp (in turn), plus changes that earn nothing — a users update, a save of some
// track, a trending score moving below the top 10 — so every flush has keys for every rule.
type RuleLoad struct {
	// Interval is the time between two transactions. Default 100ms (2.5 rewards/s per rule).
	Interval time.Duration
	Seed     uint64
}

// ruleSetup is what a rule load needs from the database, read and prepared once.
type ruleSetup struct {
	// tracks are live tracks of verified owners: the first candidates take part in the
	// trending ranking, the others are pin and save targets; any is a contest's winner.
	tracks, owners []int64
	candidates     int
	// listeners are users who repost, save and get renamed.
	listeners []int64
	// next ids: users, comments (far above the ids Drive's model hands out), events,
	// playlists, and the next user_events and playlists block and sol_purchases slot.
	user, comment, event, playlist, block, slot int64
}

// DriveRules runs the rule load until duration has passed or ctx is cancelled (both a normal
// end), calling onCrossing from its goroutine for each reward a committed transaction must
// earn. It first gives trending candidates two early reposters each and a ranking of ten.
func (l RuleLoad) DriveRules(ctx context.Context, conn *pgx.Conn, duration time.Duration, onCrossing func(Crossing)) error {
	if l.Interval <= 0 {
		l.Interval = 100 * time.Millisecond
	}
	s, err := prepareRules(ctx, conn)
	if err != nil {
		return fmt.Errorf("rule load: %w", err)
	}
	rng := rand.New(rand.NewPCG(l.Seed, 7))
	tick := time.NewTicker(l.Interval)
	defer tick.Stop()
	end := time.Now().Add(duration)
	for i := 0; time.Now().Before(end); i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		var crossings []Crossing
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var err error
			crossings, err = s.step(ctx, tx, rng, i)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("rule load: %w", err)
		}
		committed := time.Now()
		for _, c := range crossings {
			c.CommittedAt = committed
			onCrossing(c)
		}
	}
	return nil
}

// maxCandidates bounds how many tracks take part in the trending ranking: half the live tracks
// of verified artists, at most this many (the other half are pin, save and contest targets).
const maxCandidates = 1000

func prepareRules(ctx context.Context, conn *pgx.Conn) (*ruleSetup, error) {
	s := &ruleSetup{}
	rows, err := conn.Query(ctx, `
SELECT t.track_id, t.owner_id FROM tracks t
JOIN users u ON u.user_id = t.owner_id AND u.is_current AND u.is_verified AND NOT u.is_deactivated
WHERE t.is_current AND NOT t.is_delete ORDER BY t.track_id LIMIT $1`, 4*maxCandidates)
	if err != nil {
		return nil, err
	}
	var track, owner int64
	_, err = pgx.ForEachRow(rows, []any{&track, &owner}, func() error {
		s.tracks, s.owners = append(s.tracks, track), append(s.owners, owner)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Ten on top, at least as many to enter it, and as many targets.
	if len(s.tracks) < 40 {
		return nil, fmt.Errorf("%d live tracks of verified artists: the rule load needs 40", len(s.tracks))
	}
	s.candidates = min(maxCandidates, len(s.tracks)/2)
	err = conn.QueryRow(ctx, `SELECT
		(SELECT max(user_id) + 1 FROM users), (SELECT COALESCE(max(comment_id), 0) + 100000000 FROM comments),
		(SELECT COALESCE(max(event_id), 0) + 1 FROM events), (SELECT COALESCE(max(playlist_id), 0) + 1 FROM playlists),
		GREATEST((SELECT COALESCE(max(blocknumber), 0) FROM user_events), (SELECT COALESCE(max(blocknumber), 0) FROM playlists)) + 1,
		(SELECT COALESCE(max(slot), 0) + 1 FROM sol_purchases)`).Scan(&s.user, &s.comment, &s.event, &s.playlist, &s.block, &s.slot)
	if err != nil {
		return nil, err
	}
	rows, err = conn.Query(ctx, `SELECT user_id FROM users WHERE is_current AND NOT is_verified ORDER BY user_id LIMIT 2000`)
	if err != nil {
		return nil, err
	}
	var u int64
	_, err = pgx.ForEachRow(rows, []any{&u}, func() error { s.listeners = append(s.listeners, u); return nil })
	if err != nil || len(s.listeners) < 4 {
		return nil, errors.Join(err, errors.New("too few listeners for the rule load"))
	}
	// Every candidate has two early reposters and a low score; ten have a high one.
	_, err = conn.Exec(ctx, `
INSERT INTO reposts (user_id, repost_item_id, repost_type, is_current, is_delete, created_at, txhash)
SELECT l.u, c.t, 'track', true, false, TIMESTAMP '2025-01-01' + c.i * interval '1 minute' + l.k * interval '1 second', 'rl'
FROM unnest($1::bigint[]) WITH ORDINALITY AS c(t, i)
CROSS JOIN LATERAL (SELECT ($2::bigint[])[1 + ((c.i * 2 + k) % array_length($2::bigint[], 1))] AS u, k
                    FROM generate_series(0, 1) k) l
ON CONFLICT DO NOTHING`, s.tracks[:s.candidates], s.listeners)
	if err != nil {
		return nil, err
	}
	_, err = conn.Exec(ctx, `
INSERT INTO track_trending_scores (track_id, type, version, time_range, score)
SELECT c.t, 'TRACKS', 'pnagD', 'week', CASE WHEN c.i <= 10 THEN 100000 + c.i ELSE c.i END
FROM unnest($1::bigint[]) WITH ORDINALITY AS c(t, i)
ON CONFLICT (track_id, type, version, time_range) DO UPDATE SET score = EXCLUDED.score`, s.tracks[:s.candidates])
	return s, err
}

// step writes one tick: the reward of turn i and the noise.
func (s *ruleSetup) step(ctx context.Context, tx pgx.Tx, rng *rand.Rand, i int) ([]Crossing, error) {
	exec := func(sql string, args ...any) error {
		_, err := tx.Exec(ctx, sql, args...)
		return err
	}
	listener := s.listeners[rng.IntN(len(s.listeners))]
	noise := []struct {
		sql  string
		args []any
	}{
		{`UPDATE users SET handle = 'renamed' WHERE user_id = $1 AND is_current`, []any{listener}},
		{`INSERT INTO saves (user_id, save_item_id, save_type, is_current, is_delete, created_at, txhash)
		  VALUES ($1, $2, 'track', true, false, now(), 'rl') ON CONFLICT DO NOTHING`,
			[]any{listener, s.tracks[s.candidates+rng.IntN(len(s.tracks)-s.candidates)]}},
		{`UPDATE track_trending_scores SET score = $2 WHERE track_id = $1 AND type = 'TRACKS'
		  AND version = 'pnagD' AND time_range = 'week' AND score < 100000`,
			[]any{s.tracks[10+rng.IntN(s.candidates-10)], float64(rng.IntN(1000))}},
	}
	for _, n := range noise {
		if err := exec(n.sql, n.args...); err != nil {
			return nil, err
		}
	}
	var out []Crossing
	switch i % 8 {
	case 0: // v: a newly verified user
		s.user++
		if err := exec(`INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, true, 'rl', 'v')`,
			s.user); err != nil {
			return nil, err
		}
		out = append(out, Crossing{ChallengeID: "v", Specifier: fmt.Sprintf("%x", s.user), ArtistID: s.user})
	case 1: // t: a candidate enters the top ten, its two early reposters earn
		k := 10 + (i/4)%(s.candidates-10)
		if err := exec(`UPDATE track_trending_scores SET score = $2 WHERE track_id = $1 AND type = 'TRACKS'
			AND version = 'pnagD' AND time_range = 'week'`, s.tracks[k], float64(1_000_000+i)); err != nil {
			return nil, err
		}
		if i/4 >= s.candidates-10 {
			break // promoted before: its reposters were paid then (only small databases wrap)
		}
		rows, err := tx.Query(ctx, `SELECT user_id FROM reposts WHERE repost_item_id = $1 AND txhash = 'rl'`, s.tracks[k])
		if err != nil {
			return nil, err
		}
		var u int64
		_, err = pgx.ForEachRow(rows, []any{&u}, func() error {
			out = append(out, Crossing{ChallengeID: "t", Specifier: fmt.Sprintf("%x:t:%x", u, s.tracks[k]), ArtistID: u})
			return nil
		})
		if err != nil {
			return nil, err
		}
	case 2: // cp: a verified owner pins a new comment
		k := s.candidates + (i/4)%(len(s.tracks)-s.candidates)
		s.comment++
		if err := exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, txhash, blockhash)
			VALUES ($1, 'pin me', $2, $3, 'Track', now(), NULL, 'rl', 'rl')`, s.comment, listener, s.tracks[k]); err != nil {
			return nil, err
		}
		if err := exec(`UPDATE tracks SET pinned_comment_id = $2 WHERE track_id = $1 AND is_current`, s.tracks[k], s.comment); err != nil {
			return nil, err
		}
		if listener != s.owners[k] {
			out = append(out, Crossing{ChallengeID: "cp", Specifier: fmt.Sprintf("%x:%x", listener, s.tracks[k]), ArtistID: listener})
		}
	case 3: // w: a new verified host names a remix the winner of a new contest
		k := rng.IntN(len(s.tracks))
		s.user++
		s.event++
		if err := exec(`INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, true, 'rl', 'host')`,
			s.user); err != nil {
			return nil, err
		}
		if err := exec(`INSERT INTO events (event_id, event_type, user_id, event_data)
			VALUES ($1, 'remix_contest', $2, jsonb_build_object('winners', jsonb_build_array($3::bigint)))`,
			s.event, s.user, s.tracks[k]); err != nil {
			return nil, err
		}
		out = append(out, Crossing{ChallengeID: "w", Specifier: fmt.Sprintf("%x:%x", s.event, s.owners[k]), ArtistID: s.owners[k]})
	case 4, 5, 6, 7:
		c, err := s.oneStep(exec, rng, listener, i%8)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// oneStep writes a new user and the one row that earns it m (a mobile profile), rd (a
// referrer), b (a purchase of a track of a verified artist) or fp (a first playlist).
func (s *ruleSetup) oneStep(exec func(string, ...any) error, rng *rand.Rand, listener int64, turn int) (Crossing, error) {
	s.user++
	s.block++
	u := s.user
	if err := exec(`INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, false, 'rl', 'new')`, u); err != nil {
		return Crossing{}, err
	}
	switch turn {
	case 4:
		err := exec(`INSERT INTO user_events (user_id, blocknumber, is_current, is_mobile_user) VALUES ($1, $2, true, true)`, u, s.block)
		return Crossing{ChallengeID: "m", Specifier: fmt.Sprintf("%x", u), ArtistID: u}, err
	case 5:
		err := exec(`INSERT INTO user_events (user_id, blocknumber, is_current, referrer) VALUES ($1, $2, true, $3)`, u, s.block, listener)
		return Crossing{ChallengeID: "rd", Specifier: fmt.Sprintf("%x:%x", u, listener), ArtistID: u}, err
	case 6:
		s.slot++
		track := s.tracks[rng.IntN(len(s.tracks))]
		err := exec(`INSERT INTO sol_purchases (signature, instruction_index, amount, slot, content_type, content_id, buyer_user_id, is_valid)
			VALUES ($1, 0, 2000000, $2, 'track', $3, $4, true)`, fmt.Sprint("rl", s.slot), s.slot, track, u)
		return Crossing{ChallengeID: "b", Specifier: fmt.Sprintf("%x:%x", u, track), ArtistID: u}, err
	default:
		s.playlist++
		err := exec(`INSERT INTO playlists (playlist_id, playlist_owner_id, blocknumber, is_current, is_delete) VALUES ($1, $2, $3, true, false)`,
			s.playlist, u, s.block)
		return Crossing{ChallengeID: "fp", Specifier: fmt.Sprintf("%x", u), ArtistID: u}, err
	}
}
