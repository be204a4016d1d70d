package faults

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/replication"
)

// decodingWorkMem is the sidecar's --decoding-work-mem in the suite: the server's floor, so
// the large transactions below, and the traffic's larger blocks, are streamed while they run.
const decodingWorkMem = "65536"

// largeTxPlays is enough plays for a transaction to outgrow decodingWorkMem several times.
const largeTxPlays = 2000

// killInStreamedTransaction kills the sidecar while the server streams it an open transaction,
// which then commits: the next run receives it again from its first change.
func (s *suite) killInStreamedTransaction(rng *rand.Rand) error {
	return s.largeTransaction(rng, func(tx pgx.Tx) error {
		s.sc.kill9()
		if err := hostdb.InsertPlays(s.ctx, tx, s.randomTrack(rng), largeTxPlays/4, time.Now()); err != nil {
			return err
		}
		return tx.Commit(s.ctx)
	})
}

// abortStreamedTransaction rolls back a transaction the server has begun streaming: none of
// its plays may count.
func (s *suite) abortStreamedTransaction(rng *rand.Rand) error {
	return s.largeTransaction(rng, func(tx pgx.Tx) error { return tx.Rollback(s.ctx) })
}

// largeTransaction inserts plays in an open transaction until the server has streamed it,
// then ends it with end.
func (s *suite) largeTransaction(rng *rand.Rand, end func(pgx.Tx) error) error {
	conn, err := pgx.Connect(s.ctx, s.db.URL)
	if err != nil {
		return err
	}
	defer conn.Close(s.ctx)
	// The sidecar's log says when a transaction starts arriving: the server's statistics
	// (pg_stat_replication_slots) are reported only when its walsender idles.
	before := s.sc.countInLogs(replication.StreamedTransactionLog)
	tx, err := conn.Begin(s.ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(s.ctx) }()
	if err := hostdb.InsertPlays(s.ctx, tx, s.randomTrack(rng), largeTxPlays, time.Now()); err != nil {
		return err
	}
	s.eventually("the server to stream the open transaction", func() bool {
		return s.sc.countInLogs(replication.StreamedTransactionLog) > before
	})
	if err := end(tx); err != nil {
		return fmt.Errorf("end the large transaction: %w", err)
	}
	return nil
}

func (s *suite) randomTrack(rng *rand.Rand) int64 {
	tracks := trackIDs()
	return tracks[rng.IntN(len(tracks))]
}
