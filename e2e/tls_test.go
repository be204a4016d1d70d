package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

// Security: TLS settings in the database URL are honoured on every connection, `run` refuses a
// server without logical decoding, and the password in the URL never reaches the output.

// TestTLS runs the sidecar against a cluster of its own with ssl = on and a certificate signed
// by a CA made in the test.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	c := startCluster(t, map[string]string{
		"ssl":           "on",
		"ssl_cert_file": pki.serverCert,
		"ssl_key_file":  pki.serverKey,
	})

	t.Run("verify-full with the right CA streams over TLS", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, c, "tls_ok")
		e.artistWithTrack(1, 10)
		p := e.run(nil, "--window", "100ms", "--database-url", tlsURL(c, e.db.Name, "verify-full", pki.caCert))
		e.waitStreaming(p)
		e.plays(10, 260)
		e.caughtUp()
		require.EqualValues(t, 250, e.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '1:250'`))
		require.EqualValues(t, 2, e.count(`SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
			WHERE a.datname = $1 AND s.ssl AND a.application_name IN ('challenge-stream', 'challenge-stream-flush')`,
			e.db.Name), "the replication and the flush connection both use TLS")
		e.verified()
	})
	t.Run("require encrypts without verifying", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, c, "tls_require")
		p := e.run(nil, "--database-url", tlsURL(c, e.db.Name, "require", ""))
		e.waitStreaming(p)
		// The replication and the flush connection (the payouts' and the slot poller's come and
		// go: on a Friday the payouts' may be open too, over TLS as well).
		require.EqualValues(t, 2, e.count(`SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
			WHERE a.datname = $1 AND s.ssl AND a.application_name IN ('challenge-stream', 'challenge-stream-flush')`, e.db.Name))
		require.EqualValues(t, 0, e.count(`SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
			WHERE a.datname = $1 AND NOT s.ssl AND a.application_name LIKE 'challenge-stream%'`, e.db.Name), "no connection without TLS")
	})
	t.Run("verify-full with the wrong CA does not connect", func(t *testing.T) {
		t.Parallel()
		e := clusterEnv(t, c, "tls_wrong_ca")
		other := newTestPKI(t)
		p := e.run(nil, "--database-url", tlsURL(c, e.db.Name, "verify-full", other.caCert))
		eventually(t, "a clear TLS error", func() bool {
			return strings.Contains(p.out.String(), "certificate signed by unknown authority")
		})
		require.EqualValues(t, 0, e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, e.db.Slot),
			"nothing was done on the server")
		if isRunning(p) {
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		}
		code := p.exited(30 * time.Second)
		require.Contains(t, []int{0, 1}, code)
	})
}

// TestWalLevelReplica: `run` against a server without logical decoding exits 1 with a line
// naming wal_level, before it changes anything.
func TestWalLevelReplica(t *testing.T) {
	t.Parallel()
	c := startCluster(t, map[string]string{"wal_level": "replica"})
	e := clusterEnv(t, c, "replica")
	p := e.run(nil)
	require.Equal(t, 1, p.exited(60*time.Second))
	last := lastLine(p.out.String())
	require.Contains(t, last, "wal_level")
	require.Contains(t, last, "logical")
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM pg_publication`), "no publication was created")
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM pg_namespace WHERE nspname = 'challenge_stream'`),
		"no migration ran")
}

// TestPasswordNeverLogged runs the commands with a URL whose password holds characters that
// need percent-encoding, and requires that neither it nor its encoding appears in any output:
// normal operation at debug level, a database that does not exist, a port nobody listens on
// (retried with warnings), a URL that does not parse. The test cluster trusts local
// connections, so any password logs in.
func TestPasswordNeverLogged(t *testing.T) {
	e := setup(t)
	secret := "Pw-" + randomHex(t) + "-p@ss/w:rd%?"
	role := "pw_" + e.db.Name
	if len(role) > 63 {
		role = role[:63]
	}
	ident := pgx.Identifier{role}.Sanitize()
	e.db.Exec(t, `CREATE ROLE `+ident+` LOGIN SUPERUSER PASSWORD '`+strings.ReplaceAll(secret, "'", "''")+`'`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = e.db.Pool.Exec(ctx, `DROP OWNED BY `+ident+` CASCADE`)
		if _, err := e.db.Pool.Exec(ctx, `DROP ROLE IF EXISTS `+ident); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	u, err := url.Parse(e.db.URL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, secret)
	withPassword := u.String()
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret), strings.TrimPrefix(u.User.String(), role+":")}
	clean := func(what, out string) {
		t.Helper()
		for _, f := range forms {
			require.NotContains(t, out, f, "%s: the password (as %q) is in the output", what, f)
		}
	}

	// Normal operation, at debug level, through a SIGTERM.
	e.artistWithTrack(1, 10)
	p := e.run(nil, "--window", "100ms", "--database-url", withPassword)
	e.waitStreaming(p)
	e.plays(10, 260)
	e.caughtUp()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exited(30*time.Second))
	require.Contains(t, p.out.String(), "xxxxx", "the URL is logged, masked")
	clean("run", p.out.String())

	// A database that does not exist: a permanent error, exit 1.
	wrongDB := *u
	wrongDB.Path = "/no_such_database_" + randomHex(t)
	p = e.run(nil, "--database-url", wrongDB.String())
	require.Equal(t, 1, p.exited(60*time.Second))
	require.Contains(t, lastLine(p.out.String()), "does not exist")
	clean("run, no such database", p.out.String())

	// The password as a query parameter instead, same missing database.
	inQuery := wrongDB
	inQuery.User = url.User(role)
	inQuery.RawQuery = url.Values{"sslmode": {"disable"}, "password": {secret}}.Encode()
	p = e.run(nil, "--database-url", inQuery.String())
	require.Equal(t, 1, p.exited(60*time.Second))
	clean("run, password in the query", p.out.String())

	// Nobody listens: retried, with warnings naming the failure.
	refused := *u
	refused.Host = freeAddr(t)
	p = e.run(nil, "--database-url", refused.String())
	eventually(t, "a reconnect warning", func() bool {
		return strings.Contains(p.out.String(), "session ended; reconnecting")
	})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exited(30*time.Second))
	clean("run, connection refused", p.out.String())

	// A URL that does not parse: exit 2.
	p = e.run(nil, "--database-url", "postgres://"+role+":"+secret+"@127.0.0.1:notaport/db")
	require.Equal(t, 2, p.exited(30*time.Second))
	clean("run, unparsable URL", p.out.String())

	// The other commands that connect, on the missing database.
	for _, args := range [][]string{
		{"migrate", "--database-url", wrongDB.String()},
		{"status", "--database-url", wrongDB.String(), "--slot", e.db.Slot},
		{"verify", "--database-url", wrongDB.String()},
	} {
		out, err := runToCompletion(args...)
		require.Error(t, err, args[0])
		clean(args[0], out)
	}
}

// runToCompletion runs the binary to completion and returns its combined output.
func runToCompletion(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// testPKI is a CA and a server certificate for 127.0.0.1 and localhost, in a directory the
// Postgres server can read (it runs as the postgres account when the tests run as root).
type testPKI struct {
	caCert, serverCert, serverKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir, err := os.MkdirTemp("", "challenge-stream-tls-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	uid, gid := serverAccount(t)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "challenge-stream test CA " + randomHex(t)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caParsed, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, server, caParsed, &serverKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(serverKey)
	require.NoError(t, err)

	pki := testPKI{
		caCert:     filepath.Join(dir, "ca.crt"),
		serverCert: filepath.Join(dir, "server.crt"),
		serverKey:  filepath.Join(dir, "server.key"),
	}
	write := func(path, kind string, der []byte, mode os.FileMode) {
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode))
		require.NoError(t, os.Chown(path, uid, gid))
	}
	write(pki.caCert, "CERTIFICATE", caDER, 0o644)
	write(pki.serverCert, "CERTIFICATE", serverDER, 0o644)
	write(pki.serverKey, "EC PRIVATE KEY", keyDER, 0o600) // the server refuses a key others can read
	require.NoError(t, os.Chown(dir, uid, gid))
	return pki
}

// serverAccount is the uid and gid the test server runs as: the postgres account when root
// (see pgcluster), else this process's.
func serverAccount(t *testing.T) (int, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid()
	}
	u, err := user.Lookup("postgres")
	require.NoError(t, err)
	uid, err := strconv.Atoi(u.Uid)
	require.NoError(t, err)
	gid, err := strconv.Atoi(u.Gid)
	require.NoError(t, err)
	return uid, gid
}

// startCluster starts a small cluster of the test's own with extra settings.
func startCluster(t *testing.T, settings map[string]string) *pgcluster.Cluster {
	t.Helper()
	if pgtest.Cluster() == nil {
		t.Skip("TEST_DATABASE_URL is set: this test needs a server with its own settings")
	}
	settings["shared_buffers"] = "32MB"
	settings["max_connections"] = "100"
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{Settings: settings})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// clusterEnv is an env whose database lives on c rather than on the shared cluster.
func clusterEnv(t *testing.T, c *pgcluster.Cluster, name string) *env {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, c.URL("postgres"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	pool, err := pgxpool.New(ctx, c.URL(name))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, hostdb.Create(ctx, pool))
	db := &pgtest.DB{Name: name, URL: c.URL(name), Slot: "s_" + name, Publication: "p_" + name, Pool: pool}
	return &env{t: t, ctx: t.Context(), db: db}
}

func tlsURL(c *pgcluster.Cluster, database, sslmode, rootCert string) string {
	q := url.Values{"sslmode": {sslmode}}
	if rootCert != "" {
		q.Set("sslrootcert", rootCert)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?%s", c.Port(), database, q.Encode())
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
