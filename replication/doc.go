// Package replication speaks the logical replication protocol for challenge-stream: it
// connects, manages the slot and publication, and turns pgoutput into committed transactions
// reduced to the IDs the rules need.
//
// # Connections
//
// Connect opens a replication=database connection; DetectDeadPeers (conn.go) gives it and the
// flush connection TCP keepalives and TCP_USER_TIMEOUT on both ends, so a host that vanishes
// without closing its sockets is noticed in about 30 s instead of hours. The server is checked
// for its version (version.go: 14 or later), wal_level and synchronous_standby_names
// (syncrep.go: a logical walsender must never become a synchronous standby).
//
// # Slots
//
// slot.go creates the publication and the slot (with FAILOVER on Postgres 17+ unless turned
// off), inspects it — filtered by database, since slot names are cluster-wide — and drops it.
// CreateSlot exports a snapshot, in which the pipeline catches up so that nothing committed
// before the slot's consistent point is missed or applied twice.
//
// # The stream
//
// Start sends START_REPLICATION with pgoutput protocol version 1, which sends a transaction
// only after it commits: a transaction's changes are kept as IDs until its COMMIT, so memory is
// O(distinct IDs) whatever its size, and the consumer never sees part of one. Next returns a
// committed Transaction, a Keepalive or MessageTimeout; transactions ending at or before the
// start LSN were already applied and are skipped. Next waits with a read deadline on the
// socket instead of a context (pgconn would arm a context watcher per message); Interrupt wakes
// it from another goroutine. While the server sends transactions that committed more than a
// second earlier (a backlog), the stream gathers: the socket's SO_RCVLOWAT is 64 kB, so the
// walsender no longer wakes the client for every message it sends, and a read waits at most
// 1 ms for that much (on Linux over TCP, with or without TLS).
//
// Received is the highest position the server said it sent; SendStatus reports it as written
// and sets flush and apply explicitly to what the caller has durably applied (zero sends
// "invalid", which leaves the slot where it is). Confirming past the caller's stored position
// is impossible through this API.
//
// # Decoding
//
// decode_tuple.go is the hot path: Insert and Update of the Plan's tables (plan.go; the
// pipeline builds it from the rule registry), zero allocations per row, the Plan's integer
// columns found by name from the cached Relation. A Transaction keeps the Plan's key sets and
// maxima, never rows. The other messages (Relation,
// Begin, Commit, Truncate, Origin, Type, Message) go through pglogrepl.Parse behind length
// guards. Every decoding error is permanent: the pipeline stops rather than confirm data it
// could not interpret.
package replication
