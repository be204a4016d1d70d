package pipeline

import (
	"slices"
	"sync"

	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// rulePlan is the rule registry compiled for the stream: the replication plan, and for each of
// its key sets and maxima the rule and key set (or legacy checkpoint) it feeds. It is the only
// place the pipeline learns which tables and columns exist; neither names a rule.
type rulePlan struct {
	plan replication.Plan
	// sets[i] is key set i of the plan: the rule and the rule's key set name.
	sets []ruleKeys
	// maxima[i] is maximum i of the plan: the legacy checkpoint it follows.
	maxima []string
	// tableNames are the plan's tables, by index of Transaction.Rows.
	tableNames []string
}

type ruleKeys struct{ rule, keys string }

// registryPlan is the registry's plan, compiled once.
var registryPlan = sync.OnceValue(func() *rulePlan {
	p := newRulePlan(processors.Rules())
	return &p
})

func newRulePlan(rules []processors.Rule) rulePlan {
	var p rulePlan
	column := func(s processors.Source) *replication.PlanColumn {
		i := slices.IndexFunc(p.plan.Tables, func(t replication.PlanTable) bool { return t.Name == s.Table })
		if i < 0 {
			i = len(p.plan.Tables)
			p.plan.Tables = append(p.plan.Tables, replication.PlanTable{Name: s.Table})
		}
		t := &p.plan.Tables[i]
		t.Columns = append(t.Columns, replication.PlanColumn{Name: s.Column, Ops: replicationOps(s.Ops), Set: -1, Max: -1})
		return &t.Columns[len(t.Columns)-1]
	}
	for _, r := range rules {
		for _, s := range r.Sources {
			rk := ruleKeys{rule: r.Name, keys: s.Keys}
			set := slices.Index(p.sets, rk)
			if set < 0 {
				set = len(p.sets)
				p.sets = append(p.sets, rk)
			}
			c := column(s)
			c.Set, c.Optional = set, s.Optional
		}
		if sources := r.CheckpointSources(); len(sources) > 0 {
			for _, s := range sources {
				column(s).Max = len(p.maxima)
			}
			p.maxima = append(p.maxima, r.Checkpoint())
		}
	}
	p.plan.Sets, p.plan.Maxima = len(p.sets), len(p.maxima)
	p.tableNames = p.plan.TableNames()
	return p
}

func replicationOps(o processors.Op) replication.Op {
	var r replication.Op
	if o&processors.Insert != 0 {
		r |= replication.OpInsert
	}
	if o&processors.Update != 0 {
		r |= replication.OpUpdate
	}
	return r
}

// tables are the plan's tables: what the publication must carry. Shared: do not modify.
func (p rulePlan) tables() []string { return p.tableNames }

// StreamPlan is the replication plan the pipeline streams with, compiled from the registry:
// for tools that read a slot the way the sidecar does.
func StreamPlan() replication.Plan { return registryPlan().plan }

// Rows is the number of routed changes of the source table in the transaction.
func (e TransactionReceived) Rows(table string) int {
	if i := slices.Index(e.Tables, table); i >= 0 && i < len(e.Tx.Rows) {
		return e.Tx.Rows[i]
	}
	return 0
}

// Max is the highest value the transaction carried of the legacy checkpoint's column.
func (e TransactionReceived) Max(checkpoint string) (int64, bool) {
	if i := slices.Index(registryPlan().maxima, checkpoint); i >= 0 && e.Tx.HasMax[i] {
		return e.Tx.Max[i], true
	}
	return 0, false
}

// Keys is the transaction's key set of a rule.
func (e TransactionReceived) Keys(rule, keys string) map[int64]struct{} {
	if i := slices.Index(registryPlan().sets, ruleKeys{rule: rule, keys: keys}); i >= 0 {
		return e.Tx.Sets[i]
	}
	return nil
}
