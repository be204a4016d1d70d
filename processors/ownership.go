package processors

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Who keeps a challenge's rows current, as status and the challenge_stream_challenge_owned
// metric report it during a cut-over from the polling job.
const (
	// OwnedBySidecar: a registered rule derives the challenge and it is active; the polling
	// job's processor for it can be switched off.
	OwnedBySidecar = "sidecar"
	// OwnedByPollingJob: no registered rule derives the challenge; the polling job must keep
	// running its processor.
	OwnedByPollingJob = "polling job"
	// OwnedByNobody: the catalog row is inactive (or the rule cannot run on it, like u with a
	// NULL starting_block), so nobody pays it; a registered rule derives what it missed when
	// the row is switched on.
	OwnedByNobody = "inactive"
)

// Ownership is one challenges row's owner.
type Ownership struct {
	Challenge string `json:"challenge"`
	// Rule is the registered rule deriving the challenge, "" when there is none.
	Rule  string `json:"rule,omitempty"`
	Owner string `json:"owner"`
}

// Owners reports the owner of every row of the challenges table, in id order.
func Owners(ctx context.Context, q Querier) ([]Ownership, error) {
	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("challenge owners: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT id, COALESCE(active, false) FROM challenges ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("challenge owners: %w", err)
	}
	var (
		out    []Ownership
		id     string
		active bool
	)
	rules := Rules()
	_, err = pgx.ForEachRow(rows, []any{&id, &active}, func() error {
		o := Ownership{Challenge: id, Owner: OwnedByPollingJob}
		if i := slices.IndexFunc(rules, func(r Rule) bool { return slices.Contains(r.Challenges, id) }); i >= 0 {
			o.Rule, o.Owner = rules[i].Name, OwnedByNobody
			if active && rules[i].active(cat) && cat.runs(id) {
				o.Owner = OwnedBySidecar
			}
		}
		if slices.Contains(trendingIDs(), id) {
			o.Rule, o.Owner = WeeklyTrendingPayouts, OwnedByNobody
			if active {
				o.Owner = OwnedBySidecar
			}
		}
		out = append(out, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("challenge owners: %w", err)
	}
	return out, nil
}

// runs says the catalog gives the challenge to its rule: an active tier with a step, an active
// c, or an active entry of the other rules.
func (c Catalog) runs(id string) bool {
	if slices.ContainsFunc(c.Milestones, func(t Tier) bool { return t.ChallengeID == id }) {
		return true
	}
	if id == ChallengeComment {
		return c.Comments.Active
	}
	_, ok := c.Active[id]
	return ok
}
