package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamListenStreakTick is ListenStreakProcessor.Reconcile: the plays above the checkpoint
// (50,000 at most) in id order, walked against challenge_listen_streak; every user in the batch
// has its state written, every counted listen upserts its row, and the checkpoint moves to the
// last play read.
func upstreamListenStreakTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "e")
	if err != nil || !ok {
		return err
	}
	prev, err := upstreamReadCheckpoint(ctx, tx, processors.ListenStreakCheckpoint)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT id, user_id, created_at FROM plays WHERE id > $1 AND user_id IS NOT NULL
		ORDER BY id ASC LIMIT 50000`, prev)
	if err != nil {
		return err
	}
	type play struct {
		ID, User int64
		At       time.Time
	}
	plays, err := pgx.CollectRows(rows, pgx.RowToStructByPos[play])
	if err != nil || len(plays) == 0 {
		return err
	}
	type state struct {
		last   *time.Time
		streak int64
	}
	states := map[int64]*state{}
	for _, p := range plays {
		if states[p.User] != nil {
			continue
		}
		s := &state{}
		err := tx.QueryRow(ctx, `SELECT last_listen_date, listen_streak FROM challenge_listen_streak WHERE user_id = $1`,
			p.User).Scan(&s.last, &s.streak)
		if err != nil && err != pgx.ErrNoRows {
			return err
		}
		states[p.User] = s
	}
	type advance struct {
		user, streak int64
		at           time.Time
	}
	var advances []advance
	for _, p := range plays {
		s := states[p.User]
		if s.last != nil {
			gap := p.At.Sub(*s.last)
			if gap < 16*time.Hour {
				continue
			}
			if gap >= 48*time.Hour {
				s.streak = 1
			} else {
				s.streak++
			}
		} else {
			s.streak = 1
		}
		at := p.At
		s.last = &at
		advances = append(advances, advance{p.User, s.streak, p.At})
	}
	for user, s := range states {
		_, err := tx.Exec(ctx, `INSERT INTO challenge_listen_streak (user_id, last_listen_date, listen_streak) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO UPDATE SET last_listen_date = EXCLUDED.last_listen_date, listen_streak = EXCLUDED.listen_streak`,
			user, s.last, s.streak)
		if err != nil {
			return err
		}
	}
	for _, a := range advances {
		current, step := a.streak, int64(7)
		if a.streak > 7 {
			current, step = 1, 1
		}
		specifier := fmt.Sprintf("%x%s", a.user, a.at.UTC().Format("2006010215"))
		if err := upstreamUpsert(ctx, tx, "e", specifier, a.user, current, step, amount); err != nil {
			return err
		}
	}
	return upstreamWriteCheckpoint(ctx, tx, processors.ListenStreakCheckpoint, plays[len(plays)-1].ID)
}

var streakEpoch = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// listenPlay is play id of user at the time, as the stream carries it (a nil user is an
// anonymous play).
func listenPlay(id int64, user any, at time.Time) write {
	return write{
		sql:    `INSERT INTO plays (id, user_id, play_item_id, created_at) VALUES ($1, $2, 1, $3)`,
		args:   []any{id, user, at},
		change: &change{table: "plays", op: processors.Insert, cols: map[string]int64{"id": id, "play_item_id": 1}},
	}
}

// listenHistory: a few users listen at random gaps (under 16 h, a day, past 48 h), so that
// streaks grow past the target, break and restart; now and then an anonymous play or an amount
// change.
type listenHistory struct {
	nextID int64
	clock  map[int64]time.Time
}

func (h *listenHistory) gen(rng *rand.Rand, step int) []write {
	users := []int64{700, 701, 702, 0xfab}
	if h.clock == nil {
		h.clock = map[int64]time.Time{}
		for i, u := range users {
			h.clock[u] = streakEpoch.Add(time.Duration(i) * time.Hour)
		}
	}
	gaps := []time.Duration{3 * time.Hour, 15 * time.Hour, 16 * time.Hour, 20 * time.Hour, 24 * time.Hour,
		30 * time.Hour, 47 * time.Hour, 48 * time.Hour, 60 * time.Hour}
	var ws []write
	for range 1 + rng.IntN(4) {
		h.nextID++
		switch n := rng.IntN(20); {
		case n == 0:
			ws = append(ws, listenPlay(h.nextID, nil, streakEpoch))
		case n == 1:
			ws = append(ws, setAmount("e", int64(1+rng.IntN(5))))
		default:
			u := users[rng.IntN(len(users))]
			h.clock[u] = h.clock[u].Add(gaps[rng.IntN(len(gaps))])
			ws = append(ws, listenPlay(h.nextID, u, h.clock[u]))
		}
	}
	return ws
}

func TestListenStreakParity(t *testing.T) {
	t.Parallel()
	h := &listenHistory{}
	// The amount changes: a row keeps the amount of the tick that wrote it, so the steps' rows
	// differ from one tick over the whole history (takesAway).
	runParity(t, paritySpec{rule: "listen_streak", steps: 60, gen: h.gen, reference: upstreamListenStreakTick,
		takesAway: true, checkpointAhead: true})
}

// streakRow is an e row of user 700 for the listen at.
func streakRow(at time.Time, current, step, amount int64) (string, progress) {
	return "e 2bc" + at.Format("2006010215"), progress{User: 700, Current: current, Complete: current >= step, Amount: amount}
}

func rowsOf(kv ...any) map[string]progress {
	out := map[string]progress{}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1].(progress)
	}
	return out
}

func TestListenStreakCases(t *testing.T) {
	t.Parallel()
	day := func(n float64) time.Time { return streakEpoch.Add(time.Duration(n * float64(24*time.Hour))) }
	week := func() (ws []write, want map[string]progress) {
		want = map[string]progress{}
		for i := range 8 {
			ws = append(ws, listenPlay(int64(i+1), 700, day(float64(i))))
			k, p := streakRow(day(float64(i)), int64(i+1), 7, 1)
			if i == 7 {
				k, p = streakRow(day(float64(i)), 1, 1, 1)
			}
			want[k] = p
		}
		return ws, want
	}
	eightDays, eightRows := week()
	k1, first := streakRow(day(0), 1, 7, 1)
	k2, second := streakRow(day(1), 2, 7, 1)
	runRuleCases(t, "listen_streak", []ruleCase{
		{name: "a first listen starts a streak", steps: [][]write{{listenPlay(1, 700, day(0))}}, want: rowsOf(k1, first)},
		{
			name:  "a listen within 16 hours is ignored, a day later extends",
			steps: [][]write{{listenPlay(1, 700, day(0)), listenPlay(2, 700, day(0.6))}, {listenPlay(3, 700, day(1))}},
			want:  rowsOf(k1, first, k2, second),
		},
		{
			name:  "48 hours or more restarts the streak",
			steps: [][]write{{listenPlay(1, 700, day(0))}, {listenPlay(2, 700, day(2))}},
			want:  rowsOf(k1, first, "e 2bc"+day(2).Format("2006010215"), progress{User: 700, Current: 1, Amount: 1}),
		},
		{name: "seven days complete it and the eighth mints a row of its own", steps: [][]write{eightDays}, want: eightRows},
		{name: "the same days one window each", steps: splitWrites(eightDays), want: eightRows},
		{name: "an anonymous play counts for nobody", steps: [][]write{{listenPlay(1, nil, day(0))}}},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{{listenPlay(1, 700, day(0))}}},
	})
}

func splitWrites(ws []write) [][]write {
	var out [][]write
	for _, w := range ws {
		out = append(out, []write{w})
	}
	return out
}

// streakState is user's challenge_listen_streak row.
func (f *fixture) streakState(user int64) (last time.Time, length int64) {
	f.t.Helper()
	require.NoError(f.t, f.db.Pool.QueryRow(f.ctx, `SELECT last_listen_date, listen_streak FROM challenge_listen_streak
		WHERE user_id = $1`, user).Scan(&last, &length))
	return last, length
}

// TestListenStreakReplayCountsNothingTwice: a window applied again (its confirm lost, or the
// catch-up's PlayIDMargin re-scanning below the checkpoint) leaves the state and the rows as
// they were.
func TestListenStreakReplayCountsNothingTwice(t *testing.T) {
	t.Parallel()
	f := setup(t)
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	rule := ruleNamed(t, "listen_streak")
	day := func(n float64) time.Time { return streakEpoch.Add(time.Duration(n * float64(24*time.Hour))) }
	windows := [][]write{
		{listenPlay(1, 700, day(0)), listenPlay(2, 700, day(0.2))},
		{listenPlay(3, 700, day(1)), listenPlay(4, 700, day(1.5))},
		{listenPlay(5, 700, day(2.1))},
	}
	for _, w := range windows {
		f.runWrites(w)
		f.applyWindowOf(rule, w)
	}
	rows := f.ruleRows(rule)
	last, length := f.streakState(700)
	require.Equal(t, int64(3), length)
	require.Equal(t, day(2.1), last)
	for _, w := range windows {
		f.applyWindowOf(rule, w)
	}
	f.catchUp(processors.CatchUpOptions{PlayIDMargin: 100})
	require.Equal(t, rows, f.ruleRows(rule))
	last, length = f.streakState(700)
	require.Equal(t, int64(3), length, "a listen counted twice")
	require.Equal(t, day(2.1), last)
}

// TestListenStreakLateCommit decides the order question: a play committed after a higher id
// was applied is walked against the state as it is then. Upstream's tick has passed it and
// never reads it; here it counts when it comes 16 hours after the last counted listen.
func TestListenStreakLateCommit(t *testing.T) {
	t.Parallel()
	rule := ruleNamed(t, "listen_streak")
	day := func(n float64) time.Time { return streakEpoch.Add(time.Duration(n * float64(24*time.Hour))) }
	for _, tc := range []struct {
		name   string
		late   time.Time
		length int64
		last   time.Time
	}{
		// Play 3 (day 1.5) is applied first; play 2 is a listen of day 1.2, earlier than it:
		// ignored, as any listen before the last counted one.
		{name: "an earlier listen is ignored", late: day(1.2), length: 2, last: day(1.5)},
		// Play 2 is a listen of day 2.6 (its timestamp runs ahead of id order): more than 16
		// hours after the last counted listen, so it extends the streak.
		{name: "a later listen counts", late: day(2.6), length: 3, last: day(2.6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
			first := []write{listenPlay(1, 700, day(0))}
			overtaking := []write{listenPlay(3, 700, day(1.5))}
			late := []write{listenPlay(2, 700, tc.late)}
			for _, w := range [][]write{first, overtaking, late} {
				f.runWrites(w)
				f.applyWindowOf(rule, w)
			}
			last, length := f.streakState(700)
			require.Equal(t, tc.length, length)
			require.Equal(t, tc.last, last)
			require.EqualValues(t, 3, f.legacy()[processors.ListenStreakCheckpoint], "the checkpoint stays at the highest id")
		})
	}
}
