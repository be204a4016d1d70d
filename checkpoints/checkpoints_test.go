package checkpoints_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/migrations"
)

func TestMain(m *testing.M) {
	pgtest.Main(m)
}

// setup returns a test database with the project's migrations applied.
// legacyNames are the checkpoints the state tests read.
var legacyNames = []string{checkpoints.PlaysCheckpoint, checkpoints.CommentsCheckpoint}

func setup(t *testing.T) *pgtest.DB {
	t.Helper()
	db := pgtest.NewDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, migrations.Apply(ctx, conn, zaptest.NewLogger(t)))
	return db
}

// inTx runs fn in a transaction committed at the end, as the flush does.
func inTx(t *testing.T, db *pgtest.DB, fn func(tx pgx.Tx) error) {
	t.Helper()
	require.NoError(t, pgx.BeginFunc(context.Background(), db.Pool, fn))
}

// countWrites installs a trigger counting row writes to indexing_checkpoints.
func countWrites(t *testing.T, db *pgtest.DB) func() int64 {
	t.Helper()
	db.Exec(t, `
CREATE TABLE checkpoint_writes (n int8 NOT NULL);
INSERT INTO checkpoint_writes VALUES (0);
CREATE FUNCTION count_checkpoint_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE checkpoint_writes SET n = n + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER count_checkpoint_write AFTER INSERT OR UPDATE ON indexing_checkpoints
    FOR EACH ROW EXECUTE FUNCTION count_checkpoint_write();`)
	return func() int64 { return db.QueryInt(t, `SELECT n FROM checkpoint_writes`) }
}

func TestReadLegacyEmpty(t *testing.T) {
	t.Parallel()
	db := setup(t)
	// A row of the polling job's that is not ours is ignored.
	db.Exec(t, `INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES ('tracks', 99)`)

	l, err := checkpoints.ReadLegacy(context.Background(), db.Pool)
	require.NoError(t, err)
	require.Equal(t, checkpoints.Legacy{}, l)
}

func TestAdvanceLegacy(t *testing.T) {
	t.Parallel()

	type step struct {
		advance checkpoints.Legacy
		want    checkpoints.Legacy
	}
	both := func(play, block int64) checkpoints.Legacy {
		return checkpoints.Legacy{checkpoints.PlaysCheckpoint: play, checkpoints.CommentsCheckpoint: block}
	}
	plays := func(v int64) checkpoints.Legacy { return checkpoints.Legacy{checkpoints.PlaysCheckpoint: v} }
	comments := func(v int64) checkpoints.Legacy {
		return checkpoints.Legacy{checkpoints.CommentsCheckpoint: v}
	}

	tests := []struct {
		name  string
		steps []step
	}{
		{"CreatesBoth", []step{{both(10, 20), both(10, 20)}}},
		{"PlaysOnly", []step{{plays(10), plays(10)}}},
		{"CommentsOnly", []step{{comments(20), comments(20)}}},
		{"Nothing", []step{{checkpoints.Legacy{}, checkpoints.Legacy{}}}},
		{"Forward", []step{{both(10, 20), both(10, 20)}, {both(11, 25), both(11, 25)}}},
		{"NeverBackwards", []step{{both(10, 20), both(10, 20)}, {both(5, 19), both(10, 20)}}},
		{"Mixed", []step{{both(10, 20), both(10, 20)}, {both(12, 3), both(12, 20)}}},
		{"OneFieldLeavesOther", []step{{both(10, 20), both(10, 20)}, {plays(30), both(30, 20)}}},
		{"AddsSecondLater", []step{{plays(10), plays(10)}, {comments(7), both(10, 7)}}},
		{"Int4Bounds", []step{{both(math.MaxInt32, 0), both(math.MaxInt32, 0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := setup(t)
			ctx := context.Background()
			for i, s := range tt.steps {
				inTx(t, db, func(tx pgx.Tx) error { return checkpoints.AdvanceLegacy(ctx, tx, s.advance) })
				got, err := checkpoints.ReadLegacy(ctx, db.Pool)
				require.NoError(t, err)
				require.Equal(t, s.want, got, "after step %d", i)
			}
		})
	}
}

func TestAdvanceLegacyUnchangedWritesNothing(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	writes := countWrites(t, db)
	l := checkpoints.Legacy{checkpoints.PlaysCheckpoint: 10, checkpoints.CommentsCheckpoint: 20}

	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.AdvanceLegacy(ctx, tx, l) })
	require.Equal(t, int64(2), writes())
	xmin := db.QueryInt(t, `SELECT sum(xmin::text::int8)::int8 FROM indexing_checkpoints`)

	// The same values, and lower ones: no write at all.
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.AdvanceLegacy(ctx, tx, l) })
	inTx(t, db, func(tx pgx.Tx) error {
		return checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{
			checkpoints.PlaysCheckpoint: 1, checkpoints.CommentsCheckpoint: 1,
		})
	})
	require.Equal(t, int64(2), writes())
	require.Equal(t, xmin, db.QueryInt(t, `SELECT sum(xmin::text::int8)::int8 FROM indexing_checkpoints`))

	// Raising one writes exactly that one.
	inTx(t, db, func(tx pgx.Tx) error {
		return checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{
			checkpoints.PlaysCheckpoint: 11, checkpoints.CommentsCheckpoint: 20,
		})
	})
	require.Equal(t, int64(3), writes())
}

func TestAdvanceLegacyKeepsSignature(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	db.Exec(t, `INSERT INTO indexing_checkpoints (tablename, last_checkpoint, signature) VALUES ($1, 5, 'sig')`,
		checkpoints.PlaysCheckpoint)

	inTx(t, db, func(tx pgx.Tx) error {
		return checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 6})
	})
	var sig string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT signature FROM indexing_checkpoints WHERE tablename = $1`,
		checkpoints.PlaysCheckpoint).Scan(&sig))
	require.Equal(t, "sig", sig)
}

func TestAdvanceLegacyOutOfRange(t *testing.T) {
	t.Parallel()
	db := setup(t)
	err := checkpoints.AdvanceLegacy(context.Background(), db.Pool,
		checkpoints.Legacy{checkpoints.CommentsCheckpoint: math.MaxInt32 + 1})
	require.ErrorContains(t, err, checkpoints.CommentsCheckpoint)
}

func TestLSN(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	const slot = "slot_a"
	db.Exec(t, `CREATE PUBLICATION pub`)

	lsn, found, err := checkpoints.LoadLSN(ctx, db.Pool, slot)
	require.NoError(t, err)
	require.False(t, found)
	require.Zero(t, lsn)

	// A high LSN, to show nothing is truncated on the way through text.
	want := pglogrepl.LSN(0x1_2345_6789_ABCD)
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.StoreLSN(ctx, tx, slot, want, "pub") })
	lsn, found, err = checkpoints.LoadLSN(ctx, db.Pool, slot)
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, want, lsn)

	// Lower: kept. Higher: taken.
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.StoreLSN(ctx, tx, slot, want-1, "pub") })
	lsn, _, err = checkpoints.LoadLSN(ctx, db.Pool, slot)
	require.NoError(t, err)
	require.Equal(t, want, lsn)
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.StoreLSN(ctx, tx, slot, want+1, "pub") })
	lsn, _, err = checkpoints.LoadLSN(ctx, db.Pool, slot)
	require.NoError(t, err)
	require.Equal(t, want+1, lsn)

	// A new slot's position replaces a higher one (restored from another cluster).
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.ResetLSN(ctx, tx, slot, 0x2000, "pub") })
	lsn, _, err = checkpoints.LoadLSN(ctx, db.Pool, slot)
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x2000), lsn)
	inTx(t, db, func(tx pgx.Tx) error { return checkpoints.ResetLSN(ctx, tx, "slot_c", 0x3000, "pub") })
	lsn, _, err = checkpoints.LoadLSN(ctx, db.Pool, "slot_c")
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x3000), lsn, "and creates the row")

	// Slots are independent.
	_, found, err = checkpoints.LoadLSN(ctx, db.Pool, "slot_b")
	require.NoError(t, err)
	require.False(t, found)
}

// TestLSNPublicationReplaced: a position is stored only through the publication the stored
// one was streamed through; a publication dropped, or dropped and recreated, refuses the store
// and writes nothing, until a new slot's position (ResetLSN) takes the new one. A row from
// before the oid was kept adopts the publication it finds.
func TestLSNPublicationReplaced(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	db.Exec(t, `CREATE PUBLICATION pub`)
	store := func(lsn pglogrepl.LSN) error {
		return pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return checkpoints.StoreLSN(ctx, tx, "s", lsn, "pub") })
	}
	require.NoError(t, store(0x100))
	oid := db.QueryInt(t, `SELECT oid::bigint FROM pg_publication WHERE pubname = 'pub'`)
	require.Equal(t, oid, db.QueryInt(t, `SELECT publication_oid::bigint FROM challenge_stream.slot_checkpoints WHERE slot_name = 's'`))

	db.Exec(t, `DROP PUBLICATION pub`)
	require.ErrorIs(t, store(0x200), checkpoints.ErrPublicationReplaced, "dropped")
	db.Exec(t, `CREATE PUBLICATION pub`)
	require.ErrorIs(t, store(0x200), checkpoints.ErrPublicationReplaced, "recreated")
	st, err := checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x100), st.LSN, "nothing written")
	require.Equal(t, uint32(oid), st.PublicationOID)

	require.NoError(t, pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error { return checkpoints.ResetLSN(ctx, tx, "s", 0x300, "pub") }))
	require.NoError(t, store(0x400), "the new slot's publication")
	st, err = checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x400), st.LSN)
	require.NotEqual(t, uint32(oid), st.PublicationOID)

	db.Exec(t, `UPDATE challenge_stream.slot_checkpoints SET publication_oid = NULL`)
	st, err = checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Zero(t, st.PublicationOID, "unknown")
	require.NoError(t, store(0x500), "adopted")
	require.Equal(t, db.QueryInt(t, `SELECT oid::bigint FROM pg_publication WHERE pubname = 'pub'`),
		db.QueryInt(t, `SELECT publication_oid::bigint FROM challenge_stream.slot_checkpoints WHERE slot_name = 's'`))
}

func TestReadState(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()

	s, err := checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Equal(t, checkpoints.State{}, s)
	db.Exec(t, `CREATE PUBLICATION pub`)

	var txStart time.Time
	inTx(t, db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&txStart); err != nil {
			return err
		}
		return checkpoints.StoreLSN(ctx, tx, "s", 0x100, "pub")
	})
	s, err = checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x100), s.LSN)
	require.True(t, s.Found)
	require.True(t, txStart.Equal(s.UpdatedAt), "updated_at %v, transaction start %v", s.UpdatedAt, txStart)

	// A store that does not raise the LSN still stamps the flush time.
	inTx(t, db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&txStart); err != nil {
			return err
		}
		return checkpoints.StoreLSN(ctx, tx, "s", 0x50, "pub")
	})
	s, err = checkpoints.ReadState(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.Equal(t, pglogrepl.LSN(0x100), s.LSN)
	require.True(t, txStart.Equal(s.UpdatedAt))
}

// The checkpoints belong to the caller's transaction: a rollback takes them back with the
// reward writes.
func TestRollbackDiscardsCheckpoints(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()

	db.Exec(t, `CREATE PUBLICATION pub`)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, checkpoints.StoreLSN(ctx, tx, "s", 0x10, "pub"))
	require.NoError(t, checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 3}))
	require.NoError(t, tx.Rollback(ctx))

	_, found, err := checkpoints.LoadLSN(ctx, db.Pool, "s")
	require.NoError(t, err)
	require.False(t, found)
	l, err := checkpoints.ReadLegacy(ctx, db.Pool)
	require.NoError(t, err)
	require.Equal(t, checkpoints.Legacy{}, l)
}

func TestNotMigrated(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t) // host schema only
	ctx := context.Background()

	_, _, err := checkpoints.LoadLSN(ctx, db.Pool, "s")
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)
	err = checkpoints.StoreLSN(ctx, db.Pool, "s", 1, "pub")
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)

	// A schema of an older version (--skip-migrations, and migrate not run for this one).
	db.Exec(t, `CREATE SCHEMA challenge_stream; CREATE TABLE challenge_stream.slot_checkpoints (
		slot_name text PRIMARY KEY, lsn pg_lsn NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`)
	_, _, err = checkpoints.LoadLSN(ctx, db.Pool, "s")
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)
	require.ErrorContains(t, err, "challenge-stream migrate")
	err = checkpoints.StoreLSN(ctx, db.Pool, "s", 1, "pub")
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)
}

func TestLegacyState(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	read := func() checkpoints.LegacyState {
		t.Helper()
		st, err := checkpoints.ReadLegacyState(ctx, db.Pool, legacyNames)
		require.NoError(t, err)
		return st
	}
	require.Equal(t, checkpoints.LegacyState{checkpoints.PlaysCheckpoint: {}, checkpoints.CommentsCheckpoint: {}}, read())

	// What AdvanceLegacy writes, it remembers.
	inTx(t, db, func(tx pgx.Tx) error {
		return checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 10})
	})
	st := read()
	require.Equal(t, checkpoints.LegacyCheckpoint{Value: 10, Has: true, Written: 10, HasWritten: true}, st[checkpoints.PlaysCheckpoint])
	require.False(t, st[checkpoints.PlaysCheckpoint].Foreign())
	require.Equal(t, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 10}, st.Legacy())

	// Someone else moves it: Foreign until acknowledged.
	db.Exec(t, `UPDATE indexing_checkpoints SET last_checkpoint = 15 WHERE tablename = $1`, checkpoints.PlaysCheckpoint)
	require.True(t, read()[checkpoints.PlaysCheckpoint].Foreign())
	inTx(t, db, func(tx pgx.Tx) error {
		return checkpoints.AdvanceLegacy(ctx, tx, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 12})
	})
	require.True(t, read()[checkpoints.PlaysCheckpoint].Foreign(), "an advance that does not raise the row writes nothing")
	require.NoError(t, checkpoints.AcknowledgeLegacy(ctx, db.Pool, checkpoints.PlaysCheckpoint, 15))
	require.False(t, read()[checkpoints.PlaysCheckpoint].Foreign())

	// A row the polling job wrote before the sidecar ever did is not foreign.
	db.Exec(t, `INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES ($1, 7)`, checkpoints.CommentsCheckpoint)
	require.Equal(t, checkpoints.LegacyCheckpoint{Value: 7, Has: true}, read()[checkpoints.CommentsCheckpoint])
}

func TestHoldLegacy(t *testing.T) {
	t.Parallel()
	db := setup(t)
	ctx := context.Background()
	heldSince := func() *time.Time {
		var at *time.Time
		err := db.Pool.QueryRow(ctx, `SELECT held_since FROM challenge_stream.legacy_checkpoints WHERE tablename = $1`,
			checkpoints.CommentsCheckpoint).Scan(&at)
		require.NoError(t, err)
		return at
	}
	require.NoError(t, checkpoints.HoldLegacy(ctx, db.Pool, checkpoints.CommentsCheckpoint, true))
	first := heldSince()
	require.NotNil(t, first)
	st, err := checkpoints.ReadLegacyState(ctx, db.Pool, legacyNames)
	require.NoError(t, err)
	require.True(t, st[checkpoints.CommentsCheckpoint].Held)
	require.False(t, st[checkpoints.PlaysCheckpoint].Held)

	xmin := db.QueryInt(t, `SELECT xmin::text::int8 FROM challenge_stream.legacy_checkpoints`)
	require.NoError(t, checkpoints.HoldLegacy(ctx, db.Pool, checkpoints.CommentsCheckpoint, true))
	require.Equal(t, xmin, db.QueryInt(t, `SELECT xmin::text::int8 FROM challenge_stream.legacy_checkpoints`),
		"holding a held checkpoint writes nothing")
	require.Equal(t, first, heldSince())

	require.NoError(t, checkpoints.HoldLegacy(ctx, db.Pool, checkpoints.CommentsCheckpoint, false))
	require.Nil(t, heldSince())
}

func TestLegacyStateNotMigrated(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	_, err := checkpoints.ReadLegacyState(context.Background(), db.Pool, legacyNames)
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)
	err = checkpoints.AdvanceLegacy(context.Background(), db.Pool, checkpoints.Legacy{checkpoints.PlaysCheckpoint: 1})
	require.ErrorIs(t, err, checkpoints.ErrNotMigrated)
}
