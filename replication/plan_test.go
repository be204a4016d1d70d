package replication

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// testPlan is the production plan's part for plays and comments, which the decoding tests'
// messages carry: plays.play_item_id and comments.user_id are keys, plays.id and
// comments.blocknumber maxima.
func testPlan(t testing.TB) *compiledPlan {
	t.Helper()
	p, err := compilePlan(Plan{
		Tables: []PlanTable{
			{Name: "plays", Columns: []PlanColumn{
				{Name: "play_item_id", Ops: OpInsert, Set: 0, Max: -1},
				{Name: "id", Ops: OpInsert, Set: -1, Max: 0},
			}},
			{Name: "comments", Columns: []PlanColumn{
				{Name: "user_id", Ops: OpInsert | OpUpdate, Set: 1, Max: -1},
				{Name: "blocknumber", Ops: OpInsert | OpUpdate, Set: -1, Max: 1},
			}},
		},
		Sets: 2, Maxima: 2,
	})
	require.NoError(t, err)
	return p
}

// playEvent is the event of a plays insert under testPlan.
func playEvent(id int64, hasID bool, track int64) event {
	ev := event{Kind: eventChange, Table: 0, Op: OpInsert}
	ev.Values[0], ev.Present[0] = track, true
	ev.Values[1], ev.Present[1] = id, hasID
	return ev
}

// commentEvent is the event of a comments insert or update under testPlan.
func commentEvent(user, block int64, hasBlock bool, op Op) event {
	ev := event{Kind: eventChange, Table: 1, Op: op}
	ev.Values[0], ev.Present[0] = user, true
	ev.Values[1], ev.Present[1] = block, hasBlock
	return ev
}

func TestCompilePlanRejects(t *testing.T) {
	t.Parallel()
	col := func(name string, set, max int) PlanColumn {
		return PlanColumn{Name: name, Ops: OpInsert, Set: set, Max: max}
	}
	tests := []struct {
		name string
		plan Plan
	}{
		{"table twice", Plan{Sets: 1, Tables: []PlanTable{
			{Name: "a", Columns: []PlanColumn{col("x", 0, -1)}}, {Name: "a", Columns: []PlanColumn{col("y", 0, -1)}}}}},
		{"set out of range", Plan{Sets: 1, Tables: []PlanTable{{Name: "a", Columns: []PlanColumn{col("x", 1, -1)}}}}},
		{"max out of range", Plan{Sets: 1, Tables: []PlanTable{{Name: "a", Columns: []PlanColumn{col("x", -1, 0)}}}}},
		{"routes nowhere", Plan{Sets: 1, Tables: []PlanTable{{Name: "a", Columns: []PlanColumn{col("x", -1, -1)}}}}},
		{"no operation", Plan{Sets: 1, Tables: []PlanTable{{Name: "a", Columns: []PlanColumn{{Name: "x", Set: 0, Max: -1}}}}}},
		{"too many columns", Plan{Sets: 1, Tables: []PlanTable{{Name: "a", Columns: []PlanColumn{
			col("c1", 0, -1), col("c2", 0, -1), col("c3", 0, -1), col("c4", 0, -1), col("c5", 0, -1),
			col("c6", 0, -1), col("c7", 0, -1), col("c8", 0, -1), col("c9", 0, -1)}}}}},
	}
	for _, tt := range tests {
		_, err := compilePlan(tt.plan)
		require.ErrorIs(t, err, errPlan, tt.name)
	}
}

// TestPlanRoutesOneColumnTwice: two rules keying on the same column read it once and both get it.
func TestPlanRoutesOneColumnTwice(t *testing.T) {
	t.Parallel()
	p, err := compilePlan(Plan{Sets: 2, Tables: []PlanTable{{Name: "users", Columns: []PlanColumn{
		{Name: "user_id", Ops: OpInsert | OpUpdate, Set: 0, Max: -1},
		{Name: "user_id", Ops: OpUpdate, Set: 1, Max: -1},
	}}}})
	require.NoError(t, err)
	d := newDecoder(p)
	_, err = d.decode(pgoRelation(pgoOtherRelID, "public", "users", pgoColumn{"handle", 25}, pgoColumn{"user_id", oidInt4}))
	require.NoError(t, err)
	tx := newTransaction(p.plan)
	for _, msg := range [][]byte{
		pgoInsert(pgoOtherRelID, pgoText("a"), pgoText("7")),
		pgoUpdate(pgoOtherRelID, 0, nil, []pgoValue{pgoText("b"), pgoText("8")}),
	} {
		ev, err := d.decode(msg)
		require.NoError(t, err)
		tx.add(p, ev)
	}
	require.Equal(t, map[int64]struct{}{7: {}, 8: {}}, tx.Sets[0])
	require.Equal(t, map[int64]struct{}{8: {}}, tx.Sets[1], "only updates")
	require.Equal(t, []int{2}, tx.Rows)
}

// TestOptionalKey: a NULL in a key column stops the stream (the row cannot be interpreted)
// unless the column is Optional, when the row makes no key: cs's blocknumber keys.
func TestOptionalKey(t *testing.T) {
	t.Parallel()
	for _, optional := range []bool{false, true} {
		p, err := compilePlan(Plan{
			Tables: []PlanTable{{Name: "comments", Columns: []PlanColumn{
				{Name: "blocknumber", Ops: OpInsert, Set: 0, Max: -1, Optional: optional},
			}}},
			Sets: 1,
		})
		require.NoError(t, err)
		d := newDecoder(p)
		_, err = d.decode(pgoRelation(pgoCommentsRelID, "public", "comments", pgoCommentsColumns()...))
		require.NoError(t, err)
		ev, err := d.decode(pgoInsert(pgoCommentsRelID, pgoCommentsRow("700", pgoNull())...))
		if !optional {
			require.ErrorIs(t, err, ErrBadTuple)
			continue
		}
		require.NoError(t, err)
		tx := newTransaction(p.plan)
		tx.add(p, ev)
		require.Empty(t, tx.Sets[0], "a NULL key joins no set")
		require.Equal(t, 1, tx.Changes)
	}
}

// TestSkippedSet: a skipped key set (its rule switched off) keeps no keys, and the maximum of
// the same column is still raised.
func TestSkippedSet(t *testing.T) {
	t.Parallel()
	p, err := compilePlan(Plan{
		Tables: []PlanTable{{Name: "plays", Columns: []PlanColumn{
			{Name: "id", Ops: OpInsert, Set: 0, Max: -1},
			{Name: "id", Ops: OpInsert, Set: -1, Max: 0},
			{Name: "play_item_id", Ops: OpInsert, Set: 1, Max: -1},
		}}},
		Sets: 2, Maxima: 1,
	})
	require.NoError(t, err)
	play := func(id, track int64) event {
		ev := event{Kind: eventChange, Table: 0, Op: OpInsert}
		ev.Values[0], ev.Present[0] = id, true // the plan's columns in order: id, play_item_id
		ev.Values[1], ev.Present[1] = track, true
		return ev
	}
	s := &Stream{plan: p}
	s.SkipSets([]bool{true})
	tx := newTransaction(p.plan)
	tx.add(p, play(7, 42))
	require.Empty(t, tx.Sets[0], "skipped")
	require.Contains(t, tx.Sets[1], int64(42), "kept")
	require.True(t, tx.HasMax[0])
	require.EqualValues(t, 7, tx.Max[0])
	s.SkipSets(nil)
	tx.add(p, play(8, 42))
	require.Contains(t, tx.Sets[0], int64(8), "kept again")
}
