package processors_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWeeklyCommentsISOWeeks(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for i, at := range []string{
		"2024-12-30 10:00", // Monday of ISO week 1 of 2025
		"2021-01-03 23:59", // Sunday of ISO week 53 of 2020
		"2027-01-01 00:00", // Friday of ISO week 53 of 2026
		"2025-01-06 08:00", // ISO week 2 of 2025 ...
		"2025-01-12 22:00", // ... and the same week's Sunday: one row
		"2025-01-13 00:00", // week 3
	} {
		f.comment(comment{id: int64(i + 1), user: 700, at: at, block: int64(i + 1)})
	}
	f.comment(comment{id: 100, user: 701, at: "2025-01-06", block: 7})

	stats := f.weekly(700)
	require.Equal(t, 5, stats["c"].Inserted)
	want := map[string]progress{}
	for _, spec := range []string{"2bc:202501", "2bc:202053", "2bc:202653", "2bc:202502", "2bc:202503"} {
		want["c "+spec] = progress{User: 700, Current: 1, Complete: true, Amount: 1}
	}
	require.Equal(t, want, f.progressRows(), "only the dirty user is recomputed")
	require.Empty(t, f.weekly(700)["c"].Inserted+f.weekly(700)["c"].Updated, "a second recompute writes nothing")
}

func TestWeeklyCommentsHiddenAndDeletedIgnoredRowsNeverRemoved(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.comment(comment{id: 1, user: 700, at: "2025-01-06", hidden: true, block: 1})
	f.comment(comment{id: 2, user: 700, at: "2025-01-13", deleted: true, block: 2})
	f.comment(comment{id: 3, user: 700, at: "2025-01-20", block: 3})
	// The fixture declares created_at NOT NULL; SPEC §2 does not promise it.
	f.exec(`ALTER TABLE comments ALTER COLUMN created_at DROP NOT NULL`)
	f.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber)
		VALUES (4, 'no date', 700, 1, 'Track', NULL, 4)`)
	f.weekly(700)
	require.Equal(t, map[string]progress{
		"c 2bc:202504": {User: 700, Current: 1, Complete: true, Amount: 1},
	}, f.progressRows())

	// Deleting and hiding afterwards leaves the reward in place.
	f.exec(`UPDATE comments SET is_delete = true, blocknumber = 10 WHERE comment_id = 3`)
	f.weekly(700)
	require.Len(t, f.rows(), 1)
	f.exec(`UPDATE comments SET is_delete = false, is_visible = false, blocknumber = 11 WHERE comment_id = 3`)
	f.weekly(700)
	require.Len(t, f.rows(), 1)
	require.Empty(t, f.verify(), "the orphaned c row is explained by the user's comment in that week")
}

func TestWeeklyCommentsRuleOff(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.comment(comment{id: 1, user: 700, at: "2025-01-06", block: 1})
	f.exec(`UPDATE challenges SET active = false WHERE id = 'c'`)
	require.Empty(t, f.weekly(700))
	f.exec(`DELETE FROM challenges WHERE id = 'c'`)
	require.Empty(t, f.weekly(700))
	require.Empty(t, f.rows())
}

func TestWeeklyCommentsAmountFromCatalog(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`UPDATE challenges SET amount = '3' WHERE id = 'c'`)
	f.comment(comment{id: 1, user: 700, at: "2025-01-06", block: 1})
	f.weekly(700)
	require.Equal(t, int64(3), f.rows()["c 2bc:202502"].Amount)
}
