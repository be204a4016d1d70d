package pipeline

import "github.com/challenge-stream/challenge-stream/replication"

// The start states of SPEC §5. decideStart is the whole decision, kept apart from the I/O that
// gathers its inputs and carries it out (prepare), so it can be read and tested as a table.

// startKind is what a session does before it streams.
type startKind int

const (
	// resume streams from the stored LSN on the existing slot.
	resume startKind = iota
	// recreate replaces a slot that cannot deliver from the stored LSN and catches up from
	// the legacy checkpoints inside the new slot's snapshot.
	recreate
	// firstStart creates the slot and catches up inside its snapshot from the legacy
	// checkpoints, or seeds them, or derives all history (--backfill).
	firstStart
)

// startState is what decideStart knows: the slot, whether an LSN is stored for it, and why an
// earlier session found the slot unusable ("" when none did).
type startState struct {
	slot     replication.SlotInfo
	stored   bool
	unusable string
	backfill bool
}

// startPlan is the decision.
type startPlan struct {
	kind startKind
	// reason is why the slot is recreated (the slot_recreated_total label): "missing", "lost",
	// or an earlier session's finding such as "publication".
	reason string
	// interrupted: a slot without a stored position, left by a first start that died before its
	// catch-up committed. Nothing was applied from it.
	interrupted bool
	// dropSlot: the existing slot goes before a new one is made.
	dropSlot bool
	// fromScratch derives all history instead of cutting over from the legacy checkpoints.
	fromScratch bool
}

func decideStart(s startState) startPlan {
	usable := s.slot.Exists && !s.slot.Lost() && s.unusable == ""
	switch {
	case s.stored && usable:
		return startPlan{kind: resume}
	case s.stored:
		reason := "missing"
		switch {
		case s.unusable != "":
			reason = s.unusable
		case s.slot.Exists:
			reason = "lost"
		}
		return startPlan{kind: recreate, reason: reason, dropSlot: s.slot.Exists}
	default:
		// No stored position: nothing was ever applied from a slot, so this is a first start,
		// with its --backfill, even when an interrupted one left a slot behind.
		return startPlan{kind: firstStart, interrupted: s.slot.Exists, dropSlot: s.slot.Exists, fromScratch: s.backfill}
	}
}
