// Package process runs a challenge-stream process and watches it exit: the e2e and fault tests
// drive it (kill -9 is only real for a real process), and the benchmark's memory section reads
// the peak RSS of a sidecar that runs as it does in production.
package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is one running process: the e2e tests drive one at a time, the fault suite's supervisor
// restarts one after every kill, the benchmark measures one.
type Proc struct {
	// Cmd is the started command; use it for what the methods do not cover.
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, set before done closes
}

// Start starts binary with args and this process's environment plus env, writing its stdout
// and stderr to out. The caller must end it (Kill9, or a signal and Wait); testbin.StartT does
// that in a test's cleanup.
func Start(binary string, args, env []string, out io.Writer) (*Proc, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill9 sends SIGKILL and waits for the process to exit. It fails when the process had already
// exited: the caller meant to kill a running one.
func (p *Proc) Kill9() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9: %w", err)
	}
	<-p.done
	return nil
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait returned.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// ExitCode waits up to within for the process to exit and returns its exit code (-1 when a
// signal ended it); ok is false when it is still running.
func (p *Proc) ExitCode(within time.Duration) (code int, ok bool) {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), true
	case <-t.C:
		return -1, false
	}
}

// KilledBySIGKILL reports whether a Wait error says the process died of SIGKILL.
func KilledBySIGKILL(err error) bool {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return false
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Output collects a process's stdout and stderr; it can be read while the process writes.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
