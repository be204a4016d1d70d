// Package pgtest gives tests a real Postgres: one throw-away cluster per test binary (Main) and a
// fresh database with the host schema per test (NewDB), with its own slot and publication names,
// dropped when the test ends. TEST_DATABASE_URL points the tests at an existing server instead
// (it needs wal_level = logical and a superuser).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
)

// server is the package-level test server set up by Main. Tests of one binary share it; each
// gets its own database.
var server struct {
	cluster  *pgcluster.Cluster // nil when TEST_DATABASE_URL is used
	adminURL string             // URL of the maintenance database
}

// Main starts the cluster, runs the tests, checks for leaked goroutines, stops the cluster and
// exits. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain that has more to set up or tear down.
func Run(m *testing.M) int {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		server.adminURL = u
	} else {
		epoch, err := xidEpoch()
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			return 1
		}
		c, err := pgcluster.Start(context.Background(), pgcluster.Options{XIDEpoch: epoch})
		if err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			return 1
		}
		server.cluster = c
		server.adminURL = c.URL("postgres")
	}
	code := m.Run()
	if server.cluster != nil {
		if err := server.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stop cluster:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// EpochEnv names the environment variable that sets the test cluster's transaction-id epoch.
const EpochEnv = "PG_XID_EPOCH"

// defaultEpoch is the test cluster's epoch unless PG_XID_EPOCH says otherwise: past 2³²
// transactions, as on a large long-lived primary, so every test runs where a 32-bit xid is not
// the whole transaction id. PG_XID_EPOCH=0 runs the suite on a fresh cluster's epoch.
const defaultEpoch = 1

func xidEpoch() (uint32, error) {
	v := os.Getenv(EpochEnv)
	if v == "" {
		return defaultEpoch, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: not an epoch: %w", EpochEnv, v, err)
	}
	return uint32(n), nil
}

// Cluster is the throw-away cluster, or nil when TEST_DATABASE_URL points elsewhere. Tests that
// restart the server skip themselves when it is nil.
func Cluster() *pgcluster.Cluster { return server.cluster }

// DB is one test's database.
type DB struct {
	Name        string
	URL         string // superuser URL of this database
	Slot        string // a replication slot name unique to this test
	Publication string // a publication name unique to this test
	Pool        *pgxpool.Pool
}

// ConnConfig is the database's connection settings, parsed as cmd parses --database-url.
func (d *DB) ConnConfig(t testing.TB) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(d.URL)
	require.NoError(t, err)
	return cfg
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// NewDB creates a database with the host schema and registers its removal (and the removal of
// every replication slot on it) with t.Cleanup.
func NewDB(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	name := uniqueName(t.Name())
	admin, err := pgx.Connect(ctx, server.adminURL)
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)

	dbURL, err := pgcluster.DatabaseURL(server.adminURL, name)
	require.NoError(t, err)
	db := &DB{Name: name, URL: dbURL, Slot: "s_" + name, Publication: "p_" + name}
	t.Cleanup(func() { dropDatabase(t, name) })

	db.Pool, err = pgxpool.New(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(db.Pool.Close)
	require.NoError(t, hostdb.Create(ctx, db.Pool))
	return db
}

// Exec runs a statement as superuser in the test's database.
func (db *DB) Exec(t testing.TB, sql string, args ...any) pgconn.CommandTag {
	t.Helper()
	tag, err := db.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err, sql)
	return tag
}

// QueryInt runs a query returning one integer.
func (db *DB) QueryInt(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n), sql)
	return n
}

// uniqueName is a valid identifier, recognisable from the test name, unique across runs.
func uniqueName(testName string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	base := unsafeChars.ReplaceAllString(strings.ToLower(testName), "_")
	if len(base) > 40 {
		base = base[len(base)-40:]
	}
	return "t" + hex.EncodeToString(b) + "_" + strings.Trim(base, "_")
}

// dropDatabase drops the test's database and its slots.
func dropDatabase(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pgcluster.DropDatabase(ctx, server.adminURL, name); err != nil {
		t.Logf("pgtest: %v", err)
	}
}

// SetSyncStandbys sets the server's synchronous_standby_names and reloads its configuration.
// Naming a standby that does not exist holds every commit that asks for synchronous commit in
// its SyncRep wait: streamed, but invisible until the setting is cleared (""). It runs even
// when ctx is done, so a test's cleanup always releases the waits.
func SetSyncStandbys(ctx context.Context, db pgxExecer, names string) error {
	ctx = context.WithoutCancel(ctx)
	if _, err := db.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = '`+names+`'`); err != nil {
		return fmt.Errorf("set synchronous_standby_names = '%s': %w", names, err)
	}
	if _, err := db.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return fmt.Errorf("reload the configuration: %w", err)
	}
	return nil
}

// pgxExecer is the part of a pool or connection SetSyncStandbys uses.
type pgxExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}
