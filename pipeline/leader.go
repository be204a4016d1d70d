package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// LeaderLockKey is the text whose hashtextextended(key, 0) is the session advisory lock held by
// the replica that streams from slot. Other commands (teardown) take it to make sure no sidecar
// is running on the slot.
func LeaderLockKey(slot string) string { return "challenge-stream:" + slot }

// TryLeaderLock takes the leader lock of slot on conn for the life of its session and reports
// whether it got it. It is the one place the lock's SQL lives.
//
// The sidecar takes it on its replication connection (a logical walsender runs simple-query
// SQL before START_REPLICATION), not on the flush connection: a client that vanishes without a
// FIN or RST — a dead host, or a black hole behind a proxy whose kernel keeps ACKing — is
// noticed by a streaming walsender after wal_sender_timeout without replies, and the lock ends
// with it. An idle flush session would keep it until TCP keepalive fails, which never happens
// behind such a proxy. The statement uses the simple protocol (a walsender accepts no other),
// so the key is a quoted literal; teardown passes its ordinary connection's PgConn.
func TryLeaderLock(ctx context.Context, conn *pgconn.PgConn, slot string) (bool, error) {
	key := "'" + strings.ReplaceAll(LeaderLockKey(slot), "'", "''") + "'"
	res, err := conn.Exec(ctx, "SELECT pg_try_advisory_lock(hashtextextended("+key+", 0))").ReadAll()
	if err != nil {
		return false, fmt.Errorf("take leader lock: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return false, fmt.Errorf("take leader lock: unexpected result")
	}
	return string(res[0].Rows[0][0]) == "t", nil
}
