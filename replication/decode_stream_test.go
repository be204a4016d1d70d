package replication

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func pgoStreamStart(xid uint32, first bool) []byte {
	b := pgoU32([]byte{'S'}, xid)
	if first {
		return append(b, 1)
	}
	return append(b, 0)
}

func pgoStreamStop() []byte { return []byte{'E'} }

func pgoStreamCommit(xid uint32, commitLSN, endLSN pglogrepl.LSN, commit time.Time) []byte {
	b := append(pgoU32([]byte{'c'}, xid), 0)
	b = pgoU64(b, uint64(commitLSN))
	b = pgoU64(b, uint64(endLSN))
	return pgoU64(b, pgoTime(commit))
}

func pgoStreamAbort(xid, subxid uint32) []byte { return pgoU32(pgoU32([]byte{'A'}, xid), subxid) }

// pgoStreamed is a change or relation message as sent inside a stream segment: the
// transaction ID after the type byte.
func pgoStreamed(xid uint32, msg []byte) []byte {
	return append(pgoU32([]byte{msg[0]}, xid), msg[1:]...)
}

func TestDecodeStreamedTransaction(t *testing.T) {
	t.Parallel()
	d := pgoSetupDecoder(t, pgoStandardRelations()...)
	commit := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		msg  []byte
		want event
	}{
		{pgoStreamStart(700, true), event{Kind: eventStreamStart, Xid: 700, FirstSegment: true}},
		{pgoStreamed(700, pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...)), withXid(playEvent(1, true, 10), 700)},
		{pgoStreamed(701, pgoInsert(pgoPlaysRelID, pgoPlaysRow("2", "11")...)), withXid(playEvent(2, true, 11), 701)},
		{pgoStreamed(700, pgoTruncate(0, pgoPlaysRelID)), event{Kind: eventTruncate, Xid: 700}},
		{pgoStreamStop(), event{Kind: eventStreamStop, Xid: 700}},
		// A whole transaction between two segments of the streamed one.
		{pgoBegin(0x50, commit, 702), event{Kind: eventBegin, Xid: 702, CommitTime: commit}},
		{pgoInsert(pgoPlaysRelID, pgoPlaysRow("3", "12")...), playEvent(3, true, 12)},
		{pgoCommit(0x50, 0x58, commit), event{Kind: eventCommit, EndLSN: 0x58, CommitTime: commit}},
		{pgoStreamStart(700, false), event{Kind: eventStreamStart, Xid: 700}},
		{pgoStreamStop(), event{Kind: eventStreamStop, Xid: 700}},
		{pgoStreamAbort(700, 701), event{Kind: eventStreamAbort, Xid: 700, SubXid: 701}},
		{pgoStreamCommit(700, 0x60, 0x68, commit), event{Kind: eventStreamCommit, Xid: 700, EndLSN: 0x68, CommitTime: commit}},
	}
	for i, step := range steps {
		got, err := d.decode(step.msg)
		require.NoError(t, err, "step %d", i)
		require.Equal(t, step.want, got, "step %d", i)
	}
}

func withXid(ev event, xid uint32) event {
	ev.Xid = xid
	return ev
}

// A Relation message inside a segment is that transaction's definition (perhaps its own
// ALTER TABLE): it reads that transaction's changes and nobody else's, and is gone when the
// transaction aborts — the table is as it was, and pgoutput sends it again.
func TestDecodeStreamedRelationStaysWithItsTransaction(t *testing.T) {
	t.Parallel()
	d := pgoSetupDecoder(t, pgoStandardRelations()...)
	// Transaction 800 swaps the positions of id and play_item_id (same column count).
	swapped := pgoRelation(pgoPlaysRelID, "public", "plays",
		pgoColumn{"user_id", oidInt4}, pgoColumn{"source", 25}, pgoColumn{"play_item_id", oidInt4},
		pgoColumn{"id", oidInt4}, pgoColumn{"created_at", 1114}, pgoColumn{"country", 1043})
	for _, msg := range [][]byte{pgoStreamStart(800, true), pgoStreamed(800, swapped)} {
		_, err := d.decode(msg)
		require.NoError(t, err)
	}
	got, err := d.decode(pgoStreamed(800, pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...)))
	require.NoError(t, err)
	require.Equal(t, withXid(playEvent(10, true, 1), 800), got, "read with the transaction's definition")
	for _, msg := range [][]byte{pgoStreamStop(), pgoStreamAbort(800, 800)} {
		_, err := d.decode(msg)
		require.NoError(t, err)
	}
	got, err = d.decode(pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...))
	require.NoError(t, err)
	require.Equal(t, playEvent(1, true, 10), got, "the aborted definition is gone")
	require.Empty(t, d.streamRels)
}

func TestDecodeStreamRejects(t *testing.T) {
	t.Parallel()
	commit := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		setup [][]byte
		msg   []byte
	}{
		{"segment inside a segment", [][]byte{pgoStreamStart(1, true)}, pgoStreamStart(2, true)},
		{"stop without a segment", nil, pgoStreamStop()},
		{"commit inside a segment", [][]byte{pgoStreamStart(1, true)}, pgoStreamCommit(1, 1, 2, commit)},
		{"abort inside a segment", [][]byte{pgoStreamStart(1, true)}, pgoStreamAbort(1, 1)},
		{"begin inside a segment", [][]byte{pgoStreamStart(1, true)}, pgoBegin(1, commit, 3)},
		{"commit inside a segment (protocol 1)", [][]byte{pgoStreamStart(1, true)}, pgoCommit(1, 2, commit)},
		{"streamed change without its transaction ID", [][]byte{pgoStreamStart(1, true)}, []byte{'I', 0, 0}},
		{"stream start with trailing bytes", nil, append(pgoStreamStart(1, true), 0)},
		{"stream start truncated", nil, pgoStreamStart(1, true)[:4]},
		{"stream commit truncated", nil, pgoStreamCommit(1, 1, 2, commit)[:20]},
		{"stream abort with parallel-apply fields (protocol 4)", nil, pgoU64(pgoU64(pgoStreamAbort(1, 1), 5), 6)},
		{"stream stop with a body", [][]byte{pgoStreamStart(1, true)}, []byte{'E', 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := pgoSetupDecoder(t, append(pgoStandardRelations(), tt.setup...)...)
			got, err := d.decode(tt.msg)
			require.ErrorIs(t, err, errMalformed)
			require.Equal(t, event{}, got)
		})
	}
}

// A relation first sent inside a streamed transaction that commits is known from then on:
// pgoutput does not send it again for later transactions (found by the fault suite: an
// immediate restart, then "unknown relation" on every reconnect).
func TestDecodeStreamedRelationKeptAtCommit(t *testing.T) {
	t.Parallel()
	d := newDecoder(testPlan(t))
	commit := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, msg := range [][]byte{
		pgoStreamStart(900, true),
		pgoStreamed(900, pgoRelation(pgoPlaysRelID, "public", "plays", pgoPlaysColumns()...)),
		pgoStreamed(900, pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...)),
		pgoStreamStop(),
		pgoStreamCommit(900, 0x60, 0x68, commit),
		pgoBegin(0x70, commit, 901),
	} {
		_, err := d.decode(msg)
		require.NoError(t, err)
	}
	got, err := d.decode(pgoInsert(pgoPlaysRelID, pgoPlaysRow("2", "11")...))
	require.NoError(t, err)
	require.Equal(t, playEvent(2, true, 11), got)
}
