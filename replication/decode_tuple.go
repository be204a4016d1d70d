package replication

import (
	"encoding/binary"
	"fmt"
)

// This file is the hand-written hot path: every row of a change message goes
// through it. It allocates nothing unless it fails (BenchmarkDecodeInsert and
// BenchmarkDecodeCommentUpdate report 0 allocs/op, TestDecodeAllocs holds it
// there), where pglogrepl.Parse allocates a message, a TupleData and a copy of
// every column per row. Deletes share the tuple walker: pglogrepl allocates a
// value's declared length before checking it against the message, so a tuple
// must be walked here before pglogrepl could safely see it, and then nothing
// is left for pglogrepl to do.

// decodeChange decodes the body of an Insert, Update or Delete (op 'I', 'U' or 'D').
func (d *decoder) decodeChange(op byte, b []byte) (event, error) {
	c := cursor{b: b}
	relid, ok := c.u32()
	var tag byte
	if ok {
		tag, ok = c.u8()
	}
	hasOld := tag == 'K' || tag == 'O'
	if !ok || (op == 'I' && tag != 'N') || (op == 'D' && !hasOld) {
		return event{}, changeError(op, fmt.Errorf("%w: bad header", errMalformed))
	}
	rel, found := d.lookup(relid)
	if !found {
		return event{}, changeError(op, fmt.Errorf("%w: %d", ErrUnknownRelation, relid))
	}
	if hasOld {
		// The old key or row is of no use: deletes never earn or revoke
		// anything, and an update's new tuple says who changed. Walking it
		// still catches a corrupt message.
		if err := skipTuple(&c); err != nil {
			return event{}, changeError(op, fmt.Errorf("old tuple: %w", err))
		}
		if op == 'D' {
			if !c.done() {
				return event{}, changeError(op, fmt.Errorf("%w: %d trailing bytes", errMalformed, c.left()))
			}
			return event{Kind: eventIgnored}, nil
		}
		if tag, ok = c.u8(); !ok {
			return event{}, changeError(op, fmt.Errorf("%w: no new tuple", errMalformed))
		}
	}
	if tag != 'N' {
		return event{}, changeError(op, fmt.Errorf("%w: tuple tag %q", errMalformed, tag))
	}
	ev, err := d.decodeNewTuple(&c, rel, op)
	if err != nil {
		return event{}, changeError(op, err)
	}
	return ev, nil
}

// changeError names the message an error came from.
func changeError(op byte, err error) error {
	name := "insert"
	switch op {
	case 'U':
		name = "update"
	case 'D':
		name = "delete"
	}
	return fmt.Errorf("decode %s: %w", name, err)
}

// decodeNewTuple reads the new tuple of an Insert or Update, which must be
// the rest of the message, and builds the event. This is the hot path: it
// allocates nothing unless it fails.
func (d *decoder) decodeNewTuple(c *cursor, rel relation, op byte) (event, error) {
	var vals [maxValues]value
	ncols, err := readTuple(c, rel.valueOf, &vals)
	if err != nil {
		return event{}, err
	}
	if ncols != rel.ncols {
		// The cached column positions would point at the wrong values.
		return event{}, fmt.Errorf("%w: %d columns, relation has %d", ErrBadTuple, ncols, rel.ncols)
	}
	if !c.done() {
		return event{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, c.left())
	}
	if rel.table < 0 {
		return event{Kind: eventIgnored}, nil
	}
	t := &d.plan.tables[rel.table]
	ev := event{Kind: eventChange, Table: rel.table, Op: OpInsert}
	if op == 'U' {
		ev.Op = OpUpdate
	}
	if t.ops&ev.Op == 0 {
		return event{Kind: eventIgnored}, nil
	}
	for i, name := range t.columns {
		n, present, err := vals[i].int64(rel.width[i])
		if err != nil {
			return event{}, fmt.Errorf("%s.%s: %w", t.name, name, err)
		}
		if !present && t.keyOps[i]&ev.Op != 0 {
			return event{}, fmt.Errorf("%w: %s.%s is %s", ErrBadTuple, t.name, name, vals[i].kindName())
		}
		ev.Values[i], ev.Present[i] = n, present
	}
	return ev, nil
}

// value is one column of a TupleData. data aliases the message buffer.
type value struct {
	kind byte // 'n', 'u', 't' or 'b'; 0 when the column was not reached
	data []byte
}

// int64 returns the column as an integer: text ('t'), or binary ('b': the type's send
// format, a big-endian two's complement integer of width bytes). present is false for NULL
// and for an unchanged TOASTed value (never sent).
func (v value) int64(width uint8) (n int64, present bool, err error) {
	switch v.kind {
	case 't':
	case 'b':
		return v.binaryInt(width)
	default:
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

func (v value) binaryInt(width uint8) (int64, bool, error) {
	if len(v.data) != int(width) {
		return 0, false, fmt.Errorf("%w: binary integer of %d bytes, its type has %d", ErrBadTuple, len(v.data), width)
	}
	switch width {
	case 2:
		return int64(int16(binary.BigEndian.Uint16(v.data))), true, nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(v.data))), true, nil
	default:
		return int64(binary.BigEndian.Uint64(v.data)), true, nil
	}
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

// readTuple walks one TupleData and stores in vals, at index valueOf[i], the value of
// column i (valueOf[i] < 0 or i past valueOf: not needed), and returns the column count.
func readTuple(c *cursor, valueOf []int8, vals *[maxValues]value) (ncols uint16, err error) {
	// Locals instead of cursor methods keep b and pos in registers in this
	// loop, which runs once per column of every row.
	b, pos := c.b, c.pos
	if len(b)-pos < 2 {
		return 0, fmt.Errorf("%w: tuple has no column count", errMalformed)
	}
	ncols = binary.BigEndian.Uint16(b[pos:])
	pos += 2
	for i := range int(ncols) {
		if pos >= len(b) {
			return 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
		}
		kind := b[pos]
		pos++
		var data []byte
		switch kind {
		case 't', 'b':
			if len(b)-pos < 4 {
				return 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
			}
			n := uint64(binary.BigEndian.Uint32(b[pos:]))
			pos += 4
			if uint64(len(b)-pos) < n {
				return 0, fmt.Errorf("%w: tuple truncated at column %d", errMalformed, i)
			}
			data = b[pos : pos+int(n)]
			pos += int(n)
		case 'n', 'u':
		default:
			return 0, fmt.Errorf("%w: column %d has kind %q", errMalformed, i, kind)
		}
		if i < len(valueOf) {
			if v := valueOf[i]; v >= 0 {
				vals[v] = value{kind: kind, data: data}
			}
		}
	}
	c.pos = pos
	return ncols, nil
}

// skipTuple walks a TupleData whose values are not needed.
func skipTuple(c *cursor) error {
	_, err := readTuple(c, nil, nil)
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

func (c *cursor) u32() (uint32, bool) {
	if c.left() < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(c.b[c.pos:])
	c.pos += 4
	return v, true
}
