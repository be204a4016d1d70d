package bench

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/internal/tools/process"
	"github.com/challenge-stream/challenge-stream/replication"
)

type memoryRun struct {
	rows           int64
	baseline, peak int64 // RSS bytes
	peakReset      bool
	insert, stream time.Duration
	distinctTracks int64
	// decoding is the server's account of the slot's decoding (read after the sidecar
	// stopped, when the walsender has reported it).
	decoding replication.DecodingStats
}

// memorySection streams one huge transaction through the sidecar — and, to show the peak does
// not grow with the rows, one a tenth of its size with the same distinct IDs.
func (b *bench) memorySection(ctx context.Context) error {
	sizes := []int64{b.cfg.MemoryRows}
	if b.cfg.MemoryRows/10 >= b.host.Tracks() {
		sizes = []int64{b.cfg.MemoryRows / 10, b.cfg.MemoryRows}
	}
	var runs []memoryRun
	for _, n := range sizes {
		b.progress("memory: one transaction of %s plays", count(n))
		r, err := b.memory(ctx, n)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	for _, r := range runs {
		b.report.add(Row{
			Section: "memory",
			Measure: fmt.Sprintf("peak RSS of `challenge-stream run`, one %s-row transaction (%s distinct tracks)", count(r.rows), count(r.distinctTracks)),
			Sidecar: fmt.Sprintf("%s (%s over %s)", mb(r.peak), signedMB(r.peak-r.baseline), mb(r.baseline)),
			Target:  "< +10 MB", Met: yesNo(r.peak-r.baseline < 10<<20),
		})
		if !r.peakReset {
			b.report.note("memory: /proc/<pid>/clear_refs was not writable, so the peak RSS includes the sidecar's start")
		}
		b.report.add(Row{
			Section: "memory",
			Measure: fmt.Sprintf("  %s-row transaction: commit → rewards stored", count(r.rows)),
			Sidecar: seconds(r.stream), Target: "≤ 1s", Met: yesNo(r.stream <= time.Second),
		})
		b.report.add(Row{
			Section: "memory",
			Measure: fmt.Sprintf("  %s-row transaction: bytes the server spilled to disk decoding it", count(r.rows)),
			Sidecar: fmt.Sprintf("%s (streamed %s in %d transactions)", mb(r.decoding.SpilledBytes),
				mb(r.decoding.StreamedBytes), r.decoding.StreamedTxns),
			Target: "0", Met: yesNo(r.decoding.Found && r.decoding.SpilledBytes == 0),
		})
		b.report.note("memory %s rows: inserted in %s", count(r.rows), seconds(r.insert))
	}
	if len(runs) == 2 {
		small, big := runs[0], runs[1]
		growth := func(r memoryRun) int64 { return r.peak - r.baseline }
		ok := growth(big) <= growth(small)+8<<20
		b.report.add(Row{
			Section: "memory",
			Measure: fmt.Sprintf("  RSS growth at %s rows vs %s rows", count(big.rows), count(small.rows)),
			Sidecar: fmt.Sprintf("%s vs %s", signedMB(growth(big)), signedMB(growth(small))),
			Target:  "within 8 MB", Met: yesNo(ok),
		})
	}
	return nil
}

// memory runs the sidecar as its own process, as it runs in production: inside the bench, the
// bench's own live heap (the workload model, the recorders) would set the collector's pace and
// its garbage would count in the peak.
func (b *bench) memory(ctx context.Context, rows int64) (memoryRun, error) {
	r := memoryRun{rows: rows, distinctTracks: min(rows, b.host.Tracks())}
	name, url, host, err := b.clone(ctx, fmt.Sprintf("mem%d", rows))
	if err != nil {
		return r, err
	}
	defer b.drop(ctx, name)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	sc, err := startSidecarProcess(b.cfg.Binary, url, name)
	if err != nil {
		return r, err
	}
	defer sc.kill()
	streaming := func() (bool, error) {
		slot, err := replication.InspectSlot(ctx, conn, name)
		return slot.Active, err
	}
	if err := sc.waitFor(ctx, streaming); err != nil {
		return r, fmt.Errorf("start sidecar: %w", err)
	}
	// The start's garbage (migrations check, catch-up, connections) is collected in the first
	// seconds of an idle process; the baseline is the sidecar waiting for work.
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	pid := sc.Cmd.Process.Pid
	if r.baseline, err = procStatusKB(pid, "VmRSS"); err != nil {
		return r, err
	}
	r.peakReset = resetPeakRSS(pid)

	// The server makes the rows: no process holds them while they are written.
	if r.insert, err = host.BigTransaction(ctx, conn, rows); err != nil {
		return r, err
	}
	start := time.Now()
	var lastPlay int64
	if err := conn.QueryRow(ctx, `SELECT max(id) FROM plays`).Scan(&lastPlay); err != nil {
		return r, fmt.Errorf("last play: %w", err)
	}
	stored := func() (bool, error) {
		legacy, err := checkpoints.ReadLegacy(ctx, conn)
		return legacy.Has(checkpoints.PlaysCheckpoint) && legacy[checkpoints.PlaysCheckpoint] >= lastPlay, err
	}
	if err := sc.waitFor(ctx, stored); err != nil {
		return r, fmt.Errorf("sidecar: %w", err)
	}
	r.stream = time.Since(start)
	if r.peak, err = procStatusKB(pid, "VmHWM"); err != nil {
		return r, err
	}
	if err := sc.stop(); err != nil {
		return r, fmt.Errorf("sidecar: %w", err)
	}
	if r.decoding, err = replication.InspectDecoding(ctx, conn, name); err != nil {
		return r, err
	}
	if err := b.verify(ctx, url, fmt.Sprintf("memory %d", rows)); err != nil {
		return r, err
	}
	return r, nil
}

// sidecarProcess is `challenge-stream run` on one database, its slot and publication named
// after the database.
type sidecarProcess struct {
	*process.Proc
	url string
	out process.Output
}

func startSidecarProcess(binary, url, slot string) (*sidecarProcess, error) {
	s := &sidecarProcess{url: url}
	// The URL goes in the environment, not on the command line: it holds a password.
	p, err := process.Start(binary, []string{"run", "--slot", slot, "--publication", slot, "--window", "1s",
		"--metrics-addr", "off", "--log-format", "console", "--log-level", "warn"},
		[]string{"DATABASE_URL=" + url}, &s.out)
	if err != nil {
		return nil, err
	}
	s.Proc = p
	return s, nil
}

// waitFor polls done until it reports true, failing when the sidecar exits first.
func (s *sidecarProcess) waitFor(ctx context.Context, done func() (bool, error)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Done():
			return fmt.Errorf("exited early (%v): %s", s.Wait(), s.output())
		case <-t.C:
		}
	}
}

// stop asks the sidecar to shut down as a deploy does (SIGTERM: flush, confirm, exit 0).
func (s *sidecarProcess) stop() error {
	if err := s.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := s.Wait(); err != nil {
		return fmt.Errorf("exit after SIGTERM (%v): %s", err, s.output())
	}
	return nil
}

// kill ends the sidecar if it is still running (after a failure).
func (s *sidecarProcess) kill() {
	_ = s.Cmd.Process.Kill()
	_ = s.Wait()
}

// output is the tail of the sidecar's log, with the database password removed.
func (s *sidecarProcess) output() string {
	out := s.out.String()
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return strings.TrimSpace(redact.String(out, s.url))
}
