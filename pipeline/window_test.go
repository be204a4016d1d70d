package pipeline

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
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
	w := NewWindow()
	w.Add(tx(100, nil, 0, nil, 0), t0) // touched nothing of ours
	require.False(t, w.HasChanges())
	require.Equal(t, pglogrepl.LSN(100), w.EndLSN, "an empty transaction still moves the end")
	require.True(t, w.OpenedAt.IsZero(), "only a change opens the window")

	w.Add(tx(200, []int64{1, 2}, 50, nil, 0), t0.Add(time.Second))
	w.Add(tx(300, []int64{2, 3}, 40, []int64{9}, 7), t0.Add(2*time.Second))
	require.True(t, w.HasChanges())
	require.Equal(t, t0.Add(time.Second), w.OpenedAt, "opened by the first change")
	require.Equal(t, time.Unix(200, 0), w.FirstCommit)
	require.Equal(t, pglogrepl.LSN(300), w.EndLSN)
	require.Equal(t, 4, w.Size(), "distinct IDs: tracks 1,2,3 and commenter 9")
	require.EqualValues(t, 50, w.Legacy.LastPlayID, "the highest plays.id, not the last")
	require.EqualValues(t, 7, w.Legacy.LastCommentBlock)
	require.Equal(t, 3, w.Transactions)
	require.Equal(t, 4, w.Plays)
}

func TestWindowDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name    string
		txs     int
		now     time.Duration
		maxSize int
		want    bool
	}{
		{"empty never due", 0, time.Hour, 10, false},
		{"before the window length", 1, 999 * time.Millisecond, 10, false},
		{"at the window length", 1, time.Second, 10, true},
		{"full before time", 5, 0, 5, true},
		{"below the cap", 4, 0, 5, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := NewWindow()
			for i := range c.txs {
				w.Add(tx(pglogrepl.LSN(i+1), []int64{int64(i)}, 1, nil, 0), t0)
			}
			require.Equal(t, c.want, w.Due(t0.Add(c.now), time.Second, c.maxSize))
		})
	}
	require.True(t, NewWindow().DueAt(time.Second).IsZero())
}

func TestConfigValidate(t *testing.T) {
	ok := Config{DatabaseURL: "postgres://u:pw@localhost/db"}
	require.NoError(t, ok.Validate())
	for name, c := range map[string]Config{
		"no url":          {},
		"bad slot":        {DatabaseURL: ok.DatabaseURL, Slot: "A-B"},
		"bad publication": {DatabaseURL: ok.DatabaseURL, Publication: "1pub"},
		"negative window": {DatabaseURL: ok.DatabaseURL, Window: -time.Second},
		"silent too long": {DatabaseURL: ok.DatabaseURL, StatusInterval: 2 * time.Minute},
	} {
		require.Error(t, c.Validate(), name)
	}
}
