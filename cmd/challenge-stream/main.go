// Command challenge-stream keeps the platform's reward rows current from Postgres logical
// replication. See the README for the commands and docs/operations.md for the runbook.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/challenge-stream/challenge-stream/internal/buildinfo"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a permanent error, or verify found differences
	exitUsage  = 2 // bad configuration
)

// usageError is bad configuration: exit 2 with one line naming the bad value.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// env is how commands read the environment (tests pass their own).
type env struct {
	args   []string
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, e env) error
}

func commands() map[string]command {
	return map[string]command{
		"run":      {"stream changes and keep rewards current (the sidecar)", runCommand},
		"migrate":  {"apply the project's own migrations and exit", migrateCommand},
		"verify":   {"recompute every rule from scratch and diff with user_challenges", verifyCommand},
		"status":   {"show the slot, lag, retained WAL, stored LSN and checkpoints", statusCommand},
		"teardown": {"drop the slot and the publication (decommissioning)", teardownCommand},
		"version":  {"print the version, VCS revision and Go version (also --version)", versionCommand},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, env{args: os.Args[1:], stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func run(ctx context.Context, e env) error {
	if len(e.args) == 0 || e.args[0] == "-h" || e.args[0] == "--help" || e.args[0] == "help" {
		printUsage(e.stderr)
		if len(e.args) == 0 {
			return usagef("a command is required")
		}
		return nil
	}
	if e.args[0] == "--version" || e.args[0] == "-version" {
		return versionCommand(ctx, env{args: e.args[1:], stdout: e.stdout, stderr: e.stderr, getenv: e.getenv})
	}
	cmd, ok := commands()[e.args[0]]
	if !ok {
		return usagef("unknown command %q (run challenge-stream help)", e.args[0])
	}
	e.args = e.args[1:]
	return cmd.run(ctx, e)
}

// versionCommand prints the build: one line on stdout, for scripts and image checks.
func versionCommand(_ context.Context, e env) error {
	if len(e.args) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(e.stdout, buildinfo.Get())
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: challenge-stream <command> [flags]   (each command takes -h)")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-9s %s\n", name, cmds[name].summary)
	}
}

// errDifferences is verify's "rows differ" result: exit 1 without an extra error line.
var errDifferences = errors.New("differences found")

func exitCode(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "challenge-stream:", strings.ReplaceAll(usage.msg, "\n", " "))
		return exitUsage
	case errors.Is(err, errDifferences):
		return exitFailed
	default:
		fmt.Fprintln(stderr, "challenge-stream:", err)
		return exitFailed
	}
}
