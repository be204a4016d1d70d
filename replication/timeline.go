package replication

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// TimelineBegan returns the WAL position where the server's current timeline began: 0 on
// timeline 1, else the switchpoint in the last line of its history file. A promotion (failover,
// switchover, or a point-in-time restore that ends recovery) starts a new timeline, and
// logical slots do not cross one unless they were synchronized, so a position stored before
// that point and a missing slot mean the slot stayed behind on the old primary.
func TimelineBegan(ctx context.Context, conn *pgconn.PgConn) (timeline int32, began pglogrepl.LSN, err error) {
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return 0, 0, fmt.Errorf("identify system: %w", err)
	}
	if sys.Timeline <= 1 {
		return sys.Timeline, 0, nil
	}
	history, err := pglogrepl.TimelineHistory(ctx, conn, sys.Timeline)
	if err != nil {
		return 0, 0, fmt.Errorf("timeline history %d: %w", sys.Timeline, err)
	}
	began, err = lastSwitchpoint(history.Content)
	if err != nil {
		return 0, 0, fmt.Errorf("timeline history %d (%s): %w", sys.Timeline, history.FileName, err)
	}
	return sys.Timeline, began, nil
}

// lastSwitchpoint parses a timeline history file: one line per ancestor timeline,
// "parentTLI<tab>switchpoint<tab>reason", comments (#) and blank lines allowed. The last line's
// switchpoint is where the current timeline forked from its parent.
func lastSwitchpoint(content []byte) (pglogrepl.LSN, error) {
	var last pglogrepl.LSN
	found := false
	lines := bufio.NewScanner(bytes.NewReader(content))
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return 0, fmt.Errorf("malformed line %q", line)
		}
		lsn, err := pglogrepl.ParseLSN(fields[1])
		if err != nil {
			return 0, fmt.Errorf("malformed switchpoint in %q: %w", line, err)
		}
		last, found = lsn, true
	}
	if err := lines.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no switchpoint")
	}
	return last, nil
}
