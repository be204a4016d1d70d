package replication_test

import (
	"maps"
	"slices"
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

// planOf is a plan reading the given integer columns of each table (key set 0, whatever the
// column: EnsurePublication reads only the names).
func planOf(columns map[string][]string) replication.Plan {
	p := replication.Plan{Sets: 1}
	for _, table := range slices.Sorted(maps.Keys(columns)) {
		pt := replication.PlanTable{Name: table}
		for _, c := range columns[table] {
			pt.Columns = append(pt.Columns, replication.PlanColumn{Name: c, Ops: replication.OpInsert, Set: 0, Max: -1})
		}
		p.Tables = append(p.Tables, pt)
	}
	return p
}

// publishedColumns is a table's column list in a publication, nil for whole rows.
func publishedColumns(t *testing.T, db *pgtest.DB, publication, table string) []string {
	t.Helper()
	var columns []string
	require.NoError(t, db.Pool.QueryRow(t.Context(), `SELECT CASE WHEN r.prattrs IS NULL THEN NULL ELSE pt.attnames::text[] END
		FROM pg_publication_tables pt JOIN pg_publication p ON p.pubname = pt.pubname
		JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = to_regclass('public.' || pt.tablename)
		WHERE pt.pubname = $1 AND pt.tablename = $2`, publication, table).Scan(&columns))
	slices.Sort(columns)
	return columns
}

func needColumnLists(t *testing.T, db *pgtest.DB) {
	t.Helper()
	if db.QueryInt(t, `SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
		t.Skip("publication column lists need Postgres 15")
	}
}

// TestPublicationExtendedNeverNarrowed: an existing publication (a DBA's, or an older
// version's) gains the tables a newer registry reads and keeps every table it had.
func TestPublicationExtendedNeverNarrowed(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	db.Exec(t, `CREATE PUBLICATION grow FOR TABLE public.plays, public.notification WITH (publish = 'insert, update')`)
	_, err := replication.EnsurePublication(ctx, db.Pool, "grow", planOf(map[string][]string{
		"plays": {"play_item_id"}, "comments": {"user_id"}, "users": {"user_id"}}), false)
	require.NoError(t, err)
	require.Equal(t, []string{"comments", "notification", "plays", "users"}, publishedTables(t, db, "grow"))
	pub, err := replication.EnsurePublication(ctx, db.Pool, "grow", planOf(map[string][]string{"plays": {"play_item_id"}}), false)
	require.NoError(t, err, "already covered")
	require.Equal(t, []string{"comments", "notification", "plays", "users"}, publishedTables(t, db, "grow"))
	require.False(t, pub.Managed, "a DBA's publication stays theirs")
	if pub.ColumnLists {
		require.True(t, pub.Tables[0].Wider, "whole rows of plays: wider than the rules read")
		require.Nil(t, publishedColumns(t, db, "grow", "plays"), "left as it is")
		require.Equal(t, []string{"comment_id", "user_id"}, publishedColumns(t, db, "grow", "comments"), "added with its list")
	}
}

// TestPublicationRefusesTableWithoutIdentity: a source table whose updates cannot be published
// is named, and nothing is published, whether the publication exists or not.
func TestPublicationRefusesTableWithoutIdentity(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	ctx := t.Context()
	db.Exec(t, `ALTER TABLE events DROP CONSTRAINT events_pkey`)
	_, err := replication.EnsurePublication(ctx, db.Pool, "fresh", planOf(map[string][]string{"plays": {"id"}, "events": {"user_id"}}), false)
	require.ErrorIs(t, err, replication.ErrNoReplicaIdentity)
	require.ErrorContains(t, err, "public.events")
	require.Zero(t, db.QueryInt(t, `SELECT count(*) FROM pg_publication WHERE pubname = 'fresh'`))

	db.Exec(t, `CREATE PUBLICATION old FOR TABLE public.plays WITH (publish = 'insert, update')`)
	_, err = replication.EnsurePublication(ctx, db.Pool, "old", planOf(map[string][]string{
		"plays": {"id"}, "comments": {"user_id"}, "events": {"user_id"}}), false)
	require.ErrorIs(t, err, replication.ErrNoReplicaIdentity)
	require.Equal(t, []string{"plays"}, publishedTables(t, db, "old"), "not half extended")
}

// TestPublicationColumnLists: the publication the sidecar creates carries what the rules read
// plus each table's replica identity, so the host's UPDATEs keep working — without the
// identity they fail, which is why it is there.
func TestPublicationColumnLists(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	needColumnLists(t, db)
	ctx := t.Context()
	pub, err := replication.EnsurePublication(ctx, db.Pool, "narrow", planOf(map[string][]string{
		"plays": {"play_item_id", "id"}, "comments": {"user_id", "blocknumber"}, "users": {"user_id"}}), false)
	require.NoError(t, err)
	require.True(t, pub.Managed)
	require.Equal(t, []string{"id", "play_item_id"}, publishedColumns(t, db, "narrow", "plays"))
	require.Equal(t, []string{"blocknumber", "comment_id", "user_id"}, publishedColumns(t, db, "narrow", "comments"))
	require.Equal(t, []string{"txhash", "user_id"}, publishedColumns(t, db, "narrow", "users"), "the primary key is (user_id, txhash)")
	for _, tbl := range pub.Tables {
		require.False(t, tbl.Wider, tbl.Table)
		require.Empty(t, tbl.Lacking, tbl.Table)
	}

	db.Exec(t, `INSERT INTO users (user_id, is_current, is_verified, txhash) VALUES (1, true, false, 'a')`)
	db.Exec(t, `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, txhash, blockhash)
		VALUES (1, 'x', 1, 1, 'Track', now(), 't', 'b')`)
	db.Exec(t, `UPDATE comments SET text = 'y' WHERE comment_id = 1`)
	db.Exec(t, `UPDATE users SET is_verified = true WHERE user_id = 1`)

	db.Exec(t, `CREATE PUBLICATION no_identity FOR TABLE public.comments (user_id) WITH (publish = 'insert, update')`)
	_, err = db.Pool.Exec(ctx, `UPDATE comments SET text = 'z' WHERE comment_id = 1`)
	require.ErrorContains(t, err, `cannot update table "comments"`, "a list without the identity breaks the host's updates")
	db.Exec(t, `DROP PUBLICATION no_identity`)
	db.Exec(t, `UPDATE comments SET text = 'z' WHERE comment_id = 1`)
}

// TestManagedPublicationFollowsThePlan: a managed publication's lists change with the plan, a
// table someone else added stays as it is, and an older whole-row publication adopted with
// the comment is narrowed; a DBA's list lacking a needed column is an error naming it.
func TestManagedPublicationFollowsThePlan(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	needColumnLists(t, db)
	ctx := t.Context()
	_, err := replication.EnsurePublication(ctx, db.Pool, "follow", planOf(map[string][]string{"plays": {"play_item_id"}}), false)
	require.NoError(t, err)
	db.Exec(t, `ALTER PUBLICATION follow ADD TABLE public.notification`)
	_, err = replication.EnsurePublication(ctx, db.Pool, "follow", planOf(map[string][]string{
		"plays": {"play_item_id", "user_id"}, "comments": {"user_id"}}), false)
	require.NoError(t, err)
	require.Equal(t, []string{"id", "play_item_id", "user_id"}, publishedColumns(t, db, "follow", "plays"), "widened")
	require.Equal(t, []string{"comments", "notification", "plays"}, publishedTables(t, db, "follow"))
	require.Nil(t, publishedColumns(t, db, "follow", "notification"), "someone else's table untouched")
	_, err = replication.EnsurePublication(ctx, db.Pool, "follow", planOf(map[string][]string{"plays": {"play_item_id"}}), false)
	require.NoError(t, err)
	require.Equal(t, []string{"id", "play_item_id"}, publishedColumns(t, db, "follow", "plays"), "narrowed")

	db.Exec(t, `CREATE PUBLICATION adopted FOR TABLE public.plays WITH (publish = 'insert, update');
		COMMENT ON PUBLICATION adopted IS '`+replication.ManagedComment+`'`)
	_, err = replication.EnsurePublication(ctx, db.Pool, "adopted", planOf(map[string][]string{"plays": {"play_item_id"}}), false)
	require.NoError(t, err)
	require.Equal(t, []string{"id", "play_item_id"}, publishedColumns(t, db, "adopted", "plays"))

	db.Exec(t, `CREATE PUBLICATION dbas FOR TABLE public.plays (id, created_at) WITH (publish = 'insert, update')`)
	_, err = replication.EnsurePublication(ctx, db.Pool, "dbas", planOf(map[string][]string{"plays": {"play_item_id"}}), false)
	require.ErrorIs(t, err, replication.ErrPublication)
	require.ErrorContains(t, err, "public.plays without play_item_id")
}

// TestPublicationMisses: what a publication does not send of the plan — a table left out or
// filtered, a column its list leaves out — is what a slot's pending changes lack; a column
// only the replica identity needs, whole rows, or a publication not made yet miss nothing. A
// DBA's row filter is refused, a managed one's removed.
func TestPublicationMisses(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	needColumnLists(t, db)
	ctx := t.Context()
	plan := planOf(map[string][]string{"plays": {"play_item_id", "user_id"}, "comments": {"user_id"}, "users": {"user_id"}})
	describe := func(name string, plans ...replication.Plan) replication.Publication {
		t.Helper()
		p := plan
		if len(plans) > 0 {
			p = plans[0]
		}
		pub, err := replication.DescribePublication(ctx, db.Pool, name, p, false)
		require.NoError(t, err)
		return pub
	}
	require.Nil(t, describe("not_yet").Misses())

	db.Exec(t, `CREATE PUBLICATION older FOR TABLE public.plays (id, play_item_id), public.comments WITH (publish = 'insert, update');
		COMMENT ON PUBLICATION older IS '`+replication.ManagedComment+`'`)
	require.Equal(t, []string{"plays.user_id", "users"}, describe("older").Misses())
	pub, err := replication.EnsurePublication(ctx, db.Pool, "older", plan, false)
	require.NoError(t, err)
	require.Empty(t, pub.Misses(), "up to date")
	require.Empty(t, describe("older", planOf(map[string][]string{"plays": {"play_item_id"}})).Misses(), "narrower plan: nothing missed")

	db.Exec(t, `ALTER PUBLICATION older DROP TABLE public.users; ALTER PUBLICATION older ADD TABLE public.users (user_id, txhash) WHERE (user_id > 10)`)
	require.Equal(t, []string{"users"}, describe("older").Misses(), "filtered rows are missed")
	_, err = replication.EnsurePublication(ctx, db.Pool, "older", plan, false)
	require.NoError(t, err)
	require.Empty(t, describe("older").Tables[2].RowFilter, "a managed publication's filter removed")

	db.Exec(t, `CREATE PUBLICATION filtered FOR TABLE public.plays (id, play_item_id, user_id) WHERE (id > 10), public.comments, public.users
		WITH (publish = 'insert, update')`)
	_, err = replication.EnsurePublication(ctx, db.Pool, "filtered", plan, false)
	require.ErrorIs(t, err, replication.ErrPublication)
	require.ErrorContains(t, err, "only the rows of public.plays WHERE (id > 10)")
}
