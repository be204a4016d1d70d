package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

type memoryRun struct {
	rows               int64
	baseline, peak     int64 // RSS bytes
	heapBase, heapPeak uint64
	peakReset          bool
	insert, stream     time.Duration
	distinctTracks     int64
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
		heap := int64(r.heapPeak) - int64(r.heapBase)
		b.report.add(Row{
			Section: "memory",
			Measure: fmt.Sprintf("peak RSS, one %s-row transaction (%s distinct tracks)", count(r.rows), count(r.distinctTracks)),
			Sidecar: fmt.Sprintf("%s (%s over %s; heap %s)", mb(r.peak), signedMB(r.peak-r.baseline), mb(r.baseline), signedMB(heap)),
			Target:  "O(IDs), not O(rows)",
		})
		if !r.peakReset {
			b.report.note("memory: /proc/self/clear_refs was not writable, so the peak RSS includes everything before the transaction")
		}
		b.report.note("memory %s rows: inserted in %s, streamed and stored in %s", count(r.rows), seconds(r.insert), seconds(r.stream))
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

func (b *bench) memory(ctx context.Context, rows int64) (memoryRun, error) {
	r := memoryRun{rows: rows, distinctTracks: min(rows, b.host.Tracks())}
	name, url, host, err := b.clone(ctx, fmt.Sprintf("mem%d", rows))
	if err != nil {
		return r, err
	}
	defer b.drop(ctx, name)
	rec := NewRecorder(false)
	sc := StartSidecar(ctx, url, name, time.Second, rec, b.log)
	defer sc.Stop()
	if err := sc.WaitStreaming(ctx); err != nil {
		return r, fmt.Errorf("start sidecar: %w", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return r, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	settle()
	if r.baseline, err = procStatusKB("VmRSS"); err != nil {
		return r, err
	}
	r.peakReset = resetPeakRSS()
	r.heapBase = heapNow()
	hw := watchHeap()
	defer hw.stop()

	// The server makes the rows: this process holds nothing of them while they are written.
	if r.insert, err = host.BigTransaction(ctx, conn, rows); err != nil {
		return r, err
	}
	start := time.Now()
	if err := sc.WaitApplied(ctx, rows); err != nil {
		return r, fmt.Errorf("sidecar: %w", err)
	}
	r.stream = time.Since(start)
	r.heapPeak = hw.stop()
	if r.peak, err = procStatusKB("VmHWM"); err != nil {
		return r, err
	}
	if err := sc.Stop(); err != nil {
		return r, fmt.Errorf("sidecar: %w", err)
	}
	if err := b.verify(ctx, url, fmt.Sprintf("memory %d", rows)); err != nil {
		return r, err
	}
	return r, nil
}
