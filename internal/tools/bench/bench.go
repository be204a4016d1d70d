package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/processors"
)

// The sections of the benchmark, in the order they run.
const (
	SectionDrain   = "drain"   // backlog drain vs pg_recvlogical
	SectionLatency = "latency" // milestone latency under steady load, per window
	SectionPolling = "polling" // streaming vs the 30 s polling job, per rate
	SectionWrites  = "writes"  // user_challenges writes per 1,000 plays vs the reference upsert
	SectionMemory  = "memory"  // peak RSS while a huge transaction streams through
)

// Sections lists every section in running order.
func Sections() []string {
	return []string{SectionDrain, SectionLatency, SectionPolling, SectionWrites, SectionMemory}
}

// Config sizes a benchmark run. Zero fields take the defaults, which finish in about ten
// minutes on a small machine; `make bench` asks for the sizes of the issue.
type Config struct {
	// ServerURL is a superuser URL of any database on a server with wal_level = logical. The
	// benchmark creates its own databases there (prefix csb) and drops them.
	ServerURL string
	// BinDir holds pg_recvlogical; empty means PATH. Without it the drain has no reference.
	BinDir string
	// Binary is the challenge-stream executable the memory section runs as its own process
	// (`challenge-stream-dev bench` passes the one beside it, or --binary). Required by that
	// section only.
	Binary string
	// Sections to run; nil means all.
	Sections []string
	// Workload sizes the synthetic host database (see workload.Config).
	Workload workload.Config

	// DrainPlays are the backlog sizes. Default 100,000.
	DrainPlays []int
	// DrainTxRows is the size of the backlog's transactions. Default 100 (a block).
	DrainTxRows int
	// DrainWriters is how many connections write the backlog at once. Default 2.
	DrainWriters int
	// CPUProfile, when set, receives a CPU profile of the sidecar draining the largest backlog.
	CPUProfile string

	// Rate is the steady load of the latency and writes sections, plays/s. Default 500.
	Rate float64
	// Duration is how long each streaming run's traffic lasts. Default 20s.
	Duration time.Duration
	// Warmup is how long each latency run's load runs before it is measured. Default 10s;
	// negative means none. The sidecar's flush connection lives as long as the process, but a
	// new backend's first flushes at production size took 2 to 4 times its later ones (a second
	// connection to the same warm database started as slowly again, its page faults per flush
	// falling from about 860 to 30 as it touched more of shared buffers); at 1x that start is a
	// few flushes.
	Warmup time.Duration
	// Windows are the window lengths of the latency section. Default 200ms and 1s.
	Windows []time.Duration
	// BlockInterval is the time between the load's blocks. Default 500ms.
	BlockInterval time.Duration
	// RuleInterval is the time between the latency runs' transactions for v, t, cp, w, m, rd, b and fp
	// (workload.RuleLoad), beside the plays and comments. Default 100ms; negative means none.
	RuleInterval time.Duration

	// PollRates are the loads of the polling comparison, plays/s. Default 50, 500, 5,000.
	PollRates []float64
	// PollTick and PollRows are the polling job: a tick every PollTick reading at most
	// PollRows source rows. Default 30s and 5,000, the production job. Shorten both by the same
	// factor to keep its capacity (PollRows/PollTick plays/s) and run faster.
	PollTick time.Duration
	PollRows int64
	// PollDuration is how long the polling runs' traffic lasts. Default two ticks.
	PollDuration time.Duration

	// MemoryRows is the size of the memory section's transaction. Default 1,000,000. A tenth
	// of it runs too, to show the peak does not grow with the rows.
	MemoryRows int64

	// Log receives the pipelines' logs (default none).
	Log *zap.Logger
	// Progress receives a line per step (default none).
	Progress io.Writer
}

func (c Config) withDefaults() Config {
	if c.Sections == nil {
		c.Sections = Sections()
	}
	if c.DrainPlays == nil {
		c.DrainPlays = []int{100_000}
	}
	if c.DrainTxRows == 0 {
		c.DrainTxRows = 100
	}
	if c.DrainWriters == 0 {
		c.DrainWriters = 2
	}
	if c.Rate == 0 {
		c.Rate = 500
	}
	if c.Duration == 0 {
		c.Duration = 20 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 10 * time.Second
	}
	if c.Windows == nil {
		c.Windows = []time.Duration{200 * time.Millisecond, time.Second}
	}
	if c.RuleInterval == 0 {
		c.RuleInterval = 100 * time.Millisecond
	}
	if c.BlockInterval == 0 {
		c.BlockInterval = workload.DefaultBlockInterval
	}
	if c.PollRates == nil {
		c.PollRates = []float64{50, 500, 5000}
	}
	if c.PollTick == 0 {
		c.PollTick = 30 * time.Second
	}
	if c.PollRows == 0 {
		c.PollRows = 5000
	}
	if c.PollDuration == 0 {
		c.PollDuration = 2 * c.PollTick
	}
	if c.MemoryRows == 0 {
		c.MemoryRows = 1_000_000
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// Validate checks the configuration after defaults; errors name the bad value.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.ServerURL == "" {
		return errors.New("server URL is required")
	}
	for _, s := range c.Sections {
		if !slices.Contains(Sections(), s) {
			return fmt.Errorf("unknown section %q (sections: %s)", s, strings.Join(Sections(), ", "))
		}
	}
	for _, n := range c.DrainPlays {
		if n <= 0 {
			return fmt.Errorf("backlog size %d must be positive", n)
		}
	}
	for _, w := range c.Windows {
		if w <= 0 {
			return fmt.Errorf("window %s must be positive", w)
		}
	}
	for _, r := range c.PollRates {
		if r <= 0 {
			return fmt.Errorf("rate %g must be positive", r)
		}
	}
	switch {
	case c.DrainTxRows <= 0 || c.DrainWriters <= 0:
		return errors.New("backlog transaction size and writers must be positive")
	case c.Rate <= 0:
		return fmt.Errorf("rate %g must be positive", c.Rate)
	case c.Duration <= 0 || c.PollDuration <= 0 || c.PollTick <= 0 || c.BlockInterval <= 0:
		return errors.New("durations must be positive")
	case c.PollRows <= 0:
		return fmt.Errorf("polling batch %d must be positive", c.PollRows)
	case c.MemoryRows <= 0:
		return fmt.Errorf("memory transaction size %d must be positive", c.MemoryRows)
	case c.Binary == "" && slices.Contains(c.Sections, SectionMemory):
		return errors.New("the memory section needs the challenge-stream binary (Config.Binary)")
	}
	return c.Workload.Validate()
}

// ErrDifferences means a run left user_challenges different from a from-scratch derivation.
var ErrDifferences = errors.New("verify found differences after a benchmark run")

type bench struct {
	cfg    Config
	log    *zap.Logger
	prefix string
	tpl    string
	host   *workload.Host
	report *Report
	dbs    int // databases verified
	// coldNoted is set once the report says the copies could not be prewarmed.
	coldNoted bool
	diffs     int
	created   []string
}

// Run runs the selected sections and returns their table. Each section works on copies of one
// generated database, so every comparison sees the same data. Every run ends with
// processors.Verify on its database: Run returns ErrDifferences (with the report) if any
// differ. On another error the report holds the rows measured so far.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := &bench{cfg: cfg, log: cfg.Log, prefix: "csb" + randomHex(3) + "_", report: &Report{}}
	defer b.cleanup(ctx)
	if err := b.run(ctx); err != nil {
		return b.report, err
	}
	if b.diffs > 0 {
		return b.report, ErrDifferences
	}
	return b.report, nil
}

func (b *bench) run(ctx context.Context) error {
	if err := b.environment(ctx); err != nil {
		return err
	}
	b.progress("generating the synthetic host database")
	b.tpl = b.prefix + "tpl"
	b.created = append(b.created, b.tpl)
	_, host, sizes, err := workload.Setup(ctx, b.cfg.ServerURL, b.tpl, b.cfg.Workload)
	if err != nil {
		return err
	}
	b.host = host
	b.report.Environment = append(b.report.Environment, fmt.Sprintf(
		"data: %s users, %s tracks (%s eligible artists), %s aggregate rows, %s comments, %s reward rows; generated in %s",
		count(sizes.Users), count(sizes.Tracks), count(int64(sizes.EligibleArtists)), count(sizes.Aggregates),
		count(sizes.Comments), count(sizes.Rewards), seconds(sizes.Took)))

	for _, s := range b.cfg.Sections {
		var err error
		switch s {
		case SectionDrain:
			err = b.drainSection(ctx)
		case SectionLatency:
			err = b.latencySection(ctx)
		case SectionPolling:
			err = b.pollingSection(ctx)
		case SectionWrites:
			err = b.writesSection(ctx)
		case SectionMemory:
			err = b.memorySection(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	met := "yes"
	if b.diffs > 0 {
		met = "NO"
	}
	b.report.add(Row{
		Section: "parity", Measure: "processors.Verify after every run",
		Sidecar: fmt.Sprintf("%d differences in %d databases", b.diffs, b.dbs), Target: "0", Met: met,
	})
	return nil
}

func (b *bench) environment(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.cfg.ServerURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	host, _ := os.Hostname()
	b.report.Environment = append(b.report.Environment,
		fmt.Sprintf("machine: %s, %d CPUs (%s), %s RAM, %s; %s %s/%s; PostgreSQL %s on the same machine",
			host, runtime.NumCPU(), cpuModel(), memTotal(), hugePages(), runtime.Version(), runtime.GOOS, runtime.GOARCH, version),
		fmt.Sprintf("run: %s, load average %s at the start (the ratios hold only if nothing else competes for the CPUs)",
			time.Now().UTC().Format(time.RFC3339), loadAverage()))
	return nil
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench: "+format+"\n", args...)
}

// clone makes a copy of the generated database and of its model.
func (b *bench) clone(ctx context.Context, tag string) (name, url string, host *workload.Host, err error) {
	name = b.prefix + tag
	b.created = append(b.created, name)
	// Autovacuum may be looking at the template for a moment; CREATE DATABASE then fails
	// with object_in_use. Try again briefly.
	for attempt := 0; ; attempt++ {
		url, err = workload.CreateDatabase(ctx, b.cfg.ServerURL, name, b.tpl)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 50 || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", "", nil, err
	}
	if err := b.settle(ctx, url); err != nil {
		return "", "", nil, err
	}
	return name, url, b.host.Clone(), nil
}

// settle leaves a fresh copy of the database the way a host that has been running for a while
// has its tables: written back and in shared buffers. Generating and copying a database dirties
// hundreds of MB at production size. Measured right after, a flush paid for the setup: its
// backend evicted dirty buffers of the template and the kernel throttled the writes, and every
// first touch of a page was a read from outside shared buffers (a flush's median at 10x: 116 ms
// right after the setup, 39 ms after CHECKPOINT and sync, 21 ms prewarmed, against 15 ms at 1x
// with 7% fewer buffer hits). Prewarming needs the pg_prewarm extension; without it the copy
// starts cold and the report says so.
func (b *bench) settle(ctx context.Context, url string) error {
	server, err := pgx.Connect(ctx, b.cfg.ServerURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer server.Close(context.WithoutCancel(ctx))
	if _, err := server.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	// With fsync off (the throw-away server) CHECKPOINT only hands the pages to the kernel;
	// sync writes them out, so the run does not share the disk with the setup. It does nothing
	// for a server on another machine.
	syscall.Sync()

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_prewarm"); err != nil {
		if !b.coldNoted {
			b.coldNoted = true
			b.report.note("pg_prewarm is not available (%v): each run starts with the copy's pages outside shared buffers", err)
		}
		return nil
	}
	_, err = conn.Exec(ctx, `
SELECT pg_prewarm(c.oid::regclass)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('public', 'challenge_stream') AND c.relkind IN ('r', 'i')`)
	if err != nil {
		return fmt.Errorf("prewarm: %w", err)
	}
	return nil
}

// warmup is the latency runs' warm-up, zero for none.
func (b *bench) warmup() time.Duration { return max(0, b.cfg.Warmup) }

// drop drops a database now (they are large), even when ctx is done.
func (b *bench) drop(ctx context.Context, name string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := pgcluster.DropDatabase(dctx, b.cfg.ServerURL, name); err != nil {
		b.log.Warn("drop benchmark database", zap.String("database", name), zap.Error(err))
		return
	}
	b.created = slices.DeleteFunc(b.created, func(n string) bool { return n == name })
}

func (b *bench) cleanup(ctx context.Context) {
	for _, name := range slices.Clone(b.created) {
		b.drop(ctx, name)
	}
}

// verify runs processors.Verify on a database and counts its differences.
func (b *bench) verify(ctx context.Context, url, what string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	diffs, err := processors.Verify(ctx, conn)
	if err != nil {
		return err
	}
	b.dbs++
	b.diffs += len(diffs)
	if len(diffs) > 0 {
		b.progress("%s: verify found %d differences, e.g. %s", what, len(diffs), diffs[0])
		b.report.Notes = append(b.report.Notes, fmt.Sprintf("%s: verify found %d differences, e.g. %s", what, len(diffs), diffs[0]))
	}
	return nil
}

// recvlogical is the path of pg_recvlogical, or "" when it is not installed.
func (b *bench) recvlogical() string {
	if b.cfg.BinDir != "" {
		p := filepath.Join(b.cfg.BinDir, "pg_recvlogical")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		return ""
	}
	return p
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	kb, ok := meminfoKB("MemTotal")
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%.0f GB", float64(kb)/(1<<20))
}

// hugePages says whether the machine reserves huge pages, which the throw-away server (and any
// server with huge_pages = try) maps its shared buffers with when they fit. They change what a
// production-size database costs per buffer: a backend touching 1 GB of shared buffers in 4 kB
// pages takes a page fault on each first touch and misses the TLB far more often.
func hugePages() string {
	total, ok := meminfoKB("HugePages_Total")
	if !ok || total == 0 {
		return "no huge pages reserved"
	}
	size, _ := meminfoKB("Hugepagesize")
	return fmt.Sprintf("%d huge pages of %d kB reserved", total, size)
}

// meminfoKB reads one field of /proc/meminfo (kB, or a count for HugePages_*).
func meminfoKB(field string) (int64, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var n int64
			_, err := fmt.Sscan(rest, &n)
			return n, err == nil
		}
	}
	return 0, false
}
