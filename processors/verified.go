package processors

import (
	"context"
	"fmt"
)

// ChallengeVerified is the profile-verified challenge: one complete row per user, earned by
// being verified.
const ChallengeVerified = "v"

// verifiedUser is the upstream ProfileVerified test of the users row u. It is written out here
// rather than shared with the milestones' eligibility, which says the same today for a
// different reason (SPEC §3.2) and may move on its own.
const verifiedUser = `u.is_current = true AND u.is_verified = true AND u.is_deactivated = false`

// verifiedRule is challenge v. Eligibility is a property of one users row, so the users
// changes are the only thing that can earn it, and a user who later loses verification keeps
// the row (completion is sticky).
func verifiedRule() Rule {
	return Rule{
		Name:       "verified",
		Challenges: []string{ChallengeVerified},
		Sources:    []Source{{Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "users"}},
		active:     booleanActive(ChallengeVerified),
		rows:       verifiedRows,
		all:        allVerifiedRows,
	}
}

// verifiedRows derives the v rows of the dirty users.
func verifiedRows(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) {
	rule, ok := cat.Active[ChallengeVerified]
	if !ok {
		return nil, nil
	}
	var out []Row
	err := chunks(sortedKeys(keys["users"]), idBatchSize, func(batch []int64) error {
		rows, err := queryVerified(ctx, q, rule, `
SELECT DISTINCT u.user_id
FROM unnest($1::bigint[]) AS k(user_id)
JOIN users u ON u.user_id = k.user_id
WHERE `+verifiedUser, batch)
		out = append(out, rows...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// allVerifiedRows is the polling job's tick: every verified user, again.
func allVerifiedRows(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
	rule, ok := cat.Active[ChallengeVerified]
	if !ok {
		return nil, nil
	}
	return queryVerified(ctx, q, rule, `SELECT u.user_id FROM users u WHERE `+verifiedUser)
}

// queryVerified turns a query of user ids into their v rows.
func queryVerified(ctx context.Context, q Querier, rule Entry, sql string, args ...any) ([]Row, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list verified users: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var user int64
		if err := rows.Scan(&user); err != nil {
			return nil, fmt.Errorf("list verified users: %w", err)
		}
		out = append(out, Row{
			ChallengeID: ChallengeVerified,
			Specifier:   hexUserID(user),
			UserID:      user,
			Current:     1,
			Step:        1,
			Amount:      rule.Amount,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list verified users: %w", err)
	}
	return out, nil
}
