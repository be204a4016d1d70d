package pipeline

import (
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/replication"
)

// Window gathers the committed transactions between two flushes, reduced to the IDs the rules
// need. It only ever holds whole transactions.
type Window struct {
	Tracks     map[int64]struct{}
	Commenters map[int64]struct{}
	Legacy     checkpoints.Legacy // highest plays.id and comments.blocknumber seen
	EndLSN     pglogrepl.LSN      // end of the last transaction in the window

	Transactions int
	Plays        int
	Comments     int
	// OpenedAt is when the first change arrived; the window closes Window later.
	OpenedAt time.Time
	// FirstCommit is the commit time of the oldest transaction with a change, for the
	// commit-to-flush latency.
	FirstCommit time.Time
}

// NewWindow returns an empty window.
func NewWindow() *Window {
	return &Window{Tracks: map[int64]struct{}{}, Commenters: map[int64]struct{}{}}
}

// Add merges a committed transaction. A transaction without changes to plays or comments only
// moves EndLSN: confirming it later lets the server free its WAL.
func (w *Window) Add(tx *replication.Transaction, now time.Time) {
	w.Transactions++
	if tx.EndLSN > w.EndLSN {
		w.EndLSN = tx.EndLSN
	}
	if tx.Plays == 0 && tx.Comments == 0 {
		return
	}
	if !w.HasChanges() {
		w.OpenedAt = now
		w.FirstCommit = tx.CommitTime
	}
	w.Plays += tx.Plays
	w.Comments += tx.Comments
	for id := range tx.Tracks {
		w.Tracks[id] = struct{}{}
	}
	for id := range tx.Commenters {
		w.Commenters[id] = struct{}{}
	}
	if tx.HasPlayID && (!w.Legacy.HasPlayID || tx.MaxPlayID > w.Legacy.LastPlayID) {
		w.Legacy.LastPlayID, w.Legacy.HasPlayID = tx.MaxPlayID, true
	}
	if tx.HasCommentBlock && (!w.Legacy.HasCommentBlock || tx.MaxCommentBlock > w.Legacy.LastCommentBlock) {
		w.Legacy.LastCommentBlock, w.Legacy.HasCommentBlock = tx.MaxCommentBlock, true
	}
}

// HasChanges reports whether the window holds changes to plays or comments.
func (w *Window) HasChanges() bool { return w.Plays > 0 || w.Comments > 0 }

// Size is the number of distinct IDs held: the measure of its memory and of its flush's work.
func (w *Window) Size() int { return len(w.Tracks) + len(w.Commenters) }

// Due reports whether a window with changes should close: its time is up or it is full.
func (w *Window) Due(now time.Time, length time.Duration, maxSize int) bool {
	if !w.HasChanges() {
		return false
	}
	return !now.Before(w.OpenedAt.Add(length)) || w.Size() >= maxSize
}

// DueAt is when a window with changes closes on time (zero without changes).
func (w *Window) DueAt(length time.Duration) time.Time {
	if !w.HasChanges() {
		return time.Time{}
	}
	return w.OpenedAt.Add(length)
}

// IDs returns a set's members as a slice for the recompute functions.
func IDs(set map[int64]struct{}) []int64 {
	ids := make([]int64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	return ids
}
