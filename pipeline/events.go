package pipeline

import (
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// Event is something the pipeline did, told to Config.Observe: one of StateChanged,
// TransactionReceived, Flushed, StatusSent, Reconnecting and SlotRecreated. An observer
// switches on the type and ignores what it does not need. Observe is called from the
// pipeline's goroutines, one event at a time, and must not block.
type Event interface{ event() }

// StateChanged: the pipeline entered State.
type StateChanged struct{ State State }

// TransactionReceived: a committed transaction was decoded (it is applied by a later Flushed).
// Tables names the source tables by index of Tx.Rows.
type TransactionReceived struct {
	Tx     *replication.Transaction
	Tables []string
}

// Flushed describes one committed flush.
type Flushed struct {
	LSN     pglogrepl.LSN
	Changes int // routed row changes in the window (0: an LSN-only flush)
	Keys    int // distinct dirty keys over all rules
	Artists int // eligible artists recomputed
	// Rules is what each active rule did, in registry order: its keys, time and writes.
	// Inactive names the rules the flush found switched off.
	Rules       []processors.RuleResult
	Inactive    []string
	Stats       processors.Stats
	Duration    time.Duration
	FirstCommit time.Time // commit time of the window's oldest change (zero for LSN-only flushes)
	CommittedAt time.Time
	// Oddities are catalog rows the rules had to interpret (a non-numeric amount, a missing
	// row); the loop logs them when they change.
	Oddities []string
	// Held names the legacy checkpoints left in place because their rules are inactive; Gaps
	// are the derivations run for a family re-activated or a checkpoint another writer moved.
	Held []string
	Gaps []processors.Gap
	// ForeignCheckpoints names the legacy checkpoints someone else wrote since the last flush:
	// the polling job is running too. Worth a warning and a counter (see processors' doc).
	ForeignCheckpoints []string
}

// StatusSent reports a standby status update: what was received, what is durably applied
// (confirmed) and the server's WAL end as last reported.
type StatusSent struct{ Received, Applied, ServerWALEnd pglogrepl.LSN }

// Reconnecting: a session ended with Err and the pipeline retries.
type Reconnecting struct{ Err error }

// SlotRecreated: the slot was gone or unusable and was created again (Reason says why); the
// catch-up covered the gap.
type SlotRecreated struct{ Reason string }

// SlotNamed: with no slot configured, the pipeline chose this name (see ResolveSlot).
type SlotNamed struct{ Slot string }

func (StateChanged) event()        {}
func (SlotNamed) event()           {}
func (TransactionReceived) event() {}
func (Flushed) event()             {}
func (StatusSent) event()          {}
func (Reconnecting) event()        {}
func (SlotRecreated) event()       {}

// State is where a pipeline is in its life, for health probes.
type State int

// The pipeline states.
const (
	StateStarting   State = iota
	StateStandby          // another replica holds the slot; this one waits
	StateCatchingUp       // scanning the source tables inside a new slot's snapshot
	StateStreaming
	StateReconnecting
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateStandby:
		return "standby"
	case StateCatchingUp:
		return "catching_up"
	case StateStreaming:
		return "streaming"
	case StateReconnecting:
		return "reconnecting"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}
