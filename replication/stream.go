package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

// ErrStreamEnded means the server ended the copy stream (it is shutting down, or an operator
// dropped the slot under us).
var ErrStreamEnded = errors.New("server ended the replication stream")

// Transaction is what one committed source transaction changed, reduced to what the Plan
// keeps: memory is O(distinct keys), whatever the number of rows.
type Transaction struct {
	EndLSN     pglogrepl.LSN // CommitMessage.TransactionEndLSN: the restart and checkpoint key
	CommitTime time.Time
	// Xid is the transaction's ID. Its COMMIT can reach us before other sessions see the
	// transaction (see pipeline's doc), so a flush first waits until it is visible.
	Xid uint32

	// Sets are the plan's key sets and Max its maxima (HasMax false: no value seen).
	Sets   []map[int64]struct{}
	Max    []int64
	HasMax []bool
	// Rows counts the routed changes by plan table; Changes is their sum.
	Rows    []int
	Changes int
	// Truncates counts TRUNCATEs of plan tables.
	Truncates int
}

func newTransaction(p Plan) Transaction {
	tx := Transaction{Sets: make([]map[int64]struct{}, p.Sets), Max: make([]int64, p.Maxima),
		HasMax: make([]bool, p.Maxima), Rows: make([]int, len(p.Tables))}
	for i := range tx.Sets {
		tx.Sets[i] = map[int64]struct{}{}
	}
	return tx
}

func (tx *Transaction) reset() {
	for _, s := range tx.Sets {
		clear(s)
	}
	clear(tx.Max)
	clear(tx.HasMax)
	clear(tx.Rows)
	*tx = Transaction{Sets: tx.Sets, Max: tx.Max, HasMax: tx.HasMax, Rows: tx.Rows}
}

func (tx *Transaction) add(plan *compiledPlan, ev event) {
	if ev.Kind == eventTruncate {
		tx.Truncates++
		return
	}
	tx.Rows[ev.Table]++
	tx.Changes++
	for _, r := range plan.tables[ev.Table].routes {
		if r.ops&ev.Op == 0 || !ev.Present[r.value] {
			continue
		}
		v := ev.Values[r.value]
		if r.set >= 0 && !plan.skipped[r.set] {
			tx.Sets[r.set][v] = struct{}{}
		}
		if r.max >= 0 && (!tx.HasMax[r.max] || v > tx.Max[r.max]) {
			tx.Max[r.max], tx.HasMax[r.max] = v, true
		}
	}
}

// merge adds part's changes: the parts of a streamed transaction become one at its commit.
func (tx *Transaction) merge(part *Transaction) {
	for i, set := range part.Sets {
		for key := range set {
			tx.Sets[i][key] = struct{}{}
		}
	}
	for i, has := range part.HasMax {
		if has && (!tx.HasMax[i] || part.Max[i] > tx.Max[i]) {
			tx.Max[i], tx.HasMax[i] = part.Max[i], true
		}
	}
	for i, n := range part.Rows {
		tx.Rows[i] += n
	}
	tx.Changes += part.Changes
	tx.Truncates += part.Truncates
}

// MessageKind says what Next returned.
type MessageKind uint8

// The kinds of message Next returns.
const (
	// MessageTimeout: the context's deadline passed with nothing to report.
	MessageTimeout MessageKind = iota
	// MessageTransaction: a transaction committed after the start position.
	MessageTransaction
	// MessageKeepalive: the server reported its WAL end.
	MessageKeepalive
)

// Message is one result of Next.
type Message struct {
	Kind MessageKind
	// Transaction is valid until the next call of Next (its buffer is reused).
	Transaction *Transaction
	// ServerWALEnd and ReplyRequested come with a keepalive.
	ServerWALEnd   pglogrepl.LSN
	ReplyRequested bool
}

// Stream is one replication session on a slot: it decodes pgoutput, keeps each transaction's
// IDs until its COMMIT and hands back committed transactions and keepalives. One goroutine
// receives and sends status updates; Interrupt may be called from any other.
type Stream struct {
	conn     *pgconn.PgConn
	log      *zap.Logger
	decoder  *decoder
	plan     *compiledPlan
	startLSN pglogrepl.LSN // transactions ending at or before it are replays
	tx       Transaction
	inTx     bool
	// streamed holds the transactions the server streams while they run (protocol 2), by
	// top-level ID, until their Stream Commit or Abort; segment is the one whose segment is
	// open.
	streamed map[uint32]*streamedTx
	segment  *streamedTx
	received pglogrepl.LSN
	// bytes counts the pgoutput messages' bytes received (XLogData payloads), for benchmarks.
	bytes int64
	// beginCommit is the commit time of the open transaction, from its BEGIN.
	beginCommit time.Time
	// behind is set while the server sends changes of transactions that committed more than
	// backlogAge before it sent them: the stream drains a backlog, and Next lets messages
	// gather (see gather). A keepalive (the server waits for WAL) clears it.
	behind    bool
	gathering bool // the socket's low-water mark is gatherBytes
	noGather  bool // the socket cannot gather
	// woken is set by Interrupt, so a wake-up that lands between two reads is not lost.
	woken  atomic.Bool
	status []byte // the standby status update, encoded in place
}

// Start sends START_REPLICATION for the slot from startLSN with pgoutput protocol version 2
// and streaming on, keeping what plan routes. A transaction that outgrows the server's
// logical_decoding_work_mem is sent while it runs instead of spilled to disk and sent after
// its COMMIT; the stream keeps its keys aside and hands it over only at its Stream Commit, so
// a window still never holds part of a transaction.
func Start(ctx context.Context, conn *pgconn.PgConn, slot, publication string, plan Plan, startLSN pglogrepl.LSN,
	log *zap.Logger) (*Stream, error) {
	compiled, err := compilePlan(plan)
	if err != nil {
		return nil, err
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, startLSN, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '2'", "streaming 'on'", "binary 'true'", fmt.Sprintf("publication_names '%s'", publication)},
	})
	if err != nil {
		return nil, fmt.Errorf("start replication on slot %s at %s: %w", slot, startLSN, err)
	}
	return &Stream{
		conn:     conn,
		log:      log,
		decoder:  newDecoder(compiled),
		plan:     compiled,
		startLSN: startLSN,
		tx:       newTransaction(plan),
		streamed: map[uint32]*streamedTx{},
		received: startLSN,
	}, nil
}

// SkipSets sets which of the plan's key sets the stream keeps no keys of (skip[i] for set i;
// shorter means the rest are kept), from the next change on: the sets of rules switched off,
// whose keys would only be dropped later, so that a large transaction costs them nothing.
// Maxima are kept whatever the sets.
func (s *Stream) SkipSets(skip []bool) {
	for i := range s.plan.skipped {
		s.plan.skipped[i] = i < len(skip) && skip[i]
	}
}

// InTransaction reports whether a transaction has begun and not yet committed, or a stream
// segment is open: while it has, the server's WAL end must not be confirmed. A streamed
// transaction between segments does not count: the server is still reading WAL its commit
// comes after, so a position it reports is before that commit.
func (s *Stream) InTransaction() bool { return s.inTx || s.segment != nil }

// Bytes is how many bytes of pgoutput messages the session has received.
func (s *Stream) Bytes() int64 { return s.bytes }

// Received is the highest WAL position the server has told us it sent: the start of the last
// change or the end of the last transaction, or a keepalive's WAL end between transactions.
// It is what a shutting-down walsender waits to see reported (see SendStatus).
func (s *Stream) Received() pglogrepl.LSN { return s.received }

// Next receives until a transaction commits, a keepalive arrives, the deadline passes or
// Interrupt is called; the last two return MessageTimeout. Any error ends the session.
//
// The wait is a read deadline on the socket rather than a context: pgconn arms a context
// watcher on every call that takes a cancellable context, and Next runs once per message on
// the hot path. Cancellation goes through Interrupt instead (the loop registers it with
// context.AfterFunc once per session).
func (s *Stream) Next(deadline time.Time) (Message, error) {
	if err := s.conn.Conn().SetReadDeadline(deadline); err != nil {
		return Message{}, fmt.Errorf("set read deadline: %w", err)
	}
	// Checked after the deadline is set: an Interrupt from now on moves the deadline into the
	// past, and one before it is seen here.
	if s.woken.Swap(false) {
		return Message{Kind: MessageTimeout}, nil
	}
	gatherTimedOut := false
	for {
		s.gather()
		// Gathering, a read that may wait (nothing buffered, or the last wait ended) waits
		// gatherWait at most: the rest of a backlog may never fill the low-water mark. The
		// new deadline would hide an Interrupt's, so the flag is checked here too.
		if s.gathering && (gatherTimedOut || s.conn.Frontend().ReadBufferLen() == 0) {
			if s.woken.Swap(false) {
				return Message{Kind: MessageTimeout}, nil
			}
			if err := s.conn.Conn().SetReadDeadline(minTime(deadline, time.Now().Add(gatherWait))); err != nil {
				return Message{}, fmt.Errorf("set read deadline: %w", err)
			}
			gatherTimedOut = false
		}
		raw, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if !pgconn.Timeout(err) {
				return Message{}, fmt.Errorf("receive: %w", err)
			}
			if s.woken.Swap(false) || !s.gathering || !time.Now().Before(deadline) {
				return Message{Kind: MessageTimeout}, nil
			}
			gatherTimedOut = true
			continue
		}
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			m, done, err := s.handleCopyData(msg.Data)
			if err != nil || done {
				return m, err
			}
		case *pgproto3.ErrorResponse:
			return Message{}, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return Message{}, ErrStreamEnded
		default:
			// NoticeResponse and the like carry nothing for us.
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backlogAge is how old, by the server's clock, the transactions the server sends must be for
// the stream to count as draining a backlog.
const backlogAge = time.Second

// While the stream drains a backlog it gathers: the socket reports data only once gatherBytes
// have arrived (SO_RCVLOWAT), and a read waits at most gatherWait for them. The walsender
// sends every change as its own message; a client that keeps up is woken for each one, and
// each wake-up costs the walsender too (it wakes us from inside its send). Measured on the
// drain benchmark (100k plays, 2 cores): client CPU about 1,000 → 400 ms and walsender
// 2.5 → 2.0 s. At the head of the WAL the stream does not gather, so latency is unchanged;
// draining a backlog, a message waits at most gatherWait.
const (
	gatherBytes = 64 << 10
	gatherWait  = time.Millisecond
)

// gather turns gathering on while the stream is behind and off when it is not. Off Linux the
// stream reads as before; on a Unix socket the mark changes nothing (Linux wakes its readers
// for every write).
func (s *Stream) gather() {
	if s.behind == s.gathering || s.noGather {
		return
	}
	lowat := 1
	if s.behind {
		lowat = gatherBytes
	}
	if err := setReceiveLowWater(s.conn.Conn(), lowat); err != nil {
		s.noGather = true
		s.log.Debug("reading without gathering", zap.Error(err))
		return
	}
	s.gathering = s.behind
}

// Interrupt makes a Next that is waiting return MessageTimeout at once, or the next call if
// none is waiting. It is safe to call from any goroutine.
func (s *Stream) Interrupt() {
	s.woken.Store(true)
	_ = s.conn.Conn().SetReadDeadline(time.Unix(1, 0))
}

func (s *Stream) handleCopyData(data []byte) (Message, bool, error) {
	if len(data) == 0 {
		return Message{}, false, fmt.Errorf("empty copy data message")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return Message{}, false, fmt.Errorf("parse keepalive: %w", err)
		}
		if !s.InTransaction() && ka.ServerWALEnd > s.received {
			s.received = ka.ServerWALEnd
		}
		s.behind = false
		return Message{Kind: MessageKeepalive, ServerWALEnd: ka.ServerWALEnd, ReplyRequested: ka.ReplyRequested}, true, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return Message{}, false, fmt.Errorf("parse xlogdata: %w", err)
		}
		// WALStart is the change's LSN, or the transaction's end LSN for a COMMIT. Adding the
		// message length would report a position the server never sent, and a shutting-down
		// walsender waits for the exact one.
		if xld.WALStart > s.received {
			s.received = xld.WALStart
		}
		s.bytes += int64(len(xld.WALData))
		m, done, err := s.handleEvent(xld.WALData, xld.WALStart)
		if s.inTx {
			s.behind = xld.ServerTime.Sub(s.beginCommit) > backlogAge
		}
		return m, done, err
	default:
		return Message{}, false, nil
	}
}

func (s *Stream) handleEvent(walData []byte, at pglogrepl.LSN) (Message, bool, error) {
	ev, err := s.decoder.decode(walData)
	if err != nil {
		return Message{}, false, fmt.Errorf("decode at %s: %w", at, err)
	}
	switch ev.Kind {
	case eventBegin:
		s.tx.reset()
		s.tx.Xid = ev.Xid
		s.beginCommit = ev.CommitTime
		s.inTx = true
	case eventCommit:
		s.inTx = false
		s.tx.EndLSN, s.tx.CommitTime = ev.EndLSN, ev.CommitTime
		return s.committed(&s.tx)
	case eventChange, eventTruncate:
		switch {
		case s.segment != nil:
			s.segment.part(ev.Xid, s.plan).add(s.plan, ev)
		case s.inTx:
			s.tx.add(s.plan, ev)
		default:
			return Message{}, false, fmt.Errorf("change at %s outside a transaction", at)
		}
	case eventStreamStart, eventStreamStop, eventStreamCommit, eventStreamAbort:
		return s.handleStreamed(ev, at)
	}
	return Message{}, false, nil
}

// committed hands over a committed transaction, unless it is a replay.
func (s *Stream) committed(tx *Transaction) (Message, bool, error) {
	if tx.EndLSN <= s.startLSN {
		return Message{}, false, nil // a replay: already applied and stored
	}
	if tx.Truncates > 0 {
		s.log.Warn("truncate of a source table: nothing to recompute (aggregates and rewards are not derived from deleted rows)",
			zap.Stringer("end_lsn", tx.EndLSN))
	}
	return Message{Kind: MessageTransaction, Transaction: tx}, true, nil
}

// statusWriteTimeout bounds a status update's write: a peer that stopped reading must not
// hang the loop.
const statusWriteTimeout = 10 * time.Second

// SendStatus sends a standby status update. write is what we received; flush and apply are
// flushed, what is durably applied (stored with the rewards). All three are set explicitly:
// pglogrepl would copy write into a zero flush and so confirm unapplied data.
//
// A zero flushed is sent as such — "invalid" — and the server then leaves the slot where it
// is. That is the answer to a keepalive that asks for one: a walsender finishing a fast or
// smart shutdown waits until the reported flush, or write while flush is invalid, equals what
// it sent. Confirming flush there would need a store first, and the server has already
// terminated our flush connection by then.
func (s *Stream) SendStatus(flushed pglogrepl.LSN, replyRequested bool) error {
	write := max(s.received, flushed)
	buf := append(s.status[:0], 'd', 0, 0, 0, 4+34, pglogrepl.StandbyStatusUpdateByteID)
	buf = binary.BigEndian.AppendUint64(buf, uint64(write))
	buf = binary.BigEndian.AppendUint64(buf, uint64(flushed))
	buf = binary.BigEndian.AppendUint64(buf, uint64(flushed))
	buf = binary.BigEndian.AppendUint64(buf, uint64(toPgTime(time.Now())))
	if replyRequested {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	s.status = buf
	if err := s.conn.Conn().SetWriteDeadline(time.Now().Add(statusWriteTimeout)); err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	if err := s.conn.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	return nil
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC, the Postgres epoch, in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

// toPgTime is a protocol timestamp: microseconds since the Postgres epoch.
func toPgTime(t time.Time) int64 { return t.UnixMicro() - pgEpochMicros }
