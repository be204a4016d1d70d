package pipeline

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/replication"
)

func TestDecideStart(t *testing.T) {
	healthy := replication.SlotInfo{Exists: true, WALStatus: "reserved"}
	lost := replication.SlotInfo{Exists: true, WALStatus: "lost"}
	none := replication.SlotInfo{}
	for _, c := range []struct {
		name  string
		state startState
		want  startPlan
	}{
		{"slot and stored LSN", startState{slot: healthy, stored: true}, startPlan{kind: resume}},
		{"slot and stored LSN, backfill ignored", startState{slot: healthy, stored: true, backfill: true}, startPlan{kind: resume}},
		{"stored LSN, slot missing", startState{slot: none, stored: true},
			startPlan{kind: recreate, reason: "missing"}},
		{"stored LSN before a promotion, slot missing", startState{slot: none, stored: true, promoted: true},
			startPlan{kind: recreate, reason: "failover"}},
		{"stored LSN before a promotion, slot synchronized to the standby", startState{slot: healthy, stored: true, promoted: true},
			startPlan{kind: resume}},
		{"stored LSN before a promotion, slot lost", startState{slot: lost, stored: true, promoted: true},
			startPlan{kind: recreate, reason: "lost", dropSlot: true}},
		{"stored LSN, slot lost", startState{slot: lost, stored: true},
			startPlan{kind: recreate, reason: "lost", dropSlot: true}},
		{"stored LSN, publication recreated under the slot", startState{slot: healthy, stored: true, unusable: "publication"},
			startPlan{kind: recreate, reason: "publication", dropSlot: true}},
		{"stored LSN, earlier finding outranks a lost slot", startState{slot: lost, stored: true, unusable: "publication"},
			startPlan{kind: recreate, reason: "publication", dropSlot: true}},
		{"stored LSN, publication dropped or recreated since", startState{slot: healthy, stored: true, publicationReplaced: true},
			startPlan{kind: recreate, reason: "publication", dropSlot: true}},
		{"publication recreated outranks its widening", startState{slot: healthy, stored: true, publicationReplaced: true, widened: true},
			startPlan{kind: recreate, reason: "publication", dropSlot: true}},
		{"stored LSN, publication to send more than the slot's changes carry", startState{slot: healthy, stored: true, widened: true},
			startPlan{kind: recreate, reason: "publication_widened", dropSlot: true}},
		{"publication widened, slot dropped by a start that died before it widened", startState{slot: none, stored: true, widened: true},
			startPlan{kind: recreate, reason: "publication_widened"}},
		{"stored LSN ahead of the server's WAL, slot healthy", startState{slot: healthy, stored: true, storedAhead: true},
			startPlan{kind: recreate, reason: "stored_ahead", dropSlot: true}},
		{"stored LSN ahead of the server's WAL, slot missing", startState{slot: none, stored: true, storedAhead: true},
			startPlan{kind: recreate, reason: "stored_ahead"}},
		{"stored LSN ahead outranks an earlier finding", startState{slot: lost, stored: true, storedAhead: true, unusable: "publication"},
			startPlan{kind: recreate, reason: "stored_ahead", dropSlot: true}},
		{"slot confirmed past the stored LSN by another consumer", startState{slot: healthy, stored: true, confirmedAhead: true},
			startPlan{kind: recreate, reason: "confirmed_ahead", dropSlot: true}},
		{"slot confirmed ahead, found by the guard after START", startState{slot: healthy, stored: true, unusable: "confirmed_ahead"},
			startPlan{kind: recreate, reason: "confirmed_ahead", dropSlot: true}},
		{"first start", startState{slot: none}, startPlan{kind: firstStart}},
		{"first start with backfill", startState{slot: none, backfill: true}, startPlan{kind: firstStart, fromScratch: true}},
		{"interrupted first start", startState{slot: healthy},
			startPlan{kind: firstStart, interrupted: true, dropSlot: true}},
		{"interrupted first start keeps its backfill", startState{slot: healthy, backfill: true},
			startPlan{kind: firstStart, interrupted: true, dropSlot: true, fromScratch: true}},
		{"interrupted first start, slot lost meanwhile", startState{slot: lost},
			startPlan{kind: firstStart, interrupted: true, dropSlot: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, decideStart(c.state))
		})
	}
}
