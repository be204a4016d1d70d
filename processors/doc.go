// Package processors holds the challenge rules (SPEC §3, RULES.md) and their registry (Rules):
// each rule is a value naming its challenges, the columns whose changes make its keys dirty, its
// recompute and, for the incremental ones, its legacy checkpoint. The pipeline compiles the
// registry into what it streams and keeps; nothing outside this package names a rule.
//
// # Two kinds of rule
//
// Incremental rules (p1–p3, c) are the polling job's incremental processors: they advance a
// legacy checkpoint, and everything below about gaps, margins and holding applies to them.
// Full-rescan rules (v, t, cp, w) were re-derived from scratch on every tick of the polling job.
// The sidecar derives each from scratch once — the first flush that sees it, the first after it
// is switched on again, and every catch-up (a tick's worth of work) — recorded in
// challenge_stream.legacy_checkpoints under "rule:<name>", and from its dirty keys after that.
// Their parity tests run them against the upstream tick on random histories.
//
// The rules are plain functions of (ctx, Querier,
// IDs). The streaming path calls them with the IDs a replication window made dirty; the
// catch-up path (CatchUp) calls them with the IDs found by scanning past the legacy
// checkpoints. Both run the same code in the caller's transaction, so both produce identical
// rows, and neither opens, commits or retries a transaction.
//
// # The rules
//
// Play-count milestones (p1, p2, p3). An artist is eligible when a current users row says
// verified and not deactivated. Their count is the sum of aggregate_monthly_plays since
// 2025-01-01 over their live (current, not deleted) tracks. The tiers are walked in ascending
// order; a tier is written once the count reaches the previous tier's step, with progress
// capped at its own step, so p2 appears at 250 plays and p3 at 1,000. A tier whose catalog row
// is missing, inactive or has no step is skipped and lowers the gate of the next one. Plays
// only resolve to an artist through the track's live row, so plays on deleted tracks, unknown
// tracks and tracks of ineligible artists change nothing.
//
// First weekly comment (c). One complete row per ISO week (Postgres ISOYEAR and WEEK) in which
// the user has a visible, non-deleted comment. Rows are never removed: deleting or hiding the
// comment later leaves the reward in place.
//
// Both use one upsert (SPEC §3.1): the step count always follows the derivation, even down;
// completion is sticky, and once complete a row's amount and completed_at are frozen, so
// changing a catalog amount only affects rewards not yet earned.
//
// # Why unchanged rows are skipped
//
// A window recomputes every dirty artist in full, and most recomputes change nothing: an
// artist past 10,000 plays, or a commenter's earlier weeks, yields exactly the stored rows.
// The reference upsert updated them anyway, and every UPDATE of a complete row fires the
// host's on_user_challenge trigger (a notification insert), writes WAL and leaves a dead
// tuple. Upsert adds a WHERE clause to its ON CONFLICT DO UPDATE that is true only when the
// merged row differs from the stored one; a false WHERE writes nothing. The final contents are
// the same as the reference's, which internal/tools/pollingjob keeps for the benchmarks.
//
// All queries are set-based: one statement per batch of IDs or rows (unnest of arrays), never
// one per user.
//
// # Catch-up and its margin
//
// CatchUp is the old polling job: scan plays past the plays.id checkpoint and comments past the
// comments.blocknumber checkpoint, recompute whoever they touch, advance the checkpoints. It is
// kept for cut-over from the polling job, for recovery after a lost replication slot, and for
// backfills, always inside a snapshot the caller chose.
//
// A plays.id high-water mark is not exact. Serial ids are taken when a row is inserted but
// become visible when its transaction commits, so an id below the checkpoint can commit after
// the checkpoint was read. PlayIDMargin re-scans that many ids below the checkpoint; because a
// recompute derives an artist's whole state, re-reading a play costs a read and never a double
// count. Under the stream this matters less: rows committing after a slot's consistent point
// arrive on the stream whatever their id.
//
// Comments have the same problem with block numbers, worse: an edit bumps a comment's
// blocknumber, and two blocks' transactions can commit out of order, so a comment can become
// visible below the comments.blocknumber checkpoint; a comment whose blocknumber is NULL is
// below every checkpoint. BlockMargin re-scans that many blocks at and below the
// checkpoint and CommentNullBlocks re-derives every user with a NULL-block comment. Recovery
// and cut-over use both (DefaultBlockMargin explains the default); the scans use the
// comments(blocknumber) index the migrations ensure, NULLs included.
//
// # Catalog amounts
//
// amount is a varchar, read as the polling job read it: fmt.Sscanf(amount, "%d"), the leading
// integer ("25.5" is 25, "1,000" is 1, "abc" is 0). Anything but a plain integer is reported in
// Catalog.Oddities for the caller to log once. A value outside int4 is 0 (the job's write
// would fail there).
//
// # A rule switched off and on
//
// The polling job skips an inactive rule entirely, so its checkpoint stays where the rule last
// ran, and switching the rule on again derives everything since. ApplyWindow, the flush's rule
// step, does the same per family (c; the p tiers together, active while any tier is): while a
// family is inactive its legacy checkpoint is not advanced and is marked held
// (checkpoints.HoldLegacy); the first flush with changes that finds it active again derives
// the gap from the held checkpoint with the margins above, in the flush transaction and before
// the window, then releases it. CatchUp holds an inactive family the same way, so a recovery or
// cut-over during the inactive period loses nothing either. The common case costs one small
// read (checkpoints.ReadLegacyState) per flush and no write.
//
// # A polling job still running
//
// Running the polling job next to the sidecar is a race neither side can win: both recompute
// an artist from their own snapshot, and the job (READ COMMITTED, count then upsert) can
// commit an older count after the sidecar committed a newer one. The upsert cannot guard
// against that: §3.1 makes current_step_count follow the latest derivation even downwards
// (deleted tracks, an artist losing eligibility, a tier gate moving), the late write is the
// job's own statement, and refusing to lower counts would break parity with the reference.
// What the sidecar can do is notice: AdvanceLegacy remembers the value it left in each legacy
// checkpoint, and a flush that finds another value reports the checkpoint in
// WindowResult.Foreign (once per change) and re-derives the range the other writer covered,
// which repairs what it wrote before that flush. Writes after it, and a job write hidden
// because the sidecar raised the checkpoint further first, are not repaired: stop the polling
// job before starting the sidecar (docs/operations.md, cut-over) and run verify if the warning appears.
//
// Verify re-derives everything from scratch with independent full-table queries and reports
// how user_challenges differs, tolerating what the rules legitimately leave behind.
package processors
