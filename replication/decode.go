package replication

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
)

// Decoding errors. All of them are permanent: the pipeline must stop rather
// than confirm an LSN past data it could not interpret.
var (
	// ErrMissingColumn means a Relation message for a plan table lacks a
	// column the pipeline needs (it was dropped or renamed, or a publication
	// column list leaves it out).
	ErrMissingColumn = errors.New("required column missing")
	// ErrColumnType means a needed column is not an int2/int4/int8 column.
	ErrColumnType = errors.New("column is not an integer type")
	// ErrBadTuple means a row's values cannot be used: a NOT NULL id is NULL
	// or unchanged, an integer does not parse (or its binary form has the wrong
	// width), or the tuple does not match its cached relation.
	ErrBadTuple = errors.New("bad tuple")
	// ErrUnknownRelation means a change refers to a relation ID for which no
	// Relation message has been seen in this session.
	ErrUnknownRelation = errors.New("unknown relation")

	// errMalformed covers truncated, overlong and structurally invalid
	// messages. It is unexported because a caller can do nothing with it but
	// stop, which it does for every decode error anyway.
	errMalformed = errors.New("malformed message")
	// errUnsupported covers message types the session never asks for
	// (two-phase messages, future types). Skipping them would silently lose
	// or duplicate rows, so they are errors.
	errUnsupported = errors.New("unsupported message type")
)

// eventKind says what a decoded pgoutput message means to the pipeline.
type eventKind uint8

// The event kinds.
const (
	// eventIgnored: origin, type, logical decoding message, relation (the cache is updated),
	// changes to tables outside the plan, and operations the plan does not route (plays
	// updates, every delete).
	eventIgnored eventKind = iota
	// eventBegin starts a transaction.
	eventBegin
	// eventCommit ends a transaction.
	eventCommit
	// eventChange is an INSERT or UPDATE the plan routes.
	eventChange
	// eventTruncate is a TRUNCATE touching a plan table. Truncated rows earn nothing back,
	// so the pipeline only logs it.
	eventTruncate
	// eventStreamStart and eventStreamStop bracket one segment of an in-progress transaction
	// (protocol 2): the changes between them belong to transaction Xid.
	eventStreamStart
	eventStreamStop
	// eventStreamCommit: streamed transaction Xid committed, ending at EndLSN.
	eventStreamCommit
	// eventStreamAbort: streamed transaction Xid (SubXid == Xid), or its subtransaction
	// SubXid, rolled back; its changes never happened.
	eventStreamAbort
)

// String returns the kind's name for logs and metric labels.
func (k eventKind) String() string {
	switch k {
	case eventIgnored:
		return "ignored"
	case eventBegin:
		return "begin"
	case eventCommit:
		return "commit"
	case eventChange:
		return "change"
	case eventTruncate:
		return "truncate"
	case eventStreamStart:
		return "stream start"
	case eventStreamStop:
		return "stream stop"
	case eventStreamCommit:
		return "stream commit"
	case eventStreamAbort:
		return "stream abort"
	default:
		return fmt.Sprintf("eventKind(%d)", uint8(k))
	}
}

// event is one decoded pgoutput message, reduced to what the pipeline uses.
// It is a plain value: it does not alias the message buffer.
type event struct {
	Kind eventKind

	// EndLSN is the Commit's TransactionEndLSN: the position to checkpoint
	// and confirm once the transaction is applied. Set for Commit and Stream Commit.
	EndLSN pglogrepl.LSN
	// CommitTime is set for Begin, Commit and Stream Commit, in UTC.
	CommitTime time.Time
	// Xid is the transaction's ID, set for Begin and the stream messages; for a change inside
	// a stream segment it is the (sub)transaction that made the change.
	Xid uint32
	// SubXid is the rolled-back subtransaction of a Stream Abort; FirstSegment is set on the
	// Stream Start of a transaction's first segment.
	SubXid       uint32
	FirstSegment bool

	// Table indexes the plan's tables and Op is the operation, for a change. Values are the
	// table's plan columns in compiledTable.columns order; Present[i] is false when value i
	// was NULL.
	Table   int
	Op      Op
	Values  [maxValues]int64
	Present [maxValues]bool
}

// Type OIDs accepted for the needed columns (pg_type.oid of int8, int2, int4).
const (
	oidInt8 = 20
	oidInt2 = 21
	oidInt4 = 23
)

// relation is the cached part of a Relation message: just enough to find the needed values
// in a tuple without looking at names again.
type relation struct {
	// table indexes the plan's tables, -1 for a table outside the plan.
	table int
	// ncols is the number of columns every tuple of this relation carries.
	ncols uint16
	// valueOf[i] is the event value index of column i, -1 when not needed. Allocated once
	// per Relation message, never per row.
	valueOf []int8
	// width[v] is the byte width of value v's integer type, for binary values.
	width [maxValues]uint8
}

// decoder turns pgoutput (protocol version 2, streaming on) messages into
// events. It holds the relation cache of one replication session, so use a
// new decoder per START_REPLICATION: the server re-sends Relation messages in
// every session. A decoder is not safe for concurrent use.
//
// Messages that carry tuples (Insert, Update, Delete) are walked by the
// hand-written code in decode_tuple.go; every other message is parsed by
// pglogrepl, behind the length checks it lacks.
type decoder struct {
	plan *compiledPlan
	rels map[uint32]relation
	// stream is the open stream segment's transaction, when inStream. Inside a segment the
	// messages of carriesXid carry the (sub)transaction's ID after their type byte.
	stream   uint32
	inStream bool
	// streamRels are the Relation messages sent inside the segments of each streamed
	// transaction (perhaps a definition its own DDL made). They read that transaction's
	// changes only until it ends: at its commit they join rels (pgoutput then counts them as
	// sent for every later transaction); at its abort they go — an aborted ALTER TABLE must
	// not change how later transactions are read, and pgoutput sends the relation again.
	streamRels map[uint32]map[uint32]relation
}

// newDecoder returns a decoder for plan with an empty relation cache.
func newDecoder(plan *compiledPlan) *decoder {
	return &decoder{plan: plan, rels: make(map[uint32]relation, 4), streamRels: map[uint32]map[uint32]relation{}}
}

// decode decodes one message: the WALData of one XLogData. The returned event
// never aliases walData. Any error is permanent for the session; decode never
// panics, whatever the input.
func (d *decoder) decode(walData []byte) (event, error) {
	if len(walData) == 0 {
		return event{}, fmt.Errorf("decode: %w: empty message", errMalformed)
	}
	body := walData[1:]
	var xid uint32
	if d.inStream {
		var err error
		if xid, body, err = d.streamedBody(walData[0], body); err != nil {
			return event{}, err
		}
	}
	switch walData[0] {
	case 'I', 'U', 'D':
		ev, err := d.decodeChange(walData[0], body)
		return withStreamXid(ev, xid), err
	case 'B', 'C', 'R', 'T', 'O', 'Y', 'M':
		if len(body) != len(walData)-1 {
			// Rebuilt without the transaction ID for pglogrepl: once per segment, not per row.
			walData = append([]byte{walData[0]}, body...)
		}
		ev, err := d.decodeCold(walData)
		return withStreamXid(ev, xid), err
	case 'S', 'E', 'c', 'A':
		return d.decodeStream(walData)
	default:
		return event{}, fmt.Errorf("decode: %w %q", errUnsupported, walData[0])
	}
}

// withStreamXid sets a streamed change's transaction (xid 0: not streamed; Begin, which
// has its own, never is).
func withStreamXid(ev event, xid uint32) event {
	if xid != 0 && (ev.Kind == eventChange || ev.Kind == eventTruncate) {
		ev.Xid = xid
	}
	return ev
}

// decodeCold decodes the messages sent at most once per transaction or per
// session with pglogrepl.Parse.
func (d *decoder) decodeCold(walData []byte) (event, error) {
	name := pglogrepl.MessageType(walData[0]).String()
	if err := checkLength(walData); err != nil {
		return event{}, fmt.Errorf("decode %s: %w", name, err)
	}
	msg, err := parse(walData)
	if err != nil {
		return event{}, fmt.Errorf("decode %s: %w", name, err)
	}
	var ev event
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		ev = event{Kind: eventBegin, Xid: m.Xid, CommitTime: m.CommitTime.UTC()}
	case *pglogrepl.CommitMessage:
		ev = event{Kind: eventCommit, EndLSN: m.TransactionEndLSN, CommitTime: m.CommitTime.UTC()}
	case *pglogrepl.RelationMessage:
		ev, err = d.relation(m, len(walData)-1, d.relationsFor())
	case *pglogrepl.TruncateMessage:
		ev, err = d.truncate(m)
	case *pglogrepl.OriginMessage:
		err = wantLength(len(walData)-1, 8+len(m.Name)+1)
	case *pglogrepl.TypeMessage:
		err = wantLength(len(walData)-1, 4+len(m.Namespace)+1+len(m.Name)+1)
	case *pglogrepl.LogicalDecodingMessage:
		err = wantLength(len(walData)-1, 1+8+len(m.Prefix)+1+4+len(m.Content))
	default:
		err = fmt.Errorf("%w: parsed as %T", errUnsupported, msg)
	}
	if err != nil {
		return event{}, fmt.Errorf("decode %s: %w", name, err)
	}
	return ev, nil
}

// checkLength rejects what pglogrepl would accept or choke on: trailing bytes
// after Begin and Commit (it checks only a minimum length), a Truncate whose
// count does not match its length (it would allocate the count first, up to
// 16 GiB), and a logical decoding message without a terminated prefix (it
// would read the content length from the wrong place).
func checkLength(walData []byte) error {
	body := walData[1:]
	switch walData[0] {
	case 'B':
		return wantLength(len(body), 20)
	case 'C':
		return wantLength(len(body), 25)
	case 'T':
		if len(body) < 5 {
			return wantLength(len(body), 5)
		}
		n := uint64(body[0])<<24 | uint64(body[1])<<16 | uint64(body[2])<<8 | uint64(body[3])
		if uint64(len(body)-5) != 4*n {
			return fmt.Errorf("%w: %d relations in %d bytes", errMalformed, n, len(body))
		}
	case 'M':
		if len(body) < 9 || bytes.IndexByte(body[9:], 0) < 0 {
			return fmt.Errorf("%w: no prefix", errMalformed)
		}
	}
	return nil
}

func wantLength(got, want int) error {
	if got != want {
		return fmt.Errorf("%w: %d bytes, want %d", errMalformed, got, want)
	}
	return nil
}

// parse calls pglogrepl.Parse, turning the index-out-of-range panics it
// raises on truncated input into errMalformed.
func parse(walData []byte) (msg pglogrepl.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: %v", errMalformed, r)
		}
	}()
	msg, err = pglogrepl.Parse(walData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return msg, nil
}

// relation caches in rels the needed column positions of a plan table,
// replacing any earlier entry for the same relation ID (the server re-sends
// the Relation message after ALTER TABLE). size is the message's length
// without its type byte.
func (d *decoder) relation(m *pglogrepl.RelationMessage, size int, rels map[uint32]relation) (event, error) {
	// pglogrepl does not say how much it read, so trailing bytes show as a
	// difference from the length of what it parsed.
	want := 4 + len(m.Namespace) + 1 + len(m.RelationName) + 1 + 1 + 2
	for _, col := range m.Columns {
		want += 1 + len(col.Name) + 1 + 4 + 4
	}
	if err := wantLength(size, want); err != nil {
		return event{}, fmt.Errorf("relation %d: %w", m.RelationID, err)
	}

	rel := relation{table: d.plan.table(m.Namespace, m.RelationName), ncols: m.ColumnNum}
	if rel.table < 0 {
		rels[m.RelationID] = rel
		return event{Kind: eventIgnored}, nil
	}
	t := d.plan.tables[rel.table]
	rel.valueOf = make([]int8, len(m.Columns))
	for i := range rel.valueOf {
		rel.valueOf[i] = -1
	}
	// A stale entry must not survive a definition we refuse: later changes would be read
	// with the old column positions.
	delete(rels, m.RelationID)
	for v, name := range t.columns {
		i := slices.IndexFunc(m.Columns, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == name })
		if i < 0 {
			return event{}, fmt.Errorf("relation %d: %w: %s.%s", m.RelationID, ErrMissingColumn, t.name, name)
		}
		width := intWidth(m.Columns[i].DataType)
		if width == 0 {
			return event{}, fmt.Errorf("relation %d: %w: %s.%s has type OID %d", m.RelationID, ErrColumnType, t.name, name, m.Columns[i].DataType)
		}
		rel.valueOf[i], rel.width[v] = int8(v), width
	}
	rels[m.RelationID] = rel
	return event{Kind: eventIgnored}, nil
}

// intWidth is the byte width of an integer type, 0 for any other type.
func intWidth(oid uint32) uint8 {
	switch oid {
	case oidInt2:
		return 2
	case oidInt4:
		return 4
	case oidInt8:
		return 8
	}
	return 0
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage) (event, error) {
	var touched bool
	for _, relid := range m.RelationIDs {
		rel, found := d.lookup(relid)
		if !found {
			// pgoutput sends a Relation message for every truncated relation
			// before the Truncate, so a miss means a lost cache.
			return event{}, fmt.Errorf("%w: %d", ErrUnknownRelation, relid)
		}
		touched = touched || rel.table >= 0
	}
	if !touched {
		return event{Kind: eventIgnored}, nil
	}
	return event{Kind: eventTruncate}, nil
}
