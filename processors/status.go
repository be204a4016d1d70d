package processors

import (
	"context"
	"fmt"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// RuleStatus is one registered rule as `status` shows it.
type RuleStatus struct {
	Rule       string   `json:"rule"`
	Challenges []string `json:"challenges"`
	Active     bool     `json:"active"`
	// Checkpoint is the legacy checkpoint of an incremental rule, "" for a full-rescan one, and
	// CheckpointValue its stored value (nil when the row is absent).
	Checkpoint      string `json:"checkpoint,omitempty"`
	CheckpointValue *int64 `json:"checkpoint_value,omitempty"`
	// State is "streaming", "held" (inactive), or for a full-rescan rule "not derived yet"
	// (the next flush derives it from scratch).
	State string `json:"state"`
}

// Statuses reads every registered rule's catalog and bookkeeping state.
func Statuses(ctx context.Context, q Querier) ([]RuleStatus, error) {
	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("rule status: %w", err)
	}
	legacy, err := checkpoints.ReadLegacyState(ctx, q, incrementalNames())
	if err != nil {
		return nil, fmt.Errorf("rule status: %w", err)
	}
	rules := Rules()
	states, err := checkpoints.ReadRuleStates(ctx, q, fullRescanNames(rules))
	if err != nil {
		return nil, fmt.Errorf("rule status: %w", err)
	}
	out := make([]RuleStatus, 0, len(rules))
	for _, r := range rules {
		s := RuleStatus{Rule: r.Name, Challenges: r.Challenges, Active: r.active(cat), Checkpoint: r.Checkpoint(), State: "streaming"}
		held := !s.Active
		if r.family != nil {
			c := legacy[r.family.checkpoint]
			held = held || c.Held
			if c.Has {
				s.CheckpointValue = &c.Value
			}
		} else if st := states[r.Name]; s.Active && (!st.Seen || st.Held) {
			s.State = "not derived yet"
		}
		if held {
			s.State = "held"
		}
		out = append(out, s)
	}
	return out, nil
}

// InactiveRules names the registered rules the catalog has switched off: the stream keeps no
// keys for them until a flush finds them on again (and derives what they missed).
func InactiveRules(ctx context.Context, q Querier) ([]string, error) {
	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("inactive rules: %w", err)
	}
	var out []string
	for _, r := range Rules() {
		if !r.active(cat) {
			out = append(out, r.Name)
		}
	}
	return out, nil
}
