package processors

import "context"

// remixWinnerRule is challenge w. SKELETON: to be filled in.
func remixWinnerRule() Rule {
	return Rule{
		Name:       "remix_winner",
		Challenges: []string{"w"},
		Sources:    []Source{{Table: "events", Ops: Insert | Update, Column: "event_id", Keys: "events"}, {Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "hosts"}, {Table: "tracks", Ops: Insert | Update, Column: "track_id", Keys: "tracks"}},
		active:     booleanActive("w"),
		rows:       func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) { return nil, nil },
		all:        func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) { return nil, nil },
	}
}
