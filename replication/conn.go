package replication

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Dead-peer detection on both ends of every connection the sidecar streams or flushes over.
// Without it a host that dies or is cut off without a FIN or RST is noticed only after Linux's
// defaults: ~2 h 11 min of keepalive on an idle socket, ~15 min of retransmissions
// (tcp_retries2) with data in flight. With these values a silent peer is declared dead after
// KeepaliveIdle + KeepaliveCount×KeepaliveInterval = 30 s idle, or UserTimeout = 30 s with
// unacknowledged data.
const (
	KeepaliveIdle     = 15 * time.Second
	KeepaliveInterval = 5 * time.Second
	KeepaliveCount    = 3
	UserTimeout       = 30 * time.Second
)

// clientKeepaliveParams are libpq's client-side connection parameters. pgconn does not know
// them and would send them to the server as settings, which it rejects; we apply them to our
// own socket instead, as libpq does.
var clientKeepaliveParams = []string{"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}

// DetectDeadPeers makes both ends of connections made with cfg give up on a silent peer within
// the bound above. The client side gets TCP keepalives and TCP_USER_TIMEOUT on its socket; the
// server side gets the same through the user-settable tcp_keepalives_idle/_interval/_count and
// tcp_user_timeout settings, so a server backend (and any advisory lock it holds) does not
// outlive a dead client by hours. Values the URL already sets win: libpq's keepalives,
// keepalives_idle, keepalives_interval and keepalives_count (seconds) for the client socket,
// the server settings for the server, and tcp_user_timeout (milliseconds) for both.
func DetectDeadPeers(cfg *pgconn.Config) error {
	ka := net.KeepAliveConfig{Enable: true, Idle: KeepaliveIdle, Interval: KeepaliveInterval, Count: KeepaliveCount}
	userTimeout := UserTimeout
	params := cfg.RuntimeParams
	for _, name := range clientKeepaliveParams {
		v, set := params[name]
		if !set {
			continue
		}
		delete(params, name)
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("connection parameter %s=%q: want a non-negative integer", name, v)
		}
		switch name {
		case "keepalives":
			ka.Enable = n != 0
		case "keepalives_idle":
			ka.Idle = time.Duration(n) * time.Second
		case "keepalives_interval":
			ka.Interval = time.Duration(n) * time.Second
		case "keepalives_count":
			ka.Count = n
		}
	}
	if v, set := params["tcp_user_timeout"]; set {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("connection parameter tcp_user_timeout=%q: want milliseconds", v)
		}
		userTimeout = time.Duration(n) * time.Millisecond
	}
	if !ka.Enable {
		ka = net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1}
	}
	server := map[string]string{
		"tcp_keepalives_idle":     strconv.Itoa(int(KeepaliveIdle / time.Second)),
		"tcp_keepalives_interval": strconv.Itoa(int(KeepaliveInterval / time.Second)),
		"tcp_keepalives_count":    strconv.Itoa(KeepaliveCount),
		"tcp_user_timeout":        strconv.Itoa(int(UserTimeout / time.Millisecond)),
	}
	for k, v := range server {
		if _, set := params[k]; !set {
			params[k] = v
		}
	}
	d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAliveConfig: ka, Control: userTimeoutControl(userTimeout)}
	if !ka.Enable {
		d.KeepAlive = -1
	}
	cfg.DialFunc = d.DialContext
	return nil
}
