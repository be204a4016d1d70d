package processors

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ChallengeProfileCompletion is p (upstream profile_completion.go): seven steps of a complete
// profile, each a flag kept in challenge_profile_completion.
const ChallengeProfileCompletion = "p"

// ProfileCompletionCheckpoint is p's legacy checkpoint: the highest blocknumber applied of
// users, follows, reposts and saves.
const ProfileCompletionCheckpoint = "challenges:p:last_blocknumber"

// profileFollows is how many follows the follows step takes; a repost and a favorite take one.
const profileFollows = 5

// profileCompletionRule is p. A user's steps are a function of the profile and its activity as
// they are now, so, like u, a change makes its user dirty and the user is derived again: the
// state row and the reward row are both written only when they change. A step lost (a bio
// cleared, an unfollow) lowers an incomplete row's count; a complete row stays complete.
func profileCompletionRule() Rule {
	return incremental(Rule{
		Name:       "profile_completion",
		Challenges: []string{ChallengeProfileCompletion},
		Sources: []Source{
			{Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "users"},
			{Table: "follows", Ops: Insert | Update, Column: "follower_user_id", Keys: "users"},
			{Table: "reposts", Ops: Insert | Update, Column: "user_id", Keys: "users"},
			{Table: "saves", Ops: Insert | Update, Column: "user_id", Keys: "users"},
		},
		active: func(c Catalog) bool { _, ok := profileEntry(c); return ok },
		all: func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
			rows, _, err := profileRows(ctx, q, cat, nil)
			return rows, err
		},
	}, blockSpec(ProfileCompletionCheckpoint, recomputeProfiles))
}

// profileEntry is p's catalog row when the rule runs: upstream does nothing without a step.
func profileEntry(c Catalog) (Entry, bool) {
	e, ok := c.Active[ChallengeProfileCompletion]
	if !ok || e.Step == nil {
		return Entry{}, false
	}
	return e, true
}

// profileSteps is a challenge_profile_completion row.
type profileSteps struct {
	User                                                           int64
	Description, Name, Picture, Cover, Follows, Reposts, Favorites bool
}

func (s profileSteps) count() int64 {
	var n int64
	for _, b := range []bool{s.Description, s.Name, s.Picture, s.Cover, s.Follows, s.Reposts, s.Favorites} {
		if b {
			n++
		}
	}
	return n
}

func recomputeProfiles(ctx context.Context, q Querier, cat Catalog, users []int64) (Stats, error) {
	stats := Stats{}
	err := chunks(sortedKeys(users), idBatchSize, func(batch []int64) error {
		rows, steps, err := profileRows(ctx, q, cat, batch)
		if err != nil {
			return err
		}
		if err := writeProfileSteps(ctx, q, steps); err != nil {
			return err
		}
		s, err := Upsert(ctx, q, rows)
		stats.Add(s)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recompute profile completion: %w", err)
	}
	return stats, nil
}

// profileRows derives the steps and the p rows of the given users (every user when nil): the
// current, active users with a handle. The follows count stops at the threshold and the
// others are EXISTS, so a user with a long history costs a few index probes.
func profileRows(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, []profileSteps, error) {
	e, ok := profileEntry(cat)
	if !ok || (users != nil && len(users) == 0) {
		return nil, nil, nil
	}
	filter := ""
	if users != nil {
		filter = `AND u.user_id = ANY(@users::bigint[])`
	}
	rows, err := q.Query(ctx, `
SELECT u.user_id,
       u.bio IS NOT NULL, u.name IS NOT NULL,
       u.profile_picture IS NOT NULL OR u.profile_picture_sizes IS NOT NULL,
       u.cover_photo IS NOT NULL OR u.cover_photo_sizes IS NOT NULL,
       (SELECT count(*) FROM (SELECT 1 FROM follows f WHERE f.follower_user_id = u.user_id
            AND f.is_current AND NOT f.is_delete LIMIT @follows) z) >= @follows,
       EXISTS (SELECT 1 FROM reposts r WHERE r.user_id = u.user_id AND r.is_current AND NOT r.is_delete),
       EXISTS (SELECT 1 FROM saves s WHERE s.user_id = u.user_id AND s.is_current AND NOT s.is_delete)
FROM users u
WHERE u.is_current AND u.handle_lc IS NOT NULL AND NOT u.is_deactivated `+filter+`
ORDER BY u.user_id`, pgx.NamedArgs{"users": users, "follows": profileFollows})
	if err != nil {
		return nil, nil, fmt.Errorf("derive profile steps: %w", err)
	}
	steps, err := pgx.CollectRows(rows, pgx.RowToStructByPos[profileSteps])
	if err != nil {
		return nil, nil, fmt.Errorf("derive profile steps: %w", err)
	}
	out := make([]Row, 0, len(steps))
	for _, s := range steps {
		out = append(out, Row{ChallengeID: ChallengeProfileCompletion, Specifier: hexUserID(s.User), UserID: s.User,
			Current: s.count(), Step: *e.Step, Amount: e.Amount})
	}
	return out, steps, nil
}

// writeProfileSteps stores the users' steps, writing only rows that change.
func writeProfileSteps(ctx context.Context, q Querier, steps []profileSteps) error {
	if len(steps) == 0 {
		return nil
	}
	cols := make([][]any, 8)
	for _, s := range steps {
		for i, v := range []any{s.User, s.Description, s.Name, s.Picture, s.Cover, s.Follows, s.Reposts, s.Favorites} {
			cols[i] = append(cols[i], v)
		}
	}
	_, err := q.Exec(ctx, `
INSERT INTO challenge_profile_completion AS c
    (user_id, profile_description, profile_name, profile_picture, profile_cover_photo, follows, reposts, favorites)
SELECT * FROM unnest(@users::int[], @d::bool[], @n::bool[], @p::bool[], @c::bool[], @f::bool[], @r::bool[], @s::bool[])
ON CONFLICT (user_id) DO UPDATE SET
    profile_description = EXCLUDED.profile_description, profile_name = EXCLUDED.profile_name,
    profile_picture = EXCLUDED.profile_picture, profile_cover_photo = EXCLUDED.profile_cover_photo,
    follows = EXCLUDED.follows, reposts = EXCLUDED.reposts, favorites = EXCLUDED.favorites
WHERE (c.profile_description, c.profile_name, c.profile_picture, c.profile_cover_photo, c.follows, c.reposts, c.favorites)
    IS DISTINCT FROM (EXCLUDED.profile_description, EXCLUDED.profile_name, EXCLUDED.profile_picture,
                      EXCLUDED.profile_cover_photo, EXCLUDED.follows, EXCLUDED.reposts, EXCLUDED.favorites)`,
		pgx.NamedArgs{"users": cols[0], "d": cols[1], "n": cols[2], "p": cols[3], "c": cols[4], "f": cols[5], "r": cols[6], "s": cols[7]})
	if err != nil {
		return fmt.Errorf("write profile steps: %w", err)
	}
	return nil
}
