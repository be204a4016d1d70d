package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

// TestFullXid: a streamed transaction's 32-bit xid is widened to the full xid nearest to the
// snapshot's xmax, on either side of it and across an epoch boundary. The bug this replaces read
// every xid at or above xmax as one of the previous epoch: in epoch 0 the subtraction wrapped and
// happened to look invisible; from epoch 1 on it looked long committed, and the flush passed rows
// nobody could see yet.
func TestFullXid(t *testing.T) {
	const epoch = uint64(1) << 32
	for _, tc := range []struct {
		name string
		xid  uint32
		near uint64
		want uint64
	}{
		{"epoch 0, below xmax", 740, 750, 740},
		{"epoch 0, at xmax (commit streamed, still in the proc array)", 750, 750, 750},
		{"epoch 0, above xmax", 760, 750, 760},
		{"epoch 1, below xmax", 740, epoch + 750, epoch + 740},
		{"epoch 1, at xmax", 750, epoch + 750, epoch + 750},
		{"epoch 1, above xmax (the lost rows)", 760, epoch + 750, epoch + 760},
		{"xmax just past a wrap, xid just before it", 0xFFFFFFF0, 2*epoch + 5, 2*epoch - 16},
		{"xmax just before a wrap, xid just past it", 3, 2*epoch - 5, 2*epoch + 3},
		{"epoch 0 near its end, xid past the wrap", 2, epoch - 10, epoch + 2},
		{"2³¹ below xmax is still this side", 0, epoch + 1<<31, epoch},
		{"epoch 0, far above xmax: no earlier epoch to take it from", 0xF0000000, 750, 0xF0000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, fullXid(tc.xid, tc.near))
		})
	}
}

func TestStatusIntervalFor(t *testing.T) {
	for _, tc := range []struct {
		configured, senderTimeout, want time.Duration
	}{
		{10 * time.Second, time.Minute, 10 * time.Second},
		{10 * time.Second, 20 * time.Second, 10 * time.Second},
		{10 * time.Second, 10 * time.Second, 5 * time.Second},
		{10 * time.Second, 2 * time.Second, time.Second},
		{10 * time.Second, 0, 10 * time.Second}, // the timeout disabled
	} {
		require.Equal(t, tc.want, statusIntervalFor(tc.configured, tc.senderTimeout), "wal_sender_timeout %s", tc.senderTimeout)
	}
}

// TestFlushConnectionSurvivesACancelledStatement: a statement on the flush connection whose
// context ends is cancelled on the server, the error is one the loop takes for a timed-out probe,
// and the connection stays usable (pgx's default would close it, and with it the session).
func TestFlushConnectionSurvivesACancelledStatement(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	conn, err := connectFlush(t.Context(), db.ConnConfig(t))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = conn.Exec(ctx, `SELECT pg_sleep(30)`)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.DeadlineExceeded) || isQueryCanceled(err), "a timeout, not a broken connection: %v", err)
	require.NoError(t, conn.Ping(t.Context()), "the connection is still usable")
}
