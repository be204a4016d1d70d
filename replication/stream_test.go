package replication_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/replication"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// A backlog the server sends as such (its commits older than backlogAge) makes the stream
// gather: the socket wakes the reader only once 64 kB are queued. A backlog far smaller than
// that must still arrive without waiting for the caller's deadline.
func TestSmallBacklogArrivesWhileGathering(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	cfg := db.ConnConfig(t)
	sql, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer sql.Close(ctx)
	plan := replication.Plan{Sets: 1, Tables: []replication.PlanTable{{Name: "plays", Columns: []replication.PlanColumn{
		{Name: "play_item_id", Ops: replication.OpInsert, Set: 0, Max: -1},
	}}}}
	_, err = replication.EnsurePublication(ctx, sql, "gather", plan, false)
	require.NoError(t, err)
	conn, err := replication.Connect(ctx, &cfg.Config)
	require.NoError(t, err)
	defer conn.Close(ctx)
	slot, err := replication.CreateSlot(ctx, conn, "gather", replication.SlotOptions{})
	require.NoError(t, err)

	const transactions = 20
	for i := range transactions {
		db.Exec(t, `INSERT INTO plays (play_item_id, created_at) SELECT $1, '2025-05-01' FROM generate_series(1, 5)`, i+1)
	}
	time.Sleep(1100 * time.Millisecond) // older than backlogAge when the walsender sends them

	stream, err := replication.Start(ctx, conn, "gather", "gather", plan, slot.ConsistentPoint, zaptest.NewLogger(t))
	require.NoError(t, err)
	got, plays := 0, 0
	for got < transactions {
		// A stalled read would return MessageTimeout at the deadline, which comes before the
		// walsender's own keepalive (half its 30 s wal_sender_timeout) could unblock it.
		msg, err := stream.Next(time.Now().Add(10 * time.Second))
		require.NoError(t, err)
		require.NotEqual(t, replication.MessageTimeout, msg.Kind, "after %d transactions", got)
		if msg.Kind == replication.MessageKeepalive {
			continue
		}
		got++
		plays += msg.Transaction.Rows[0]
	}
	require.Equal(t, 5*transactions, plays)
}
