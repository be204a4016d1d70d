// Command challenge-stream-dev is the tooling that sits beside the sidecar and never ships with
// it: `bench` measures the sidecar against its references and prints one table, `demo` runs
// the whole pipeline on a throw-away Postgres with synthetic traffic. The production binary,
// cmd/challenge-stream, links no package under internal/tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/internal/tools/demo"
)

// Exit codes, as challenge-stream's.
const (
	exitOK     = 0
	exitFailed = 1 // an error, or verify found differences
	exitUsage  = 2 // a bad command line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

const usage = `usage: challenge-stream-dev <command> [flags]   (each command takes -h)
  bench  run the benchmarks and print a table
  demo   run the whole pipeline on a throw-away local Postgres with synthetic traffic
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var name string
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "bench":
		return benchCommand(ctx, args, stdout, stderr)
	case "demo":
		return demoCommand(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	case "":
		fmt.Fprint(stderr, usage)
		return usageError("a command is required")
	}
	return usagef("unknown command %q (run challenge-stream-dev help)", name)
}

// usageError is a bad command line: exit 2 with one line naming the bad value.
type usageError string

func (e usageError) Error() string { return string(e) }

func usagef(format string, args ...any) error { return usageError(fmt.Sprintf(format, args...)) }

// exitCode is 0 for success or -h, 2 for a bad command line and 1 for any other error, which
// it prints unless the demo has already printed its differences.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if !errors.Is(err, demo.ErrDifferences) {
		fmt.Fprintln(stderr, "challenge-stream-dev:", err)
	}
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitFailed
}

// newFlagSet is the flag set of one command; parse reports its errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("challenge-stream-dev "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses a command's arguments: a problem is a usage error, -h prints the flags and
// returns flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return err
	case err != nil:
		return usageError(err.Error())
	case fs.NArg() > 0:
		// A URL given by position would carry its password: mask it.
		return usagef("unexpected argument %q", redact.String(fs.Arg(0), fs.Arg(0)))
	}
	return nil
}

// consoleLogger writes human-readable logs to stderr: the tools show only warnings and errors
// by default, so their own output stays readable.
func consoleLogger(stderr io.Writer, level zapcore.Level) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(stderr), level))
}
