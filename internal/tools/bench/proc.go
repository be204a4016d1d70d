package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// procStatusKB reads a "Name:   123 kB" field of /proc/<pid>/status, in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := s.Text()
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// resetPeakRSS makes a process's VmHWM start again from its current RSS (Linux ≥ 4.0). It
// reports whether that worked; without it the peak includes everything the process did before.
func resetPeakRSS(pid int) bool {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0) == nil
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture
// Go supports.
const clockTicks = 100

// procCPU is the user + system CPU time of another process, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// walsenderWatch samples the CPU time of the walsender serving a slot until stopped, keeping
// the last reading: the walsender is where the server decodes the WAL.
type walsenderWatch struct {
	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	cpu      time.Duration
	pid      int
}

func watchWalsender(ctx context.Context, databaseURL, slot string) *walsenderWatch {
	w := &walsenderWatch{stopCh: make(chan struct{}), done: make(chan struct{})}
	// Connected before the caller starts its clock: a backend forked while the measured client
	// connects slowed that client's start (its first connection took 33 ms instead of 13).
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		close(w.done)
		return w
	}
	go func() {
		defer close(w.done)
		defer conn.Close(context.WithoutCancel(ctx))
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var pid *int32
			if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err == nil && pid != nil {
				if cpu, err := procCPU(int(*pid)); err == nil {
					w.mu.Lock()
					w.pid, w.cpu = int(*pid), cpu
					w.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-w.stopCh:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// sample reads the walsender's CPU time now (if it is still there) and returns the latest.
func (w *walsenderWatch) sample() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pid != 0 {
		if cpu, err := procCPU(w.pid); err == nil {
			w.cpu = cpu
		}
	}
	return w.cpu
}

func (w *walsenderWatch) stop() time.Duration {
	w.stopOnce.Do(func() { close(w.stopCh) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cpu
}

// loadAverage is the one-minute load average: how busy the machine was around a measurement.
// Above the number of CPUs, something else competed with the benchmark.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
