package replication

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// WalSenderTimeout returns the wal_sender_timeout of the replication connection's own
// walsender (0: disabled). The server ends a walsender whose client has sent nothing for that
// long; the setting can differ per role, database or connection, so it is asked of the session
// itself, with the replication protocol's SHOW, before START_REPLICATION.
func WalSenderTimeout(ctx context.Context, conn *pgconn.PgConn) (time.Duration, error) {
	results, err := conn.Exec(ctx, "SHOW wal_sender_timeout").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("show wal_sender_timeout: %w", err)
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 1 {
		return 0, fmt.Errorf("show wal_sender_timeout: unexpected result")
	}
	return parseSettingDuration(string(results[0].Rows[0][0]))
}

var settingDuration = regexp.MustCompile(`^(\d+)\s*(ms|s|min|h|d)?$`)

// parseSettingDuration reads a time setting as SHOW prints it ("60s", "1min", "500ms", "0").
func parseSettingDuration(s string) (time.Duration, error) {
	m := settingDuration.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("wal_sender_timeout %q: not a duration", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("wal_sender_timeout %q: %w", s, err)
	}
	unit := map[string]time.Duration{"": time.Millisecond, "ms": time.Millisecond, "s": time.Second,
		"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	return time.Duration(n) * unit, nil
}
