package pipeline

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/replication"
)

// tx is a committed transaction of plays on tracks and comments by commenters, routed by the
// registry's plan as the stream routes it.
func tx(end pglogrepl.LSN, tracks []int64, maxPlay int64, commenters []int64, maxBlock int64) *replication.Transaction {
	p := registryPlan()
	t := &replication.Transaction{EndLSN: end, CommitTime: time.Unix(int64(end), 0),
		Sets: make([]map[int64]struct{}, len(p.sets)), Max: make([]int64, len(p.maxima)),
		HasMax: make([]bool, len(p.maxima)), Rows: make([]int, len(p.plan.Tables))}
	for i := range t.Sets {
		t.Sets[i] = map[int64]struct{}{}
	}
	add := func(rule, keys, table string, ids []int64) {
		set := t.Sets[slices.Index(p.sets, ruleKeys{rule, keys})]
		for _, id := range ids {
			set[id] = struct{}{}
			t.Rows[slices.Index(p.tables(), table)]++
			t.Changes++
		}
	}
	add("milestones", "tracks", "plays", tracks)
	add("comments", "users", "comments", commenters)
	raise := func(checkpoint string, v int64) {
		if v > 0 {
			i := slices.Index(p.maxima, checkpoint)
			t.Max[i], t.HasMax[i] = v, true
		}
	}
	raise(checkpoints.PlaysCheckpoint, maxPlay)
	raise(checkpoints.CommentsCheckpoint, maxBlock)
	return t
}

// keysOf is a window's key set of a rule.
func (w *window) keysOf(rule, keys string) map[int64]struct{} {
	return w.sets[slices.Index(w.plan.sets, ruleKeys{rule, keys})]
}

// tracks and commenters are the key sets of p and c.
func (w *window) tracks() map[int64]struct{}     { return w.keysOf("milestones", "tracks") }
func (w *window) commenters() map[int64]struct{} { return w.keysOf("comments", "users") }

func TestWindowAdd(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newWindow(registryPlan(), nil)
	w.add(tx(100, nil, 0, nil, 0), t0) // touched nothing of ours
	require.False(t, w.hasChanges())
	require.Equal(t, pglogrepl.LSN(100), w.endLSN, "an empty transaction still moves the end")
	require.True(t, w.openedAt.IsZero(), "only a change opens the window")

	w.add(tx(200, []int64{1, 2}, 50, nil, 0), t0.Add(time.Second))
	w.add(tx(300, []int64{2, 3}, 40, []int64{9}, 7), t0.Add(2*time.Second))
	require.True(t, w.hasChanges())
	require.Equal(t, t0.Add(time.Second), w.openedAt, "opened by the first change")
	require.Equal(t, time.Unix(200, 0), w.firstCommit)
	require.Equal(t, pglogrepl.LSN(300), w.endLSN)
	require.Equal(t, 4, w.size(), "distinct IDs: tracks 1,2,3 and commenter 9")
	require.EqualValues(t, 50, w.rulesWindow().Legacy[checkpoints.PlaysCheckpoint], "the highest plays.id, not the last")
	require.EqualValues(t, 7, w.rulesWindow().Legacy[checkpoints.CommentsCheckpoint])
	require.Equal(t, 3, w.transactions)
	require.Equal(t, 5, w.changes, "four plays and a comment")
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Database: mustParse(t, "postgres://u:pw@localhost/db")}
	require.NoError(t, ok.Validate())
	for name, c := range map[string]Config{
		"no database":     {},
		"bad slot":        {Database: ok.Database, Slot: "A-B"},
		"bad publication": {Database: ok.Database, Publication: "1pub"},
		"negative window": {Database: ok.Database, Window: -time.Second},
		"silent too long": {Database: ok.Database, StatusInterval: 2 * time.Minute},
		"receive timeout inside the status interval": {Database: ok.Database, ReceiveTimeout: 5 * time.Second},
	} {
		require.Error(t, c.Validate(), name)
	}
}

// mustParse is the connection settings of url, as cmd parses them.
func mustParse(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return cfg
}
