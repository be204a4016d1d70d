// Package checkpoints reads and advances the positions that say how far challenge-stream has
// applied the change stream. Every function runs on the Querier it is given, which in the
// flush path is the flush transaction itself; nothing here opens, commits or retries a
// transaction.
//
// Two kinds of checkpoint are kept.
//
// The replication LSN lives in challenge_stream.slot_checkpoints (one row per slot, created by
// package migrations). It is the end LSN of the last replicated transaction whose effects are
// committed, and it is written in the same transaction as the reward rows those effects
// produced. That makes "rewards written" and "position stored" one atomic fact: a crash before
// COMMIT loses both, so the transactions are replayed from the slot; a crash after COMMIT keeps
// both, so the replayed transactions (end LSN <= stored LSN) are recognised and skipped. Storing
// the LSN in a separate transaction, or confirming it to the server before the commit, would
// open a window in which a crash either applies a transaction twice or loses it.
//
// The legacy checkpoints are the polling job's rows in the host table indexing_checkpoints
// (SPEC §3.4), one per incremental rule: PlaysCheckpoint is the highest plays.id applied,
// CommentsCheckpoint the highest comments.blocknumber applied, and package processors names the
// others (Legacy is a map by row name, so a rule adds its checkpoint without a change here). challenge-stream does not need them while streaming,
// but keeps them current in the same transaction (except while their rules are inactive, below) so
// the polling job can be switched back on at any moment and continue exactly where the stream stopped, with no gap and no re-derivation of
// history. They are also where recovery starts when the replication slot is lost (SPEC §5).
// An LSN does not fit their int4 column, hence the separate table for it.
//
// challenge-stream keeps two facts about each legacy checkpoint in
// challenge_stream.legacy_checkpoints, never in the host's table. last_written is the value
// the row had right after AdvanceLegacy last raised it (same statement, so it cannot drift); a
// flush that reads a different value knows someone else wrote the row — the polling job is
// still running — and reports it once (LegacyCheckpoint.Foreign, AcknowledgeLegacy).
// held_since is set while the rules a checkpoint belongs to are inactive: like the polling
// job, the sidecar then does not advance that checkpoint, so that switching the rules on again
// derives the gap from it (HoldLegacy; package processors does the deriving). Both are read in
// one small query per flush (ReadLegacyState) and written only when they change.
//
// Every checkpoint only moves forward (GREATEST), with one exception: a new slot's consistent
// point replaces the stored LSN whatever it was (ResetLSN), because a new slot is the only
// position that counts then — and a higher stored LSN, restored from another cluster, would
// make the stream drop every commit up to it. Rows arrive out of id order — a plays.id
// taken early can commit after a higher one — and a replayed or concurrent writer (the polling
// job during a cut-over, a second replica during failover) may hold an older position; letting
// the stored value go down would make the next reader re-apply or skip work. Advancing to a
// value that is not higher writes nothing: the upserts carry a WHERE clause on their DO UPDATE,
// so an unchanged legacy checkpoint costs no new row version, no WAL and no trigger call.
package checkpoints
