package replication_test

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/replication"
)

// streamingSession is a stream on plays whose walsender streams every transaction larger than
// 64 kB of decoded changes (logical_decoding_work_mem on the replication connection), keeping
// play_item_id as key set 0 and the maximum id.
func streamingSession(t *testing.T, db *pgtest.DB, name string) *replication.Stream {
	t.Helper()
	ctx := t.Context()
	db.Exec(t, `CREATE PUBLICATION `+name+` FOR TABLE public.plays WITH (publish = 'insert, update')`)
	cfg := db.ConnConfig(t)
	cfg.RuntimeParams["logical_decoding_work_mem"] = "64kB"
	conn, err := replication.Connect(ctx, &cfg.Config)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(ctx) })
	slot, err := replication.CreateSlot(ctx, conn, name, replication.SlotOptions{})
	require.NoError(t, err)
	plan := replication.Plan{Sets: 1, Maxima: 1, Tables: []replication.PlanTable{{Name: "plays", Columns: []replication.PlanColumn{
		{Name: "play_item_id", Ops: replication.OpInsert, Set: 0, Max: -1},
		{Name: "id", Ops: replication.OpInsert, Set: -1, Max: 0},
	}}}}
	stream, err := replication.Start(ctx, conn, name, name, plan, slot.ConsistentPoint, zaptest.NewLogger(t))
	require.NoError(t, err)
	return stream
}

// committedTx is what a test keeps of a Transaction (which Next reuses).
type committedTx struct {
	keys []int64
	rows int
	max  int64
}

// nextTransaction receives until a transaction is handed over.
func nextTransaction(t *testing.T, stream *replication.Stream) committedTx {
	t.Helper()
	for {
		msg, err := stream.Next(time.Now().Add(20 * time.Second))
		require.NoError(t, err)
		require.NotEqual(t, replication.MessageTimeout, msg.Kind, "no transaction arrived")
		if msg.Kind != replication.MessageTransaction {
			continue
		}
		tx := msg.Transaction
		return committedTx{keys: slices.Sorted(maps.Keys(tx.Sets[0])), rows: tx.Rows[0], max: tx.Max[0]}
	}
}

func keyRange(from, to int64) []int64 {
	var keys []int64
	for k := from; k <= to; k++ {
		keys = append(keys, k)
	}
	return keys
}

// A large transaction arrives while it runs, in segments among other transactions; it is
// handed over whole at its commit, in commit order, without the changes of its rolled-back
// subtransactions (a released savepoint inside a rolled-back one included); a rolled-back
// large transaction is never handed over.
func TestStreamedTransactions(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	stream := streamingSession(t, db, "streamed")

	big, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer big.Close(ctx)
	tx, err := big.Begin(ctx)
	require.NoError(t, err)
	plays := func(from, to int) {
		t.Helper()
		_, err := tx.Exec(ctx, `INSERT INTO plays (play_item_id, created_at)
			SELECT $1::int + g % ($2::int - $1::int + 1), '2026-12-01' FROM generate_series(1, 3000) g`, from, to)
		require.NoError(t, err)
	}
	plays(1, 50)
	// Its first segments go out (64 kB exceeded) while it is open; a small transaction
	// commits meanwhile and is handed over first.
	db.Exec(t, `INSERT INTO plays (play_item_id, created_at) VALUES (4001, '2026-12-01')`)
	require.Equal(t, []int64{4001}, nextTransaction(t, stream).keys)

	for _, sql := range []string{`SAVEPOINT s1`} {
		_, err := tx.Exec(ctx, sql)
		require.NoError(t, err)
	}
	plays(1001, 1050)
	exec := func(sqls ...string) {
		t.Helper()
		for _, sql := range sqls {
			_, err := tx.Exec(ctx, sql)
			require.NoError(t, err)
		}
	}
	exec(`ROLLBACK TO SAVEPOINT s1`, `SAVEPOINT s2`, `SAVEPOINT s3`)
	plays(2001, 2010)
	exec(`RELEASE SAVEPOINT s3`, `ROLLBACK TO SAVEPOINT s2`, `SAVEPOINT s4`)
	plays(3001, 3001)
	exec(`RELEASE SAVEPOINT s4`)
	plays(51, 60)
	require.NoError(t, tx.Commit(ctx))
	maxID := db.QueryInt(t, `SELECT max(id) FROM plays`)

	got := nextTransaction(t, stream)
	require.Equal(t, append(keyRange(1, 60), 3001), got.keys)
	require.Equal(t, 3*3000, got.rows)
	require.Equal(t, maxID, got.max)

	// Rolled back whole: never handed over; the next transaction is the next commit.
	tx, err = big.Begin(ctx)
	require.NoError(t, err)
	plays(5001, 5050)
	plays(5001, 5050)
	require.NoError(t, tx.Rollback(ctx))
	db.Exec(t, `INSERT INTO plays (play_item_id, created_at) VALUES (6001, '2026-12-01')`)
	require.Equal(t, []int64{6001}, nextTransaction(t, stream).keys)

	// The walsender did stream (rather than spill) them. Its statistics are certain only once
	// it exits: Postgres 18 had not reported them 20 s later with the session still open.
	db.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'streamed'`)
	require.Eventually(t, func() bool {
		return db.QueryInt(t, `SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = 'streamed'`) >= 2
	}, 20*time.Second, 100*time.Millisecond, "the large transactions were streamed")
}

// A session whose first change of a table comes in a streamed transaction gets the table's
// Relation message only there: pgoutput counts it as sent once that transaction commits, and
// later transactions' changes come without it.
func TestRelationFirstSentInStreamedTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	stream := streamingSession(t, db, "first_streamed")
	db.Exec(t, `INSERT INTO plays (play_item_id, created_at) SELECT 1 + g % 20, '2026-12-01' FROM generate_series(1, 5000) g`)
	require.Equal(t, keyRange(1, 20), nextTransaction(t, stream).keys)
	db.Exec(t, `INSERT INTO plays (play_item_id, created_at) VALUES (77, '2026-12-01')`)
	require.Equal(t, []int64{77}, nextTransaction(t, stream).keys)
}
