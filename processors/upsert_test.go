package processors_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/processors"
)

func (f *fixture) upsert(rows ...processors.Row) processors.Stats {
	f.t.Helper()
	stats, err := processors.Upsert(f.ctx, f.db.Pool, rows)
	require.NoError(f.t, err)
	return stats
}

func TestUpsertSemantics(t *testing.T) {
	t.Parallel()
	f := setup(t)
	row := func(current, amount int64) processors.Row {
		return processors.Row{ChallengeID: "p1", Specifier: "190:250", UserID: 400, Current: current, Step: 250, Amount: amount}
	}

	require.Equal(t, processors.Stats{"p1": {Inserted: 1}}, f.upsert(row(100, 25)))
	require.Equal(t, stored{UserID: 400, Current: 100, Amount: 25}, f.rows()["p1 190:250"])

	// Incomplete: amount follows the catalog, the count follows the derivation.
	require.Equal(t, processors.Stats{"p1": {Updated: 1}}, f.upsert(row(90, 30)))
	require.Equal(t, stored{UserID: 400, Current: 90, Amount: 30}, f.rows()["p1 190:250"])

	require.Equal(t, processors.Stats{"p1": {Updated: 1}}, f.upsert(row(250, 35)))
	done := f.rows()["p1 190:250"]
	require.True(t, done.Complete)
	require.NotNil(t, done.CompletedAt)
	require.Equal(t, int64(35), done.Amount)

	// Complete: sticky, amount and completed_at frozen, the count still moves.
	require.Equal(t, processors.Stats{"p1": {Updated: 1}}, f.upsert(row(200, 99)))
	require.Equal(t, stored{UserID: 400, Complete: true, Current: 200, Amount: 35, CompletedAt: done.CompletedAt},
		f.rows()["p1 190:250"])
	require.Equal(t, processors.Stats{"p1": {Unchanged: 1}}, f.upsert(row(200, 12345)),
		"a different amount on a complete row changes nothing")

	// A row complete from the start.
	f.upsert(processors.Row{ChallengeID: "c", Specifier: "190:202502", UserID: 400, Current: 1, Step: 1, Amount: 1})
	c := f.rows()["c 190:202502"]
	require.True(t, c.Complete)
	require.NotNil(t, c.CompletedAt)

	// Step 0 never completes.
	f.upsert(processors.Row{ChallengeID: "p2", Specifier: "190:1000", UserID: 400, Current: 5, Step: 0, Amount: 1})
	require.False(t, f.rows()["p2 190:1000"].Complete)
	require.Zero(t, f.count(`SELECT count(*) FROM user_challenges WHERE completed_blocknumber IS NOT NULL`))
}

func TestUpsertDuplicatesInOneBatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	stats := f.upsert(
		processors.Row{ChallengeID: "p1", Specifier: "190:250", UserID: 400, Current: 10, Step: 250, Amount: 25},
		processors.Row{ChallengeID: "p1", Specifier: "190:250", UserID: 400, Current: 20, Step: 250, Amount: 25},
	)
	require.Equal(t, processors.Stats{"p1": {Inserted: 1}}, stats)
	require.Equal(t, int64(20), f.rows()["p1 190:250"].Current, "the last duplicate wins")
}

func TestUpsertManyRowsAcrossBatches(t *testing.T) {
	t.Parallel()
	f := setup(t)
	var rows []processors.Row
	for u := int64(1); u <= 12_001; u++ {
		rows = append(rows, processors.Row{ChallengeID: "c", Specifier: fmt.Sprintf("%x:202502", u), UserID: u,
			Current: 1, Step: 1, Amount: 1})
	}
	require.Equal(t, processors.Stats{"c": {Inserted: 12_001}}, f.upsert(rows...))
	rows[7].Amount = 5 // complete: frozen, so still unchanged
	require.Equal(t, processors.Stats{"c": {Unchanged: 12_001}}, f.upsert(rows...))
	require.EqualValues(t, 12_001, f.count(`SELECT count(*) FROM user_challenges`))
}

// TestUpsertUnchangedWritesNothing proves the no-op skip with a trigger that counts row writes:
// an upsert whose result equals the stored row fires no trigger (so the host's notification
// trigger does not fire either).
func TestUpsertUnchangedWritesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	writes := f.countWrites()
	notifications := func() int64 { return f.count(`SELECT count(*) FROM notification`) }

	f.artist(400, true)
	f.track(1, 400)
	f.plays(1, 1500, in2025)
	f.comment(comment{id: 1, user: 400, at: "2025-01-06", block: 1})
	f.comment(comment{id: 2, user: 400, at: "2025-02-06", block: 2})

	require.Equal(t, processors.Stats{"p1": {Inserted: 1}, "p2": {Inserted: 1}, "p3": {Inserted: 1}}, f.milestones(1))
	require.Equal(t, processors.Stats{"c": {Inserted: 2}}, f.weekly(400))
	require.EqualValues(t, 5, writes())
	require.EqualValues(t, 4, notifications(), "p1, p2 and both c rows are complete")

	require.Equal(t, processors.Stats{"p1": {Unchanged: 1}, "p2": {Unchanged: 1}, "p3": {Unchanged: 1}}, f.milestones(1))
	require.Equal(t, processors.Stats{"c": {Unchanged: 2}}, f.weekly(400))
	require.EqualValues(t, 5, writes(), "recomputing unchanged rows writes nothing")
	require.EqualValues(t, 4, notifications())

	// Progress on p3 only: exactly one row is written.
	f.plays(1, 1, in2025)
	require.Equal(t, processors.Stats{"p1": {Unchanged: 1}, "p2": {Unchanged: 1}, "p3": {Updated: 1}}, f.milestones(1))
	require.EqualValues(t, 6, writes())
}
