package replication_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/replication"
)

// publishedTables lists the tables of a publication.
func publishedTables(t *testing.T, db *pgtest.DB, publication string) []string {
	t.Helper()
	rows, err := db.Pool.Query(t.Context(), `SELECT tablename::text FROM pg_publication_tables
		WHERE pubname = $1 ORDER BY 1`, publication)
	require.NoError(t, err)
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	return tables
}

// TestPublicationExtendedNeverNarrowed: an existing publication (a DBA's, or an older
// version's) gains the tables a newer registry reads and keeps every table it had.
func TestPublicationExtendedNeverNarrowed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	db.Exec(t, `CREATE PUBLICATION grow FOR TABLE public.plays, public.notification WITH (publish = 'insert, update')`)
	require.NoError(t, replication.EnsurePublication(ctx, db.Pool, "grow", []string{"plays", "comments", "users"}))
	require.Equal(t, []string{"comments", "notification", "plays", "users"}, publishedTables(t, db, "grow"))
	require.NoError(t, replication.EnsurePublication(ctx, db.Pool, "grow", []string{"plays"}), "already covered")
	require.Equal(t, []string{"comments", "notification", "plays", "users"}, publishedTables(t, db, "grow"))
}

// TestPublicationRefusesTableWithoutIdentity: a source table whose updates cannot be published
// is named, and nothing is published, whether the publication exists or not.
func TestPublicationRefusesTableWithoutIdentity(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	db.Exec(t, `ALTER TABLE events DROP CONSTRAINT events_pkey`)
	err := replication.EnsurePublication(ctx, db.Pool, "fresh", []string{"plays", "events"})
	require.ErrorIs(t, err, replication.ErrNoReplicaIdentity)
	require.ErrorContains(t, err, "public.events")
	require.Zero(t, db.QueryInt(t, `SELECT count(*) FROM pg_publication WHERE pubname = 'fresh'`))

	db.Exec(t, `CREATE PUBLICATION old FOR TABLE public.plays WITH (publish = 'insert, update')`)
	err = replication.EnsurePublication(ctx, db.Pool, "old", []string{"plays", "comments", "events"})
	require.ErrorIs(t, err, replication.ErrNoReplicaIdentity)
	require.Equal(t, []string{"plays"}, publishedTables(t, db, "old"), "not half extended")
}
