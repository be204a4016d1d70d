package processors

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the rules need from a database handle. pgx.Tx, *pgx.Conn and *pgxpool.Pool
// satisfy it; the streaming and catch-up paths pass their transaction so that reward rows and
// checkpoints commit together.
type Querier interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Counts says what the upserts of one challenge did.
type Counts struct {
	Inserted  int // new rows
	Updated   int // existing rows whose contents changed
	Unchanged int // rows sent whose stored contents were already right: nothing written
}

// Total is the number of rows sent.
func (c Counts) Total() int { return c.Inserted + c.Updated + c.Unchanged }

// Stats are Counts by challenge id.
type Stats map[string]Counts

// Add adds o into s. s must not be nil.
func (s Stats) Add(o Stats) {
	for id, c := range o {
		cur := s[id]
		cur.Inserted += c.Inserted
		cur.Updated += c.Updated
		cur.Unchanged += c.Unchanged
		s[id] = cur
	}
}

// Total sums the counts of every challenge.
func (s Stats) Total() Counts {
	var t Counts
	for _, c := range s {
		t.Inserted += c.Inserted
		t.Updated += c.Updated
		t.Unchanged += c.Unchanged
	}
	return t
}

// chunks calls fn with consecutive slices of ids of at most size elements.
func chunks[T any](ids []T, size int, fn func([]T) error) error {
	for start := 0; start < len(ids); start += size {
		if err := fn(ids[start:min(start+size, len(ids))]); err != nil {
			return err
		}
	}
	return nil
}

// rowsFunc computes a rule's rows for a batch of IDs without writing them.
type rowsFunc func(ctx context.Context, q Querier, cat Catalog, ids []int64) ([]Row, error)

// recompute is the shape every rule shares: compute the rows of a batch of IDs, upsert them,
// next batch. Batching bounds each statement's size and memory.
func recompute(ctx context.Context, q Querier, cat Catalog, ids []int64, rows rowsFunc) (Stats, error) {
	stats := Stats{}
	err := chunks(ids, idBatchSize, func(batch []int64) error {
		r, err := rows(ctx, q, cat, batch)
		if err != nil {
			return err
		}
		s, err := Upsert(ctx, q, r)
		if err != nil {
			return err
		}
		stats.Add(s)
		return nil
	})
	return stats, err
}
