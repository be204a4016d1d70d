package replication

import (
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/jackc/pglogrepl"
)

// Protocol 2 streams a transaction that outgrows logical_decoding_work_mem while it runs, in
// segments (Stream Start … Stream Stop) between other transactions, and ends it with Stream
// Commit or Stream Abort. This file decodes those messages; Stream keeps each streamed
// transaction's keys until its outcome is known.

// carriesXid reports the messages that carry their transaction's ID after the type byte when
// sent inside a stream segment.
func carriesXid(msgType byte) bool {
	switch msgType {
	case 'I', 'U', 'D', 'T', 'R', 'Y', 'M':
		return true
	}
	return false
}

// streamedBody splits the transaction ID off the body of a message inside a stream segment.
func (d *decoder) streamedBody(msgType byte, body []byte) (xid uint32, rest []byte, err error) {
	switch {
	case carriesXid(msgType):
		if len(body) < 4 {
			return 0, nil, fmt.Errorf("decode: %w: streamed %q without a transaction ID", errMalformed, msgType)
		}
		return binary.BigEndian.Uint32(body), body[4:], nil
	case msgType == 'B' || msgType == 'C':
		return 0, nil, fmt.Errorf("decode: %w: %s inside the stream segment of transaction %d",
			errMalformed, pglogrepl.MessageType(msgType), d.stream)
	}
	return 0, body, nil
}

// lookup finds a relation: inside a stream segment, a definition sent for that transaction
// first.
func (d *decoder) lookup(relid uint32) (relation, bool) {
	if d.inStream {
		if rel, found := d.streamRels[d.stream][relid]; found {
			return rel, true
		}
	}
	rel, found := d.rels[relid]
	return rel, found
}

// relationsFor is where a Relation message is cached: the session's cache, or inside a stream
// segment the transaction's own.
func (d *decoder) relationsFor() map[uint32]relation {
	if !d.inStream {
		return d.rels
	}
	rels := d.streamRels[d.stream]
	if rels == nil {
		rels = map[uint32]relation{}
		d.streamRels[d.stream] = rels
	}
	return rels
}

// Exact body lengths of the stream messages in protocol 2 (Stream Abort grows in 4).
var streamLengths = map[byte]int{'S': 5, 'E': 0, 'c': 29, 'A': 8}

// decodeStream decodes Stream Start, Stop, Commit and Abort, which must nest: a segment
// neither opens inside another nor ends a transaction.
func (d *decoder) decodeStream(walData []byte) (event, error) {
	name := pglogrepl.MessageType(walData[0]).String()
	if err := wantLength(len(walData)-1, streamLengths[walData[0]]); err != nil {
		return event{}, fmt.Errorf("decode %s: %w", name, err)
	}
	msg, err := pglogrepl.ParseV2(walData, d.inStream)
	if err != nil {
		return event{}, fmt.Errorf("decode %s: %w: %w", name, errMalformed, err)
	}
	outside := func() error {
		if d.inStream {
			return fmt.Errorf("decode %s: %w: inside the stream segment of transaction %d", name, errMalformed, d.stream)
		}
		return nil
	}
	switch m := msg.(type) {
	case *pglogrepl.StreamStartMessageV2:
		if err := outside(); err != nil {
			return event{}, err
		}
		d.inStream, d.stream = true, m.Xid
		return event{Kind: eventStreamStart, Xid: m.Xid, FirstSegment: m.FirstSegment != 0}, nil
	case *pglogrepl.StreamStopMessageV2:
		if !d.inStream {
			return event{}, fmt.Errorf("decode %s: %w: no segment open", name, errMalformed)
		}
		d.inStream = false
		return event{Kind: eventStreamStop, Xid: d.stream}, nil
	case *pglogrepl.StreamCommitMessageV2:
		if err := outside(); err != nil {
			return event{}, err
		}
		// pgoutput counts a relation sent inside a committed transaction as sent to us for
		// good, and sends later transactions' changes without it.
		maps.Copy(d.rels, d.streamRels[m.Xid])
		delete(d.streamRels, m.Xid)
		return event{Kind: eventStreamCommit, Xid: m.Xid, EndLSN: m.TransactionEndLSN, CommitTime: m.CommitTime.UTC()}, nil
	case *pglogrepl.StreamAbortMessageV2:
		if err := outside(); err != nil {
			return event{}, err
		}
		if m.SubXid == m.Xid {
			delete(d.streamRels, m.Xid)
		}
		return event{Kind: eventStreamAbort, Xid: m.Xid, SubXid: m.SubXid}, nil
	default:
		return event{}, fmt.Errorf("decode %s: %w: parsed as %T", name, errUnsupported, msg)
	}
}
