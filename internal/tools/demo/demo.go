// Package demo is `challenge-stream-dev demo`: the whole pipeline on a throw-away PostgreSQL
// with a synthetic host database, the sidecar running in this process, and a block indexer
// writing plays and comments. It prints a live status line, then a summary, the milestone
// latency and the verify result.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/challenge-stream/challenge-stream/internal/tools/bench"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

// slot names the demo's slot and publication: the defaults, as a first deployment has.
const slot = pipeline.DefaultName

// ErrDifferences means verify found rows that differ from a from-scratch derivation; the
// differences have been printed.
var ErrDifferences = errors.New("verify found differences")

// Config is what the demo runs. Every field must be set (cmd parses and checks the flags).
type Config struct {
	// Rate is the plays per second the block indexer writes; CommentRate the new comments per
	// second (a tenth as many are edited or deleted).
	Rate, CommentRate float64
	// Duration is how long the load runs; Ctrl-C ends it earlier.
	Duration time.Duration
	// Window is the sidecar's window.
	Window time.Duration
	// Block is the time between blocks (one transaction each).
	Block time.Duration
	// Data sizes the synthetic host database.
	Data workload.Config
	// Log receives the sidecar's logs.
	Log *zap.Logger
	// Stdout receives the demo's output, Stderr its cleanup problems.
	Stdout, Stderr io.Writer
}

// Run runs the demo until the load ends, then prints the summary. An interrupt (ctx canceled)
// before the load starts is a clean exit.
func Run(ctx context.Context, cfg Config) error {
	out := cfg.Stdout
	fmt.Fprintln(out, "challenge-stream-dev demo: a throw-away PostgreSQL, a synthetic host database, the sidecar running")
	fmt.Fprintln(out, "in this process, and a block indexer writing plays and comments into the database.")
	fmt.Fprintln(out)
	c, err := bench.StartServer(ctx)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(cfg.Stderr, "demo: stop the throw-away PostgreSQL:", err)
		}
	}()
	fmt.Fprintf(out, "postgres  %s  (wal_level=logical; removed at exit)\n", c.URL("demo"))

	dbURL, host, sizes, err := workload.Setup(ctx, c.URL("postgres"), "demo", cfg.Data)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	fmt.Fprintf(out, "data      %s users, %s tracks, %s eligible artists, %s comments; the polling job's %s reward rows (%s)\n",
		thousands(sizes.Users), thousands(sizes.Tracks), thousands(int64(sizes.EligibleArtists)), thousands(sizes.Comments),
		thousands(sizes.Rewards), sizes.Took.Round(time.Millisecond))

	// The sidecar does not stop on Ctrl-C by itself: the load stops first, then the sidecar
	// applies what is left and stops.
	rec := bench.NewRecorder(false)
	sc := bench.StartSidecar(context.WithoutCancel(ctx), dbURL, slot, cfg.Window, rec, cfg.Log)
	defer func() { _ = sc.Stop() }()
	if err := sc.WaitStreaming(ctx); err != nil {
		return interrupted(ctx, out, fmt.Errorf("start the sidecar: %w", err))
	}
	fmt.Fprintf(out, "sidecar   streaming from slot %s (cut over from the legacy checkpoints), window %s\n", slot, cfg.Window)
	fmt.Fprintf(out, "load      %g plays/s and %g comments/s, one transaction per block every %s, for %s (Ctrl-C ends it early)\n\n",
		cfg.Rate, cfg.CommentRate, cfg.Block, cfg.Duration)

	d := &demo{cfg: cfg, rec: rec, sc: sc, host: host, dbURL: dbURL}
	return d.run(ctx)
}

// interrupted turns an error after Ctrl-C into a clean exit.
func interrupted(ctx context.Context, out io.Writer, err error) error {
	if ctx.Err() != nil {
		fmt.Fprintln(out, "demo: interrupted")
		return nil
	}
	return err
}

type demo struct {
	cfg   Config
	rec   *bench.Recorder
	sc    *bench.Sidecar
	host  *workload.Host
	dbURL string

	start     time.Time
	dbStart   time.Time // now() on the server when the load started
	plays     atomic.Int64
	comments  atomic.Int64
	blocks    atomic.Int64
	crossings []workload.Crossing // written by the load's goroutine, read after it ends
}

func (d *demo) run(ctx context.Context) error {
	// After Ctrl-C the demo still finishes, prints its summary and cleans up.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(fctx, d.dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(fctx)
	statConn, err := pgx.Connect(fctx, d.dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer statConn.Close(fctx)
	if err := statConn.QueryRow(fctx, "SELECT now()").Scan(&d.dbStart); err != nil {
		return fmt.Errorf("read the server's clock: %w", err)
	}

	loadCtx, stopLoad := context.WithTimeout(ctx, d.cfg.Duration+time.Minute)
	defer stopLoad()
	var g errgroup.Group
	g.Go(func() error {
		// A sidecar that stops on its own (a permanent error) ends the load.
		select {
		case <-d.sc.Exited():
			stopLoad()
		case <-loadCtx.Done():
		}
		return nil
	})
	st := newStatusLine(d.cfg.Stdout)
	g.Go(func() error {
		d.status(loadCtx, statConn, st)
		return nil
	})
	d.start = time.Now()
	traffic := workload.Traffic{Rate: d.cfg.Rate, CommentRate: d.cfg.CommentRate, BlockInterval: d.cfg.Block}
	loadErr := d.host.Drive(loadCtx, conn, traffic, d.cfg.Duration, func(a workload.Applied) {
		d.plays.Add(int64(len(a.Block.Plays)))
		d.comments.Add(int64(len(a.Block.Comments)))
		d.blocks.Add(1)
		d.crossings = append(d.crossings, a.Crossings...)
	})
	loadTime := time.Since(d.start)
	stopLoad()
	_ = g.Wait()
	if loadErr != nil {
		st.done()
		return loadErr
	}

	// Apply what is left, then stop the sidecar: it flushes, confirms and returns.
	wctx, wcancel := context.WithTimeout(fctx, d.cfg.Window+30*time.Second)
	waitErr := d.sc.WaitApplied(wctx, d.plays.Load())
	wcancel()
	d.line(fctx, statConn, st)
	st.done()
	stopErr := d.sc.Stop()
	if stopErr != nil {
		return fmt.Errorf("sidecar: %w", stopErr)
	}
	if waitErr != nil {
		fmt.Fprintf(d.cfg.Stdout, "warning: the sidecar had not applied every play %s after the load stopped\n", d.cfg.Window+30*time.Second)
	}
	return d.summary(fctx, conn, loadTime)
}

// status redraws the status line twice a second until ctx ends.
func (d *demo) status(ctx context.Context, conn *pgx.Conn, st *statusLine) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.line(ctx, conn, st)
		}
	}
}

// rateWindow is how far back "plays/s in" looks: blocks arrive in bursts.
const rateWindow = 2 * time.Second

type sample struct {
	at    time.Time
	plays int64
}

func (d *demo) line(ctx context.Context, conn *pgx.Conn, st *statusLine) {
	now := time.Now()
	plays := d.plays.Load()
	st.samples = append(st.samples, sample{now, plays})
	for len(st.samples) > 1 && now.Sub(st.samples[1].at) >= rateWindow {
		st.samples = st.samples[1:]
	}
	first := st.samples[0]
	perSec := 0.0
	if span := now.Sub(first.at).Seconds(); span > 0 {
		perSec = float64(plays-first.plays) / span
	}
	snap := d.rec.Snapshot()
	var (
		walLag     int64 = -1
		milestones int64
	)
	// The lag is the WAL between the server's current position and what the sidecar has
	// stored (applied together with the rewards).
	_ = conn.QueryRow(ctx, `SELECT
    CASE WHEN $1::pg_lsn = '0/0' THEN -1 ELSE GREATEST(pg_current_wal_lsn() - $1::pg_lsn, 0) END::bigint,
    (SELECT count(*) FROM user_challenges WHERE challenge_id IN ('p1', 'p2', 'p3')
        AND completed_at >= ($2::timestamptz AT TIME ZONE current_setting('TimeZone')))`,
		snap.FlushedLSN.String(), d.dbStart).Scan(&walLag, &milestones)
	flush, latency := "-", "-"
	if f := snap.LastFlush; !f.Commit.IsZero() {
		flush = f.Result.Duration.Round(time.Millisecond).String()
		if !f.Result.FirstCommit.IsZero() {
			latency = f.Commit.Sub(f.Result.FirstCommit).Round(time.Millisecond).String()
		}
	}
	st.show(fmt.Sprintf("%5.1fs  in %5.0f plays/s  windows %4d  flush %6s  commit→flush %7s  lag %5d plays %8s  milestones %d",
		now.Sub(d.start).Seconds(), perSec, snap.Flushes, flush, latency,
		max(0, plays-snap.PlaysApplied), humanBytes(walLag), milestones))
}

func (d *demo) summary(ctx context.Context, conn *pgx.Conn, loadTime time.Duration) error {
	out := d.cfg.Stdout
	snap := d.rec.Snapshot()
	flushes := d.rec.Flushes()
	var durations []time.Duration
	for _, f := range flushes {
		if f.Result.Stats != nil {
			durations = append(durations, f.Result.Duration)
		}
	}
	slices.Sort(durations)
	fmt.Fprintf(out, "\nsummary   %s: %s plays and %s comments in %s blocks; %s windows flushed",
		loadTime.Round(100*time.Millisecond), thousands(d.plays.Load()), thousands(d.comments.Load()),
		thousands(d.blocks.Load()), thousands(int64(len(durations))))
	if len(durations) > 0 {
		fmt.Fprintf(out, " (flush p50 %s, max %s)", pct(durations, 0.5), durations[len(durations)-1].Round(time.Millisecond))
	}
	fmt.Fprintln(out)
	if snap.Reconnects > 0 {
		fmt.Fprintf(out, "          the sidecar reconnected %d times (last: %v)\n", snap.Reconnects, snap.LastReconnect)
	}
	fmt.Fprintln(out)

	if err := d.challengeTable(ctx, conn); err != nil {
		return err
	}

	lat, err := bench.MeasureLatencies(ctx, conn, d.crossings, bench.FlushIntervals(flushes), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmilestone latency  %d milestones crossed by the load: ", lat.Total())
	if p50, _, ok := lat.Percentile(0.5); ok {
		p99, censored, _ := lat.Percentile(0.99)
		bound := ""
		if censored {
			bound = ">"
		}
		fmt.Fprintf(out, "p50 %s, p99 %s%s", p50.Round(time.Millisecond), bound, p99.Round(time.Millisecond))
	} else {
		fmt.Fprint(out, "none")
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "                   (from the COMMIT of the play that crossed the milestone, as the indexer saw it return,")
	fmt.Fprintln(out, "                   to the COMMIT of the flush whose transaction set the row's completed_at)")
	if n := len(lat.Pending) + lat.Unattributed + lat.Early; n > 0 {
		fmt.Fprintf(out, "                   %d not measured: %d not complete, %d outside any flush, %d before their play\n",
			n, len(lat.Pending), lat.Unattributed, lat.Early)
	}

	diffs, err := processors.Verify(ctx, conn)
	if err != nil {
		return err
	}
	if len(diffs) == 0 {
		fmt.Fprintln(out, "\nverify    no differences: every rule recomputed from scratch matches user_challenges")
		return nil
	}
	fmt.Fprintf(out, "\nverify    %d differences:\n", len(diffs))
	for i, diff := range diffs {
		if i == 20 {
			fmt.Fprintf(out, "          … and %d more\n", len(diffs)-20)
			break
		}
		fmt.Fprintln(out, "         ", diff.String())
	}
	return ErrDifferences
}

func (d *demo) challengeTable(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `
SELECT c.id, count(uc.challenge_id),
       count(*) FILTER (WHERE uc.is_complete),
       count(*) FILTER (WHERE uc.created_at >= $1),
       count(*) FILTER (WHERE uc.completed_at >= ($1::timestamptz AT TIME ZONE current_setting('TimeZone')))
FROM unnest($2::text[]) WITH ORDINALITY AS c(id, ord)
LEFT JOIN user_challenges uc ON uc.challenge_id = c.id
GROUP BY c.id, c.ord ORDER BY c.ord`, d.dbStart, processors.ChallengeIDs())
	if err != nil {
		return fmt.Errorf("count rewards: %w", err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(d.cfg.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "challenge\trows\tcomplete\tnew during the demo\tcompleted during the demo\t")
	for rows.Next() {
		var (
			id                                  string
			total, complete, created, completed int64
		)
		if err := rows.Scan(&id, &total, &complete, &created, &completed); err != nil {
			return fmt.Errorf("count rewards: %w", err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", id, thousands(total), thousands(complete), thousands(created), thousands(completed))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count rewards: %w", err)
	}
	return tw.Flush()
}

// statusLine redraws one line in place on a terminal; elsewhere (a pipe, CI) it prints a
// line every few seconds.
type statusLine struct {
	w        io.Writer
	terminal bool
	width    int
	printed  time.Time
	last     string
	samples  []sample
}

func newStatusLine(w io.Writer) *statusLine {
	st := &statusLine{w: w}
	if f, ok := w.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			st.terminal = true
		}
	}
	return st
}

func (st *statusLine) show(s string) {
	st.last = s
	if st.terminal {
		pad := max(0, st.width-len([]rune(s)))
		fmt.Fprint(st.w, "\r"+s+strings.Repeat(" ", pad))
		st.width = len([]rune(s))
		return
	}
	if time.Since(st.printed) >= 5*time.Second {
		fmt.Fprintln(st.w, s)
		st.printed = time.Now()
	}
}

// done ends the line: the last status stays on screen.
func (st *statusLine) done() {
	switch {
	case st.terminal && st.width > 0:
		fmt.Fprintln(st.w)
	case !st.terminal && st.last != "":
		fmt.Fprintln(st.w, st.last)
	}
	st.width, st.last = 0, ""
}

func pct(sorted []time.Duration, q float64) time.Duration {
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return sorted[i].Round(time.Millisecond)
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func humanBytes(n int64) string {
	switch {
	case n < 0:
		return "-"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
}
