package replication

import (
	"errors"
	"fmt"
	"slices"
)

// Op is a set of row operations.
type Op uint8

// The operations a Plan can route. Deletes are not published (see EnsurePublication).
const (
	OpInsert Op = 1 << iota
	OpUpdate
)

// Plan says what the stream keeps of each change: for each source table, the integer columns
// it reads and where their values go. The pipeline builds it from the rule registry; this
// package knows no rule, so adding one changes nothing here.
type Plan struct {
	Tables []PlanTable
	// Sets is the number of key sets and Maxima the number of maxima a Transaction keeps.
	Sets, Maxima int
}

// PlanTable is one source table, in schema public.
type PlanTable struct {
	Name    string
	Columns []PlanColumn
}

// PlanColumn routes one integer column of a change of one of Ops: the new row's value joins
// key set Set (a key must not be NULL, unless Optional) and raises maximum Max (NULL is
// skipped); -1 is none.
type PlanColumn struct {
	Name     string
	Ops      Op
	Set, Max int
	// Optional lets the key be NULL: such a row joins no key set. For a key the host may leave
	// NULL and the rule's upstream never reads when it is (a blocknumber its scans range over).
	Optional bool
}

// maxValues bounds the distinct columns read from one table: an event carries them in a
// fixed array, so decoding a row allocates nothing.
const maxValues = 8

// errPlan means the plan itself is inconsistent: a programming error, reported at Start.
var errPlan = errors.New("invalid replication plan")

// compiledPlan is a Plan indexed for decoding.
type compiledPlan struct {
	plan   Plan
	tables []compiledTable
	// skipped[i] says key set i is not kept (its rule is switched off): see Stream.SkipSets.
	skipped []bool
}

type compiledTable struct {
	name string
	// columns are the distinct column names read; value i of an event is columns[i].
	columns []string
	// keyOps[i] are the operations for which columns[i] is a key, so NULL is an error.
	keyOps []Op
	// ops is the union of the columns' operations: other operations are ignored.
	ops Op
	// routes[j] is Columns[j] with value index.
	routes []route
}

type route struct {
	value    int
	ops      Op
	set, max int
}

func compilePlan(p Plan) (*compiledPlan, error) {
	c := &compiledPlan{plan: p, skipped: make([]bool, p.Sets)}
	for _, t := range p.Tables {
		if slices.ContainsFunc(c.tables, func(ct compiledTable) bool { return ct.name == t.Name }) {
			return nil, fmt.Errorf("%w: table %s twice", errPlan, t.Name)
		}
		ct := compiledTable{name: t.Name}
		for _, col := range t.Columns {
			if col.Set >= p.Sets || col.Max >= p.Maxima || (col.Set < 0 && col.Max < 0) || col.Ops == 0 {
				return nil, fmt.Errorf("%w: %s.%s routes nowhere or out of range", errPlan, t.Name, col.Name)
			}
			i := slices.Index(ct.columns, col.Name)
			if i < 0 {
				if len(ct.columns) == maxValues {
					return nil, fmt.Errorf("%w: more than %d columns of %s", errPlan, maxValues, t.Name)
				}
				i = len(ct.columns)
				ct.columns = append(ct.columns, col.Name)
				ct.keyOps = append(ct.keyOps, 0)
			}
			if col.Set >= 0 && !col.Optional {
				ct.keyOps[i] |= col.Ops
			}
			ct.ops |= col.Ops
			ct.routes = append(ct.routes, route{value: i, ops: col.Ops, set: col.Set, max: col.Max})
		}
		c.tables = append(c.tables, ct)
	}
	return c, nil
}

// table returns the index of the named table in schema public, or -1.
func (c *compiledPlan) table(ns, name string) int {
	if ns != "public" {
		return -1
	}
	return slices.IndexFunc(c.tables, func(t compiledTable) bool { return t.name == name })
}

// TableNames lists the plan's tables.
func (p Plan) TableNames() []string {
	names := make([]string, len(p.Tables))
	for i, t := range p.Tables {
		names[i] = t.Name
	}
	return names
}
