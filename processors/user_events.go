package processors

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The user_events challenges (upstream user_event_challenges.go): the indexer records a
// profile's mobile flag and its referrer in user_events, one current row per user.
const (
	// ChallengeMobileInstall is m: one complete row for a user whose profile says mobile.
	ChallengeMobileInstall = "m"
	// ChallengeReferral and ChallengeVerifiedReferral are r and rv: the referrer earns a row per
	// referred user, r while the referrer is unverified, rv while verified.
	ChallengeReferral         = "r"
	ChallengeVerifiedReferral = "rv"
	// ChallengeReferred is rd: the referred user earns once for having a referrer.
	ChallengeReferred = "rd"
)

// userEventsRule is one of m, r, rv and rd. Each keeps its own legacy checkpoint on
// user_events.blocknumber, as upstream does; a user_events change makes its user dirty (the
// referred user for r, rv and rd).
//
// Upstream's dirty scans read only current rows with the flag (m) or a referrer (r, rv, rd), so
// its checkpoint stops at the last such row; the stream's goes to the last user_events change
// it applied. Both mean "every row up to here is applied", so either side can take over from
// the other. Like upstream, a referrer's verification changing later is seen when the referred
// user's user_events row next changes.
//
// rows derives the rule's rows of the given users, or of every user when users is nil.
func userEventsRule(name, challenge string,
	rows func(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error)) Rule {
	return incremental(Rule{
		Name:       name,
		Challenges: []string{challenge},
		Sources:    []Source{{Table: "user_events", Ops: Insert | Update, Column: "user_id", Keys: "users"}},
		active:     booleanActive(challenge),
		all: func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
			return rows(ctx, q, cat, nil)
		},
	}, blockSpec("challenges:"+challenge+":last_blocknumber",
		func(ctx context.Context, q Querier, cat Catalog, users []int64) (Stats, error) {
			stats, err := recompute(ctx, q, cat, users, rows)
			if err != nil {
				return nil, fmt.Errorf("recompute %s: %w", name, err)
			}
			return stats, nil
		}))
}

func mobileInstallRule() Rule {
	return userEventsRule("mobile_install", ChallengeMobileInstall, mobileRows)
}

func referralRule(challenge string, verified bool) Rule {
	name := "referral"
	if verified {
		name = "verified_referral"
	}
	return userEventsRule(name, challenge, func(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error) {
		return referralRows(ctx, q, cat, challenge, verified, users)
	})
}

func referredRule() Rule {
	return userEventsRule("referred", ChallengeReferred, func(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error) {
		return referralRows(ctx, q, cat, ChallengeReferred, false, users)
	})
}

// usersFilter narrows a user_events query to the users, unless users is nil (every user).
func usersFilter(users []int64) string {
	if users == nil {
		return ""
	}
	return `AND ue.user_id = ANY(@users::bigint[])`
}

// mobileRows derives m for the users (every user when nil) with a current mobile row.
func mobileRows(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error) {
	e, ok := cat.Active[ChallengeMobileInstall]
	if !ok || (users != nil && len(users) == 0) {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT DISTINCT ue.user_id FROM user_events ue
		WHERE ue.is_current = true AND ue.is_mobile_user = true `+usersFilter(users),
		pgx.NamedArgs{"users": sortedKeys(users)})
	if err != nil {
		return nil, fmt.Errorf("list mobile users: %w", err)
	}
	var (
		out  []Row
		user int64
	)
	_, err = pgx.ForEachRow(rows, []any{&user}, func() error {
		out = append(out, Row{ChallengeID: ChallengeMobileInstall, Specifier: hexUserID(user), UserID: user,
			Current: 1, Step: 1, Amount: e.Amount})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list mobile users: %w", err)
	}
	return out, nil
}

// referralRows derives r or rv (the referrer's row "<referrer>:<referred>", gated on the
// referrer's current users row being verified or not) or rd (the referred user's row
// "<referred>:<referrer>", whatever the referrer) from the current user_events rows with a
// referrer, of the given referred users (every user when nil).
func referralRows(ctx context.Context, q Querier, cat Catalog, challenge string, verified bool, users []int64) ([]Row, error) {
	e, ok := cat.Active[challenge]
	if !ok || (users != nil && len(users) == 0) {
		return nil, nil
	}
	gate := `JOIN users u ON u.user_id = ue.referrer AND u.is_current = true
		AND COALESCE(u.is_verified, false) = @verified`
	if challenge == ChallengeReferred {
		gate = ""
	}
	rows, err := q.Query(ctx, `SELECT DISTINCT ue.user_id, ue.referrer FROM user_events ue `+gate+`
		WHERE ue.is_current = true AND ue.referrer IS NOT NULL `+usersFilter(users),
		pgx.NamedArgs{"users": sortedKeys(users), "verified": verified})
	if err != nil {
		return nil, fmt.Errorf("list referrals: %w", err)
	}
	var (
		out                []Row
		referred, referrer int64
	)
	_, err = pgx.ForEachRow(rows, []any{&referred, &referrer}, func() error {
		r := Row{ChallengeID: challenge, Specifier: hexUserID(referrer) + ":" + hexUserID(referred), UserID: referrer,
			Current: 1, Step: 1, Amount: e.Amount}
		if challenge == ChallengeReferred {
			r.Specifier, r.UserID = hexUserID(referred)+":"+hexUserID(referrer), referred
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list referrals: %w", err)
	}
	return out, nil
}
