package processors

import "context"

// verifiedRule is challenge v. SKELETON: to be filled in.
func verifiedRule() Rule {
	return Rule{
		Name:       "verified",
		Challenges: []string{"v"},
		Sources:    []Source{{Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "users"}},
		active:     booleanActive("v"),
		rows:       func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) { return nil, nil },
		all:        func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) { return nil, nil },
	}
}
