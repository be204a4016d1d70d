package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/bench"
	"github.com/challenge-stream/challenge-stream/internal/workload"
)

// benchFlags are the flags of `bench`.
type benchFlags struct {
	cfg         bench.Config
	databaseURL string
	logLevel    string
	only        string
	plays       string
	windows     string
	warmup      time.Duration
	pollRates   string
	rate        string
	memoryRows  string
	pollRows    string
	txRows      string
	writers     string
	smoke       bool
	workload    workloadFlags
}

// smokeSizes are the values --smoke gives the flags not set on the command line: every
// section in well under a minute, so CI proves they work (timings mean nothing there).
var smokeSizes = map[string]string{
	"plays": "2000", "rate": "300", "duration": "2s", "windows": "200ms,1s", "block": "100ms",
	"poll-rates": "50,500", "warmup": "0s", "poll-tick": "1s", "poll-rows": "167", "poll-duration": "2s",
	"memory-rows": "5000", "artists": "200", "tracks-per-artist": "4", "listeners": "300", "comments": "500",
}

// workloadFlags size the synthetic host database of `demo` and `bench`.
type workloadFlags struct {
	seed, artists, tracksPerArtist, listeners, comments string
}

func (w *workloadFlags) register(f *flagSet, envPrefix string) {
	f.string(&w.seed, "seed", envPrefix+"SEED", strconv.Itoa(workload.DefaultSeed), "seed of the synthetic data and traffic")
	f.string(&w.artists, "artists", envPrefix+"ARTISTS", strconv.Itoa(workload.DefaultArtists), "artists in the synthetic database")
	f.string(&w.tracksPerArtist, "tracks-per-artist", envPrefix+"TRACKS_PER_ARTIST", strconv.Itoa(workload.DefaultTracksPerArtist), "mean tracks per artist")
	f.string(&w.listeners, "listeners", envPrefix+"LISTENERS", strconv.Itoa(workload.DefaultListeners), "listeners in the synthetic database")
	f.string(&w.comments, "comments", envPrefix+"COMMENTS", strconv.Itoa(workload.DefaultComments), "comments in the history")
}

func (w *workloadFlags) config() (workload.Config, error) {
	var c workload.Config
	seed, err := strconv.ParseUint(w.seed, 10, 64)
	if err != nil || seed == 0 {
		return c, usagef("seed %q must be a positive integer", w.seed)
	}
	c.Seed = seed
	for _, v := range []struct {
		name string
		s    string
		p    *int
	}{
		{"artists", w.artists, &c.Artists},
		{"tracks per artist", w.tracksPerArtist, &c.TracksPerArtist},
		{"listeners", w.listeners, &c.Listeners},
		{"comments", w.comments, &c.Comments},
	} {
		n, err := strconv.Atoi(v.s)
		if err != nil || n <= 0 {
			return c, usagef("%s %q must be a positive integer", v.name, v.s)
		}
		*v.p = n
	}
	return c, nil
}

func parseBenchFlags(e env) (benchFlags, error) {
	var bf benchFlags
	f := newFlagSet("bench", e)
	const p = "CHALLENGE_STREAM_BENCH_"
	f.string(&bf.databaseURL, "database-url", p+"DATABASE_URL", "", "superuser URL of an existing server with wal_level=logical (default: start a throw-away one)")
	f.string(&bf.only, "only", p+"ONLY", strings.Join(bench.Sections(), ","), "sections to run: "+strings.Join(bench.Sections(), ","))
	f.string(&bf.plays, "plays", p+"PLAYS", "100000", "drain: backlog sizes in plays, comma-separated (the issue's: 100000,1000000)")
	f.string(&bf.txRows, "tx-rows", p+"TX_ROWS", "100", "drain: plays per backlog transaction (a block)")
	f.string(&bf.writers, "writers", p+"WRITERS", "2", "drain: connections writing the backlog at once")
	f.string(&bf.cfg.CPUProfile, "cpuprofile", p+"CPUPROFILE", "", "write a CPU profile of the sidecar draining the largest backlog to this file")
	f.string(&bf.rate, "rate", p+"RATE", "500", "latency, writes: steady load in plays/s")
	f.duration(&bf.cfg.Duration, "duration", p+"DURATION", 20*time.Second, "latency, polling, writes: how long each streaming run's load lasts")
	f.duration(&bf.warmup, "warmup", p+"WARMUP", 10*time.Second, "latency: how long each run's load runs before it is measured (0: none)")
	f.string(&bf.windows, "windows", p+"WINDOWS", "200ms,1s", "latency: window lengths, comma-separated")
	f.duration(&bf.cfg.BlockInterval, "block", p+"BLOCK", workload.DefaultBlockInterval, "time between the load's blocks (one transaction each)")
	f.string(&bf.pollRates, "poll-rates", p+"POLL_RATES", "50,500,5000", "polling: loads in plays/s, comma-separated")
	f.duration(&bf.cfg.PollTick, "poll-tick", p+"POLL_TICK", 30*time.Second, "polling: the job's tick (production: 30s; shorten with --poll-rows to keep its capacity)")
	f.string(&bf.pollRows, "poll-rows", p+"POLL_ROWS", "5000", "polling: source rows the job reads per tick (production: 5000)")
	f.duration(&bf.cfg.PollDuration, "poll-duration", p+"POLL_DURATION", 0, "polling: how long the job's load lasts (default two ticks)")
	f.string(&bf.memoryRows, "memory-rows", p+"MEMORY_ROWS", "1000000", "memory: rows of the one big transaction")
	f.string(&bf.logLevel, "log-level", p+"LOG_LEVEL", "warn", "level of the pipelines' logs on stderr: debug, info, warn or error")
	f.bool(&bf.smoke, "smoke", p+"SMOKE", "run every section at tiny sizes (CI): proves they work, measures nothing")
	bf.workload.register(f, p)
	if err := f.parse(e.args); err != nil {
		return bf, err
	}
	if bf.smoke {
		set := map[string]bool{}
		f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		for name, v := range smokeSizes {
			if !set[name] {
				if err := f.Set(name, v); err != nil {
					return bf, usageError{err.Error()}
				}
			}
		}
	}
	var err error
	if bf.cfg.Workload, err = bf.workload.config(); err != nil {
		return bf, err
	}
	bf.cfg.ServerURL = bf.databaseURL
	if bf.cfg.Sections, err = parseSections(bf.only); err != nil {
		return bf, err
	}
	if bf.cfg.DrainPlays, err = parseList(bf.plays, "backlog size", parsePositiveInt); err != nil {
		return bf, err
	}
	if bf.cfg.Windows, err = parseList(bf.windows, "window", parsePositiveDuration); err != nil {
		return bf, err
	}
	if bf.cfg.PollRates, err = parseList(bf.pollRates, "polling rate", parsePositiveFloat); err != nil {
		return bf, err
	}
	if bf.cfg.Rate, err = parsePositiveFloat(bf.rate); err != nil {
		return bf, usagef("rate %q must be a positive number", bf.rate)
	}
	n, err := parsePositiveInt(bf.memoryRows)
	if err != nil {
		return bf, usagef("memory rows %q must be a positive integer", bf.memoryRows)
	}
	bf.cfg.MemoryRows = int64(n)
	if n, err = parsePositiveInt(bf.pollRows); err != nil {
		return bf, usagef("polling rows %q must be a positive integer", bf.pollRows)
	}
	bf.cfg.PollRows = int64(n)
	if bf.cfg.DrainTxRows, err = parsePositiveInt(bf.txRows); err != nil {
		return bf, usagef("transaction rows %q must be a positive integer", bf.txRows)
	}
	if bf.cfg.DrainWriters, err = parsePositiveInt(bf.writers); err != nil {
		return bf, usagef("writers %q must be a positive integer", bf.writers)
	}
	if bf.cfg.Duration <= 0 || bf.cfg.PollTick <= 0 || bf.cfg.BlockInterval <= 0 || bf.cfg.PollDuration < 0 || bf.warmup < 0 {
		return bf, usagef("durations must be positive")
	}
	// Config's zero is its default; the flag's zero is no warm-up.
	bf.cfg.Warmup = bf.warmup
	if bf.warmup == 0 {
		bf.cfg.Warmup = -1
	}
	if _, err := parseLevel(bf.logLevel); err != nil {
		return bf, err
	}
	// Validate wants a server URL, the throw-away one does not exist yet, and the binary is
	// this one (benchCommand sets it).
	check := bf.cfg
	if check.ServerURL == "" {
		check.ServerURL = "postgres://localhost/postgres"
	}
	check.Binary = "challenge-stream"
	if err := check.Validate(); err != nil {
		return bf, usageError{err.Error()}
	}
	return bf, nil
}

// benchCommand runs internal/bench (SPEC §8) and prints one table.
func benchCommand(ctx context.Context, e env) error {
	bf, err := parseBenchFlags(e)
	if err != nil {
		return err
	}
	log := consoleLogger(e, bf.logLevel)
	defer func() { _ = log.Sync() }()
	cfg := bf.cfg
	cfg.Log, cfg.Progress = log, e.stderr
	if cfg.Binary, err = os.Executable(); err != nil {
		return fmt.Errorf("bench: find this executable for the memory section: %w", err)
	}
	err = bench.RunAndReport(ctx, cfg, e.stdout)
	if errors.Is(err, bench.ErrDifferences) {
		fmt.Fprintln(e.stderr, "challenge-stream: bench:", err)
		return errDifferences
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// consoleLogger is a human-readable logger on stderr at the given level: the demo and the
// benchmarks show only warnings and errors, so the output stays readable.
func consoleLogger(e env, level string) *zap.Logger {
	c := commonFlags{logFormat: "console", logLevel: level}
	return c.logger(e)
}

func parseLevel(s string) (zapcore.Level, error) {
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return l, usagef("log level %q must be debug, info, warn or error", s)
	}
	return l, nil
}

func parseSections(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		valid := false
		for _, known := range bench.Sections() {
			valid = valid || part == known
		}
		if !valid {
			return nil, usagef("section %q is not one of %s", part, strings.Join(bench.Sections(), ","))
		}
		out = append(out, part)
	}
	if len(out) == 0 {
		return nil, usagef("--only names no section")
	}
	return out, nil
}

// parseList parses a comma-separated list; what names the values in errors.
func parseList[T any](s, what string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := parse(part)
		if err != nil {
			return nil, usagef("%s %q must be positive", what, part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, usagef("%s list %q is empty", what, s)
	}
	return out, nil
}

var errNotPositive = errors.New("not positive")

func parsePositiveInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, errNotPositive
	}
	return n, nil
}

func parsePositiveFloat(s string) (float64, error) {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if x <= 0 {
		return 0, errNotPositive
	}
	return x, nil
}

func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errNotPositive
	}
	return d, nil
}
