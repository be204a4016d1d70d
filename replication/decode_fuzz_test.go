package replication

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to a decoder that knows plays, comments
// and one other table. The first input is decoded as a possible Relation (or
// any) message, so the fuzzer can also reshape the cache; the second is the
// message under test. Invariants: no panic, errors come with a zero event,
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
		pgoInsert(pgoPlaysRelID, pgoText("1"), pgoNull(), pgoBinInt(4, 1001), pgoBinInt(4, -42), pgoNull(), pgoBinary("DE")),
		pgoInsert(pgoCommentsRelID, pgoCommentsRow("700", pgoNull())...),
		pgoUpdate(pgoCommentsRelID, 'K', pgoCommentsRow("700", pgoNull()), pgoCommentsRow("700", pgoText("99"))),
		pgoUpdate(pgoPlaysRelID, 0, nil, pgoPlaysRow("1", "2")),
		pgoDelete(pgoPlaysRelID, 'O', pgoPlaysRow("1", "2")...),
		pgoInsert(pgoOtherRelID, pgoText("1"), pgoText("2"), pgoText("x")),
		pgoTruncate(1, pgoPlaysRelID, pgoCommentsRelID, pgoOtherRelID),
		pgoOrigin(1, "origin"),
		pgoType(90001, "public", "mood"),
		pgoMessage(true, 1, "prefix", "content"),
		pgoStreamStart(700, true),
		pgoStreamStop(),
		pgoStreamCommit(700, 0x16B3748, 0x16B3778, now),
		pgoStreamAbort(700, 701),
		pgoStreamed(701, pgoInsert(pgoPlaysRelID, pgoPlaysRow("1001", "42")...)),
		pgoStreamed(700, pgoRelation(pgoPlaysRelID, "public", "plays", pgoColumn{"play_item_id", oidInt4}, pgoColumn{"id", oidInt8})),
		pgoStreamed(700, pgoTruncate(0, pgoPlaysRelID)),
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
	// Inside a segment.
	for _, s := range seeds[len(seeds)-3:] {
		f.Add(pgoStreamStart(700, true), s)
	}

	f.Fuzz(func(t *testing.T, setup, msg []byte) {
		d := newDecoder(testPlan(t))
		for _, r := range pgoStandardRelations() {
			if _, err := d.decode(r); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = d.decode(setup)
		ev, err := d.decode(msg)
		if err != nil {
			if ev != (event{}) {
				t.Fatalf("error %v came with event %+v", err, ev)
			}
			return
		}
		checkEvent(t, msg, ev)
	})
}

// checkEvent asserts what must hold for any successfully decoded message.
func checkEvent(t *testing.T, msg []byte, ev event) {
	t.Helper()
	switch ev.Kind {
	case eventBegin:
		if msg[0] != 'B' || len(msg) != 21 {
			t.Fatalf("begin from %q", msg)
		}
	case eventCommit:
		if msg[0] != 'C' || len(msg) != 26 {
			t.Fatalf("commit from %q", msg)
		}
	case eventChange:
		if msg[0] != 'I' && msg[0] != 'U' {
			t.Fatalf("change %+v from %q", ev, msg)
		}
		for i, present := range ev.Present {
			if !present && ev.Values[i] != 0 {
				t.Fatalf("absent value %d is %d", i, ev.Values[i])
			}
		}
	case eventTruncate:
		if msg[0] != 'T' {
			t.Fatalf("truncate %+v from %q", ev, msg)
		}
	case eventStreamStart, eventStreamStop, eventStreamCommit, eventStreamAbort:
		if want := map[eventKind]byte{eventStreamStart: 'S', eventStreamStop: 'E', eventStreamCommit: 'c', eventStreamAbort: 'A'}[ev.Kind]; msg[0] != want {
			t.Fatalf("%s from %q", ev.Kind, msg)
		}
		if ev.Values != ([maxValues]int64{}) || ev.Present != ([maxValues]bool{}) {
			t.Fatalf("%s with values %+v", ev.Kind, ev)
		}
	case eventIgnored:
		if ev != (event{}) {
			t.Fatalf("ignored %+v from %q", ev, msg)
		}
	default:
		t.Fatalf("unknown kind %d", ev.Kind)
	}
}
