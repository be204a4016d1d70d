package faults

import (
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// recreatedLog is the line the sidecar logs when it recreates its slot.
const recreatedLog = "recreating it and catching up"

// dropPublication drops the sidecar's publication under traffic and, half the time, recreates
// it a moment later before the sidecar does (whole rows, managed: an older version's, which the
// sidecar narrows). The changes written in between are never decoded through it — Postgres 18
// skips them, older servers fail on them — so the sidecar must recreate its slot and catch up.
func (s *suite) dropPublication(rng *rand.Rand) error {
	before := s.sc.countInLogs(recreatedLog)
	name := pgx.Identifier{s.db.Publication}.Sanitize()
	if _, err := s.pool.Exec(s.ctx, `DROP PUBLICATION IF EXISTS `+name); err != nil {
		return err
	}
	time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
	if rng.IntN(2) == 0 {
		tables := make([]string, 0, len(pipeline.StreamPlan().Tables))
		for _, t := range pipeline.StreamPlan().TableNames() {
			tables = append(tables, pgx.Identifier{"public", t}.Sanitize())
		}
		_, err := s.pool.Exec(s.ctx, `CREATE PUBLICATION `+name+` FOR TABLE `+strings.Join(tables, ", ")+
			` WITH (publish = 'insert, update'); COMMENT ON PUBLICATION `+name+` IS '`+replication.ManagedComment+`'`)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			s.note("publication recreated by the sidecar first")
		} else if err != nil {
			return err
		}
	}
	s.eventually("the sidecar to recreate its slot", func() bool { return s.sc.countInLogs(recreatedLog) > before })
	return nil
}
