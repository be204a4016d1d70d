package replication

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrServerVersion means the server is older than MinServerVersion.
var ErrServerVersion = errors.New("postgres server too old")

// MinServerVersion is the oldest server (server_version_num) the sidecar runs against. Slot
// loss is detected through pg_replication_slots.wal_status and bounded by
// max_slot_wal_keep_size, both new in 13; 13 reached end of life in November 2025 and is not
// tested, so 14 — the oldest maintained major, tested in the matrix — is the floor.
const MinServerVersion = 140000

// FailoverSlotVersion is the first server (server_version_num) that can create a logical slot
// with FAILOVER, synchronized to physical standbys (sync_replication_slots).
const FailoverSlotVersion = 170000

// checkServerVersion returns ErrServerVersion when num (a server_version_num) is below
// MinServerVersion.
func checkServerVersion(num int) error {
	if num < MinServerVersion {
		return fmt.Errorf("%w: server_version_num is %d; challenge-stream needs Postgres %d or later",
			ErrServerVersion, num, MinServerVersion/10000)
	}
	return nil
}

// serverVersionNum reads server_version_num.
func serverVersionNum(ctx context.Context, q Querier) (int, error) {
	var s string
	if err := q.QueryRow(ctx, "SHOW server_version_num").Scan(&s); err != nil {
		return 0, fmt.Errorf("show server_version_num: %w", err)
	}
	num, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("parse server_version_num %q: %w", s, err)
	}
	return num, nil
}

// serverMajor is the major version a connection's server announced at startup; a
// replication connection runs no extended-protocol queries, so this saves a round trip.
func serverMajor(conn *pgconn.PgConn) int { return parseMajor(conn.ParameterStatus("server_version")) }

// parseMajor is the major of a server_version ("17.10", "15.4 (Debian 15.4-1)", "18beta1");
// 0 when unreadable.
func parseMajor(v string) int {
	if end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); end >= 0 {
		v = v[:end]
	}
	major, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return major
}
