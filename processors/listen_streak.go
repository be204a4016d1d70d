package processors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// ChallengeListenStreak is e, the daily listen streak (upstream listen_streak.go).
const ChallengeListenStreak = "e"

// ListenStreakCheckpoint is e's legacy checkpoint: the highest plays.id applied.
const ListenStreakCheckpoint = "challenges:e:last_play_id"

// The streak's rules: a listen at least streakNext after the last counted one extends the
// streak, one streakBroken or more after it starts a new streak, anything sooner is ignored.
// Reaching streakTarget completes the streak's row; every counted day after it mints a row of
// its own.
const (
	streakNext   = 16 * time.Hour
	streakBroken = 48 * time.Hour
	streakTarget = 7
)

// listenStreakRule is e. Unlike the other rules it keeps state of its own, the host's
// challenge_listen_streak row per user (the last counted listen and the streak's length), so
// it consumes plays rather than re-deriving users: the dirty keys are the play ids, and the
// flush reads those plays and walks them, writing the state with the rows and the LSN.
//
// Order. Upstream walks plays in id order and never looks below its checkpoint. Here a
// window's plays are walked in id order and windows in commit order, so the two agree while
// plays commit in id order. A play that commits after a higher id was applied is walked
// against the state as it is then: counted if it comes streakNext after the last counted
// listen, otherwise ignored; upstream never sees it once its checkpoint has passed it.
//
// Walking a play a second time changes nothing: every play walked is either the last counted
// listen or less than streakNext after it (the last counted listen only moves later). So the
// re-scans below a checkpoint (PlayIDMargin) and a replay of a window whose confirm was lost
// cannot count a listen twice; the stored LSN also keeps a replayed window from being
// applied again.
//
// Memory: while e is active the stream keeps one key per play, not per distinct key, so a
// transaction of a million plays holds a million ids until its commit (while e is switched
// off, as in the production catalog today, it keeps none).
func listenStreakRule() Rule {
	return incremental(Rule{
		Name:       "listen_streak",
		Challenges: []string{ChallengeListenStreak},
		Sources:    []Source{{Table: "plays", Ops: Insert, Column: "id", Keys: "plays"}},
		active:     booleanActive(ChallengeListenStreak),
	}, columnSpec{
		checkpoint: ListenStreakCheckpoint,
		column:     "id",
		lowest:     0, // serial ids start at 1
		margin:     func(o CatchUpOptions) int64 { return o.PlayIDMargin },
		recompute:  walkListens,
		events:     true,
	})
}

// listen is a play as the streak reads it.
type listen struct {
	User int64
	At   time.Time
}

// streak is a user's challenge_listen_streak row.
type streak struct {
	last   *time.Time
	length int64
}

// walkListens applies the plays of the given ids, in id order.
func walkListens(ctx context.Context, q Querier, cat Catalog, playIDs []int64) (Stats, error) {
	e, ok := cat.Active[ChallengeListenStreak]
	if !ok || len(playIDs) == 0 {
		return Stats{}, nil
	}
	stats := Stats{}
	err := chunks(sortedKeys(playIDs), idBatchSize, func(ids []int64) error {
		s, err := walkListenBatch(ctx, q, e, ids)
		stats.Add(s)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("walk listens: %w", err)
	}
	return stats, nil
}

func walkListenBatch(ctx context.Context, q Querier, e Entry, ids []int64) (Stats, error) {
	rows, err := q.Query(ctx, `SELECT user_id, created_at FROM plays
		WHERE id = ANY(@ids::bigint[]) AND user_id IS NOT NULL ORDER BY id`, pgx.NamedArgs{"ids": ids})
	if err != nil {
		return nil, err
	}
	listens, err := pgx.CollectRows(rows, pgx.RowToStructByPos[listen])
	if err != nil {
		return nil, err
	}
	if len(listens) == 0 {
		return Stats{}, nil
	}
	var users []int64
	for _, l := range listens {
		users = append(users, l.User)
	}
	streaks, err := readStreaks(ctx, q, sortedKeys(users))
	if err != nil {
		return nil, err
	}
	changed := map[int64]bool{}
	var out []Row
	for _, l := range listens {
		s := streaks[l.User]
		switch {
		case s.last == nil:
			s.length = 1
		case l.At.Sub(*s.last) < streakNext:
			continue
		case l.At.Sub(*s.last) >= streakBroken:
			s.length = 1
		default:
			s.length++
		}
		at := l.At
		s.last = &at
		streaks[l.User] = s
		changed[l.User] = true
		r := Row{ChallengeID: ChallengeListenStreak, Specifier: hexUserID(l.User) + at.UTC().Format("2006010215"),
			UserID: l.User, Current: s.length, Step: streakTarget, Amount: e.Amount}
		if s.length > streakTarget {
			r.Current, r.Step = 1, 1 // a day past the target: a reward of its own
		}
		out = append(out, r)
	}
	if err := writeStreaks(ctx, q, streaks, changed); err != nil {
		return nil, err
	}
	return Upsert(ctx, q, out)
}

// readStreaks reads the users' challenge_listen_streak rows; a user without one is absent.
func readStreaks(ctx context.Context, q Querier, users []int64) (map[int64]streak, error) {
	rows, err := q.Query(ctx, `SELECT user_id, last_listen_date, listen_streak FROM challenge_listen_streak
		WHERE user_id = ANY(@users::bigint[])`, pgx.NamedArgs{"users": users})
	if err != nil {
		return nil, fmt.Errorf("read streaks: %w", err)
	}
	out := map[int64]streak{}
	var (
		user int64
		s    streak
	)
	_, err = pgx.ForEachRow(rows, []any{&user, &s.last, &s.length}, func() error {
		out[user] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read streaks: %w", err)
	}
	return out, nil
}

// writeStreaks stores the changed users' streaks in one statement, in user order.
func writeStreaks(ctx context.Context, q Querier, streaks map[int64]streak, changed map[int64]bool) error {
	if len(changed) == 0 {
		return nil
	}
	users := make([]int64, 0, len(changed))
	for u := range changed {
		users = append(users, u)
	}
	slices.Sort(users)
	lasts, lengths := make([]time.Time, len(users)), make([]int64, len(users))
	for i, u := range users {
		lasts[i], lengths[i] = *streaks[u].last, streaks[u].length
	}
	_, err := q.Exec(ctx, `INSERT INTO challenge_listen_streak (user_id, last_listen_date, listen_streak)
		SELECT * FROM unnest(@users::int[], @lasts::timestamp[], @lengths::int[])
		ON CONFLICT (user_id) DO UPDATE SET last_listen_date = EXCLUDED.last_listen_date,
		    listen_streak = EXCLUDED.listen_streak`,
		pgx.NamedArgs{"users": users, "lasts": lasts, "lengths": lengths})
	if err != nil {
		return fmt.Errorf("write streaks: %w", err)
	}
	return nil
}
