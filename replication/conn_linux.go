package replication

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// userTimeoutControl sets TCP_USER_TIMEOUT on a TCP socket: how long sent data may stay
// unacknowledged before the kernel drops the connection (0 keeps the system default).
func userTimeoutControl(d time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") || d <= 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
		}); err != nil {
			return fmt.Errorf("set TCP_USER_TIMEOUT: %w", err)
		}
		if serr != nil {
			return fmt.Errorf("set TCP_USER_TIMEOUT: %w", serr)
		}
		return nil
	}
}
