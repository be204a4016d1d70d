// Package pipeline runs challenge-stream: it turns the replication stream into applied reward
// rows, exactly once, and keeps doing so through restarts, failovers and lost connections.
//
// # The data path
//
// Run (pipeline.go) retries sessions with backoff until it is cancelled or meets a permanent
// error. A session (session.go) opens a replication connection, takes the leader lock on it, opens
// a second, ordinary connection for the flushes, checks the server (preflight.go), applies the
// project's migrations, decides where to start (below) and starts the stream. The loop
// (loop.go) then receives committed transactions from replication.Stream into a window
// (window.go): each registered rule's dirty keys (plan.go compiles processors.Rules into the
// replication plan and back), the highest plays.id and comments.blocknumber, and the end LSN
// of the last whole transaction. A window keeps no keys of a rule the last flush found
// switched off; the flush that applies it derives what it missed if the rule is back on. A window is handed
// to the flusher (flush.go), which in one database transaction recomputes the affected rewards
// (processors.ApplyWindow), advances the legacy checkpoints and stores the window's end LSN,
// then commits. Only then is that LSN confirmed to the server.
//
// A COMMIT can reach us before the transaction is visible to other sessions: the walsender
// sends it once its WAL is flushed, while the committing backend becomes visible only after
// that (and after a synchronous standby answered, when synchronous_commit waits for one). The
// rules read the tables, so a flush first waits until every transaction of its window is
// visible to a new snapshot (waitVisible); otherwise it would store an LSN past rows it never
// saw.
//
// # LSN rules
//
//   - Stored: the end LSN of the last transaction of a committed flush, in the same transaction
//     as its reward rows (package checkpoints). Nothing else is ever stored, except the
//     server's WAL end while idle (below).
//   - Confirmed: never more than what is stored. Scheduled status updates (every 10 s) confirm
//     the stored LSN as flush and apply; the slot therefore never moves past unapplied data. A
//     reply to a keepalive that asks for one confirms nothing (flush invalid) and reports what
//     was received, which is what lets a fast or smart Postgres shutdown finish.
//   - Skipped: after a restart the stream starts at the stored LSN, and transactions that end at
//     or before it — already applied — are dropped by replication.Stream.
//   - Idle: with nothing pending and no transaction open, the server's WAL end is stored (an
//     LSN-only flush) and confirmed once it is IdleConfirmBytes ahead, so a quiet slot does not
//     hold the primary's WAL.
//
// # The window rule (group commit)
//
// windowrule.go holds the rule as a value: its policy, its state and pure decisions (due,
// length, wakeAt), tested as a table; the loop feeds it what happened and does the I/O. A window closes only between transactions and only while no flush runs. It closes as soon as
// the stream has caught up (a keepalive between transactions: the walsender has no more WAL to
// send), so at low load each transaction is applied right after its commit; while the stream
// keeps delivering it closes Window after its first change (stretched while flushes are slow
// or the stream drains a backlog, see windowRule.length) or at MaxWindowSize distinct IDs. A
// stretched window also closes when the stream will reach the server's WAL end (read every
// 100 ms on the idle flush connection) within about one flush (nearingEnd): the last window
// of a backlog then holds only what arrived during the flush before it. FixedWindows drops the
// caught-up rule.
// Decoding continues during a flush; a window that fills while the previous one is flushing
// stops the reading until that flush is done (backpressure), with status updates going on — at
// least every half of the walsender's wal_sender_timeout, which each session reads — and ends
// at once on a stop. A flush that fails ends its session: nothing after it is flushed, stored
// or confirmed, and failing while stopping is ErrStopFlushFailed.
//
// # Start states (SPEC §5)
//
// prepare (startstate.go) decides from the slot, the stored LSN and the server's WAL end
// (decideStart, a pure function): first start (create the slot and catch up inside its exported
// snapshot from the legacy checkpoints, or seed them, or derive all history with Backfill); slot
// and stored LSN (stream from the LSN); stored LSN but slot missing, lost, confirmed past the LSN
// by someone else, its publication recreated, or the stored LSN past the server's WAL end
// (written on another cluster): recreate the slot and catch up, the new slot's position
// replacing the stored one, counted in SlotRecreated with the Reason constants; slot without a
// stored LSN (an interrupted first start: recreate and start again as a first start, Backfill
// honoured).
//
// # The leader lock
//
// One replica per slot streams. It holds a session advisory lock (TryLeaderLock) on its
// replication connection, so the lock ends with the walsender: on a crash, a kill -9, or a dead
// host once wal_sender_timeout or TCP keepalives notice. Other replicas stand by and retry.
//
// # Configuration and observation
//
// Config holds parsed connection settings (Database), never a URL: cmd parses the URL once and
// every connection here uses a copy. Config.Observe receives typed events (events.go) for the
// metrics and the probes.
//
// # Stopping
//
// On cancellation the loop takes the transactions the server has already sent (up to 100 ms)
// and the rest of an open transaction (briefly), flushes the window, confirms it and returns; a
// final flush that does not finish within ShutdownTimeout is ErrShutdownIncomplete, and one
// that fails is ErrStopFlushFailed (nothing is lost either way: the window is replayed). When the server itself
// shuts down smartly it refuses new connections: watchShutdown notices, and the session
// flushes and disconnects so the shutdown can finish, then reconnects with backoff.
package pipeline
