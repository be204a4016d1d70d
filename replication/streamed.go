package replication

import (
	"fmt"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
)

// StreamedTransactionLog is logged (debug) when the server starts streaming a transaction
// that is still running.
const StreamedTransactionLog = "receiving a transaction while it runs"

// streamedTx is a transaction the server streams while it runs: its changes by the
// (sub)transaction that made them, so a rolled-back subtransaction takes its own away.
// Memory is O(distinct keys) per part, as for any transaction.
type streamedTx struct {
	parts map[uint32]*Transaction
}

func (st *streamedTx) part(xid uint32, plan *compiledPlan) *Transaction {
	tx := st.parts[xid]
	if tx == nil {
		t := newTransaction(plan.plan)
		tx = &t
		st.parts[xid] = tx
	}
	return tx
}

// handleStreamed follows a streamed transaction from its first segment to its outcome and
// hands it over, whole, at its Stream Commit.
func (s *Stream) handleStreamed(ev event, at pglogrepl.LSN) (Message, bool, error) {
	switch ev.Kind {
	case eventStreamStart:
		if s.inTx {
			return Message{}, false, fmt.Errorf("stream start at %s inside a transaction", at)
		}
		st := s.streamed[ev.Xid]
		switch {
		case st == nil && !ev.FirstSegment:
			// Its first segment came before this session: the session started inside it, and
			// what the earlier segments held is lost to us.
			return Message{}, false, fmt.Errorf("stream segment at %s of transaction %d whose first segment was never received", at, ev.Xid)
		case st != nil && ev.FirstSegment:
			return Message{}, false, fmt.Errorf("first stream segment at %s of transaction %d, already streaming", at, ev.Xid)
		case st == nil:
			st = &streamedTx{parts: map[uint32]*Transaction{}}
			s.streamed[ev.Xid] = st
			s.log.Debug(StreamedTransactionLog, zap.Uint32("xid", ev.Xid), zap.Stringer("at", at))
		}
		s.segment = st
		// A transaction too large for the server's memory is a backlog in itself.
		s.behind = true
	case eventStreamStop:
		s.segment = nil
	case eventStreamAbort:
		st := s.streamed[ev.Xid]
		switch {
		case st == nil:
			// Nothing of it reached this session.
		case ev.SubXid == ev.Xid:
			delete(s.streamed, ev.Xid)
		default:
			delete(st.parts, ev.SubXid)
		}
	case eventStreamCommit:
		st := s.streamed[ev.Xid]
		if st == nil {
			return Message{}, false, fmt.Errorf("stream commit at %s of transaction %d that was never streamed", at, ev.Xid)
		}
		delete(s.streamed, ev.Xid)
		tx := s.whole(st)
		tx.Xid, tx.EndLSN, tx.CommitTime = ev.Xid, ev.EndLSN, ev.CommitTime
		return s.committed(tx)
	}
	return Message{}, false, nil
}

// whole is a streamed transaction's parts as one: the only part itself (the common
// case, no copy), or their union in the stream's reused buffer.
func (s *Stream) whole(st *streamedTx) *Transaction {
	if len(st.parts) == 1 {
		for _, tx := range st.parts {
			return tx
		}
	}
	s.tx.reset()
	for _, part := range st.parts {
		s.tx.merge(part)
	}
	return &s.tx
}
