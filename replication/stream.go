package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
)

// ErrStreamEnded means the server ended the copy stream (it is shutting down, or an operator
// dropped the slot under us).
var ErrStreamEnded = errors.New("server ended the replication stream")

// Transaction is what one committed source transaction changed, reduced to IDs: memory is
// O(distinct IDs), whatever the number of rows.
type Transaction struct {
	EndLSN     pglogrepl.LSN // CommitMessage.TransactionEndLSN: the restart and checkpoint key
	CommitTime time.Time

	Tracks     map[int64]struct{} // play_item_id of inserted plays
	Commenters map[int64]struct{} // user_id of inserted or updated comments

	MaxPlayID       int64
	HasPlayID       bool
	MaxCommentBlock int64
	HasCommentBlock bool

	Plays     int // inserted plays
	Comments  int // inserted or updated comments
	Truncates int // TRUNCATEs of plays or comments
}

func (tx *Transaction) reset() {
	clear(tx.Tracks)
	clear(tx.Commenters)
	*tx = Transaction{Tracks: tx.Tracks, Commenters: tx.Commenters}
}

func (tx *Transaction) add(ev Event) {
	switch ev.Kind {
	case EventPlay:
		tx.Plays++
		tx.Tracks[ev.TrackID] = struct{}{}
		if ev.HasPlayID && (!tx.HasPlayID || ev.PlayID > tx.MaxPlayID) {
			tx.MaxPlayID, tx.HasPlayID = ev.PlayID, true
		}
	case EventComment:
		tx.Comments++
		tx.Commenters[ev.UserID] = struct{}{}
		if ev.HasBlockNumber && (!tx.HasCommentBlock || ev.BlockNumber > tx.MaxCommentBlock) {
			tx.MaxCommentBlock, tx.HasCommentBlock = ev.BlockNumber, true
		}
	case EventTruncate:
		tx.Truncates++
	}
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
// IDs until its COMMIT and hands back committed transactions and keepalives. It is not safe for
// concurrent use: one goroutine receives and sends status updates.
type Stream struct {
	conn     *pgconn.PgConn
	log      *zap.Logger
	decoder  *Decoder
	startLSN pglogrepl.LSN // transactions ending at or before it are replays
	tx       Transaction
	inTx     bool
	received pglogrepl.LSN
}

// Start sends START_REPLICATION for the slot from startLSN with pgoutput protocol version 1.
// Version 1 sends a transaction only after it commits, so a window never holds part of one;
// large transactions spill to disk on the server, and we only keep their IDs.
func Start(ctx context.Context, conn *pgconn.PgConn, slot, publication string, startLSN pglogrepl.LSN, log *zap.Logger) (*Stream, error) {
	err := pglogrepl.StartReplication(ctx, conn, slot, startLSN, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", publication)},
	})
	if err != nil {
		return nil, fmt.Errorf("start replication on slot %s at %s: %w", slot, startLSN, err)
	}
	return &Stream{
		conn:     conn,
		log:      log,
		decoder:  NewDecoder(),
		startLSN: startLSN,
		tx:       Transaction{Tracks: map[int64]struct{}{}, Commenters: map[int64]struct{}{}},
		received: startLSN,
	}, nil
}

// InTransaction reports whether a transaction has begun and not yet committed: while it has,
// the server's WAL end must not be confirmed.
func (s *Stream) InTransaction() bool { return s.inTx }

// Received is the highest WAL position received.
func (s *Stream) Received() pglogrepl.LSN { return s.received }

// Next receives until a transaction commits, a keepalive arrives or ctx's deadline passes
// (MessageTimeout, nil). Any other error ends the session.
func (s *Stream) Next(ctx context.Context) (Message, error) {
	for {
		raw, err := s.conn.ReceiveMessage(ctx)
		if err != nil {
			if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if pgconn.Timeout(err) {
					return Message{Kind: MessageTimeout}, nil
				}
			}
			return Message{}, fmt.Errorf("receive: %w", err)
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
		if !s.inTx && ka.ServerWALEnd > s.received {
			s.received = ka.ServerWALEnd
		}
		return Message{Kind: MessageKeepalive, ServerWALEnd: ka.ServerWALEnd, ReplyRequested: ka.ReplyRequested}, true, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return Message{}, false, fmt.Errorf("parse xlogdata: %w", err)
		}
		if end := xld.WALStart + pglogrepl.LSN(len(xld.WALData)); end > s.received {
			s.received = end
		}
		return s.handleEvent(xld.WALData, xld.WALStart)
	default:
		return Message{}, false, nil
	}
}

func (s *Stream) handleEvent(walData []byte, at pglogrepl.LSN) (Message, bool, error) {
	ev, err := s.decoder.Decode(walData)
	if err != nil {
		return Message{}, false, fmt.Errorf("decode at %s: %w", at, err)
	}
	switch ev.Kind {
	case EventBegin:
		s.tx.reset()
		s.inTx = true
	case EventCommit:
		s.inTx = false
		s.tx.EndLSN, s.tx.CommitTime = ev.EndLSN, ev.CommitTime
		if ev.EndLSN <= s.startLSN {
			return Message{}, false, nil // a replay: already applied and stored
		}
		if s.tx.Truncates > 0 {
			s.log.Warn("truncate of a source table: nothing to recompute (aggregates and rewards are not derived from deleted rows)",
				zap.Stringer("end_lsn", ev.EndLSN))
		}
		return Message{Kind: MessageTransaction, Transaction: &s.tx}, true, nil
	case EventPlay, EventComment, EventTruncate:
		if !s.inTx {
			return Message{}, false, fmt.Errorf("change at %s outside a transaction", at)
		}
		s.tx.add(ev)
	}
	return Message{}, false, nil
}

// SendStatus confirms positions to the server. write is what we received; flush and apply are
// what is durably applied (stored with the rewards). All three are set explicitly: pglogrepl
// would copy write into a zero flush and so confirm unapplied data.
func (s *Stream) SendStatus(ctx context.Context, applied pglogrepl.LSN, replyRequested bool) error {
	write := s.received
	if applied > write {
		write = applied
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: applied,
		WALApplyPosition: applied,
		ClientTime:       time.Now(),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	return nil
}
