// Package migrations applies challenge-stream's own schema changes and makes sure the host has
// the indexes the sidecar's queries need. `challenge-stream run` calls Apply at start (unless
// --skip-migrations) and `challenge-stream migrate` calls it alone.
//
// Apply does three things, in order, on one connection:
//
//  1. It takes a session-level advisory lock so replicas starting together do not race. The key
//     is LockKey (0x63735f6d69677261, the ASCII bytes "cs_migra"); in pg_locks it shows as
//     locktype 'advisory', classid 1668505453, objid 1768387169, objsubid 1. The lock is taken
//     by polling pg_try_advisory_lock rather than by blocking in pg_advisory_lock: a session
//     blocked in pg_advisory_lock sits inside a statement holding a snapshot, and CREATE INDEX
//     CONCURRENTLY in the session that holds the lock waits for every older snapshot to go away
//     — the two would wait for each other until the deadlock detector killed one. A session
//     lock (not a transaction lock) is needed because step 3 cannot run inside a transaction.
//     The lock is released on return, also on error; if the connection died it went with it.
//
//  2. It applies the versioned migrations: the embedded files NNNN_name.sql, in version order,
//     each in its own transaction together with its row in challenge_stream.schema_migrations
//     (version, name, applied_at). A version already recorded is skipped, so Apply is
//     idempotent. Versions recorded but unknown to this binary (a newer replica migrated
//     first) are logged and left alone. Migrations only ever touch the challenge_stream schema.
//
//  3. It ensures the host indexes, every time, outside any transaction: comments_user_id_idx on
//     public.comments (user_id), which the weekly-comment recompute looks users up by, and
//     comments_blocknumber_idx on public.comments (blocknumber), which the catch-up scan
//     ranges over. Production has neither (SPEC §2), and a sequential scan of comments per
//     flush would not keep up. They are built with CREATE INDEX CONCURRENTLY so the host's
//     writes are never blocked. A concurrent build that is interrupted (the process killed,
//     the connection cut, a statement timeout) leaves an INVALID index behind that queries
//     ignore but every write still maintains; Apply finds it through pg_index.indisvalid,
//     drops it (DROP INDEX CONCURRENTLY) and builds it again. When a valid btree index under
//     another name (a DBA's) already leads with the same column and has no predicate, ours is
//     not created: two indexes on one column only cost writes.
//
// Why this is hand-rolled rather than golang-migrate: step 3 is the part that matters, and
// golang-migrate has no notion of it. A CONCURRENTLY build interrupted under golang-migrate
// marks the schema version "dirty" and refuses to run again until an operator runs `force` by
// hand, while the INVALID index stays behind; here the next start detects and repairs it with
// no human involved. The versioned part is about a hundred lines, with no new dependency.
package migrations
