// Package faults is the fault-injection suite (`make test-faults`). It holds no production code:
// its test runs the real challenge-stream binary against its own throw-away Postgres cluster
// under continuous plays and comments traffic and breaks things on purpose, one fault per cycle,
// chosen at random from a seeded generator:
//
//   - kill -9 of the sidecar at a random moment, or exactly between a flush's COMMIT and the
//     standby status update that confirms it (the after-flush-commit failpoint);
//   - an immediate (crash) restart of Postgres, a fast one (pg_ctl restart -m fast), which
//     hangs unless the sidecar lets the walsender finish, and a smart one, which also waits
//     for the sidecar to end its sessions by itself (the suite ends the host's own);
//   - pg_terminate_backend of the walsender or of the flush connection;
//   - a TCP proxy between the sidecar and Postgres that cuts every connection, or stalls them
//     for a few seconds, or turns into a black hole (sockets open, nothing relayed, the proxy's
//     kernel still ACKing) until the server drops the walsender at wal_sender_timeout;
//   - a transaction holding row locks on the user_challenges rows the flush needs;
//   - the polling reference (processors.CatchUp, 5,000 rows per tick, advancing the legacy
//     checkpoints) running concurrently against the same rows;
//   - a flush that fails: its statement cancelled (pg_cancel_backend), timed out (the sidecar
//     restarted with statement_timeout = 500ms while the row locks are held), aborted by a
//     deadlock with a transaction that takes the reward rows in the reverse order, or cancelled
//     while the sidecar stops on SIGTERM (which must then exit non-zero);
//   - commits held in their synchronous-replication wait (SyncRep) — in WAL and streamed,
//     invisible to everyone — for a few seconds;
//   - a kill -9 while the server streams the sidecar an open large transaction, and such a
//     transaction rolled back;
//   - the publication dropped under traffic, and half the time recreated before the sidecar
//     does: the changes in between never pass through it (Postgres 18 skips them), so the
//     sidecar must recreate its slot and catch up.
//
// A supervisor restarts the sidecar whenever it dies or is stopped, as systemd or Kubernetes
// would. The cluster runs in transaction-id epoch 1 or later (pg_resetwal -e; PG_XID_EPOCH=0
// for epoch 0), which the suite checks and reports. After every fault the suite waits until the
// sidecar stores a position past the fault; after the last one it stops the traffic, waits
// until the sidecar has applied everything, and requires that a from-scratch recompute
// (processors.Verify) finds no difference and that no reward row was written twice (one
// notification per complete row: the host's trigger fires on every write).
//
// TestBlackHoledLeader runs two replicas, each behind its own proxy, turns the leader's proxy
// into a black hole and reports how long the standby takes to stream and apply again
// (BLACKHOLE_RUNS repeats it).
//
// TestPlannedShutdowns restarts Postgres with fast and smart shutdowns while the sidecar streams
// and requires each to finish, the slot kept and verify clean (SHUTDOWN_RUNS repeats it).
//
// TestCommitStreamedBeforeVisible holds a commit in its synchronous-replication wait — in WAL
// and streamed, invisible to everyone — and requires the sidecar not to flush past it.
//
// FAULT_CYCLES sets the number of cycles (default: one of each kind, for CI) and FAULT_SEED the
// seed (default: the clock; the seed is printed so a failure can be replayed). A long local run:
//
//	FAULT_CYCLES=100 go test ./faults/ -count=1 -v -timeout 60m
package faults
