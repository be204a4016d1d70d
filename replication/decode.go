package replication

import (
	"bytes"
	"encoding/binary"
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

// EventKind says what a decoded pgoutput message means to the pipeline.
type EventKind uint8

// Event kinds.
const (
	// EventIgnored: origin, type, logical decoding message, relation (the
	// cache is updated), changes to other tables, plays updates and deletes,
	// comments deletes.
	EventIgnored EventKind = iota
	// EventBegin starts a transaction.
	EventBegin
	// EventCommit ends a transaction.
	EventCommit
	// EventPlay is an INSERT on plays.
	EventPlay
	// EventComment is an INSERT or UPDATE on comments.
	EventComment
	// EventTruncate is a TRUNCATE touching plays or comments. Truncated rows
	// earn nothing back, so the pipeline only logs it.
	EventTruncate
)

// String returns the kind's name for logs and metric labels.
func (k EventKind) String() string {
	switch k {
	case EventIgnored:
		return "ignored"
	case EventBegin:
		return "begin"
	case EventCommit:
		return "commit"
	case EventPlay:
		return "play"
	case EventComment:
		return "comment"
	case EventTruncate:
		return "truncate"
	default:
		return fmt.Sprintf("EventKind(%d)", uint8(k))
	}
}

// Table names as they appear in Event.Table. They are constants so that
// setting Event.Table never allocates.
const (
	tablePlaysName    = "plays"
	tableCommentsName = "comments"
	tableBothName     = "plays,comments"
)

// Event is one decoded pgoutput message, reduced to what the pipeline uses.
// It is a plain value: it does not alias the message buffer.
type Event struct {
	Kind EventKind

	// CommitLSN is the commit LSN for Commit and the transaction's final LSN
	// for Begin (the two are the same position).
	CommitLSN pglogrepl.LSN
	// EndLSN is the Commit's TransactionEndLSN: the position to checkpoint
	// and confirm once the transaction is applied.
	EndLSN pglogrepl.LSN
	// CommitTime is set for Begin and Commit, in UTC.
	CommitTime time.Time
	// Xid is set for Begin.
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

	// Op is 'I', 'U', 'D' or 'T' for change and truncate messages, also when
	// Kind is EventIgnored, so callers can count every change.
	Op byte
	// Table is "plays" or "comments" for change and truncate messages on
	// those tables ("plays,comments" for a TRUNCATE of both), empty for other
	// tables.
	Table string
}

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

// Decoder turns pgoutput (protocol version 1, no streaming) messages into
// Events. It holds the relation cache of one replication session, so use a
// new Decoder per START_REPLICATION: the server re-sends Relation messages in
// every session. A Decoder is not safe for concurrent use.
type Decoder struct {
	rels map[uint32]relation
}

// NewDecoder returns a Decoder with an empty relation cache.
func NewDecoder() *Decoder {
	return &Decoder{rels: make(map[uint32]relation, 4)}
}

// Decode decodes one message: the WALData of one XLogData. The returned Event
// never aliases walData. Any error is permanent for the session; Decode never
// panics, whatever the input.
func (d *Decoder) Decode(walData []byte) (Event, error) {
	if len(walData) == 0 {
		return Event{}, fmt.Errorf("decode: %w: empty message", errMalformed)
	}
	body := walData[1:]
	switch walData[0] {
	case 'I':
		return d.decodeInsert(body)
	case 'U':
		return d.decodeUpdate(body)
	case 'D':
		return d.decodeDelete(body)
	case 'B':
		return decodeBegin(body)
	case 'C':
		return decodeCommit(body)
	case 'R':
		return d.decodeRelation(body)
	case 'T':
		return d.decodeTruncate(body)
	case 'O':
		return decodeOrigin(body)
	case 'Y':
		return decodeType(body)
	case 'M':
		return decodeLogicalMessage(body)
	default:
		return Event{}, fmt.Errorf("decode: %w %q", errUnsupported, walData[0])
	}
}

func decodeBegin(b []byte) (Event, error) {
	if len(b) != 20 {
		return Event{}, fmt.Errorf("decode begin: %w: %d bytes, want 20", errMalformed, len(b))
	}
	return Event{
		Kind:       EventBegin,
		CommitLSN:  pglogrepl.LSN(binary.BigEndian.Uint64(b)),
		CommitTime: pgTime(binary.BigEndian.Uint64(b[8:])),
		Xid:        binary.BigEndian.Uint32(b[16:]),
	}, nil
}

func decodeCommit(b []byte) (Event, error) {
	// b[0] is the flags byte, unused by protocol version 1.
	if len(b) != 25 {
		return Event{}, fmt.Errorf("decode commit: %w: %d bytes, want 25", errMalformed, len(b))
	}
	return Event{
		Kind:       EventCommit,
		CommitLSN:  pglogrepl.LSN(binary.BigEndian.Uint64(b[1:])),
		EndLSN:     pglogrepl.LSN(binary.BigEndian.Uint64(b[9:])),
		CommitTime: pgTime(binary.BigEndian.Uint64(b[17:])),
	}, nil
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC, the Postgres epoch, in Unix
// microseconds.
const pgEpochMicros = 946_684_800_000_000

// pgTime converts a Postgres timestamp (microseconds since 2000-01-01 UTC).
// Garbage values wrap around rather than panic.
func pgTime(v uint64) time.Time {
	return time.UnixMicro(int64(v) + pgEpochMicros).UTC()
}

func decodeOrigin(b []byte) (Event, error) {
	c := cursor{b: b}
	_, ok := c.u64() // origin LSN
	if ok {
		_, ok = c.cstring() // origin name
	}
	if !ok || !c.done() {
		return Event{}, fmt.Errorf("decode origin: %w", errMalformed)
	}
	return Event{Kind: EventIgnored}, nil
}

func decodeType(b []byte) (Event, error) {
	c := cursor{b: b}
	_, ok := c.u32() // type OID
	if ok {
		_, ok = c.cstring() // namespace
	}
	if ok {
		_, ok = c.cstring() // name
	}
	if !ok || !c.done() {
		return Event{}, fmt.Errorf("decode type: %w", errMalformed)
	}
	return Event{Kind: EventIgnored}, nil
}

func decodeLogicalMessage(b []byte) (Event, error) {
	c := cursor{b: b}
	_, ok := c.u8() // flags
	if ok {
		_, ok = c.u64() // LSN
	}
	if ok {
		_, ok = c.cstring() // prefix
	}
	var n uint32
	if ok {
		n, ok = c.u32()
	}
	if ok {
		_, ok = c.take(n)
	}
	if !ok || !c.done() {
		return Event{}, fmt.Errorf("decode logical message: %w", errMalformed)
	}
	return Event{Kind: EventIgnored}, nil
}

// decodeRelation caches the needed column positions of plays and comments,
// replacing any earlier entry for the same relation ID (the server re-sends
// the Relation message after ALTER TABLE).
func (d *Decoder) decodeRelation(b []byte) (Event, error) {
	c := cursor{b: b}
	relid, ok := c.u32()
	var ns, name []byte
	if ok {
		ns, ok = c.cstring()
	}
	if ok {
		name, ok = c.cstring()
	}
	if ok {
		_, ok = c.u8() // replica identity
	}
	var ncols uint16
	if ok {
		ncols, ok = c.u16()
	}
	if !ok {
		return Event{}, fmt.Errorf("decode relation: %w: short header", errMalformed)
	}

	rel := relation{kind: classify(ns, name), ncols: ncols}
	// The names of the needed columns for this kind of table.
	var firstName, secondName, table string
	switch rel.kind {
	case tablePlays:
		firstName, secondName, table = "id", "play_item_id", tablePlaysName
	case tableComments:
		firstName, secondName, table = "user_id", "blocknumber", tableCommentsName
	}
	var (
		haveFirst, haveSecond bool
		firstType, secondType uint32
	)
	for i := range ncols {
		_, ok = c.u8() // flags
		var col []byte
		if ok {
			col, ok = c.cstring()
		}
		var typ uint32
		if ok {
			typ, ok = c.u32()
		}
		if ok {
			_, ok = c.u32() // type modifier
		}
		if !ok {
			return Event{}, fmt.Errorf("decode relation %d: %w: column %d truncated", relid, errMalformed, i)
		}
		if rel.kind == tableOther {
			continue
		}
		// string(col) in a comparison does not allocate.
		switch {
		case !haveFirst && string(col) == firstName:
			haveFirst, rel.first, firstType = true, i, typ
		case !haveSecond && string(col) == secondName:
			haveSecond, rel.second, secondType = true, i, typ
		}
	}
	if !c.done() {
		return Event{}, fmt.Errorf("decode relation %d: %w: %d trailing bytes", relid, errMalformed, c.left())
	}

	if rel.kind != tableOther {
		// A stale entry must not survive a definition we refuse: later
		// changes would be read with the old column positions.
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
			delete(d.rels, relid)
			return Event{}, fmt.Errorf("decode relation %d: %w", relid, err)
		}
	}
	d.rels[relid] = rel
	return Event{Kind: EventIgnored}, nil
}

// classify tells plays and comments in schema public from every other table
// that may be in the publication.
func classify(ns, name []byte) tableKind {
	if string(ns) != "public" {
		return tableOther
	}
	switch string(name) {
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

func (d *Decoder) decodeInsert(b []byte) (Event, error) {
	c := cursor{b: b}
	relid, ok := c.u32()
	var tag byte
	if ok {
		tag, ok = c.u8()
	}
	if !ok || tag != 'N' {
		return Event{}, fmt.Errorf("decode insert: %w: bad header", errMalformed)
	}
	rel, found := d.rels[relid]
	if !found {
		return Event{}, fmt.Errorf("decode insert: %w: %d", ErrUnknownRelation, relid)
	}
	ev, err := decodeNewTuple(&c, rel, 'I')
	if err != nil {
		return Event{}, fmt.Errorf("decode insert: %w", err)
	}
	return ev, nil
}

func (d *Decoder) decodeUpdate(b []byte) (Event, error) {
	c := cursor{b: b}
	relid, ok := c.u32()
	var tag byte
	if ok {
		tag, ok = c.u8()
	}
	if !ok {
		return Event{}, fmt.Errorf("decode update: %w: bad header", errMalformed)
	}
	rel, found := d.rels[relid]
	if !found {
		return Event{}, fmt.Errorf("decode update: %w: %d", ErrUnknownRelation, relid)
	}
	if tag == 'K' || tag == 'O' {
		// The old key or row is of no use: the pipeline only needs who
		// changed, which the new tuple says.
		if err := skipTuple(&c); err != nil {
			return Event{}, fmt.Errorf("decode update: old tuple: %w", err)
		}
		tag, ok = c.u8()
		if !ok {
			return Event{}, fmt.Errorf("decode update: %w: no new tuple", errMalformed)
		}
	}
	if tag != 'N' {
		return Event{}, fmt.Errorf("decode update: %w: tuple tag %q", errMalformed, tag)
	}
	ev, err := decodeNewTuple(&c, rel, 'U')
	if err != nil {
		return Event{}, fmt.Errorf("decode update: %w", err)
	}
	return ev, nil
}

func (d *Decoder) decodeDelete(b []byte) (Event, error) {
	c := cursor{b: b}
	relid, ok := c.u32()
	var tag byte
	if ok {
		tag, ok = c.u8()
	}
	if !ok || (tag != 'K' && tag != 'O') {
		return Event{}, fmt.Errorf("decode delete: %w: bad header", errMalformed)
	}
	rel, found := d.rels[relid]
	if !found {
		return Event{}, fmt.Errorf("decode delete: %w: %d", ErrUnknownRelation, relid)
	}
	// Deletes never earn or revoke anything, but walking the tuple still
	// catches a corrupt message.
	if err := skipTuple(&c); err != nil {
		return Event{}, fmt.Errorf("decode delete: %w", err)
	}
	if !c.done() {
		return Event{}, fmt.Errorf("decode delete: %w: %d trailing bytes", errMalformed, c.left())
	}
	return Event{Kind: EventIgnored, Op: 'D', Table: rel.tableName()}, nil
}

func (d *Decoder) decodeTruncate(b []byte) (Event, error) {
	c := cursor{b: b}
	n, ok := c.u32()
	if ok {
		_, ok = c.u8() // options: CASCADE, RESTART IDENTITY
	}
	// Check the length before looping so a garbage count cannot spin.
	if !ok || uint64(c.left()) != 4*uint64(n) {
		return Event{}, fmt.Errorf("decode truncate: %w", errMalformed)
	}
	var plays, comments bool
	for range n {
		relid, _ := c.u32()
		rel, found := d.rels[relid]
		if !found {
			// pgoutput sends a Relation message for every truncated relation
			// before the Truncate, so a miss means a lost cache.
			return Event{}, fmt.Errorf("decode truncate: %w: %d", ErrUnknownRelation, relid)
		}
		plays = plays || rel.kind == tablePlays
		comments = comments || rel.kind == tableComments
	}
	ev := Event{Kind: EventTruncate, Op: 'T'}
	switch {
	case plays && comments:
		ev.Table = tableBothName
	case plays:
		ev.Table = tablePlaysName
	case comments:
		ev.Table = tableCommentsName
	default:
		ev.Kind = EventIgnored
	}
	return ev, nil
}

func (r relation) tableName() string {
	switch r.kind {
	case tablePlays:
		return tablePlaysName
	case tableComments:
		return tableCommentsName
	default:
		return ""
	}
}

// decodeNewTuple reads the new tuple of an Insert or Update, which must be
// the rest of the message, and builds the Event. This is the hot path: it
// allocates nothing unless it fails.
func decodeNewTuple(c *cursor, rel relation, op byte) (Event, error) {
	var want [2]int
	if rel.kind == tableOther {
		want = [2]int{-1, -1}
	} else {
		want = [2]int{int(rel.first), int(rel.second)}
	}
	vals, ncols, err := readTuple(c, want)
	if err != nil {
		return Event{}, err
	}
	if ncols != rel.ncols {
		// The cached column positions would point at the wrong values.
		return Event{}, fmt.Errorf("%w: %d columns, relation has %d", ErrBadTuple, ncols, rel.ncols)
	}
	if !c.done() {
		return Event{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, c.left())
	}

	ev := Event{Kind: EventIgnored, Op: op, Table: rel.tableName()}
	switch rel.kind {
	case tablePlays:
		if op != 'I' {
			return ev, nil
		}
		id, hasID, err := vals[0].int64()
		if err != nil {
			return Event{}, fmt.Errorf("plays.id: %w", err)
		}
		track, hasTrack, err := vals[1].int64()
		if err != nil {
			return Event{}, fmt.Errorf("plays.play_item_id: %w", err)
		}
		if !hasTrack {
			return Event{}, fmt.Errorf("%w: plays.play_item_id is %s", ErrBadTuple, vals[1].kindName())
		}
		ev.Kind, ev.PlayID, ev.HasPlayID, ev.TrackID = EventPlay, id, hasID, track
	case tableComments:
		user, hasUser, err := vals[0].int64()
		if err != nil {
			return Event{}, fmt.Errorf("comments.user_id: %w", err)
		}
		if !hasUser {
			return Event{}, fmt.Errorf("%w: comments.user_id is %s", ErrBadTuple, vals[0].kindName())
		}
		block, hasBlock, err := vals[1].int64()
		if err != nil {
			return Event{}, fmt.Errorf("comments.blocknumber: %w", err)
		}
		ev.Kind, ev.UserID, ev.BlockNumber, ev.HasBlockNumber = EventComment, user, block, hasBlock
	}
	return ev, nil
}

// value is one column of a TupleData. data aliases the message buffer.
type value struct {
	kind byte // 'n', 'u' or 't'; 0 when the column was not reached
	data []byte
}

// int64 returns the column as an integer; present is false for NULL and for
// an unchanged TOASTed value (never sent).
func (v value) int64() (n int64, present bool, err error) {
	if v.kind != 't' {
		return 0, false, nil
	}
	n, ok := parseInt(v.data)
	if !ok {
		const maxShown = 32
		shown := v.data
		if len(shown) > maxShown {
			shown = shown[:maxShown]
		}
		return 0, false, fmt.Errorf("%w: %q is not an int64", ErrBadTuple, shown)
	}
	return n, true, nil
}

func (v value) kindName() string {
	switch v.kind {
	case 'n':
		return "NULL"
	case 'u':
		return "unchanged TOAST"
	default:
		return "missing"
	}
}

// readTuple walks one TupleData and returns the values at the column indexes
// in want (-1 for none) and the column count. It rejects binary values: the
// session asks for text, so binary means a misconfigured stream.
func readTuple(c *cursor, want [2]int) (vals [2]value, ncols uint16, err error) {
	// Locals instead of cursor methods keep b and pos in registers in this
	// loop, which runs once per column of every row.
	b, pos := c.b, c.pos
	if len(b)-pos < 2 {
		return vals, 0, fmt.Errorf("%w: tuple has no column count", errMalformed)
	}
	ncols = binary.BigEndian.Uint16(b[pos:])
	pos += 2
	for i := range int(ncols) {
		if pos >= len(b) {
			return vals, 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
		}
		kind := b[pos]
		pos++
		var data []byte
		switch kind {
		case 't':
			if len(b)-pos < 4 {
				return vals, 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
			}
			n := uint64(binary.BigEndian.Uint32(b[pos:]))
			pos += 4
			if uint64(len(b)-pos) < n {
				return vals, 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
			}
			data = b[pos : pos+int(n)]
			pos += int(n)
		case 'n', 'u':
		case 'b':
			return vals, 0, fmt.Errorf("%w: column %d is in binary format", ErrBadTuple, i)
		default:
			return vals, 0, fmt.Errorf("%w: column %d has kind %q", errMalformed, i, kind)
		}
		switch i {
		case want[0]:
			vals[0] = value{kind: kind, data: data}
		case want[1]:
			vals[1] = value{kind: kind, data: data}
		}
	}
	c.pos = pos
	return vals, ncols, nil
}

// skipTuple walks a TupleData whose values are not needed.
func skipTuple(c *cursor) error {
	_, _, err := readTuple(c, [2]int{-1, -1})
	return err
}

// parseInt parses a Postgres integer output ([-]digits) without allocating.
// strconv.ParseInt would need a string, which costs a copy per row.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var n uint64
	if len(b) <= 18 {
		// Up to 18 digits cannot overflow, so the common case skips the
		// per-digit limit check.
		for _, ch := range b {
			digit := uint64(ch - '0')
			if digit > 9 {
				return 0, false
			}
			n = n*10 + digit
		}
	} else {
		limit := uint64(1<<63 - 1)
		if neg {
			limit = 1 << 63
		}
		for _, ch := range b {
			digit := uint64(ch - '0')
			if digit > 9 || n > (limit-digit)/10 {
				return 0, false
			}
			n = n*10 + digit
		}
	}
	if neg {
		return int64(-n), true // -(1<<63) wraps to itself, which is MinInt64
	}
	return int64(n), true
}

// cursor reads big-endian protocol fields with bounds checks. Every method
// reports false instead of panicking when the message is too short.
type cursor struct {
	b   []byte
	pos int
}

func (c *cursor) left() int  { return len(c.b) - c.pos }
func (c *cursor) done() bool { return c.pos == len(c.b) }

func (c *cursor) u8() (byte, bool) {
	if c.left() < 1 {
		return 0, false
	}
	v := c.b[c.pos]
	c.pos++
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if c.left() < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(c.b[c.pos:])
	c.pos += 2
	return v, true
}

func (c *cursor) u32() (uint32, bool) {
	if c.left() < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(c.b[c.pos:])
	c.pos += 4
	return v, true
}

func (c *cursor) u64() (uint64, bool) {
	if c.left() < 8 {
		return 0, false
	}
	v := binary.BigEndian.Uint64(c.b[c.pos:])
	c.pos += 8
	return v, true
}

// take returns the next n bytes, aliasing the buffer.
func (c *cursor) take(n uint32) ([]byte, bool) {
	if uint64(c.left()) < uint64(n) {
		return nil, false
	}
	v := c.b[c.pos : c.pos+int(n)]
	c.pos += int(n)
	return v, true
}

// cstring returns a NUL-terminated string without its terminator, aliasing
// the buffer.
func (c *cursor) cstring() ([]byte, bool) {
	n := bytes.IndexByte(c.b[c.pos:], 0)
	if n < 0 {
		return nil, false
	}
	v := c.b[c.pos : c.pos+n]
	c.pos += n + 1
	return v, true
}
