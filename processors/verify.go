package processors

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Difference is one way in which user_challenges disagrees with a from-scratch derivation of
// the rules.
type Difference struct {
	ChallengeID string
	Specifier   string
	UserID      int64
	// Field is "row" for a missing or unexplained row, otherwise the column that differs
	// (current_step_count, is_complete, amount, completed_at, user_id).
	Field string
	Want  string
	Got   string
}

// String renders the difference on one line.
func (d Difference) String() string {
	return fmt.Sprintf("%s %s (user %d): %s: want %s, got %s",
		d.ChallengeID, d.Specifier, d.UserID, d.Field, d.Want, d.Got)
}

// verifySQL derives every rule over whole tables and joins the result with the stored rows,
// returning only pairs that need a look. It is written independently of the incremental
// queries: the tier walk is a window over the tiers (a tier is reached when the count reaches
// every earlier tier's step), the week is to_char(…, 'IYYYIW') rather than EXTRACT, and
// eligibility is a semi-join over all users.
//
// $1..$4 are the active milestone tiers (id, suffix, step, amount) in order; $5 is the c
// amount and $6 whether c is active. The catalog itself is read by LoadCatalog, so both paths
// interpret odd amounts the same way.
const verifySQL = `
WITH tiers AS (
    SELECT id, suffix, step, amount,
           GREATEST(0, COALESCE(MAX(step) OVER (ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)) AS gate
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS t(id, suffix, step, amount, ord)
),
play_counts AS (
    SELECT t.owner_id AS user_id, SUM(a.count) AS n
    FROM tracks t
    JOIN aggregate_monthly_plays a ON a.play_item_id = t.track_id
    WHERE t.is_current = true AND t.is_delete = false
      AND a."timestamp" >= DATE '2025-01-01'
      AND t.owner_id IN (SELECT user_id FROM users
                         WHERE is_current = true AND is_verified = true AND is_deactivated = false)
    GROUP BY t.owner_id
    HAVING SUM(a.count) > 0
),
expected AS (
    SELECT g.id AS challenge_id, to_hex(p.user_id) || ':' || g.suffix AS specifier, p.user_id::bigint AS user_id,
           LEAST(p.n, g.step)::bigint AS current, g.step, g.amount
    FROM play_counts p JOIN tiers g ON p.n >= g.gate
    UNION ALL
    SELECT 'c', to_hex(w.user_id) || ':' || w.week, w.user_id::bigint, 1, 1, $5::bigint
    FROM (SELECT DISTINCT user_id, to_char(created_at, 'IYYYIW') AS week
          FROM comments
          WHERE is_delete = false AND is_visible = true AND created_at IS NOT NULL) w
    WHERE $6::bool
),
stored AS (
    SELECT challenge_id::text, specifier::text, user_id::bigint, is_complete,
           current_step_count::bigint, amount::bigint, completed_at IS NOT NULL AS has_completed_at
    FROM user_challenges
    WHERE challenge_id IN ('p1', 'p2', 'p3', 'c')
)
SELECT COALESCE(e.challenge_id, s.challenge_id), COALESCE(e.specifier, s.specifier),
       e.challenge_id IS NOT NULL, e.user_id, e.current, e.step, e.amount,
       s.challenge_id IS NOT NULL, s.user_id, s.is_complete, s.current_step_count, s.amount, s.has_completed_at,
       CASE
           WHEN e.challenge_id IS NOT NULL THEN false
           WHEN s.challenge_id = 'c' THEN EXISTS (
               SELECT 1 FROM comments cm
               WHERE cm.user_id = s.user_id
                 AND to_char(cm.created_at, 'IYYYIW') = split_part(s.specifier, ':', 2))
           ELSE EXISTS (SELECT 1 FROM tracks t WHERE t.owner_id = s.user_id)
       END
FROM expected e
FULL JOIN stored s ON s.challenge_id = e.challenge_id AND s.specifier = e.specifier
WHERE e.challenge_id IS NULL OR s.challenge_id IS NULL
   OR e.user_id <> s.user_id
   OR e.current IS DISTINCT FROM s.current_step_count
   OR (e.step > 0 AND e.current >= e.step) <> s.is_complete
   OR (NOT s.is_complete AND e.amount <> s.amount)
   OR s.is_complete <> s.has_completed_at
ORDER BY 1, 2`

// Verify derives p1, p2, p3 and c from scratch over whole tables and compares the result with
// user_challenges in both directions. It tolerates what the rules legitimately leave behind:
//   - a stored row that is complete where the fresh derivation says incomplete (completion is
//     sticky; its amount and completed_at are frozen);
//   - a c row without a fresh counterpart when the user has any comment, deleted or hidden
//     included, in that ISO week (c rows are never removed);
//   - a p row without a fresh counterpart when the user owns or owned any tracks row (the
//     artist lost verification, tracks were deleted, a tier is no longer reached).
//
// Everything else is a Difference, in (challenge, specifier) order; a stored-only row must
// still be one its rule can produce (user_id matching the specifier, a valid suffix or week).
// The comparison is one statement and so sees one snapshot; run Verify in a REPEATABLE READ
// transaction if the catalog may change meanwhile.
func Verify(ctx context.Context, q Querier) ([]Difference, error) {
	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var (
		ids, suffixes  []string
		steps, amounts []int64
	)
	for _, t := range cat.Milestones {
		ids = append(ids, t.ChallengeID)
		suffixes = append(suffixes, t.Suffix)
		steps = append(steps, t.Step)
		amounts = append(amounts, t.Amount)
	}
	rows, err := q.Query(ctx, verifySQL, ids, suffixes, steps, amounts, cat.Comments.Amount, cat.Comments.Active)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer rows.Close()
	var diffs []Difference
	for rows.Next() {
		var p verifyPair
		err := rows.Scan(&p.challengeID, &p.specifier,
			&p.hasWant, &p.want.user, &p.want.current, &p.want.step, &p.want.amount,
			&p.hasGot, &p.got.user, &p.got.complete, &p.got.current, &p.got.amount, &p.got.hasCompletedAt,
			&p.historical)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		diffs = append(diffs, p.differences()...)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, r := range Rules() {
		if r.all == nil || !r.active(cat) {
			continue // p and c: verifySQL above
		}
		d, err := verifyFullRescan(ctx, q, cat, r)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		diffs = append(diffs, d...)
	}
	return diffs, nil
}

// verifyFullRescan compares a rule's from-scratch derivation (what a polling tick would write)
// with the stored rows. A stored row the derivation does not produce is never a difference:
// completion is sticky, so a user who lost verification or a track that left the ranking keeps
// the row the rule once wrote, and a user whose tracks or playlists are all deleted keeps the
// row as it was.
func verifyFullRescan(ctx context.Context, q Querier, cat Catalog, r Rule) ([]Difference, error) {
	want, err := r.all(ctx, q, cat)
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	rows, err := q.Query(ctx, `SELECT challenge_id, specifier, user_id::bigint, is_complete,
		current_step_count::bigint, amount::bigint, completed_at IS NOT NULL
		FROM user_challenges WHERE challenge_id = ANY($1::text[])`, r.Challenges)
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	type got struct {
		user, amount   int64
		current        *int64
		complete, done bool
	}
	stored := map[[2]string]got{}
	var (
		id, spec string
		g        got
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &spec, &g.user, &g.complete, &g.current, &g.amount, &g.done}, func() error {
		stored[[2]string{id, spec}] = g
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rule %s: %w", r.Name, err)
	}
	var diffs []Difference
	for _, w := range dedupeRows(want) {
		s, ok := stored[[2]string{w.ChallengeID, w.Specifier}]
		p := verifyPair{challengeID: w.ChallengeID, specifier: w.Specifier, hasWant: true, hasGot: ok}
		p.want.user, p.want.current, p.want.step, p.want.amount = &w.UserID, &w.Current, &w.Step, &w.Amount
		if ok {
			p.got.user, p.got.current, p.got.amount, p.got.complete, p.got.hasCompletedAt =
				&s.user, s.current, &s.amount, &s.complete, &s.done
		}
		diffs = append(diffs, p.differences()...)
	}
	slices.SortFunc(diffs, func(a, b Difference) int {
		return cmp.Or(cmp.Compare(a.ChallengeID, b.ChallengeID), cmp.Compare(a.Specifier, b.Specifier))
	})
	return diffs, nil
}

// verifyPair is one row of verifySQL: the fresh derivation (want) and the stored row (got) of
// one (challenge, specifier), either possibly absent.
type verifyPair struct {
	challengeID, specifier string
	hasWant, hasGot        bool
	want                   struct{ user, current, step, amount *int64 }
	got                    struct {
		user, current, amount *int64
		complete              *bool
		hasCompletedAt        *bool
	}
	historical bool // a stored-only row the rules explain
}

func (p verifyPair) differences() []Difference {
	var diffs []Difference
	add := func(user int64, field, want, got string) {
		diffs = append(diffs, Difference{
			ChallengeID: p.challengeID, Specifier: p.specifier, UserID: user, Field: field, Want: want, Got: got,
		})
	}
	if !p.hasGot {
		add(*p.want.user, "row", "present", "missing")
		return diffs
	}
	user, complete, hasCompletedAt := *p.got.user, *p.got.complete, *p.got.hasCompletedAt
	if complete != hasCompletedAt {
		add(user, "completed_at", setOrNull(complete), setOrNull(hasCompletedAt))
	}
	if !p.hasWant {
		switch prefix := hexUserID(user) + ":"; {
		case !strings.HasPrefix(p.specifier, prefix):
			add(user, "user_id", "owner of specifier "+p.specifier, strconv.FormatInt(user, 10))
		case !wellFormed(p.challengeID, strings.TrimPrefix(p.specifier, prefix)):
			add(user, "specifier", "a "+p.challengeID+" specifier", p.specifier)
		case !p.historical:
			add(user, "row", "absent", "present")
		}
		return diffs
	}
	if *p.want.user != user {
		add(*p.want.user, "user_id", strconv.FormatInt(*p.want.user, 10), strconv.FormatInt(user, 10))
	}
	if p.got.current == nil || *p.got.current != *p.want.current {
		add(user, "current_step_count", strconv.FormatInt(*p.want.current, 10), formatInt(p.got.current))
	}
	wantComplete := *p.want.step > 0 && *p.want.current >= *p.want.step
	if wantComplete && !complete {
		add(user, "is_complete", "true", "false")
	}
	if !complete && *p.got.amount != *p.want.amount {
		add(user, "amount", strconv.FormatInt(*p.want.amount, 10), strconv.FormatInt(*p.got.amount, 10))
	}
	return diffs
}

// wellFormed reports whether rest, the specifier after "<hex user id>:", is one the rule of
// challengeID can produce: the tier's suffix, or a six-digit ISO year and week.
func wellFormed(challengeID, rest string) bool {
	if challengeID == ChallengeComment {
		if len(rest) != 6 {
			return false
		}
		week, err := strconv.Atoi(rest[4:])
		_, yerr := strconv.Atoi(rest[:4])
		return err == nil && yerr == nil && week >= 1 && week <= 53
	}
	for _, t := range milestoneTiers() {
		if t.id == challengeID {
			return rest == t.suffix
		}
	}
	return false
}

func formatInt(n *int64) string {
	if n == nil {
		return "NULL"
	}
	return strconv.FormatInt(*n, 10)
}

func setOrNull(set bool) string {
	if set {
		return "set"
	}
	return "NULL"
}
