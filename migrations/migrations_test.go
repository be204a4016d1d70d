package migrations

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

func TestMain(m *testing.M) {
	pgtest.Main(m)
}

// testBundle is what a test needs besides the system under test.
type testBundle struct {
	db   *pgtest.DB
	log  *zap.Logger
	logs *observer.ObservedLogs // every entry written to log
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	return &testBundle{db: pgtest.NewDB(t), log: log, logs: logs}
}

// connect opens a dedicated connection: Apply takes a *pgx.Conn and session-level locks.
func (b *testBundle) connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.db.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

type migrationRow struct {
	Version   int
	Name      string
	AppliedAt time.Time
}

func (b *testBundle) migrationRows(t *testing.T) []migrationRow {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(),
		`SELECT version, name, applied_at FROM challenge_stream.schema_migrations ORDER BY version`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[migrationRow])
	require.NoError(t, err)
	return out
}

func (b *testBundle) index(t *testing.T, name string) indexState {
	t.Helper()
	conn := b.connect(t)
	st, err := lookupIndex(context.Background(), conn, name)
	require.NoError(t, err)
	return st
}

// waitForLog polls the observed logs for message until the deadline.
func (b *testBundle) waitForLog(t *testing.T, message string) {
	t.Helper()
	require.Eventually(t, func() bool {
		return b.logs.FilterMessage(message).Len() > 0
	}, 30*time.Second, 10*time.Millisecond, "log %q", message)
}

func TestLoad(t *testing.T) {
	t.Parallel()

	t.Run("Embedded", func(t *testing.T) {
		t.Parallel()
		ms, err := load(files)
		require.NoError(t, err)
		require.NotEmpty(t, ms)
		require.Equal(t, 1, ms[0].version)
		require.Equal(t, "0001_state", ms[0].name)
		for i := 1; i < len(ms); i++ {
			require.Less(t, ms[i-1].version, ms[i].version)
		}
	})

	t.Run("Ordered", func(t *testing.T) {
		t.Parallel()
		ms, err := load(fstest.MapFS{
			"0010_b.sql": {Data: []byte("SELECT 10")},
			"0002_a.sql": {Data: []byte("SELECT 2")},
		})
		require.NoError(t, err)
		require.Equal(t, []migration{{2, "0002_a", "SELECT 2"}, {10, "0010_b", "SELECT 10"}}, ms)
	})

	for name, fsys := range map[string]fstest.MapFS{
		"BadName":          {"1_state.sql": {}},
		"UpperCase":        {"0001_State.sql": {}},
		"DuplicateVersion": {"0001_a.sql": {}, "0001_b.sql": {}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := load(fsys)
			require.Error(t, err)
		})
	}
}

func TestApplyTwiceIsNoOp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn := b.connect(t)

	require.NoError(t, Apply(ctx, conn, b.log))
	first := b.migrationRows(t)
	ms, err := load(files)
	require.NoError(t, err)
	require.Len(t, first, len(ms))
	require.Equal(t, len(ms), b.logs.FilterMessage("applied migration").Len())
	require.Equal(t, int64(0), b.db.QueryInt(t, `SELECT count(*) FROM challenge_stream.slot_checkpoints`))

	require.NoError(t, Apply(ctx, conn, b.log))
	require.Equal(t, first, b.migrationRows(t))
	require.Equal(t, len(ms), b.logs.FilterMessage("applied migration").Len(), "second Apply applied something")
	require.Equal(t, len(hostIndexes()), b.logs.FilterMessage("creating index concurrently").Len(),
		"second Apply built an index again")

	// The lock is released: another session can take it at once.
	other := b.connect(t)
	var ok bool
	require.NoError(t, other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&ok))
	require.True(t, ok)
}

func TestApplyCreatesValidIndexes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, Apply(context.Background(), b.connect(t), b.log))

	for _, idx := range hostIndexes() {
		st := b.index(t, idx.name)
		require.Equal(t, indexState{exists: true, valid: true, table: "comments", leading: idx.column}, st, idx.name)
	}
	// Plain btree indexes, not unique, no predicate.
	require.Equal(t, int64(2), b.db.QueryInt(t, `
SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE c.relname IN ('comments_user_id_idx', 'comments_blocknumber_idx')
  AND NOT i.indisunique AND i.indpred IS NULL AND am.amname = 'btree' AND i.indnatts = 1`))
}

func TestApplyRebuildsInvalidIndex(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		index  string
		column string
		// breakIndex leaves an INVALID index called index behind.
		breakIndex func(t *testing.T, b *testBundle)
	}{
		{
			// What an interrupted build really leaves: a concurrent build that fails half way.
			name:   "FailedConcurrentBuild",
			index:  "comments_user_id_idx",
			column: "user_id",
			breakIndex: func(t *testing.T, b *testBundle) {
				b.db.Exec(t, `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type)
					VALUES (1, 'a', 7, 1, 'Track'), (2, 'b', 7, 1, 'Track')`)
				_, err := b.db.Pool.Exec(context.Background(),
					`CREATE UNIQUE INDEX CONCURRENTLY comments_user_id_idx ON comments (user_id)`)
				var pgErr *pgconn.PgError
				require.ErrorAs(t, err, &pgErr)
				require.Equal(t, "23505", pgErr.Code) // unique_violation
			},
		},
		{
			name:   "MarkedInvalid",
			index:  "comments_blocknumber_idx",
			column: "blocknumber",
			breakIndex: func(t *testing.T, b *testBundle) {
				b.db.Exec(t, `CREATE INDEX comments_blocknumber_idx ON comments (blocknumber)`)
				b.db.Exec(t, `UPDATE pg_index SET indisvalid = false
					WHERE indexrelid = 'public.comments_blocknumber_idx'::regclass`)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tt.breakIndex(t, b)
			require.Equal(t, indexState{exists: true, valid: false, table: "comments", leading: tt.column},
				b.index(t, tt.index), "precondition: an invalid index")
			oid := b.db.QueryInt(t, `SELECT $1::regclass::oid::int8`, "public."+tt.index)

			require.NoError(t, Apply(context.Background(), b.connect(t), b.log))

			st := b.index(t, tt.index)
			require.True(t, st.exists)
			require.True(t, st.valid)
			require.NotEqual(t, oid, b.db.QueryInt(t, `SELECT $1::regclass::oid::int8`, "public."+tt.index), "index was not rebuilt")
			require.Equal(t, int64(0), b.db.QueryInt(t, `SELECT count(*) FROM pg_index
				WHERE indexrelid = $1::regclass AND indisunique`, "public."+tt.index))
			warned := b.logs.FilterMessage("dropping invalid index left by an interrupted build").
				FilterField(zap.String("index", tt.index))
			require.Equal(t, 1, warned.Len())
			require.Equal(t, zapcore.WarnLevel, warned.All()[0].Level)
		})
	}
}

func TestApplyRespectsCoveringIndex(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		ddl     string
		created bool // whether comments_user_id_idx must be created anyway
	}{
		{"MultiColumn", `CREATE INDEX dba_comments_user ON comments (user_id, created_at)`, false},
		{"SingleColumn", `CREATE INDEX dba_comments_user ON comments (user_id)`, false},
		{"Partial", `CREATE INDEX dba_comments_user ON comments (user_id) WHERE NOT is_delete`, true},
		{"Hash", `CREATE INDEX dba_comments_user ON comments USING hash (user_id)`, true},
		{"NotLeading", `CREATE INDEX dba_comments_user ON comments (entity_id, user_id)`, true},
		{"Invalid", `CREATE INDEX dba_comments_user ON comments (user_id);
			UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.dba_comments_user'::regclass`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.db.Exec(t, tt.ddl)

			require.NoError(t, Apply(context.Background(), b.connect(t), b.log))

			st := b.index(t, "comments_user_id_idx")
			require.Equal(t, tt.created, st.exists)
			if st.exists {
				require.True(t, st.valid)
			}
			// The DBA's index is never touched, and the other index is unaffected.
			require.True(t, b.index(t, "dba_comments_user").exists)
			require.True(t, b.index(t, "comments_blocknumber_idx").valid)
		})
	}
}

func TestApplyConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Enough rows that the index builds take a moment while the other replicas wait.
	b.db.Exec(t, `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, blocknumber)
		SELECT g, 'x', g % 1000, g, 'Track', g FROM generate_series(1, 100000) g`)

	const replicas = 4
	conns := make([]*pgx.Conn, replicas)
	for i := range conns {
		conns[i] = b.connect(t)
	}
	var g errgroup.Group
	for _, conn := range conns {
		g.Go(func() error { return Apply(context.Background(), conn, b.log) })
	}
	require.NoError(t, g.Wait())

	ms, err := load(files)
	require.NoError(t, err)
	require.Len(t, b.migrationRows(t), len(ms))
	require.Equal(t, len(ms), b.logs.FilterMessage("applied migration").Len())
	for _, idx := range hostIndexes() {
		require.True(t, b.index(t, idx.name).valid, idx.name)
	}
}

// A replica waiting for the migration lock must not stop the holder's CREATE INDEX
// CONCURRENTLY: a waiter blocked inside pg_advisory_lock holds a snapshot the build waits for,
// and the two deadlock.
func TestLockWaiterDoesNotBlockIndexBuild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	holder := b.connect(t)
	_, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey)
	require.NoError(t, err)

	done := make(chan error, 1)
	waiter := b.connect(t)
	go func() { done <- Apply(ctx, waiter, b.log) }()
	b.waitForLog(t, "waiting for migration lock held by another session")

	// Fails with a deadlock (40P01) when the waiter blocks in pg_advisory_lock.
	_, err = holder.Exec(ctx, `CREATE INDEX CONCURRENTLY holder_idx ON comments (entity_id)`)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, LockKey)
	require.NoError(t, err)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Apply did not finish after the lock was released")
	}
}

func TestApplyCancelledWhileWaitingForLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	holder := b.connect(t)
	_, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey)
	require.NoError(t, err)

	applyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	waiter := b.connect(t)
	go func() { done <- Apply(applyCtx, waiter, b.log) }()
	b.waitForLog(t, "waiting for migration lock held by another session")
	cancel()

	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(time.Minute):
		t.Fatal("Apply did not return after cancel")
	}
	require.Equal(t, int64(0), b.db.QueryInt(t,
		`SELECT count(*) FROM pg_namespace WHERE nspname = 'challenge_stream'`), "ran without the lock")
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()

	t.Run("Migration", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// A table in the way makes 0001_state fail; its transaction must leave no record.
		b.db.Exec(t, `CREATE SCHEMA challenge_stream; CREATE TABLE challenge_stream.slot_checkpoints (x int)`)
		conn := b.connect(t)

		err := Apply(context.Background(), conn, b.log)
		require.ErrorContains(t, err, "apply migration 0001_state: ")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "42P07", pgErr.Code) // duplicate_table
		require.Empty(t, b.migrationRows(t))
		requireLockFree(t, b)
	})

	for _, tc := range []struct {
		name, ddl      string
		missing, other string // named in the error; not named
	}{
		{"HostTableMissing", `ALTER TABLE comments RENAME TO comments_old`,
			"public.comments.user_id, public.comments.blocknumber", ""},
		{"HostColumnMissing", `ALTER TABLE comments DROP COLUMN blocknumber`, "public.comments.blocknumber", "user_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.db.Exec(t, tc.ddl)

			err := Apply(context.Background(), b.connect(t), b.log)
			require.ErrorIs(t, err, ErrHostColumn)
			require.ErrorContains(t, err, tc.missing)
			if tc.other != "" {
				require.NotContains(t, err.Error(), tc.other)
			}
			require.Equal(t, int64(0), b.db.QueryInt(t,
				`SELECT count(*) FROM pg_namespace WHERE nspname = 'challenge_stream'`), "nothing was changed")
			requireLockFree(t, b)
		})
	}

	t.Run("NameTakenByTable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.db.Exec(t, `CREATE TABLE comments_user_id_idx (x int)`)

		err := Apply(context.Background(), b.connect(t), b.log)
		require.ErrorIs(t, err, errIndexNotBuilt)
		requireLockFree(t, b)
	})
}

func TestApplyToleratesNewerMigrations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn := b.connect(t)
	require.NoError(t, Apply(ctx, conn, b.log))
	b.db.Exec(t, `INSERT INTO challenge_stream.schema_migrations (version, name) VALUES (9999, '9999_future')`)

	require.NoError(t, Apply(ctx, conn, b.log))
	warned := b.logs.FilterMessage("database has a migration this binary does not know")
	require.Equal(t, 1, warned.Len())
	require.Equal(t, int64(9999), warned.All()[0].ContextMap()["version"])
}

// requireLockFree asserts the migration lock was released.
func requireLockFree(t *testing.T, b *testBundle) {
	t.Helper()
	var ok bool
	err := b.connect(t).QueryRow(context.Background(), `SELECT pg_try_advisory_lock($1)`, LockKey).Scan(&ok)
	require.NoError(t, err)
	require.True(t, ok, "migration lock still held")
}
