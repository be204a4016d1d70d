package processors

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Challenge ids of the rules this package implements.
const (
	ChallengeP1      = "p1"
	ChallengeP2      = "p2"
	ChallengeP3      = "p3"
	ChallengeComment = "c"
)

// milestoneTiers are the play-count tiers in walking order with their specifier suffixes
// (SPEC §3.2). Step and amount come from the challenges table.
func milestoneTiers() []struct{ id, suffix string } {
	return []struct{ id, suffix string }{
		{ChallengeP1, "250"},
		{ChallengeP2, "1000"},
		{ChallengeP3, "10000"},
	}
}

// ChallengeIDs lists the challenge ids this package writes, milestone tiers first.
func ChallengeIDs() []string {
	return []string{ChallengeP1, ChallengeP2, ChallengeP3, ChallengeComment}
}

// Tier is one active play-count milestone.
type Tier struct {
	ChallengeID string
	Suffix      string // specifier suffix, "<hex user id>:<suffix>"
	Step        int64
	Amount      int64
}

// CommentRule is the catalog entry of the weekly comment challenge.
type CommentRule struct {
	Active bool
	Amount int64
}

// Catalog is the part of the challenges table the rules read. Load it inside the transaction
// that applies the rules, so a catalog change and the rows derived from it stay consistent.
type Catalog struct {
	// Milestones are the active play-count tiers in ascending order. Missing, inactive and
	// NULL-step tiers are left out; when empty, the milestone rules do nothing.
	Milestones []Tier
	// Comments is the c challenge; inactive (or missing) means the rule does nothing.
	Comments CommentRule
	// Oddities describe catalog rows the rules had to interpret (missing rows, amounts that
	// are not integers, NULL step counts), for the caller to log once.
	Oddities []string
}

// LoadCatalog reads the catalog rows of p1, p2, p3 and c.
//
// amount is a varchar: a value that is not an integer within int4 range counts as 0 (and is
// reported in Oddities) rather than failing every flush over a catalog typo.
func LoadCatalog(ctx context.Context, q Querier) (Catalog, error) {
	type entry struct {
		amount *string
		active *bool
		step   *int64
	}
	rows, err := q.Query(ctx,
		`SELECT id, amount, active, step_count FROM challenges WHERE id = ANY($1::text[])`, ChallengeIDs())
	if err != nil {
		return Catalog{}, fmt.Errorf("load challenge catalog: %w", err)
	}
	defer rows.Close()
	found := map[string]entry{}
	for rows.Next() {
		var (
			id string
			e  entry
		)
		if err := rows.Scan(&id, &e.amount, &e.active, &e.step); err != nil {
			return Catalog{}, fmt.Errorf("load challenge catalog: %w", err)
		}
		found[id] = e
	}
	if err := rows.Err(); err != nil {
		return Catalog{}, fmt.Errorf("load challenge catalog: %w", err)
	}

	var cat Catalog
	amountOf := func(id string, e entry) int64 {
		a, ok := parseAmount(e.amount)
		if !ok {
			cat.Oddities = append(cat.Oddities,
				fmt.Sprintf("challenge %q: amount %s is not an integer, using 0", id, quoteOrNull(e.amount)))
		}
		return a
	}
	for _, t := range milestoneTiers() {
		e, ok := found[t.id]
		switch {
		case !ok:
			cat.Oddities = append(cat.Oddities, fmt.Sprintf("challenge %q: no catalog row, tier skipped", t.id))
			continue
		case e.active == nil || !*e.active:
			continue
		case e.step == nil:
			cat.Oddities = append(cat.Oddities, fmt.Sprintf("challenge %q: step_count is NULL, tier skipped", t.id))
			continue
		}
		cat.Milestones = append(cat.Milestones, Tier{
			ChallengeID: t.id, Suffix: t.suffix, Step: *e.step, Amount: amountOf(t.id, e),
		})
	}
	if e, ok := found[ChallengeComment]; !ok {
		cat.Oddities = append(cat.Oddities, fmt.Sprintf("challenge %q: no catalog row, rule skipped", ChallengeComment))
	} else if e.active != nil && *e.active {
		cat.Comments = CommentRule{Active: true, Amount: amountOf(ChallengeComment, e)}
	}
	return cat, nil
}

// parseAmount reads a catalog amount. It reports false for NULL and for anything that is not
// an integer within the int4 range of user_challenges.amount; the amount is then 0.
func parseAmount(s *string) (int64, bool) {
	if s == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(*s), 10, 64)
	if err != nil || n < math.MinInt32 || n > math.MaxInt32 {
		return 0, false
	}
	return n, true
}

func quoteOrNull(s *string) string {
	if s == nil {
		return "NULL"
	}
	return strconv.Quote(*s)
}
