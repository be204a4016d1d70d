package replication

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to a Decoder that knows plays, comments
// and one other table. The first input is decoded as a possible Relation (or
// any) message, so the fuzzer can also reshape the cache; the second is the
// message under test. Invariants: no panic, errors come with a zero Event,
// and successful events are internally consistent.
//
// Run with: go test ./replication -run XXX -fuzz FuzzDecode -fuzztime 1m
func FuzzDecode(f *testing.F) {
	now := time.Date(2025, 1, 6, 12, 0, 0, 0, time.UTC)
	seeds := [][]byte{
		pgoBegin(0x16B3748, now, 777),
		pgoCommit(0x16B3748, 0x16B3778, now),
		pgoInsert(pgoPlaysRelID, pgoPlaysRow("1001", "42")...),
		pgoInsert(pgoPlaysRelID, pgoText("1"), pgoToast(), pgoNull(), pgoText("6"), pgoNull(), pgoBinary("\x01")),
		pgoInsert(pgoCommentsRelID, pgoCommentsRow("700", pgoNull())...),
		pgoUpdate(pgoCommentsRelID, 'K', pgoCommentsRow("700", pgoNull()), pgoCommentsRow("700", pgoText("99"))),
		pgoUpdate(pgoPlaysRelID, 0, nil, pgoPlaysRow("1", "2")),
		pgoDelete(pgoPlaysRelID, 'O', pgoPlaysRow("1", "2")...),
		pgoInsert(pgoOtherRelID, pgoText("1"), pgoText("2"), pgoText("x")),
		pgoTruncate(1, pgoPlaysRelID, pgoCommentsRelID, pgoOtherRelID),
		pgoOrigin(1, "origin"),
		pgoType(90001, "public", "mood"),
		pgoMessage(true, 1, "prefix", "content"),
	}
	relations := append(pgoStandardRelations(),
		pgoRelation(pgoPlaysRelID, "public", "plays", append(pgoPlaysColumns(), pgoColumn{"device", 25})...),
		pgoRelation(pgoCommentsRelID, "public", "comments", pgoColumn{"blocknumber", oidInt8}, pgoColumn{"user_id", oidInt4}),
		pgoRelation(pgoPlaysRelID, "public", "plays", pgoColumn{"id", 25}),
	)
	for _, s := range seeds {
		f.Add([]byte{}, s)
	}
	for _, r := range relations {
		for _, s := range seeds[2:4] {
			f.Add(r, s)
		}
	}

	f.Fuzz(func(t *testing.T, setup, msg []byte) {
		d := NewDecoder()
		for _, r := range pgoStandardRelations() {
			if _, err := d.Decode(r); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = d.Decode(setup)
		ev, err := d.Decode(msg)
		if err != nil {
			if ev != (Event{}) {
				t.Fatalf("error %v came with event %+v", err, ev)
			}
			return
		}
		checkEvent(t, msg, ev)
	})
}

// checkEvent asserts what must hold for any successfully decoded message.
func checkEvent(t *testing.T, msg []byte, ev Event) {
	t.Helper()
	switch ev.Kind {
	case EventBegin:
		if msg[0] != 'B' || len(msg) != 21 {
			t.Fatalf("begin from %q", msg)
		}
	case EventCommit:
		if msg[0] != 'C' || len(msg) != 26 {
			t.Fatalf("commit from %q", msg)
		}
	case EventPlay:
		if msg[0] != 'I' {
			t.Fatalf("play %+v from %q", ev, msg)
		}
		if !ev.HasPlayID && ev.PlayID != 0 {
			t.Fatalf("play without id has id %d", ev.PlayID)
		}
	case EventComment:
		if msg[0] != 'I' && msg[0] != 'U' {
			t.Fatalf("comment %+v from %q", ev, msg)
		}
		if !ev.HasBlockNumber && ev.BlockNumber != 0 {
			t.Fatalf("comment without blocknumber has blocknumber %d", ev.BlockNumber)
		}
	case EventTruncate:
		if msg[0] != 'T' {
			t.Fatalf("truncate %+v from %q", ev, msg)
		}
	case EventIgnored:
		if ev != (Event{}) {
			t.Fatalf("ignored %+v from %q", ev, msg)
		}
	default:
		t.Fatalf("unknown kind %d", ev.Kind)
	}
}
