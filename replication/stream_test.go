package replication

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// xlogData wraps a pgoutput message as the walsender sends it: 'w', the change's LSN twice and
// the server's clock at sending.
func xlogData(at pglogrepl.LSN, sent time.Time, walData []byte) []byte {
	b := []byte{pglogrepl.XLogDataByteID}
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = binary.BigEndian.AppendUint64(b, pgoTime(sent))
	return append(b, walData...)
}

func keepalive(walEnd pglogrepl.LSN, sent time.Time) []byte {
	b := []byte{pglogrepl.PrimaryKeepaliveMessageByteID}
	b = binary.BigEndian.AppendUint64(b, uint64(walEnd))
	b = binary.BigEndian.AppendUint64(b, pgoTime(sent))
	return append(b, 0)
}

// TestStreamNoticesABacklog checks the signal that lets reads gather while the server sends
// old transactions: set when a transaction's BEGIN is more than backlogAge older than the
// server's clock at sending, kept through its COMMIT, cleared by fresh transactions and by a
// keepalive (the server waits for WAL).
func TestStreamNoticesABacklog(t *testing.T) {
	t.Parallel()
	s := &Stream{log: zaptest.NewLogger(t), decoder: NewDecoder(),
		tx: Transaction{Tracks: map[int64]struct{}{}, Commenters: map[int64]struct{}{}}}
	now := time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)
	steps := []struct {
		name   string
		msg    []byte
		behind bool
	}{
		{"old transaction begins", xlogData(0x100, now, pgoBegin(0x200, now.Add(-10*time.Second), 7)), true},
		{"its commit", xlogData(0x200, now, pgoCommit(0x180, 0x200, now.Add(-10*time.Second))), true},
		{"a fresh transaction", xlogData(0x300, now, pgoBegin(0x400, now.Add(-10*time.Millisecond), 8)), false},
		{"fresh commit", xlogData(0x400, now, pgoCommit(0x380, 0x400, now.Add(-10*time.Millisecond))), false},
		{"old again", xlogData(0x500, now, pgoBegin(0x600, now.Add(-2*time.Second), 9)), true},
		{"old commit", xlogData(0x600, now, pgoCommit(0x580, 0x600, now.Add(-2*time.Second))), true},
		{"keepalive: caught up", keepalive(0x600, now), false},
	}
	for _, st := range steps {
		_, _, err := s.handleCopyData(st.msg)
		require.NoError(t, err, st.name)
		require.Equal(t, st.behind, s.behind, st.name)
	}
}
