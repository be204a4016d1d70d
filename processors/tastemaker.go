package processors

import "context"

// tastemakerRule is challenge t. SKELETON: to be filled in.
func tastemakerRule() Rule {
	return Rule{
		Name:       "tastemaker",
		Challenges: []string{"t"},
		Sources:    []Source{{Table: "track_trending_scores", Ops: Insert | Update, Column: "track_id", Keys: "ranking"}, {Table: "reposts", Ops: Insert | Update, Column: "repost_item_id", Keys: "tracks"}, {Table: "saves", Ops: Insert | Update, Column: "save_item_id", Keys: "tracks"}},
		active:     booleanActive("t"),
		rows:       func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) { return nil, nil },
		all:        func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) { return nil, nil },
	}
}
