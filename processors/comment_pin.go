package processors

import "context"

// commentPinRule is challenge cp. SKELETON: to be filled in.
func commentPinRule() Rule {
	return Rule{
		Name:       "comment_pin",
		Challenges: []string{"cp"},
		Sources:    []Source{{Table: "tracks", Ops: Insert | Update, Column: "track_id", Keys: "tracks"}, {Table: "comments", Ops: Insert | Update, Column: "entity_id", Keys: "tracks"}, {Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "owners"}},
		active:     booleanActive("cp"),
		rows:       func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) { return nil, nil },
		all:        func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) { return nil, nil },
	}
}
