//go:build linux

package pipeline_test

import (
	"context"
	"net"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/challenge-stream/challenge-stream/replication"
)

// TestDeadPeerDetection: both ends of a tuned connection give up on a silent peer within the
// documented bound: the server session has the tcp_keepalives_* and tcp_user_timeout settings,
// the client socket keepalives and TCP_USER_TIMEOUT. Values in the URL win, libpq's client
// parameters included (pgconn would otherwise send them to the server, which rejects them).
func TestDeadPeerDetection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name                          string
		query                         url.Values
		serverIdle, serverUserTimeout string
		clientIdle, clientUserTimeout int
	}{
		{name: "defaults", serverIdle: "15", serverUserTimeout: "30000", clientIdle: 15, clientUserTimeout: 30000},
		{
			name:  "set in the URL",
			query: url.Values{"keepalives_idle": {"7"}, "tcp_keepalives_idle": {"9"}, "tcp_user_timeout": {"12000"}},
			// tcp_user_timeout is libpq's client parameter and the server's setting of the same
			// name: it applies to both ends.
			serverIdle: "9", serverUserTimeout: "12000", clientIdle: 7, clientUserTimeout: 12000,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(e.db.URL)
			require.NoError(t, err)
			q := u.Query()
			for k, v := range tc.query {
				q[k] = v
			}
			u.RawQuery = q.Encode()
			cfg, err := pgconn.ParseConfig(u.String())
			require.NoError(t, err)
			require.NoError(t, replication.DetectDeadPeers(cfg))
			conn, err := pgconn.ConnectConfig(t.Context(), cfg)
			require.NoError(t, err)
			defer conn.Close(context.Background())

			res, err := conn.Exec(t.Context(), `SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout'),
				current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')`).ReadAll()
			require.NoError(t, err)
			row := res[0].Rows[0]
			require.Equal(t, tc.serverIdle, string(row[0]))
			require.Equal(t, tc.serverUserTimeout, string(row[1]))
			require.Equal(t, "5", string(row[2]))
			require.Equal(t, "3", string(row[3]))

			raw, err := conn.Conn().(*net.TCPConn).SyscallConn()
			require.NoError(t, err)
			var idle, userTimeout, keepalive int
			var gerr error
			require.NoError(t, raw.Control(func(fd uintptr) {
				keepalive, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
				if gerr == nil {
					idle, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
				}
				if gerr == nil {
					userTimeout, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
				}
			}))
			require.NoError(t, gerr)
			require.Equal(t, 1, keepalive)
			require.Equal(t, tc.clientIdle, idle)
			require.Equal(t, tc.clientUserTimeout, userTimeout)
		})
	}
}
