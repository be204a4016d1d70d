package pipeline

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/replication"
)

func tx(end pglogrepl.LSN, tracks []int64, maxPlay int64, commenters []int64, maxBlock int64) *replication.Transaction {
	t := &replication.Transaction{EndLSN: end, Tracks: map[int64]struct{}{}, Commenters: map[int64]struct{}{},
		CommitTime: time.Unix(int64(end), 0)}
	for _, id := range tracks {
		t.Tracks[id] = struct{}{}
		t.Plays++
	}
	for _, id := range commenters {
		t.Commenters[id] = struct{}{}
		t.Comments++
	}
	if maxPlay > 0 {
		t.MaxPlayID, t.HasPlayID = maxPlay, true
	}
	if maxBlock > 0 {
		t.MaxCommentBlock, t.HasCommentBlock = maxBlock, true
	}
	return t
}

func TestWindowAdd(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newWindow()
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
	require.EqualValues(t, 50, w.legacy.LastPlayID, "the highest plays.id, not the last")
	require.EqualValues(t, 7, w.legacy.LastCommentBlock)
	require.Equal(t, 3, w.transactions)
	require.Equal(t, 4, w.plays)
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
