package processors

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
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

// Entry is the catalog row of an active challenge of the registry's other rules (not p1–p3
// and c). The one-step challenges (v, t, cp, w, fp) are written with step 1 and progress 1
// whatever step_count says, as the polling job writes them; a counted one (u) reads Step.
type Entry struct {
	Amount int64
	// Step is step_count and StartingBlock starting_block, nil when NULL.
	Step, StartingBlock *int64
}

// Catalog is the part of the challenges table the rules read. Load it inside the transaction
// that applies the rules, so a catalog change and the rows derived from it stay consistent.
type Catalog struct {
	// Milestones are the active play-count tiers in ascending order. Missing, inactive and
	// NULL-step tiers are left out; when empty, the milestone rules do nothing.
	Milestones []Tier
	// Comments is the c challenge; inactive (or missing) means the rule does nothing.
	Comments CommentRule
	// Active are the other rules' active challenges by id; a missing or inactive one is absent
	// and its rule does nothing.
	Active map[string]Entry
	// Oddities describe catalog rows the rules had to interpret (missing rows, amounts that
	// are not integers, NULL step counts), for the caller to log once.
	Oddities []string
}

// LoadCatalog reads the catalog rows of every registered challenge.
//
// amount is a varchar and is read as the polling job read it, with fmt.Sscanf(amount, "%d"):
// the leading integer counts ("25.5" is 25, "1,000" is 1) and anything without one is 0. A
// value outside the int4 range of user_challenges.amount also counts as 0 rather than failing
// every flush over a catalog typo. Anything but a plain integer is reported in Oddities.
func LoadCatalog(ctx context.Context, q Querier) (Catalog, error) {
	type entry struct {
		amount *string
		active *bool
		step   *int64
		start  *int64
	}
	rows, err := q.Query(ctx,
		`SELECT id, amount, active, step_count, starting_block FROM challenges WHERE id = ANY($1::text[])`,
		append(ChallengeIDs(), trendingIDs()...))
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
		if err := rows.Scan(&id, &e.amount, &e.active, &e.step, &e.start); err != nil {
			return Catalog{}, fmt.Errorf("load challenge catalog: %w", err)
		}
		found[id] = e
	}
	if err := rows.Err(); err != nil {
		return Catalog{}, fmt.Errorf("load challenge catalog: %w", err)
	}

	cat := Catalog{Active: map[string]Entry{}}
	amountOf := func(id string, e entry) int64 {
		a, plain := parseAmount(e.amount)
		if !plain {
			cat.Oddities = append(cat.Oddities,
				fmt.Sprintf("challenge %q: amount %s is not a plain integer, using %d", id, quoteOrNull(e.amount), a))
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
	for _, r := range Rules() {
		if r.Name == milestonesName || r.Name == commentsName {
			continue // above
		}
		for _, id := range r.Challenges {
			e, ok := found[id]
			switch {
			case !ok:
				cat.Oddities = append(cat.Oddities, fmt.Sprintf("challenge %q: no catalog row, rule skipped", id))
			case e.active != nil && *e.active:
				cat.Active[id] = Entry{Amount: amountOf(id, e), Step: e.step, StartingBlock: e.start}
			}
		}
	}
	// The weekly payouts read only whether they are on: the amounts are by rank.
	for _, id := range trendingIDs() {
		if e, ok := found[id]; ok && e.active != nil && *e.active {
			cat.Active[id] = Entry{Step: e.step, StartingBlock: e.start}
		}
	}
	return cat, nil
}

// parseAmount reads a catalog amount the way the polling job did (see scanInt) and reports
// whether it was a plain integer: optional surrounding spaces, an optional sign, digits, within
// the int4 range of user_challenges.amount. NULL and values outside that range are 0.
func parseAmount(s *string) (n int64, plain bool) {
	if s == nil {
		return 0, false
	}
	n, ok := scanInt(*s)
	if !ok || n < math.MinInt32 || n > math.MaxInt32 {
		return 0, false
	}
	strict, err := strconv.ParseInt(strings.TrimSpace(*s), 10, 64)
	return n, err == nil && strict == n
}

// scanInt returns what fmt.Sscanf(s, "%d", &n) stores in n, and whether it stored anything
// (Sscanf leaves n at 0 on error). It is written out rather than calling Sscanf so that each
// rule is visible; FuzzScanInt checks it against Sscanf itself. Sscanf with %d:
//   - skips leading white space (fmt's table is the same set as unicode.IsSpace), except that
//     a newline, also as "\r\n", is an error;
//   - takes one optional sign and then the longest run of ASCII digits, at least one;
//   - ignores whatever follows ("25.5" is 25, "1,000" is 1);
//   - fails on a value outside int64, and knows no base prefixes ("0x1F" is 0).
func scanInt(s string) (int64, bool) {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\r' && strings.HasPrefix(s[i+size:], "\n") {
			i += size
			continue
		}
		if r == '\n' || !unicode.IsSpace(r) {
			break
		}
		i += size
	}
	start := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := i
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == digits {
		return 0, false
	}
	n, err := strconv.ParseInt(s[start:i], 10, 64)
	if err != nil {
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
