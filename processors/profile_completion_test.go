package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamProfileTick is ProfileCompletionProcessor.Reconcile: users with a users, follows
// (as follower), reposts or saves row above the checkpoint, their seven steps derived and
// written to challenge_profile_completion and user_challenges.
func upstreamProfileTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "p")
	if err != nil || !ok {
		return err
	}
	_, step, err := upstreamStart(ctx, tx, "p")
	if err != nil || step == nil {
		return err
	}
	return upstreamIncremental(ctx, tx, processors.ProfileCompletionCheckpoint, `
SELECT user_id, blocknumber FROM (
    SELECT follower_user_id AS user_id, blocknumber FROM follows WHERE blocknumber > $1
    UNION ALL SELECT user_id, blocknumber FROM reposts WHERE blocknumber > $1
    UNION ALL SELECT user_id, blocknumber FROM saves WHERE blocknumber > $1
    UNION ALL SELECT user_id, blocknumber FROM users WHERE blocknumber > $1
) s ORDER BY blocknumber ASC LIMIT $2`,
		func(users []int64) error {
			rows, err := tx.Query(ctx, `
SELECT u.user_id, (u.bio IS NOT NULL), (u.name IS NOT NULL),
       (u.profile_picture IS NOT NULL OR u.profile_picture_sizes IS NOT NULL),
       (u.cover_photo IS NOT NULL OR u.cover_photo_sizes IS NOT NULL),
       (fc.cnt >= $2),
       EXISTS (SELECT 1 FROM reposts r WHERE r.user_id = u.user_id AND r.is_current AND NOT r.is_delete),
       EXISTS (SELECT 1 FROM saves sv WHERE sv.user_id = u.user_id AND sv.is_current AND NOT sv.is_delete)
FROM users u
LEFT JOIN LATERAL (SELECT count(*) AS cnt FROM (SELECT 1 FROM follows f
    WHERE f.follower_user_id = u.user_id AND f.is_current AND NOT f.is_delete LIMIT $2) z) fc ON true
WHERE u.user_id = ANY($1) AND u.is_current = true AND u.handle_lc IS NOT NULL AND u.is_deactivated = false`,
				users, 5)
			if err != nil {
				return err
			}
			type flags struct {
				User                           int64
				Bio, Name, Pic, Cover, F, R, S bool
			}
			all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[flags])
			if err != nil {
				return err
			}
			for _, f := range all {
				var n int64
				for _, b := range []bool{f.Bio, f.Name, f.Pic, f.Cover, f.F, f.R, f.S} {
					if b {
						n++
					}
				}
				_, err := tx.Exec(ctx, `INSERT INTO challenge_profile_completion (user_id, profile_description, profile_name,
					profile_picture, profile_cover_photo, follows, reposts, favorites) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
					ON CONFLICT (user_id) DO UPDATE SET profile_description = EXCLUDED.profile_description,
					profile_name = EXCLUDED.profile_name, profile_picture = EXCLUDED.profile_picture,
					profile_cover_photo = EXCLUDED.profile_cover_photo, follows = EXCLUDED.follows,
					reposts = EXCLUDED.reposts, favorites = EXCLUDED.favorites`,
					f.User, f.Bio, f.Name, f.Pic, f.Cover, f.F, f.R, f.S)
				if err != nil {
					return err
				}
				if err := upstreamUpsert(ctx, tx, "p", fmt.Sprintf("%x", f.User), f.User, n, *step, amount); err != nil {
					return err
				}
			}
			return nil
		})
}

// profile is what a users version says of the profile steps.
type profile struct {
	bio, name, picture, cover, deactivated bool
	handle                                 bool
}

// profileHistory: a few users edit their profiles (a new version each time), follow others,
// repost and save. Unless sticky, a step once reached stays reached (no cleared field, no
// unfollow, no undo, no deactivation), so the final state derives every row the ticks wrote.
// The amount never changes: an incomplete row keeps the amount it was written with until its
// user changes again, which verify reports (as it should a stale amount).
type profileHistory struct {
	sticky  bool
	block   int64
	txhash  int
	profile map[int64]profile
	follows map[[2]int64]bool // live follows
	acts    map[[2]any]bool   // live reposts and saves: table, user
}

var profileUsers = []int64{1000, 1001, 1002, 1003, 0x4d2}

func (h *profileHistory) version(user int64, p profile) []write {
	var ws []write
	if _, ok := h.profile[user]; ok {
		ws = append(ws, write{
			sql:    `UPDATE users SET is_current = false WHERE user_id = $1 AND is_current`,
			args:   []any{user},
			change: &change{table: "users", op: processors.Update, cols: map[string]int64{"user_id": user}},
		})
	}
	h.profile[user] = p
	h.txhash++
	str := func(set bool, v string) any {
		if set {
			return v
		}
		return nil
	}
	return append(ws, write{
		sql: `INSERT INTO users (user_id, handle, handle_lc, bio, name, profile_picture_sizes, cover_photo,
			is_current, is_deactivated, blocknumber, txhash) VALUES ($1, 'h', $2, $3, $4, $5, $6, true, $7, $8, $9)`,
		args: []any{user, str(p.handle, "h"), str(p.bio, "bio"), str(p.name, "name"), str(p.picture, "Qm1"),
			str(p.cover, "Qm2"), p.deactivated, h.block, fmt.Sprint("u", h.txhash)},
		change: &change{table: "users", op: processors.Insert, cols: map[string]int64{"user_id": user, "blocknumber": h.block}},
	})
}

// versioned is a follows, reposts or saves row of user at the current block; an earlier row of
// the same (user, item) stops being current.
func (h *profileHistory) versioned(table string, user, item int64, deleted bool) []write {
	h.txhash++
	cols := map[string][3]string{
		"follows": {"follower_user_id", "followee_user_id", ""},
		"reposts": {"user_id", "repost_item_id", "repost_type"},
		"saves":   {"user_id", "save_item_id", "save_type"},
	}[table]
	insert := `INSERT INTO ` + table + ` (` + cols[0] + `, ` + cols[1] + `, blocknumber, is_current, is_delete, txhash`
	values := `VALUES ($1, $2, $3, true, $4, $5`
	if cols[2] != "" {
		insert += `, created_at, ` + cols[2]
		values += `, now(), 'track'`
	}
	return []write{
		{sql: `UPDATE ` + table + ` SET is_current = false WHERE ` + cols[0] + ` = $1 AND ` + cols[1] + ` = $2 AND is_current`,
			args: []any{user, item}},
		{
			sql:    insert + `) ` + values + `)`,
			args:   []any{user, item, h.block, deleted, fmt.Sprint("a", h.txhash)},
			change: &change{table: table, op: processors.Insert, cols: map[string]int64{cols[0]: user, "blocknumber": h.block}},
		},
	}
}

func (h *profileHistory) gen(rng *rand.Rand, step int) []write {
	var ws []write
	if step == 0 {
		h.profile, h.follows, h.acts = map[int64]profile{}, map[[2]int64]bool{}, map[[2]any]bool{}
	}
	h.block++
	for range 1 + rng.IntN(3) {
		user := profileUsers[rng.IntN(len(profileUsers))]
		p, known := h.profile[user]
		switch n := rng.IntN(12); {
		case !known || n < 3: // a profile edit: one field set, or, sticky, flipped
			p.handle = user != 0x4d2 // one user never has a handle, so never a row
			flip := func(b bool) bool { return !b || (h.sticky && rng.IntN(2) == 0) }
			switch rng.IntN(5) {
			case 0:
				p.bio = flip(p.bio)
			case 1:
				p.name = flip(p.name)
			case 2:
				p.picture = flip(p.picture)
			case 3:
				p.cover = flip(p.cover)
			default:
				if h.sticky {
					p.deactivated = !p.deactivated
				}
			}
			ws = append(ws, h.version(user, p)...)
		case n < 7:
			f := [2]int64{user, 2000 + rng.Int64N(8)}
			if h.follows[f] && !h.sticky {
				continue
			}
			h.follows[f] = !h.follows[f]
			ws = append(ws, h.versioned("follows", user, f[1], !h.follows[f])...)
		case n < 9:
			table := []string{"reposts", "saves"}[rng.IntN(2)]
			a := [2]any{table, user}
			if h.acts[a] && !h.sticky {
				continue
			}
			h.acts[a] = !h.acts[a]
			ws = append(ws, h.versioned(table, user, 77, !h.acts[a])...)
		}
	}
	return ws
}

func TestProfileCompletionParity(t *testing.T) {
	t.Parallel()
	for _, sticky := range []bool{false, true} {
		t.Run(fmt.Sprintf("sticky=%v", sticky), func(t *testing.T) {
			t.Parallel()
			h := &profileHistory{sticky: sticky}
			runParity(t, paritySpec{rule: "profile_completion", steps: 50, gen: h.gen, reference: upstreamProfileTick,
				takesAway: sticky})
		})
	}
}

func TestProfileCompletionCases(t *testing.T) {
	t.Parallel()
	h := &profileHistory{profile: map[int64]profile{}, follows: map[[2]int64]bool{}, acts: map[[2]any]bool{}}
	h.block = 1
	full := h.version(1000, profile{handle: true, bio: true, name: true, picture: true, cover: true})
	full = append(full, h.versioned("reposts", 1000, 77, false)...)
	full = append(full, h.versioned("saves", 1000, 77, false)...)
	for i := range int64(5) {
		full = append(full, h.versioned("follows", 1000, 2000+i, false)...)
	}
	steps := func(n int64) map[string]progress {
		return map[string]progress{"p 3e8": {User: 1000, Current: n, Complete: n >= 7, Amount: 1}}
	}
	h2 := &profileHistory{profile: map[int64]profile{}, follows: map[[2]int64]bool{}, acts: map[[2]any]bool{}, block: 1}
	fourFollows := h2.version(1000, profile{handle: true, bio: true})
	for i := range int64(4) {
		fourFollows = append(fourFollows, h2.versioned("follows", 1000, 2000+i, false)...)
	}
	h3 := &profileHistory{profile: map[int64]profile{}, follows: map[[2]int64]bool{}, acts: map[[2]any]bool{}, block: 1}
	noHandle := h3.version(1000, profile{bio: true, name: true})
	h4 := &profileHistory{profile: map[int64]profile{}, follows: map[[2]int64]bool{}, acts: map[[2]any]bool{}, block: 1}
	first := h4.version(1000, profile{handle: true, bio: true, name: true})
	h4.block = 2
	cleared := h4.version(1000, profile{handle: true, name: true})
	runRuleCases(t, "profile_completion", []ruleCase{
		{name: "all seven steps complete it", steps: [][]write{full}, want: steps(7)},
		{name: "four follows are no step", steps: [][]write{fourFollows}, want: steps(1)},
		{name: "a user without a handle has no row", steps: [][]write{noHandle}},
		{name: "a step lost lowers the count", steps: [][]write{first, cleared}, want: steps(1)},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{full}},
	})
}

// TestProfileCompletionState: the seven flags land in challenge_profile_completion with the
// row, and a window that changes no step writes neither again.
func TestProfileCompletionState(t *testing.T) {
	t.Parallel()
	f := setup(t)
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	rule := ruleNamed(t, "profile_completion")
	h := &profileHistory{profile: map[int64]profile{}, follows: map[[2]int64]bool{}, acts: map[[2]any]bool{}, block: 1}
	w := append(h.version(1000, profile{handle: true, bio: true, cover: true}), h.versioned("saves", 1000, 77, false)...)
	f.runWrites(w)
	f.applyWindowOf(rule, w)
	require.EqualValues(t, 1, f.count(`SELECT count(*) FROM challenge_profile_completion WHERE user_id = 1000
		AND profile_description AND NOT profile_name AND NOT profile_picture AND profile_cover_photo
		AND NOT follows AND NOT reposts AND favorites`))
	writes := f.countWrites()
	f.exec(`CREATE TABLE pc_writes (n int); INSERT INTO pc_writes VALUES (0);
		CREATE FUNCTION count_pc() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE pc_writes SET n = n + 1; RETURN NULL; END $$;
		CREATE TRIGGER count_pc AFTER INSERT OR UPDATE ON challenge_profile_completion FOR EACH ROW EXECUTE FUNCTION count_pc()`)
	h.block = 2
	again := h.versioned("follows", 1000, 2000, false) // one follow: no step yet
	f.runWrites(again)
	f.applyWindowOf(rule, again)
	require.EqualValues(t, 0, writes(), "no reward row written")
	require.EqualValues(t, 0, f.count(`SELECT n FROM pc_writes`), "no state row written")
	require.Equal(t, map[string]progress{"p 3e8": {User: 1000, Current: 3, Amount: 1}}, f.ruleRows(rule))
}
