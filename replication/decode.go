package replication

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Decoding errors. All of them are permanent: the pipeline must stop rather
// than confirm an LSN past data it could not interpret.
var (
	// ErrMissingColumn means a Relation message for plays or comments lacks a
	// column the pipeline needs (it was dropped or renamed, or a publication
	// column list leaves it out).
	ErrMissingColumn = errors.New("required column missing")
	// ErrColumnType means a needed column is not an int2/int4/int8 column.
	ErrColumnType = errors.New("column is not an integer type")
	// ErrBadTuple means a row's values cannot be used: a NOT NULL id is NULL
	// or unchanged, an integer does not parse, a value is in binary format, or
	// the tuple does not match its cached relation.
	ErrBadTuple = errors.New("bad tuple")
	// ErrUnknownRelation means a change refers to a relation ID for which no
	// Relation message has been seen in this session.
	ErrUnknownRelation = errors.New("unknown relation")

	// errMalformed covers truncated, overlong and structurally invalid
	// messages. It is unexported because a caller can do nothing with it but
	// stop, which it does for every decode error anyway.
	errMalformed = errors.New("malformed message")
	// errUnsupported covers message types the session never asks for
	// (streaming and two-phase messages, future types). Skipping them would
	// silently lose or duplicate rows, so they are errors.
	errUnsupported = errors.New("unsupported message type")
)

// eventKind says what a decoded pgoutput message means to the pipeline.
type eventKind uint8

// The event kinds.
const (
	// eventIgnored: origin, type, logical decoding message, relation (the
	// cache is updated), changes to other tables, plays updates and deletes,
	// comments deletes.
	eventIgnored eventKind = iota
	// eventBegin starts a transaction.
	eventBegin
	// eventCommit ends a transaction.
	eventCommit
	// eventPlay is an INSERT on plays.
	eventPlay
	// eventComment is an INSERT or UPDATE on comments.
	eventComment
	// eventTruncate is a TRUNCATE touching plays or comments. Truncated rows
	// earn nothing back, so the pipeline only logs it.
	eventTruncate
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
	case eventPlay:
		return "play"
	case eventComment:
		return "comment"
	case eventTruncate:
		return "truncate"
	default:
		return fmt.Sprintf("eventKind(%d)", uint8(k))
	}
}

// event is one decoded pgoutput message, reduced to what the pipeline uses.
// It is a plain value: it does not alias the message buffer.
type event struct {
	Kind eventKind

	// EndLSN is the Commit's TransactionEndLSN: the position to checkpoint
	// and confirm once the transaction is applied. Set for Commit.
	EndLSN pglogrepl.LSN
	// CommitTime is set for Begin and Commit, in UTC.
	CommitTime time.Time
	// Xid is the transaction's ID, set for Begin.
	Xid uint32

	// PlayID is plays.id; HasPlayID is false when it was NULL.
	PlayID    int64
	HasPlayID bool
	// TrackID is plays.play_item_id (NOT NULL).
	TrackID int64

	// UserID is comments.user_id (NOT NULL).
	UserID int64
	// BlockNumber is comments.blocknumber; HasBlockNumber is false when it
	// was NULL or not sent.
	BlockNumber    int64
	HasBlockNumber bool
}

// Table names as pgoutput sends them in Relation messages.
const (
	tablePlaysName    = "plays"
	tableCommentsName = "comments"
)

// Type OIDs accepted for the needed columns (pg_type.oid of int8, int2, int4).
const (
	oidInt8 = 20
	oidInt2 = 21
	oidInt4 = 23
)

// tableKind classifies a relation by what the pipeline does with it.
type tableKind uint8

const (
	tableOther tableKind = iota
	tablePlays
	tableComments
)

// relation is the cached part of a Relation message: just enough to find the
// two needed values in a tuple without looking at names again.
type relation struct {
	kind tableKind
	// ncols is the number of columns every tuple of this relation carries.
	ncols uint16
	// first and second index the needed columns: plays (id, play_item_id),
	// comments (user_id, blocknumber). Unused for tableOther.
	first, second uint16
}

// decoder turns pgoutput (protocol version 1, no streaming) messages into
// events. It holds the relation cache of one replication session, so use a
// new decoder per START_REPLICATION: the server re-sends Relation messages in
// every session. A decoder is not safe for concurrent use.
//
// Messages that carry tuples (Insert, Update, Delete) are walked by the
// hand-written code in decode_tuple.go; every other message is parsed by
// pglogrepl, behind the length checks it lacks.
type decoder struct {
	rels map[uint32]relation
}

// newDecoder returns a decoder with an empty relation cache.
func newDecoder() *decoder {
	return &decoder{rels: make(map[uint32]relation, 4)}
}

// decode decodes one message: the WALData of one XLogData. The returned event
// never aliases walData. Any error is permanent for the session; decode never
// panics, whatever the input.
func (d *decoder) decode(walData []byte) (event, error) {
	if len(walData) == 0 {
		return event{}, fmt.Errorf("decode: %w: empty message", errMalformed)
	}
	body := walData[1:]
	switch walData[0] {
	case 'I', 'U', 'D':
		return d.decodeChange(walData[0], body)
	case 'B', 'C', 'R', 'T', 'O', 'Y', 'M':
		return d.decodeCold(walData)
	default:
		return event{}, fmt.Errorf("decode: %w %q", errUnsupported, walData[0])
	}
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
		ev, err = d.relation(m, len(walData)-1)
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

// relation caches the needed column positions of plays and comments,
// replacing any earlier entry for the same relation ID (the server re-sends
// the Relation message after ALTER TABLE). size is the message's length
// without its type byte.
func (d *decoder) relation(m *pglogrepl.RelationMessage, size int) (event, error) {
	// pglogrepl does not say how much it read, so trailing bytes show as a
	// difference from the length of what it parsed.
	want := 4 + len(m.Namespace) + 1 + len(m.RelationName) + 1 + 1 + 2
	for _, col := range m.Columns {
		want += 1 + len(col.Name) + 1 + 4 + 4
	}
	if err := wantLength(size, want); err != nil {
		return event{}, fmt.Errorf("relation %d: %w", m.RelationID, err)
	}

	rel := relation{kind: classify(m.Namespace, m.RelationName), ncols: m.ColumnNum}
	if rel.kind == tableOther {
		d.rels[m.RelationID] = rel
		return event{Kind: eventIgnored}, nil
	}
	// The names of the needed columns for this kind of table.
	firstName, secondName, table := "id", "play_item_id", tablePlaysName
	if rel.kind == tableComments {
		firstName, secondName, table = "user_id", "blocknumber", tableCommentsName
	}
	var (
		haveFirst, haveSecond bool
		firstType, secondType uint32
	)
	for i, col := range m.Columns {
		switch {
		case !haveFirst && col.Name == firstName:
			haveFirst, rel.first, firstType = true, uint16(i), col.DataType
		case !haveSecond && col.Name == secondName:
			haveSecond, rel.second, secondType = true, uint16(i), col.DataType
		}
	}
	// A stale entry must not survive a definition we refuse: later changes
	// would be read with the old column positions.
	var err error
	switch {
	case !haveFirst:
		err = fmt.Errorf("%w: %s.%s", ErrMissingColumn, table, firstName)
	case !haveSecond:
		err = fmt.Errorf("%w: %s.%s", ErrMissingColumn, table, secondName)
	case !isIntOID(firstType):
		err = fmt.Errorf("%w: %s.%s has type OID %d", ErrColumnType, table, firstName, firstType)
	case !isIntOID(secondType):
		err = fmt.Errorf("%w: %s.%s has type OID %d", ErrColumnType, table, secondName, secondType)
	}
	if err != nil {
		delete(d.rels, m.RelationID)
		return event{}, fmt.Errorf("relation %d: %w", m.RelationID, err)
	}
	d.rels[m.RelationID] = rel
	return event{Kind: eventIgnored}, nil
}

// classify tells plays and comments in schema public from every other table
// that may be in the publication.
func classify(ns, name string) tableKind {
	if ns != "public" {
		return tableOther
	}
	switch name {
	case tablePlaysName:
		return tablePlays
	case tableCommentsName:
		return tableComments
	default:
		return tableOther
	}
}

func isIntOID(oid uint32) bool {
	return oid == oidInt2 || oid == oidInt4 || oid == oidInt8
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage) (event, error) {
	var touched bool
	for _, relid := range m.RelationIDs {
		rel, found := d.rels[relid]
		if !found {
			// pgoutput sends a Relation message for every truncated relation
			// before the Truncate, so a miss means a lost cache.
			return event{}, fmt.Errorf("%w: %d", ErrUnknownRelation, relid)
		}
		touched = touched || rel.kind != tableOther
	}
	if !touched {
		return event{Kind: eventIgnored}, nil
	}
	return event{Kind: eventTruncate}, nil
}
