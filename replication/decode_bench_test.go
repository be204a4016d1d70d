package replication

import (
	"testing"
	"time"
)

// BenchmarkDecodeInsert decodes a plays INSERT with six columns, the message
// a busy server sends most. It should report 0 allocs/op.
func BenchmarkDecodeInsert(b *testing.B) {
	d := pgoSetupDecoder(b, pgoStandardRelations()...)
	msg := pgoInsert(pgoPlaysRelID, pgoPlaysRow("123456789", "987654")...)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommentUpdate decodes a comments UPDATE with an old key and
// thirteen columns.
func BenchmarkDecodeCommentUpdate(b *testing.B) {
	d := pgoSetupDecoder(b, pgoStandardRelations()...)
	msg := pgoUpdate(pgoCommentsRelID, 'K', pgoCommentsRow("1", pgoNull()), pgoCommentsRow("700", pgoText("99")))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommit decodes a Commit, sent once per transaction.
func BenchmarkDecodeCommit(b *testing.B) {
	d := newDecoder(testPlan(b))
	msg := pgoCommit(0x16B3748, 0x16B3778, time.Date(2025, 1, 6, 12, 0, 0, 0, time.UTC))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRelation decodes the comments Relation message, sent once
// per session and after each ALTER TABLE.
func BenchmarkDecodeRelation(b *testing.B) {
	d := newDecoder(testPlan(b))
	msg := pgoRelation(pgoCommentsRelID, "public", "comments", pgoCommentsColumns()...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeInsertBinaryColumnList decodes the plays INSERT the sidecar's own
// publication sends: a column list (id, play_item_id) in binary. It should report 0 allocs/op.
func BenchmarkDecodeInsertBinaryColumnList(b *testing.B) {
	d := pgoSetupDecoder(b, pgoRelation(pgoPlaysRelID, "public", "plays",
		pgoColumn{"id", oidInt8}, pgoColumn{"play_item_id", oidInt4}))
	msg := pgoInsert(pgoPlaysRelID, pgoBinInt(8, 123456789), pgoBinInt(4, 987654))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}
