//go:build !linux

package replication

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// userTimeoutControl does nothing where TCP_USER_TIMEOUT is not available; keepalives and the
// server-side settings still apply.
func userTimeoutControl(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}

// setReceiveLowWater is not used where SO_RCVLOWAT's effect on readiness is not known: the
// stream reads without gathering.
func setReceiveLowWater(net.Conn, int) error { return errors.ErrUnsupported }
