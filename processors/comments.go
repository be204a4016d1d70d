package processors

import (
	"context"
	"fmt"
)

// recomputeWeeklyComments re-derives the c rows of the given users (SPEC §3.3): one complete
// row per ISO week in which the user has a visible, non-deleted comment. Rows are only ever
// added: a week whose comments were all deleted or hidden later keeps its row.
func recomputeWeeklyComments(ctx context.Context, q Querier, cat Catalog, userIDs []int64) (Stats, error) {
	stats, err := recompute(ctx, q, cat, userIDs, WeeklyCommentRows)
	if err != nil {
		return nil, fmt.Errorf("recompute weekly comments: %w", err)
	}
	return stats, nil
}

// WeeklyCommentRows computes the c rows of the given users without writing them.
// recomputeWeeklyComments is WeeklyCommentRows followed by Upsert.
func WeeklyCommentRows(ctx context.Context, q Querier, cat Catalog, userIDs []int64) ([]Row, error) {
	if !cat.Comments.Active || len(userIDs) == 0 {
		return nil, nil
	}
	weeks, err := q.Query(ctx, `
SELECT DISTINCT user_id,
       EXTRACT(ISOYEAR FROM created_at)::bigint,
       EXTRACT(WEEK FROM created_at)::bigint
FROM comments
WHERE user_id = ANY($1::bigint[]) AND is_delete = false AND is_visible = true
  AND created_at IS NOT NULL`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("list comment weeks: %w", err)
	}
	defer weeks.Close()
	var rows []Row
	for weeks.Next() {
		var user, year, week int64
		if err := weeks.Scan(&user, &year, &week); err != nil {
			return nil, fmt.Errorf("list comment weeks: %w", err)
		}
		rows = append(rows, Row{
			ChallengeID: ChallengeComment,
			Specifier:   weekSpecifier(user, year, week),
			UserID:      user,
			Current:     1,
			Step:        1,
			Amount:      cat.Comments.Amount,
		})
	}
	if err := weeks.Err(); err != nil {
		return nil, fmt.Errorf("list comment weeks: %w", err)
	}
	return rows, nil
}

// weekSpecifier is "<hex user id>:<ISO year><ISO week, two digits>", e.g. 2bc:202502.
func weekSpecifier(userID, isoYear, isoWeek int64) string {
	return fmt.Sprintf("%s:%04d%02d", hexUserID(userID), isoYear, isoWeek)
}
