package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/tools/bench"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
)

// benchFlags are the flags of `bench` that need more than a flag's own parsing.
type benchFlags struct {
	cfg       bench.Config
	logLevel  zapcore.Level
	only      string
	plays     string
	windows   string
	pollRates string
	smoke     bool
}

// smokeSizes are the values --smoke gives the flags not set on the command line: every
// section in well under a minute, so CI proves they work (timings mean nothing there).
var smokeSizes = map[string]string{
	"plays": "2000", "rate": "300", "duration": "2s", "windows": "200ms,1s", "block": "100ms",
	"poll-rates": "50,500", "warmup": "0s", "poll-tick": "1s", "poll-rows": "167", "poll-duration": "2s",
	"memory-rows": "5000", "artists": "200", "tracks-per-artist": "4", "listeners": "300", "comments": "500",
}

// registerWorkload adds the flags that size the synthetic host database of `demo` and `bench`.
func registerWorkload(fs *flag.FlagSet, c *workload.Config) {
	fs.Uint64Var(&c.Seed, "seed", workload.DefaultSeed, "seed of the synthetic data and traffic")
	fs.IntVar(&c.Artists, "artists", workload.DefaultArtists, "artists in the synthetic database")
	fs.IntVar(&c.TracksPerArtist, "tracks-per-artist", workload.DefaultTracksPerArtist, "mean tracks per artist")
	fs.IntVar(&c.Listeners, "listeners", workload.DefaultListeners, "listeners in the synthetic database")
	fs.IntVar(&c.Comments, "comments", workload.DefaultComments, "comments in the history")
}

// checkWorkload refuses a zero the workload would take for its default.
func checkWorkload(c workload.Config) error {
	if c.Seed == 0 {
		return usagef("seed must be positive")
	}
	for name, n := range map[string]int{
		"artists": c.Artists, "tracks per artist": c.TracksPerArtist, "listeners": c.Listeners, "comments": c.Comments,
	} {
		if n <= 0 {
			return usagef("%s %d must be positive", name, n)
		}
	}
	return nil
}

func parseBenchFlags(args []string, stderr io.Writer) (benchFlags, error) {
	bf := benchFlags{logLevel: zapcore.WarnLevel}
	c := &bf.cfg
	fs := newFlagSet("bench")
	fs.StringVar(&c.ServerURL, "database-url", "", "superuser URL of an existing server with wal_level=logical (default: start a throw-away one)")
	fs.StringVar(&c.Binary, "binary", "", "memory: the challenge-stream executable it runs (default: challenge-stream beside this one)")
	fs.StringVar(&bf.only, "only", strings.Join(bench.Sections(), ","), "sections to run: "+strings.Join(bench.Sections(), ","))
	fs.StringVar(&bf.plays, "plays", "100000", "drain: backlog sizes in plays, comma-separated (the issue's: 100000,1000000)")
	fs.IntVar(&c.DrainTxRows, "tx-rows", 100, "drain: plays per backlog transaction (a block)")
	fs.IntVar(&c.DrainWriters, "writers", 2, "drain: connections writing the backlog at once")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the sidecar draining the largest backlog to this file")
	fs.Float64Var(&c.Rate, "rate", 500, "latency, writes: steady load in plays/s")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "latency, polling, writes: how long each streaming run's load lasts")
	fs.DurationVar(&c.Warmup, "warmup", 10*time.Second, "latency: how long each run's load runs before it is measured (0: none)")
	fs.StringVar(&bf.windows, "windows", "200ms,1s", "latency: window lengths, comma-separated")
	fs.DurationVar(&c.BlockInterval, "block", workload.DefaultBlockInterval, "time between the load's blocks (one transaction each)")
	fs.StringVar(&bf.pollRates, "poll-rates", "50,500,5000", "polling: loads in plays/s, comma-separated")
	fs.DurationVar(&c.PollTick, "poll-tick", 30*time.Second, "polling: the job's tick (production: 30s; shorten with --poll-rows to keep its capacity)")
	fs.Int64Var(&c.PollRows, "poll-rows", 5000, "polling: source rows the job reads per tick (production: 5000)")
	fs.DurationVar(&c.PollDuration, "poll-duration", 0, "polling: how long the job's load lasts (default two ticks)")
	fs.Int64Var(&c.MemoryRows, "memory-rows", 1_000_000, "memory: rows of the one big transaction")
	fs.TextVar(&bf.logLevel, "log-level", zapcore.WarnLevel, "level of the pipelines' logs on stderr: debug, info, warn or error")
	fs.BoolVar(&bf.smoke, "smoke", false, "run every section at tiny sizes (CI): proves they work, measures nothing")
	registerWorkload(fs, &c.Workload)
	if err := parse(fs, args, stderr); err != nil {
		return bf, err
	}
	if bf.smoke {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		for name, v := range smokeSizes {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return bf, usageError(err.Error())
				}
			}
		}
	}
	if err := checkWorkload(c.Workload); err != nil {
		return bf, err
	}
	var err error
	if c.Sections, err = parseSections(bf.only); err != nil {
		return bf, err
	}
	if c.DrainPlays, err = parseList(bf.plays, "backlog size", strconv.Atoi); err != nil {
		return bf, err
	}
	if c.Windows, err = parseList(bf.windows, "window", time.ParseDuration); err != nil {
		return bf, err
	}
	if c.PollRates, err = parseList(bf.pollRates, "polling rate", func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }); err != nil {
		return bf, err
	}
	// Config's zero is its default; on the command line it is a mistake.
	switch {
	case c.Rate <= 0:
		return bf, usagef("rate %g must be positive", c.Rate)
	case c.MemoryRows <= 0 || c.PollRows <= 0 || c.DrainTxRows <= 0 || c.DrainWriters <= 0:
		return bf, usagef("memory rows, polling rows, transaction rows and writers must be positive")
	case c.Duration <= 0 || c.PollTick <= 0 || c.BlockInterval <= 0 || c.PollDuration < 0 || c.Warmup < 0:
		return bf, usagef("durations must be positive")
	}
	if c.Warmup == 0 {
		c.Warmup = -1 // the flag's zero is no warm-up, Config's the default
	}
	// Validate wants a server URL, and the throw-away one does not exist yet.
	check := bf.cfg
	if check.ServerURL == "" {
		check.ServerURL = "postgres://localhost/postgres"
	}
	check.Binary = "challenge-stream"
	if err := check.Validate(); err != nil {
		return bf, usageError(err.Error())
	}
	return bf, nil
}

// benchCommand runs internal/tools/bench (SPEC §8) and prints one table.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	bf, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg := bf.cfg
	if slices.Contains(cfg.Sections, bench.SectionMemory) {
		if cfg.Binary, err = sidecarBinary(cfg.Binary); err != nil {
			return err
		}
	}
	log := consoleLogger(stderr, bf.logLevel)
	defer func() { _ = log.Sync() }()
	cfg.Log, cfg.Progress = log, stderr
	if err := bench.RunAndReport(ctx, cfg, stdout); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// sidecarBinary is the challenge-stream executable the memory section runs as its own
// process: the one named, or the one `make build` puts beside this executable.
func sidecarBinary(named string) (string, error) {
	if named == "" {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("bench: find this executable: %w", err)
		}
		named = filepath.Join(filepath.Dir(self), "challenge-stream")
	}
	path, err := exec.LookPath(named)
	if err != nil {
		return "", usagef("the memory section runs challenge-stream (make build, or --binary): %v", err)
	}
	return path, nil
}

func parseSections(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !slices.Contains(bench.Sections(), part) {
			return nil, usagef("section %q is not one of %s", part, strings.Join(bench.Sections(), ","))
		}
		out = append(out, part)
	}
	if len(out) == 0 {
		return nil, usagef("--only names no section")
	}
	return out, nil
}

// parseList parses a comma-separated list of positive values; what names them in errors.
func parseList[T int | float64 | time.Duration](s, what string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := parse(strings.ReplaceAll(part, "_", ""))
		if err != nil || v <= 0 {
			return nil, usagef("%s %q must be positive", what, part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, usagef("%s list %q is empty", what, s)
	}
	return out, nil
}
