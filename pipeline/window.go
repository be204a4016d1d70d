package pipeline

import (
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/replication"
)

// window gathers the committed transactions between two flushes, reduced to the IDs the rules
// need. It only ever holds whole transactions.
type window struct {
	tracks     map[int64]struct{}
	commenters map[int64]struct{}
	legacy     checkpoints.Legacy // highest plays.id and comments.blocknumber seen
	endLSN     pglogrepl.LSN      // end of the last transaction in the window
	// xids are the transactions with changes: the flush waits until all are visible.
	xids []uint32

	transactions int
	plays        int
	comments     int
	// openedAt is when the first change arrived: the window's length counts from it.
	openedAt time.Time
	// firstCommit is the commit time of the oldest transaction with a change, for the
	// commit-to-flush latency.
	firstCommit time.Time
}

func newWindow() *window {
	return &window{tracks: map[int64]struct{}{}, commenters: map[int64]struct{}{}}
}

// add merges a committed transaction. A transaction without changes to plays or comments only
// moves endLSN: confirming it later lets the server free its WAL.
func (w *window) add(tx *replication.Transaction, now time.Time) {
	w.transactions++
	if tx.EndLSN > w.endLSN {
		w.endLSN = tx.EndLSN
	}
	if tx.Plays == 0 && tx.Comments == 0 {
		return
	}
	if !w.hasChanges() {
		w.openedAt = now
		w.firstCommit = tx.CommitTime
	}
	w.plays += tx.Plays
	w.comments += tx.Comments
	w.xids = append(w.xids, tx.Xid)
	for id := range tx.Tracks {
		w.tracks[id] = struct{}{}
	}
	for id := range tx.Commenters {
		w.commenters[id] = struct{}{}
	}
	if tx.HasPlayID && (!w.legacy.HasPlayID || tx.MaxPlayID > w.legacy.LastPlayID) {
		w.legacy.LastPlayID, w.legacy.HasPlayID = tx.MaxPlayID, true
	}
	if tx.HasCommentBlock && (!w.legacy.HasCommentBlock || tx.MaxCommentBlock > w.legacy.LastCommentBlock) {
		w.legacy.LastCommentBlock, w.legacy.HasCommentBlock = tx.MaxCommentBlock, true
	}
}

// hasChanges reports whether the window holds changes to plays or comments.
func (w *window) hasChanges() bool { return w.plays > 0 || w.comments > 0 }

// size is the number of distinct IDs held: the measure of its memory and of its flush's work.
func (w *window) size() int { return len(w.tracks) + len(w.commenters) }

// ids returns a set's members as a slice for the recompute functions.
func ids(set map[int64]struct{}) []int64 {
	out := make([]int64, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	return out
}
