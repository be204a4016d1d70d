// Package workload builds a synthetic host database and drives traffic into it, for the demo
// and the benchmarks.
//
// # The database
//
// Generate fills an empty host schema (internal/tools/hostdb) with thousands of artists (some
// verified, a few deactivated, some with older versions of their users row), tens of thousands
// of tracks (a few deleted, some with older versions owned by someone else), listeners, a year
// of comment history and the play aggregates the milestone rule counts: several monthly rows per
// track (a run of up to seven months, some before 2025, now and then split by country), about
// five per track, so production size means millions of aggregate rows as in production. Play
// history is written straight into the aggregates, as the pruning job leaves it in production;
// the plays table starts empty. Most verified artists start a few plays below a milestone, so
// that a short run crosses hundreds of them and latency percentiles mean something. Generate then derives the
// reward rows of that history (processors.CatchUp from scratch) and sets the legacy
// checkpoints, so the database looks like one the polling job has kept: a sidecar started on it
// cuts over from the checkpoints.
//
// # The model
//
// Host remembers what Generate wrote: which tracks count for which eligible artist and every
// artist's current count. Traffic goes through it, so for every block it knows which plays
// cross a milestone (the artist's count reaches a tier's step) without asking the database.
// The benchmarks time those crossings; the database remains the judge of correctness
// (processors.Verify).
//
// # Traffic
//
// A block indexer writes one transaction per block: a multi-row INSERT of the block's plays, a
// multi-row INSERT of its comments and, now and then, an edit or soft delete of an older comment
// (an UPDATE that bumps its blocknumber). Drive does that at a configurable rate of plays and
// comments per second; Backlog writes N plays in fixed-size transactions as fast as the server
// takes them.
package workload
