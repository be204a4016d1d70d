package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DecodingStats is the server's account of decoding for a slot (pg_stat_replication_slots,
// cumulative since the slot was created or the statistics were reset). Spilled transactions
// outgrew logical_decoding_work_mem and were written to disk on the server before they could
// be sent; streamed ones were sent while they ran instead (protocol 2), which costs no disk.
type DecodingStats struct {
	Found         bool  `json:"-"`
	SpilledTxns   int64 `json:"spilled_txns"`
	SpilledBytes  int64 `json:"spilled_bytes"`
	StreamedTxns  int64 `json:"streamed_txns"`
	StreamedBytes int64 `json:"streamed_bytes"`
	TotalTxns     int64 `json:"total_txns"`
	TotalBytes    int64 `json:"total_bytes"`
}

// InspectDecoding reads the slot's row of pg_stat_replication_slots (Found false when the
// server has none yet).
func InspectDecoding(ctx context.Context, q Querier, slot string) (DecodingStats, error) {
	s := DecodingStats{Found: true}
	err := q.QueryRow(ctx, `SELECT spill_txns, spill_bytes, stream_txns, stream_bytes, total_txns, total_bytes
		FROM pg_stat_replication_slots WHERE slot_name = $1`, slot).
		Scan(&s.SpilledTxns, &s.SpilledBytes, &s.StreamedTxns, &s.StreamedBytes, &s.TotalTxns, &s.TotalBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return DecodingStats{}, nil
	}
	if err != nil {
		return DecodingStats{}, fmt.Errorf("read decoding statistics of slot %s: %w", slot, err)
	}
	return s, nil
}
