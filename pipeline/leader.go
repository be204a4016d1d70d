package pipeline

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// LeaderLockKey is the text whose hashtextextended(key, 0) is the session advisory lock held by
// the replica that streams from slot. Other commands (teardown) take it to make sure no sidecar
// is running on the slot.
func LeaderLockKey(slot string) string { return "challenge-stream:" + slot }

// TryLeaderLock takes the leader lock of slot on conn for the life of its session and reports
// whether it got it. It is the one place the lock is taken.
//
// The sidecar takes it on its replication connection (a logical walsender runs simple-query
// SQL before START_REPLICATION), not on the flush connection: a client that vanishes without a
// FIN or RST — a dead host, or a black hole behind a proxy whose kernel keeps ACKing — is
// noticed by a streaming walsender after wal_sender_timeout without replies, and the lock ends
// with it. An idle flush session would keep it until TCP keepalive fails, which never happens
// behind such a proxy. teardown passes its ordinary connection's PgConn.
func TryLeaderLock(ctx context.Context, conn *pgconn.PgConn, slot string) (bool, error) {
	ok, err := queryBool(ctx, conn, "SELECT pg_try_advisory_lock(hashtextextended("+leaderKeyLiteral(slot)+", 0))")
	if err != nil {
		return false, fmt.Errorf("take leader lock: %w", err)
	}
	return ok, nil
}

// ReleaseLeaderLock gives up the leader lock TryLeaderLock took on conn. Closing the
// connection releases it too, but only once the server's backend has exited, a moment after
// the client returned: whoever looks next could still find it held.
func ReleaseLeaderLock(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	if _, err := queryBool(ctx, conn, "SELECT pg_advisory_unlock(hashtextextended("+leaderKeyLiteral(slot)+", 0))"); err != nil {
		return fmt.Errorf("release leader lock: %w", err)
	}
	return nil
}

// leaderHeld reports whether some session of this database holds slot's leader lock: a bigint
// advisory lock shows in pg_locks as classid (high 32 bits) and objid (low), objsubid 1. A
// standby asks it before each try, so that it opens a replication connection — a walsender,
// counted against max_wal_senders — only when the lock looks free; without it every standby
// cycled a walsender at each retry.
func leaderHeld(ctx context.Context, conn *pgconn.PgConn, slot string) (bool, error) {
	held, err := queryBool(ctx, conn, `SELECT EXISTS (SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (classid::bigint << 32) | objid::bigint = hashtextextended(`+leaderKeyLiteral(slot)+`, 0))`)
	if err != nil {
		return false, fmt.Errorf("look up the leader lock: %w", err)
	}
	return held, nil
}

// leaderKeyLiteral is LeaderLockKey as a quoted literal: the statements run in the simple
// protocol, the only one a walsender accepts.
func leaderKeyLiteral(slot string) string { return quoteLiteral(LeaderLockKey(slot)) }

// queryBool runs a statement that returns one boolean.
func queryBool(ctx context.Context, conn *pgconn.PgConn, sql string) (bool, error) {
	v, err := queryText(ctx, conn, sql)
	return v == "t", err
}

// standbyApplicationName is the application_name of a standby's look at the leader lock.
const standbyApplicationName = "challenge-stream-standby"

// leaderStillHeld is a standby's look at the leader lock, on a plain connection opened for it and
// closed after: a connection kept open between retries would be an idle session that a smart
// server shutdown waits for. Any failure says "not held", so the caller tries the lock itself.
func (p *pipeline) leaderStillHeld(ctx context.Context) bool {
	cfg, err := sideConfig(&p.cfg.Database.Config, standbyApplicationName)
	if err != nil {
		return false
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false
	}
	defer conn.Close(context.WithoutCancel(ctx))
	held, err := leaderHeld(ctx, conn, p.cfg.Slot)
	return err == nil && held
}
