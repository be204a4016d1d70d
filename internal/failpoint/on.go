//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// armed is the failpoint named by EnvVar, read on the first Hit. A package-level value is
// the price of a call site without plumbing; it exists only in test builds.
var armed = sync.OnceValue(func() *point { return parse(os.Getenv(EnvVar)) })

// point is an armed failpoint: it fires on the nth hit of name.
type point struct {
	name string
	nth  int64
	seen atomic.Int64
}

// parse reads "name:N" (N ≥ 1); anything else arms nothing.
func parse(spec string) *point {
	name, nth, ok := strings.Cut(spec, ":")
	n, err := strconv.ParseInt(nth, 10, 64)
	if name == "" || !ok || err != nil || n < 1 {
		return nil
	}
	return &point{name: name, nth: n}
}

// hit reports whether this hit of name is the one that fires.
func (p *point) hit(name string) bool {
	return p != nil && name == p.name && p.seen.Add(1) == p.nth
}

// Hit kills the process with SIGKILL when it is the Nth hit of the armed failpoint.
func Hit(name string) {
	if !armed().hit(name) {
		return
	}
	// A zap-shaped JSON line, so log readers that parse stderr as JSON accept it; the fault
	// tests look for "failpoint reached" in it.
	fmt.Fprintf(os.Stderr, "{\"level\":\"warn\",\"ts\":%q,\"msg\":\"failpoint reached: killing the process\",\"point\":%q}\n",
		time.Now().UTC().Format("2006-01-02T15:04:05.000Z0700"), name)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// ClockEnvVar sets the clock of a failpoints build: an RFC 3339 time the process starts at,
// from which its clock runs on (the weekly payouts' tests start on a Friday).
const ClockEnvVar = "CHALLENGE_STREAM_CLOCK"

var started = sync.OnceValue(func() func() time.Time {
	at, err := time.Parse(time.RFC3339, os.Getenv(ClockEnvVar))
	if err != nil {
		return time.Now
	}
	origin := time.Now()
	return func() time.Time { return at.Add(time.Since(origin)) }
})

// Now is the clock set by CHALLENGE_STREAM_CLOCK, else the wall clock.
func Now() time.Time { return started()() }
