package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/process"
)

// supervisor keeps one challenge-stream process running, restarting it whenever it is killed,
// the way systemd (Restart=always) or a Kubernetes pod would. Any exit that is not a SIGKILL the
// suite caused or a planned stop (sigterm) — an exit 1 on a "permanent" error, a panic, an exit
// 0 nobody asked for — is a defect: it is recorded and the supervisor stops restarting.
type supervisor struct {
	t    *testing.T
	args []string
	dir  string // one log file per run

	mu         sync.Mutex
	cur        *process.Proc
	runs       int      // processes started
	nextEnv    []string // extra environment for the next start only
	planned    int      // the run a planned stop (sigterm) is waiting for, or 0
	plannedEnd chan int // receives that run's exit code
	stopping   bool
	unexpected error
	finalCode  int
	done       chan struct{}
}

// startSupervisor starts the first process. Stop it with stop; the test's cleanup kills it in
// any case.
func startSupervisor(t *testing.T, args []string) *supervisor {
	t.Helper()
	s := &supervisor{t: t, args: args, dir: t.TempDir(), done: make(chan struct{}), finalCode: -1}
	go s.loop()
	t.Cleanup(func() {
		s.mu.Lock()
		s.stopping = true
		cur := s.cur
		s.mu.Unlock()
		if cur != nil {
			_ = cur.Signal(syscall.SIGKILL)
		}
		<-s.done
		if t.Failed() {
			t.Logf("last sidecar logs:\n%s", s.tail(3, 60))
		}
	})
	return s
}

func (s *supervisor) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		s.runs++
		run := s.runs
		env := s.nextEnv
		s.nextEnv = nil
		f, err := os.Create(s.logPath(run))
		var p *process.Proc
		if err == nil {
			p, err = process.Start(binary, s.args, env, f)
		}
		if err != nil {
			s.unexpected = fmt.Errorf("start sidecar run %d: %w", run, err)
			s.mu.Unlock()
			return
		}
		s.cur = p
		s.mu.Unlock()

		werr := p.Wait()
		_ = f.Close()

		s.mu.Lock()
		stopping := s.stopping
		s.cur = nil
		if stopping {
			s.finalCode = p.Cmd.ProcessState.ExitCode()
			s.mu.Unlock()
			return
		}
		if run == s.planned {
			s.plannedEnd <- p.Cmd.ProcessState.ExitCode()
			s.planned, s.plannedEnd = 0, nil
		} else if !process.KilledBySIGKILL(werr) {
			s.unexpected = fmt.Errorf("sidecar run %d exited on its own (%v); its log ends:\n%s",
				run, werr, lastLines(s.logPath(run), 30))
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond) // a supervisor's restart delay
	}
}

func (s *supervisor) logPath(run int) string {
	return filepath.Join(s.dir, fmt.Sprintf("run-%03d.log", run))
}

// failed returns the recorded unexpected exit, if any.
func (s *supervisor) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unexpected
}

// runCount is the number of processes started so far.
func (s *supervisor) runCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs
}

// running reports whether a process is up.
func (s *supervisor) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// kill9 sends SIGKILL to the running process; the supervisor starts the next one, with env
// added to its environment.
func (s *supervisor) kill9(env ...string) {
	s.mu.Lock()
	s.nextEnv = env
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		_ = cur.Signal(syscall.SIGKILL)
	}
}

// sigterm stops the running process the way a rolling restart does (SIGTERM) and has the
// supervisor start the next one, with env added to its environment. Its exit is planned, not a
// defect, whatever the code: the caller judges the code, which exited delivers. It waits
// briefly for a process to be up (the supervisor may be between two) and returns that run.
func (s *supervisor) sigterm(env ...string) (run int, exited <-chan int, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		if s.stopping || s.unexpected != nil {
			err := s.unexpected
			s.mu.Unlock()
			return 0, nil, errors.Join(errors.New("the supervisor no longer restarts the sidecar"), err)
		}
		if cur := s.cur; cur != nil && s.planned == 0 {
			end := make(chan int, 1)
			s.nextEnv, s.planned, s.plannedEnd = env, s.runs, end
			run = s.runs
			s.mu.Unlock()
			return run, end, cur.Signal(syscall.SIGTERM)
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			return 0, nil, errors.New("no sidecar process to stop within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit code of the last process.
func (s *supervisor) stop(within time.Duration) (int, error) {
	s.mu.Lock()
	s.stopping = true
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		_ = cur.Signal(syscall.SIGTERM)
	}
	select {
	case <-s.done:
	case <-time.After(within):
		return -1, fmt.Errorf("sidecar did not stop within %s", within)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finalCode, s.unexpected
}

// countInLogs counts the log lines of every run containing substr.
func (s *supervisor) countInLogs(substr string) int {
	n := 0
	for run := 1; run <= s.runCount(); run++ {
		n += countLines(s.logPath(run), substr)
	}
	return n
}

// loggedStrings are the values of the string field key on the JSON log lines whose message is
// msg, over every run.
func (s *supervisor) loggedStrings(msg, key string) []string {
	var values []string
	for run := 1; run <= s.runCount(); run++ {
		b, err := os.ReadFile(s.logPath(run))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) != nil || entry["msg"] != msg {
				continue
			}
			if v, ok := entry[key].(string); ok {
				values = append(values, v)
			}
		}
	}
	return values
}

// countLines counts the lines of the file at path containing substr (0 if it cannot be read).
func countLines(path, substr string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// tail returns the last lines of the last runs' logs.
func (s *supervisor) tail(runs, lines int) string {
	var b strings.Builder
	last := s.runCount()
	for run := max(1, last-runs+1); run <= last; run++ {
		fmt.Fprintf(&b, "--- run %d\n%s\n", run, lastLines(s.logPath(run), lines))
	}
	return b.String()
}

func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds, failing the test when the sidecar gave up or within
// passes (with the sidecar's last log lines).
func (s *supervisor) waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		require.NoError(t, s.failed(), "waiting for %s", what)
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, s.tail(2, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
