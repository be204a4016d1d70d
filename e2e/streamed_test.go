package e2e

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
)

// smallDecodingMem is the smallest logical_decoding_work_mem the server takes: every
// transaction of a few hundred plays is streamed while it runs.
const smallDecodingMem = "65536"

// openPlays begins a transaction on its own connection and inserts n plays of track in it.
func (e *env) openPlays(track, n int64) pgx.Tx {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, e.db.URL)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = conn.Close(e.ctx) })
	tx, err := conn.Begin(e.ctx)
	require.NoError(e.t, err)
	require.NoError(e.t, hostdb.InsertPlays(e.ctx, tx, track, n, in2025))
	return tx
}

// waitStreamedTxns waits until the server has streamed at least n transactions on the slot.
func (e *env) waitStreamedTxns(n int64) {
	e.t.Helper()
	eventually(e.t, "the server to stream the open transactions", func() bool {
		return e.count(`SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = $1`, e.db.Slot) >= n
	})
}

// TestKill9InStreamedTransaction: the process dies while the server streams it two open
// transactions, one that then commits and one that rolls back. The restart's session gets the
// committed one again from its first change and applies it once; the rolled-back one earns
// nothing.
func TestKill9InStreamedTransaction(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(1, 10)
	e.artistWithTrack(2, 20)
	p := e.run(nil, "--window", "100ms", "--decoding-work-mem", smallDecodingMem)
	e.waitStreaming(p)
	committed, aborted := e.openPlays(10, 2000), e.openPlays(20, 2000)
	e.waitStreamedTxns(2)
	p.kill9()

	require.NoError(t, hostdb.InsertPlays(e.ctx, committed, 10, 500, in2025))
	require.NoError(t, committed.Commit(e.ctx))
	require.NoError(t, aborted.Rollback(e.ctx))
	p = e.run(nil, "--window", "100ms", "--decoding-work-mem", smallDecodingMem)
	e.waitStreaming(p)
	e.caughtUp()
	require.EqualValues(t, 2500, e.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '1:10000'`),
		"every play of the committed transaction, once")
	require.Zero(t, e.count(`SELECT count(*) FROM user_challenges WHERE user_id = 2`), "nothing from the rolled-back one")
	e.verified()
}

// TestCrashAfterStreamedCommitFlushed: a streamed transaction commits, its flush commits, and
// the process dies before confirming. The server streams it again to the restart, which
// applies nothing twice.
func TestCrashAfterStreamedCommitFlushed(t *testing.T) {
	e := setup(t)
	e.artistWithTrack(3, 30)
	e.countWrites()
	p := e.run([]string{"CHALLENGE_STREAM_FAILPOINT=after-flush-commit:1"}, "--window", "100ms", "--decoding-work-mem", smallDecodingMem)
	e.waitStreaming(p)
	tx := e.openPlays(30, 2000)
	e.waitStreamedTxns(1)
	require.NoError(t, tx.Commit(e.ctx))
	require.NotEqual(t, 0, p.exited(90*time.Second), "killed at the failpoint")
	require.EqualValues(t, 3, e.writes(), "p1, p2 and p3 inserted once")
	stored := e.storedLSN()
	require.Less(t, e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`), stored,
		"the flush committed but was not confirmed")

	p = e.run(nil, "--window", "100ms", "--decoding-work-mem", smallDecodingMem)
	e.waitStreaming(p)
	eventually(t, "the restart to confirm the stored LSN", func() bool {
		return e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`) >= stored
	})
	e.caughtUp()
	require.EqualValues(t, 3, e.writes(), "the replayed transaction wrote nothing")
	e.verified()
}
