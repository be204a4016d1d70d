package pgtest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestNewDB checks the cluster runs with logical decoding and the host trigger maintains the
// aggregates.
func TestNewDB(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	var level string
	require.NoError(t, db.Pool.QueryRow(t.Context(), "SHOW wal_level").Scan(&level))
	require.Equal(t, "logical", level)
	db.Exec(t, `INSERT INTO plays (play_item_id, created_at, country) SELECT 7, '2025-03-04', NULL FROM generate_series(1, 3)`)
	require.EqualValues(t, 3, db.QueryInt(t, `SELECT count FROM aggregate_monthly_plays WHERE play_item_id = 7 AND "timestamp" = '2025-03-01' AND country = ''`))
	require.EqualValues(t, 3, db.QueryInt(t, `SELECT count FROM aggregate_plays WHERE play_item_id = 7`))
}

// TestSecondDB checks databases are independent.
func TestSecondDB(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	require.EqualValues(t, 0, db.QueryInt(t, `SELECT count(*) FROM plays`))
	require.EqualValues(t, 22, db.QueryInt(t, `SELECT count(*) FROM challenges`))
}
