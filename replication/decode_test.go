package replication

import (
	"encoding/binary"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// The pgo* helpers encode pgoutput protocol version 1 messages as the server
// sends them (src/backend/replication/logical/proto.c, no streaming xid), so
// the decoder can be tested without a database. They are prefixed to stay
// clear of other test helpers in this package.

// Relation IDs used throughout the decoder tests.
const (
	pgoPlaysRelID    = 16390
	pgoCommentsRelID = 16401
	pgoOtherRelID    = 16422
)

type pgoColumn struct {
	name string
	typ  uint32
}

type pgoValue struct {
	kind byte
	data string
}

func pgoText(s string) pgoValue { return pgoValue{kind: 't', data: s} }
func pgoNull() pgoValue         { return pgoValue{kind: 'n'} }
func pgoToast() pgoValue        { return pgoValue{kind: 'u'} }
func pgoBinary(s string) pgoValue {
	return pgoValue{kind: 'b', data: s}
}

// pgoBinInt is an integer in its binary send format: width bytes, big-endian.
func pgoBinInt(width int, v int64) pgoValue {
	b := binary.BigEndian.AppendUint64(nil, uint64(v))
	return pgoBinary(string(b[8-width:]))
}

func pgoU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func pgoU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func pgoU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func pgoStr(b []byte, s string) []byte { return append(append(b, s...), 0) }

// pgoEpochMicros is 2000-01-01 00:00:00 UTC, the Postgres epoch, in Unix
// microseconds.
const pgoEpochMicros = 946_684_800_000_000

func pgoTime(t time.Time) uint64 {
	return uint64(t.UnixMicro() - pgoEpochMicros)
}

func pgoBegin(finalLSN pglogrepl.LSN, commit time.Time, xid uint32) []byte {
	b := []byte{'B'}
	b = pgoU64(b, uint64(finalLSN))
	b = pgoU64(b, pgoTime(commit))
	return pgoU32(b, xid)
}

func pgoCommit(commitLSN, endLSN pglogrepl.LSN, commit time.Time) []byte {
	b := []byte{'C', 0}
	b = pgoU64(b, uint64(commitLSN))
	b = pgoU64(b, uint64(endLSN))
	return pgoU64(b, pgoTime(commit))
}

func pgoRelation(relid uint32, ns, name string, cols ...pgoColumn) []byte {
	b := []byte{'R'}
	b = pgoU32(b, relid)
	b = pgoStr(b, ns)
	b = pgoStr(b, name)
	b = append(b, 'd') // replica identity default
	b = pgoU16(b, uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1 // part of the key; the decoder must not care
		}
		b = append(b, flags)
		b = pgoStr(b, c.name)
		b = pgoU32(b, c.typ)
		b = pgoU32(b, math.MaxUint32) // typmod -1
	}
	return b
}

func pgoTuple(b []byte, vals []pgoValue) []byte {
	b = pgoU16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, v.kind)
		if v.kind == 't' || v.kind == 'b' {
			b = pgoU32(b, uint32(len(v.data)))
			b = append(b, v.data...)
		}
	}
	return b
}

func pgoInsert(relid uint32, vals ...pgoValue) []byte {
	b := pgoU32([]byte{'I'}, relid)
	return pgoTuple(append(b, 'N'), vals)
}

// pgoUpdate encodes an Update; oldTag 0 means no old tuple.
func pgoUpdate(relid uint32, oldTag byte, old, vals []pgoValue) []byte {
	b := pgoU32([]byte{'U'}, relid)
	if oldTag != 0 {
		b = pgoTuple(append(b, oldTag), old)
	}
	return pgoTuple(append(b, 'N'), vals)
}

func pgoDelete(relid uint32, tag byte, old ...pgoValue) []byte {
	b := pgoU32([]byte{'D'}, relid)
	return pgoTuple(append(b, tag), old)
}

func pgoTruncate(options byte, relids ...uint32) []byte {
	b := pgoU32([]byte{'T'}, uint32(len(relids)))
	b = append(b, options)
	for _, id := range relids {
		b = pgoU32(b, id)
	}
	return b
}

func pgoOrigin(lsn pglogrepl.LSN, name string) []byte {
	return pgoStr(pgoU64([]byte{'O'}, uint64(lsn)), name)
}

func pgoType(oid uint32, ns, name string) []byte {
	return pgoStr(pgoStr(pgoU32([]byte{'Y'}, oid), ns), name)
}

func pgoMessage(transactional bool, lsn pglogrepl.LSN, prefix, content string) []byte {
	b := []byte{'M', 0}
	if transactional {
		b[1] = 1
	}
	b = pgoStr(pgoU64(b, uint64(lsn)), prefix)
	b = pgoU32(b, uint32(len(content)))
	return append(b, content...)
}

// pgoPlaysColumns is a plays table as in production: more columns than the
// pipeline reads, the needed ones not first.
func pgoPlaysColumns() []pgoColumn {
	return []pgoColumn{
		{"user_id", oidInt4},
		{"source", 25},
		{"id", oidInt4},
		{"play_item_id", oidInt4},
		{"created_at", 1114},
		{"country", 1043},
	}
}

// pgoPlaysRow returns a plays row matching pgoPlaysColumns.
func pgoPlaysRow(id, track string) []pgoValue {
	return []pgoValue{pgoText("77"), pgoNull(), pgoText(id), pgoText(track), pgoText("2025-03-01 10:00:00"), pgoText("DE")}
}

func pgoCommentsColumns() []pgoColumn {
	return []pgoColumn{
		{"comment_id", oidInt4},
		{"text", 25},
		{"user_id", oidInt4},
		{"entity_id", oidInt4},
		{"entity_type", 25},
		{"created_at", 1114},
		{"updated_at", 1114},
		{"is_delete", 16},
		{"is_visible", 16},
		{"is_edited", 16},
		{"txhash", 25},
		{"blockhash", 25},
		{"blocknumber", oidInt8},
	}
}

// pgoCommentsRow returns a comments row matching pgoCommentsColumns.
func pgoCommentsRow(user string, block pgoValue) []pgoValue {
	return []pgoValue{
		pgoText("5"), pgoText("nice track"), pgoText(user), pgoText("9"), pgoText("Track"),
		pgoText("2025-01-06 12:00:00"), pgoText("2025-01-06 12:00:00"), pgoText("f"), pgoText("t"),
		pgoNull(), pgoText("0xabc"), pgoText("0xdef"), block,
	}
}

func pgoOtherRelation() []byte {
	return pgoRelation(pgoOtherRelID, "public", "tracks",
		pgoColumn{"track_id", oidInt4}, pgoColumn{"owner_id", oidInt4}, pgoColumn{"title", 25})
}

// pgoStandardRelations returns the Relation messages of a session that has
// seen plays, comments and one unrelated table.
func pgoStandardRelations() [][]byte {
	return [][]byte{
		pgoRelation(pgoPlaysRelID, "public", "plays", pgoPlaysColumns()...),
		pgoRelation(pgoCommentsRelID, "public", "comments", pgoCommentsColumns()...),
		pgoOtherRelation(),
	}
}

// pgoSetupDecoder returns a decoder that has decoded msgs, failing the test if
// any of them does not decode.
func pgoSetupDecoder(t testing.TB, msgs ...[]byte) *decoder {
	t.Helper()
	d := newDecoder(testPlan(t))
	for i, m := range msgs {
		_, err := d.decode(m)
		require.NoError(t, err, "setup message %d", i)
	}
	return d
}

func TestDecode(t *testing.T) {
	t.Parallel()

	commitTime := time.Date(2025, 3, 1, 10, 0, 0, 123456000, time.UTC)
	reordered := []pgoColumn{
		{"play_item_id", oidInt8},
		{"created_at", 1114},
		{"id", oidInt8},
	}

	tests := []struct {
		name string
		// setup replaces the standard relations when set.
		setup   [][]byte
		msg     []byte
		want    event
		wantErr error
	}{
		{
			name: "begin",
			msg:  pgoBegin(0x16B3748, commitTime, 777),
			want: event{Kind: eventBegin, Xid: 777, CommitTime: commitTime},
		},
		{
			name: "commit",
			msg:  pgoCommit(0x16B3748, 0x16B3778, commitTime),
			want: event{Kind: eventCommit, EndLSN: 0x16B3778, CommitTime: commitTime},
		},
		{
			name: "plays insert with extra columns",
			msg:  pgoInsert(pgoPlaysRelID, pgoPlaysRow("1001", "42")...),
			want: playEvent(1001, true, 42),
		},
		{
			name:  "plays insert with reordered columns",
			setup: [][]byte{pgoRelation(pgoPlaysRelID, "public", "plays", reordered...)},
			msg:   pgoInsert(pgoPlaysRelID, pgoText("42"), pgoText("2025-03-01"), pgoText("9007199254740993")),
			want:  playEvent(9007199254740993, true, 42),
		},
		{
			name: "plays insert with int2 and int4 columns",
			setup: [][]byte{pgoRelation(pgoPlaysRelID, "public", "plays",
				pgoColumn{"id", oidInt4}, pgoColumn{"play_item_id", oidInt2})},
			msg:  pgoInsert(pgoPlaysRelID, pgoText("-5"), pgoText("32767")),
			want: playEvent(-5, true, 32767),
		},
		{
			name: "plays insert with NULL id",
			msg:  pgoInsert(pgoPlaysRelID, pgoText("1"), pgoText("x"), pgoNull(), pgoText("42"), pgoNull(), pgoNull()),
			want: playEvent(0, false, 42),
		},
		{
			name: "plays insert with unchanged TOAST in an unused column",
			msg:  pgoInsert(pgoPlaysRelID, pgoText("1"), pgoToast(), pgoText("5"), pgoText("6"), pgoNull(), pgoToast()),
			want: playEvent(5, true, 6),
		},
		{
			name:    "plays insert with NULL play_item_id",
			msg:     pgoInsert(pgoPlaysRelID, pgoText("1"), pgoNull(), pgoText("5"), pgoNull(), pgoNull(), pgoNull()),
			wantErr: ErrBadTuple,
		},
		{
			name:    "plays insert with non-integer id",
			msg:     pgoInsert(pgoPlaysRelID, pgoPlaysRow("12a", "42")...),
			wantErr: ErrBadTuple,
		},
		{
			name:    "plays insert with overflowing play_item_id",
			msg:     pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "9223372036854775808")...),
			wantErr: ErrBadTuple,
		},
		{
			name:    "plays insert with empty id",
			msg:     pgoInsert(pgoPlaysRelID, pgoPlaysRow("", "42")...),
			wantErr: ErrBadTuple,
		},
		{
			name: "binary values (binary 'true'), unread columns in any format",
			msg: pgoInsert(pgoPlaysRelID, pgoBinary("\x00\x00\x00\x4d"), pgoBinary("\x00\x01"), pgoBinInt(4, 1001),
				pgoBinInt(4, 42), pgoBinary("\x00\x02\x8b\x4a\x9c\x21\x90\x00"), pgoNull()),
			want: playEvent(1001, true, 42),
		},
		{
			name:    "binary int4 of 8 bytes",
			msg:     pgoInsert(pgoPlaysRelID, pgoText("1"), pgoNull(), pgoBinInt(8, 1001), pgoBinInt(4, 42), pgoNull(), pgoNull()),
			wantErr: ErrBadTuple,
		},
		{
			name:    "binary value truncated",
			msg:     pgoInsert(pgoPlaysRelID, pgoText("1"), pgoNull(), pgoBinary("\x00\x01"), pgoBinInt(4, 42), pgoNull(), pgoNull()),
			wantErr: ErrBadTuple,
		},
		{
			name:    "tuple with fewer columns than the relation",
			msg:     pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "2")[:5]...),
			wantErr: ErrBadTuple,
		},
		{
			name:    "tuple with more columns than the relation",
			msg:     pgoInsert(pgoPlaysRelID, append(pgoPlaysRow("1", "2"), pgoNull())...),
			wantErr: ErrBadTuple,
		},
		{
			name: "plays update is ignored",
			msg:  pgoUpdate(pgoPlaysRelID, 0, nil, pgoPlaysRow("1", "2")),
			want: event{Kind: eventIgnored},
		},
		{
			name: "plays delete is ignored",
			msg:  pgoDelete(pgoPlaysRelID, 'K', pgoNull(), pgoNull(), pgoText("1"), pgoNull(), pgoNull(), pgoNull()),
			want: event{Kind: eventIgnored},
		},
		{
			name: "comments insert",
			msg:  pgoInsert(pgoCommentsRelID, pgoCommentsRow("700", pgoText("123456789012"))...),
			want: commentEvent(700, 123456789012, true, OpInsert),
		},
		{
			name: "comments insert with NULL blocknumber",
			msg:  pgoInsert(pgoCommentsRelID, pgoCommentsRow("700", pgoNull())...),
			want: commentEvent(700, 0, false, OpInsert),
		},
		{
			name: "comments insert with NULL user_id",
			msg: pgoInsert(pgoCommentsRelID, func() []pgoValue {
				row := pgoCommentsRow("0", pgoText("1"))
				row[2] = pgoNull()
				return row
			}()...),
			wantErr: ErrBadTuple,
		},
		{
			name: "comments update without old tuple",
			msg:  pgoUpdate(pgoCommentsRelID, 0, nil, pgoCommentsRow("700", pgoText("99"))),
			want: commentEvent(700, 99, true, OpUpdate),
		},
		{
			name: "comments update with old key",
			msg: pgoUpdate(pgoCommentsRelID, 'K',
				[]pgoValue{pgoText("5"), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull(), pgoNull()},
				pgoCommentsRow("700", pgoText("99"))),
			want: commentEvent(700, 99, true, OpUpdate),
		},
		{
			name: "comments update with old row (replica identity full)",
			msg: pgoUpdate(pgoCommentsRelID, 'O',
				pgoCommentsRow("700", pgoText("98")),
				pgoCommentsRow("701", pgoText("99"))),
			want: commentEvent(701, 99, true, OpUpdate),
		},
		{
			name: "comments update with unchanged TOAST text",
			msg: pgoUpdate(pgoCommentsRelID, 0, nil, func() []pgoValue {
				row := pgoCommentsRow("700", pgoText("99"))
				row[1] = pgoToast()
				return row
			}()),
			want: commentEvent(700, 99, true, OpUpdate),
		},
		{
			name: "comments update with unchanged blocknumber",
			msg: pgoUpdate(pgoCommentsRelID, 0, nil, func() []pgoValue {
				return pgoCommentsRow("700", pgoToast())
			}()),
			want: commentEvent(700, 0, false, OpUpdate),
		},
		{
			name:    "update with old tuple but no new tuple",
			msg:     pgoTuple(append(pgoU32([]byte{'U'}, pgoCommentsRelID), 'K'), []pgoValue{pgoNull()}),
			wantErr: errMalformed,
		},
		{
			name: "update with two old tuples",
			msg: func() []byte {
				b := pgoU32([]byte{'U'}, pgoCommentsRelID)
				b = pgoTuple(append(b, 'K'), []pgoValue{pgoNull()})
				b = pgoTuple(append(b, 'O'), []pgoValue{pgoNull()})
				return pgoTuple(append(b, 'N'), pgoCommentsRow("1", pgoNull()))
			}(),
			wantErr: errMalformed,
		},
		{
			name: "comments delete is ignored",
			msg:  pgoDelete(pgoCommentsRelID, 'O', pgoCommentsRow("700", pgoText("99"))...),
			want: event{Kind: eventIgnored},
		},
		{
			name:    "delete with bad tag",
			msg:     pgoDelete(pgoCommentsRelID, 'N', pgoCommentsRow("700", pgoText("99"))...),
			wantErr: errMalformed,
		},
		{
			name: "other table insert is ignored",
			msg:  pgoInsert(pgoOtherRelID, pgoText("1"), pgoText("not a number"), pgoToast()),
			want: event{Kind: eventIgnored},
		},
		{
			name: "plays in another schema is ignored",
			setup: [][]byte{pgoRelation(pgoPlaysRelID, "audit", "plays",
				pgoColumn{"id", 25})},
			msg:  pgoInsert(pgoPlaysRelID, pgoText("x")),
			want: event{Kind: eventIgnored},
		},
		{
			name: "other table in the catalog schema is ignored",
			setup: [][]byte{pgoRelation(pgoOtherRelID, "", "comments",
				pgoColumn{"note", 25})},
			msg:  pgoUpdate(pgoOtherRelID, 0, nil, []pgoValue{pgoText("x")}),
			want: event{Kind: eventIgnored},
		},
		{
			name: "relation is ignored",
			msg:  pgoRelation(pgoPlaysRelID+100, "public", "plays", pgoPlaysColumns()...),
			want: event{Kind: eventIgnored},
		},
		{
			name: "plays relation missing play_item_id",
			msg: pgoRelation(pgoPlaysRelID, "public", "plays",
				pgoColumn{"id", oidInt4}, pgoColumn{"track_id", oidInt4}),
			wantErr: ErrMissingColumn,
		},
		{
			name:    "plays relation missing id",
			msg:     pgoRelation(pgoPlaysRelID, "public", "plays", pgoColumn{"play_item_id", oidInt4}),
			wantErr: ErrMissingColumn,
		},
		{
			name: "comments relation missing blocknumber",
			msg: pgoRelation(pgoCommentsRelID, "public", "comments",
				pgoColumn{"user_id", oidInt4}, pgoColumn{"block_number", oidInt4}),
			wantErr: ErrMissingColumn,
		},
		{
			name:    "comments relation without columns",
			msg:     pgoRelation(pgoCommentsRelID, "public", "comments"),
			wantErr: ErrMissingColumn,
		},
		{
			name: "plays relation with text id",
			msg: pgoRelation(pgoPlaysRelID, "public", "plays",
				pgoColumn{"id", 25}, pgoColumn{"play_item_id", oidInt4}),
			wantErr: ErrColumnType,
		},
		{
			name: "comments relation with numeric blocknumber",
			msg: pgoRelation(pgoCommentsRelID, "public", "comments",
				pgoColumn{"user_id", oidInt8}, pgoColumn{"blocknumber", 1700}),
			wantErr: ErrColumnType,
		},
		{
			name: "column names match exactly",
			msg: pgoRelation(pgoPlaysRelID, "public", "plays",
				pgoColumn{"ID", oidInt4}, pgoColumn{"play_item_id", oidInt4}),
			wantErr: ErrMissingColumn,
		},
		{
			name:    "insert for unknown relation",
			msg:     pgoInsert(999, pgoText("1")),
			wantErr: ErrUnknownRelation,
		},
		{
			name:    "update for unknown relation",
			msg:     pgoUpdate(999, 'K', []pgoValue{pgoText("1")}, []pgoValue{pgoText("1")}),
			wantErr: ErrUnknownRelation,
		},
		{
			name:    "delete for unknown relation",
			msg:     pgoDelete(999, 'K', pgoText("1")),
			wantErr: ErrUnknownRelation,
		},
		{
			name: "truncate plays",
			msg:  pgoTruncate(0, pgoPlaysRelID),
			want: event{Kind: eventTruncate},
		},
		{
			name: "truncate comments with an unrelated table",
			msg:  pgoTruncate(1, pgoOtherRelID, pgoCommentsRelID),
			want: event{Kind: eventTruncate},
		},
		{
			name: "truncate both",
			msg:  pgoTruncate(3, pgoCommentsRelID, pgoOtherRelID, pgoPlaysRelID),
			want: event{Kind: eventTruncate},
		},
		{
			name: "truncate of an unrelated table is ignored",
			msg:  pgoTruncate(0, pgoOtherRelID),
			want: event{Kind: eventIgnored},
		},
		{
			name:    "truncate of an unknown relation",
			msg:     pgoTruncate(0, pgoPlaysRelID, 999),
			wantErr: ErrUnknownRelation,
		},
		{
			name:    "truncate with a count larger than the message",
			msg:     func() []byte { b := pgoTruncate(0, pgoPlaysRelID); b[4] = 2; return b }(),
			wantErr: errMalformed,
		},
		{
			name: "origin is ignored",
			msg:  pgoOrigin(0x1234, "upstream"),
			want: event{Kind: eventIgnored},
		},
		{
			name: "type is ignored",
			msg:  pgoType(90001, "public", "mood"),
			want: event{Kind: eventIgnored},
		},
		{
			name: "logical decoding message is ignored",
			msg:  pgoMessage(true, 0x1234, "challenge-stream", "hello"),
			want: event{Kind: eventIgnored},
		},
		{
			name:    "empty message",
			msg:     []byte{},
			wantErr: errMalformed,
		},
		{
			name:    "begin prepare (two-phase) is unsupported",
			msg:     []byte{'b'},
			wantErr: errUnsupported,
		},
		{
			name:    "insert with trailing bytes",
			msg:     append(pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "2")...), 0),
			wantErr: errMalformed,
		},
		{
			name:    "insert with a bad value kind",
			msg:     pgoInsert(pgoPlaysRelID, pgoText("1"), pgoValue{kind: 'x'}, pgoText("5"), pgoText("6"), pgoNull(), pgoNull()),
			wantErr: errMalformed,
		},
		{
			name:    "insert with a value longer than the message",
			msg:     func() []byte { b := pgoInsert(pgoOtherRelID, pgoText("1")); b[11] = 0xff; return b }(),
			wantErr: errMalformed,
		},
		{
			name:    "insert with an old tuple tag",
			msg:     func() []byte { b := pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "2")...); b[5] = 'K'; return b }(),
			wantErr: errMalformed,
		},
		{
			name:    "relation with trailing bytes",
			msg:     append(pgoOtherRelation(), 'x'),
			wantErr: errMalformed,
		},
		{
			name:    "begin with trailing bytes",
			msg:     append(pgoBegin(1, commitTime, 1), 0),
			wantErr: errMalformed,
		},
		{
			name:    "commit with trailing bytes",
			msg:     append(pgoCommit(1, 2, commitTime), 0),
			wantErr: errMalformed,
		},
		{
			name:    "truncate with a huge count",
			msg:     func() []byte { b := pgoTruncate(0, pgoPlaysRelID); b[1], b[2] = 0xff, 0xff; return b }(),
			wantErr: errMalformed,
		},
		{
			name:    "relation with more columns declared than sent",
			msg:     func() []byte { b := pgoOtherRelation(); b[len("R")+4+len("public\x00tracks\x00d")+1]++; return b }(),
			wantErr: errMalformed,
		},
		{
			name:    "origin with trailing bytes",
			msg:     append(pgoOrigin(1, "o"), 'x'),
			wantErr: errMalformed,
		},
		{
			name:    "type with trailing bytes",
			msg:     append(pgoType(1, "public", "t"), 0),
			wantErr: errMalformed,
		},
		{
			name:    "logical decoding message with trailing bytes",
			msg:     append(pgoMessage(false, 1, "p", "c"), 'x'),
			wantErr: errMalformed,
		},
		{
			name:    "logical decoding message without a terminated prefix",
			msg:     append(append([]byte{'M', 0}, make([]byte, 8)...), "prefix\xff\x00\x00\x00"...),
			wantErr: errMalformed,
		},
		{
			name:    "logical decoding message with content longer than the message",
			msg:     func() []byte { b := pgoMessage(false, 1, "p", "c"); b[len(b)-2] = 0xff; return b }(),
			wantErr: errMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			setup := tt.setup
			if setup == nil {
				setup = pgoStandardRelations()
			}
			d := pgoSetupDecoder(t, setup...)
			got, err := d.decode(tt.msg)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Equal(t, event{}, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeRelationAddColumn(t *testing.T) {
	t.Parallel()
	d := pgoSetupDecoder(t, pgoStandardRelations()...)

	before := pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...)
	ev, err := d.decode(before)
	require.NoError(t, err)
	require.Equal(t, playEvent(1, true, 10), ev)

	// ALTER TABLE plays ADD COLUMN: the server re-sends the Relation message
	// for the same relation ID before the next change.
	cols := append(pgoPlaysColumns(), pgoColumn{"device", 25})
	_, err = d.decode(pgoRelation(pgoPlaysRelID, "public", "plays", cols...))
	require.NoError(t, err)

	ev, err = d.decode(pgoInsert(pgoPlaysRelID, append(pgoPlaysRow("2", "20"), pgoText("phone"))...))
	require.NoError(t, err)
	require.Equal(t, playEvent(2, true, 20), ev)

	// A tuple in the old shape no longer matches the cached relation.
	_, err = d.decode(before)
	require.ErrorIs(t, err, ErrBadTuple)
}

func TestDecodeRelationDropColumnRejected(t *testing.T) {
	t.Parallel()
	d := pgoSetupDecoder(t, pgoStandardRelations()...)

	// play_item_id is gone: the new definition is refused and the old one
	// must not linger, or later rows would be read at stale positions.
	_, err := d.decode(pgoRelation(pgoPlaysRelID, "public", "plays",
		pgoColumn{"id", oidInt4}, pgoColumn{"created_at", 1114}))
	require.ErrorIs(t, err, ErrMissingColumn)
	require.ErrorContains(t, err, "plays.play_item_id")

	_, err = d.decode(pgoInsert(pgoPlaysRelID, pgoText("1"), pgoText("2025-01-01")))
	require.ErrorIs(t, err, ErrUnknownRelation)

	// comments is unaffected.
	ev, err := d.decode(pgoInsert(pgoCommentsRelID, pgoCommentsRow("3", pgoNull())...))
	require.NoError(t, err)
	require.Equal(t, eventChange, ev.Kind)
}

func TestDecodeRelationIDReused(t *testing.T) {
	t.Parallel()
	// A relation ID that named plays can name another table later in a long
	// session (DROP and CREATE): the latest Relation message wins.
	d := pgoSetupDecoder(t, pgoStandardRelations()...)
	_, err := d.decode(pgoRelation(pgoPlaysRelID, "public", "plays_archive", pgoColumn{"id", 25}))
	require.NoError(t, err)

	ev, err := d.decode(pgoInsert(pgoPlaysRelID, pgoText("abc")))
	require.NoError(t, err)
	require.Equal(t, event{Kind: eventIgnored}, ev)

	_, err = d.decode(pgoRelation(pgoOtherRelID, "public", "plays", pgoColumn{"play_item_id", oidInt8}, pgoColumn{"id", oidInt8}))
	require.NoError(t, err)
	ev, err = d.decode(pgoInsert(pgoOtherRelID, pgoText("8"), pgoText("9")))
	require.NoError(t, err)
	require.Equal(t, playEvent(9, true, 8), ev)
}

func TestDecodeTransaction(t *testing.T) {
	t.Parallel()
	commitTime := time.Date(2025, 1, 6, 12, 0, 0, 0, time.UTC)
	msgs := [][]byte{
		pgoBegin(0x3000, commitTime, 900),
		pgoRelation(pgoPlaysRelID, "public", "plays", pgoPlaysColumns()...),
		pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...),
		pgoInsert(pgoPlaysRelID, pgoPlaysRow("2", "11")...),
		pgoRelation(pgoCommentsRelID, "public", "comments", pgoCommentsColumns()...),
		pgoUpdate(pgoCommentsRelID, 'K', pgoCommentsRow("700", pgoNull()), pgoCommentsRow("700", pgoText("55"))),
		pgoCommit(0x3000, 0x3030, commitTime),
	}
	d := newDecoder(testPlan(t))
	var kinds []eventKind
	for _, m := range msgs {
		ev, err := d.decode(m)
		require.NoError(t, err)
		kinds = append(kinds, ev.Kind)
	}
	require.Equal(t, []eventKind{eventBegin, eventIgnored, eventChange, eventChange, eventIgnored, eventChange, eventCommit}, kinds)
}

// TestDecodeTruncatedMessages checks every proper prefix of every valid
// message fails cleanly: a short read must never decode as something else.
func TestDecodeTruncatedMessages(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	msgs := append(pgoStandardRelations(),
		pgoBegin(1, now, 2),
		pgoCommit(1, 2, now),
		pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...),
		pgoInsert(pgoOtherRelID, pgoText("1"), pgoNull(), pgoToast()),
		pgoUpdate(pgoCommentsRelID, 'O', pgoCommentsRow("1", pgoNull()), pgoCommentsRow("1", pgoText("2"))),
		pgoUpdate(pgoPlaysRelID, 0, nil, pgoPlaysRow("1", "10")),
		pgoDelete(pgoPlaysRelID, 'K', pgoPlaysRow("1", "10")...),
		pgoTruncate(0, pgoPlaysRelID, pgoCommentsRelID),
		pgoOrigin(5, "o"),
		pgoType(1, "public", "t"),
		pgoMessage(false, 5, "p", "content"),
	)
	for i, m := range msgs {
		d := pgoSetupDecoder(t, pgoStandardRelations()...)
		_, err := d.decode(m)
		require.NoError(t, err, "message %d", i)
		for n := range len(m) {
			ev, err := d.decode(m[:n])
			require.Error(t, err, "message %d cut to %d of %d bytes", i, n, len(m))
			require.Equal(t, event{}, ev)
		}
	}
}

// TestDecodeMatchesPglogrepl checks the test encoder against pglogrepl's
// parser, so the tests above exercise the real wire format.
func TestDecodeMatchesPglogrepl(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 2, 3, 4, 5, 6, 7000, time.UTC)

	m, err := pglogrepl.Parse(pgoBegin(0x10, now, 42))
	require.NoError(t, err)
	begin := m.(*pglogrepl.BeginMessage)
	require.Equal(t, pglogrepl.LSN(0x10), begin.FinalLSN)
	require.True(t, now.Equal(begin.CommitTime))
	require.Equal(t, uint32(42), begin.Xid)

	m, err = pglogrepl.Parse(pgoCommit(0x10, 0x20, now))
	require.NoError(t, err)
	commit := m.(*pglogrepl.CommitMessage)
	require.Equal(t, pglogrepl.LSN(0x10), commit.CommitLSN)
	require.Equal(t, pglogrepl.LSN(0x20), commit.TransactionEndLSN)
	require.True(t, now.Equal(commit.CommitTime))

	m, err = pglogrepl.Parse(pgoRelation(pgoPlaysRelID, "public", "plays", pgoPlaysColumns()...))
	require.NoError(t, err)
	rel := m.(*pglogrepl.RelationMessage)
	require.Equal(t, uint32(pgoPlaysRelID), rel.RelationID)
	require.Equal(t, "public", rel.Namespace)
	require.Equal(t, "plays", rel.RelationName)
	require.Len(t, rel.Columns, len(pgoPlaysColumns()))
	require.Equal(t, "play_item_id", rel.Columns[3].Name)
	require.Equal(t, uint32(oidInt4), rel.Columns[3].DataType)

	m, err = pglogrepl.Parse(pgoInsert(pgoPlaysRelID, pgoPlaysRow("1", "10")...))
	require.NoError(t, err)
	ins := m.(*pglogrepl.InsertMessage)
	require.Equal(t, uint32(pgoPlaysRelID), ins.RelationID)
	require.Len(t, ins.Tuple.Columns, 6)
	require.Equal(t, "10", string(ins.Tuple.Columns[3].Data))
	require.Equal(t, uint8('n'), ins.Tuple.Columns[1].DataType)

	m, err = pglogrepl.Parse(pgoUpdate(pgoCommentsRelID, 'O', pgoCommentsRow("1", pgoNull()), pgoCommentsRow("2", pgoText("3"))))
	require.NoError(t, err)
	upd := m.(*pglogrepl.UpdateMessage)
	require.Equal(t, uint8('O'), upd.OldTupleType)
	require.Equal(t, "1", string(upd.OldTuple.Columns[2].Data))
	require.Equal(t, "2", string(upd.NewTuple.Columns[2].Data))
	require.Equal(t, "3", string(upd.NewTuple.Columns[12].Data))

	m, err = pglogrepl.Parse(pgoTruncate(2, 1, 2, 3))
	require.NoError(t, err)
	trunc := m.(*pglogrepl.TruncateMessage)
	require.Equal(t, []uint32{1, 2, 3}, trunc.RelationIDs)
	require.Equal(t, uint8(2), trunc.Option)
}

func TestDecodeParseInt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7, true},
		{"-7", -7, true},
		{"000123", 123, true},
		{"2147483647", math.MaxInt32, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"-9223372036854775808", math.MinInt64, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"99999999999999999999", 0, false},
		{"18446744073709551616", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1.0", 0, false},
		{"1e3", 0, false},
		{"--1", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseInt([]byte(tt.in))
		require.Equal(t, tt.ok, ok, "%q", tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
		if _, err := strconv.ParseInt(tt.in, 10, 64); (err == nil) != ok && tt.in != "+1" {
			t.Errorf("%q: parseInt ok=%v disagrees with strconv", tt.in, ok)
		}
	}
}

func TestDecodeAllocs(t *testing.T) {
	// Not parallel: AllocsPerRun counts allocations of the whole process.
	d := pgoSetupDecoder(t, pgoStandardRelations()...)
	msgs := map[string][]byte{
		"plays insert":   pgoInsert(pgoPlaysRelID, pgoPlaysRow("123456789", "987654")...),
		"comment update": pgoUpdate(pgoCommentsRelID, 'K', pgoCommentsRow("1", pgoNull()), pgoCommentsRow("700", pgoText("99"))),
		"plays delete":   pgoDelete(pgoPlaysRelID, 'K', pgoPlaysRow("1", "10")...),
		"binary plays insert": pgoInsert(pgoPlaysRelID, pgoText("77"), pgoNull(), pgoBinInt(4, 1), pgoBinInt(4, 2),
			pgoNull(), pgoNull()),
	}
	streaming := pgoSetupDecoder(t, append(pgoStandardRelations(), pgoStreamStart(9, true))...)
	decoders := map[string]*decoder{"streamed plays insert": streaming}
	msgs["streamed plays insert"] = pgoStreamed(9, pgoInsert(pgoPlaysRelID, pgoPlaysRow("123456789", "987654")...))
	for name, m := range msgs {
		dec := d
		if sd, ok := decoders[name]; ok {
			dec = sd
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := dec.decode(m); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs, name)
	}
}

func TestDecodeEventKindString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "change", eventChange.String())
	require.Equal(t, "truncate", eventTruncate.String())
	require.Equal(t, "eventKind(99)", eventKind(99).String())
}

// Binary integers of every width, negative ones included, read as their text forms do.
func TestDecodeBinaryIntegers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		oid   uint32
		width int
		v     int64
	}{
		{oidInt2, 2, -32768}, {oidInt2, 2, 7}, {oidInt4, 4, -1}, {oidInt4, 4, 2147483647},
		{oidInt8, 8, -9223372036854775808}, {oidInt8, 8, 1 << 40},
	} {
		d := pgoSetupDecoder(t, pgoRelation(pgoPlaysRelID, "public", "plays",
			pgoColumn{"id", tt.oid}, pgoColumn{"play_item_id", tt.oid}))
		bin, err := d.decode(pgoInsert(pgoPlaysRelID, pgoBinInt(tt.width, tt.v), pgoBinInt(tt.width, tt.v)))
		require.NoError(t, err)
		text, err := d.decode(pgoInsert(pgoPlaysRelID, pgoText(strconv.FormatInt(tt.v, 10)), pgoText(strconv.FormatInt(tt.v, 10))))
		require.NoError(t, err)
		require.Equal(t, text, bin, "OID %d, %d", tt.oid, tt.v)
		require.Equal(t, playEvent(tt.v, true, tt.v), bin)
	}
}
