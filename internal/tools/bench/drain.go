package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// drainResult is one client draining the backlog.
type drainResult struct {
	received  time.Duration // from start until the last backlog transaction arrived
	stored    time.Duration // until its end LSN was stored (the sidecar only)
	first     time.Duration // until the first transaction arrived: the start's cost (the sidecar only)
	clientCPU time.Duration
	serverCPU time.Duration // the walsender's
	flushes   int
	flushTime time.Duration // summed flush transaction time
	bytes     int64         // pgoutput message bytes received (pg_recvlogical and the stream alone)
}

// countingWriter counts what pg_recvlogical writes: the messages it received, each followed
// by a newline.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func (b *bench) drainSection(ctx context.Context) error {
	largest := slices.Max(b.cfg.DrainPlays)
	for _, n := range b.cfg.DrainPlays {
		if err := b.drain(ctx, n, n == largest && b.cfg.CPUProfile != ""); err != nil {
			return err
		}
	}
	return nil
}

// drain measures one backlog: every slot is made at the same point, the backlog is written,
// then pg_recvlogical, replication.Stream alone, the sidecar and pg_recvlogical again drain it
// one after the other, each from its own slot. The sidecar is compared with the mean of the
// two pg_recvlogical drains around it: on a shared VM the server's pace drifts between runs,
// and one reference before the sidecar carried all of that drift into the ratio.
func (b *bench) drain(ctx context.Context, n int, profile bool) error {
	name, url, host, err := b.clone(ctx, fmt.Sprintf("drain%d", n))
	if err != nil {
		return err
	}
	defer b.drop(ctx, name)
	slot, refSlot, rawSlot, afterSlot, floorSlot := name, name+"_ref", name+"_raw", name+"_ref2", name+"_floor"

	// The sidecar makes its slot, publication and stored position, then stops; the
	// reference slot starts at the same point.
	sc := StartSidecar(ctx, url, slot, time.Second, NewRecorder(false), b.log)
	if err := sc.WaitStreaming(ctx); err != nil {
		_ = sc.Stop()
		return fmt.Errorf("start sidecar: %w", err)
	}
	if err := sc.Stop(); err != nil {
		return fmt.Errorf("stop sidecar: %w", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range []string{refSlot, rawSlot, afterSlot, floorSlot} {
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", s); err != nil {
			return fmt.Errorf("create slot %s: %w", s, err)
		}
	}
	// The reference reads whole rows of the same tables, as a consumer without column lists
	// would: what the sidecar saves the primary shows against it.
	wholeRows := name + "_whole"
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update')",
		pgx.Identifier{wholeRows}.Sanitize(), strings.Join(pipeline.StreamPlan().TableNames(), ", "))); err != nil {
		return fmt.Errorf("create the whole-row publication: %w", err)
	}
	// An empty publication: the walsender decodes every record and sends only BEGIN and
	// COMMIT, the floor of its work that no publication setting can lower.
	nothing := name + "_nothing"
	if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{nothing}.Sanitize()); err != nil {
		return fmt.Errorf("create the empty publication: %w", err)
	}

	b.progress("drain %s: writing the backlog (%d-row transactions)", count(int64(n)), b.cfg.DrainTxRows)
	var startLSN, endLSN pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&startLSN); err != nil {
		return fmt.Errorf("read WAL position: %w", err)
	}
	load, err := host.Backlog(ctx, url, n, b.cfg.DrainTxRows, b.cfg.DrainWriters)
	if err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&endLSN); err != nil {
		return fmt.Errorf("read WAL position: %w", err)
	}

	var ref, after drainResult
	path := b.recvlogical()
	haveRef := path != ""
	loadBefore := loadAverage()
	if haveRef {
		b.progress("drain %s: pg_recvlogical", count(int64(n)))
		ref, err = b.drainReference(ctx, path, url, refSlot, wholeRows, endLSN)
		if err != nil {
			return err
		}
	}
	b.progress("drain %s: replication.Stream alone", count(int64(n)))
	raw, err := b.drainStreamOnly(ctx, url, rawSlot, slot, int64(n))
	if err != nil {
		return err
	}
	for _, s := range []string{refSlot, rawSlot} {
		if err := dropSlot(ctx, conn, s); err != nil {
			return err
		}
	}
	b.progress("drain %s: challenge-stream", count(int64(n)))
	side, err := b.drainSidecar(ctx, url, slot, int64(n), profile)
	if err != nil {
		return err
	}
	if haveRef {
		b.progress("drain %s: pg_recvlogical again", count(int64(n)))
		after, err = b.drainReference(ctx, path, url, afterSlot, wholeRows, endLSN)
		if err != nil {
			return err
		}
	}
	var floor drainResult
	if haveRef {
		b.progress("drain %s: pg_recvlogical on an empty publication", count(int64(n)))
		if floor, err = b.drainReference(ctx, path, url, floorSlot, nothing, endLSN); err != nil {
			return err
		}
	}
	for _, s := range []string{afterSlot, floorSlot} {
		if err := dropSlot(ctx, conn, s); err != nil {
			return err
		}
	}
	if err := b.verify(ctx, url, fmt.Sprintf("drain %d", n)); err != nil {
		return err
	}

	perSec := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	what := fmt.Sprintf("drain %s plays (%s tx of %d): plays/s until received", count(int64(n)),
		count(int64(load.Transactions)), b.cfg.DrainTxRows)
	row := Row{Section: "drain", Measure: what,
		Sidecar: fmt.Sprintf("%s (%s)", rate(perSec(side.received)), seconds(side.received)),
		Target:  ">= 0.95"}
	stored := Row{Section: "drain", Measure: "  ... until the stored LSN passed it (incl. last window)",
		Sidecar: fmt.Sprintf("%s (%s)", rate(perSec(side.stored)), seconds(side.stored)),
		Target:  ">= 1.1"}
	phases := Row{Section: "drain", Measure: "  start → first transaction received; last received → stored",
		Sidecar: fmt.Sprintf("%s; %s", seconds(side.first), seconds(side.stored-side.received))}
	cpu := Row{Section: "drain", Measure: "  CPU: walsender (decoding) + client",
		Sidecar: fmt.Sprintf("%s + %s", seconds(side.serverCPU), seconds(side.clientCPU))}
	walsender := Row{Section: "drain", Measure: "  walsender CPU, vs pg_recvlogical on whole rows",
		Sidecar: seconds(side.serverCPU), Target: "<= 0.7"}
	floorRow := Row{Section: "drain", Measure: "  walsender CPU decoding for an empty publication (the floor), vs whole rows",
		Sidecar: seconds(floor.serverCPU)}
	wire := Row{Section: "drain", Measure: "  bytes on the wire (Stream alone), vs pg_recvlogical on whole rows",
		Sidecar: mb(raw.bytes), Target: "<= 0.3"}
	streamOnly := Row{Section: "drain", Measure: "  replication.Stream alone (no windows, no flushes)",
		Sidecar: fmt.Sprintf("%s (%s), CPU %s + %s", rate(perSec(raw.received)), seconds(raw.received),
			seconds(raw.serverCPU), seconds(raw.clientCPU))}
	if haveRef {
		mean := (ref.received + after.received) / 2
		row.Reference = fmt.Sprintf("%s (%s; %s before, %s after) pg_recvlogical", rate(perSec(mean)), seconds(mean),
			seconds(ref.received), seconds(after.received))
		stored.Reference = row.Reference
		r1 := mean.Seconds() / side.received.Seconds()
		r2 := mean.Seconds() / side.stored.Seconds()
		row.Ratio, row.Met = ratio(r1), yesNo(r1 >= 0.95)
		stored.Ratio, stored.Met = ratio(r2), yesNo(r2 >= 1.1)
		refCPU := (ref.serverCPU + after.serverCPU) / 2
		walsender.Reference = seconds(refCPU)
		if refCPU > 0 {
			r := side.serverCPU.Seconds() / refCPU.Seconds()
			walsender.Ratio, walsender.Met = ratio(r), yesNo(r <= 0.7)
		}
		floorRow.Reference = seconds(refCPU)
		if refCPU > 0 {
			floorRow.Ratio = ratio(floor.serverCPU.Seconds() / refCPU.Seconds())
		}
		refBytes := (ref.bytes + after.bytes) / 2
		wire.Reference = mb(refBytes)
		if refBytes > 0 {
			r := float64(raw.bytes) / float64(refBytes)
			wire.Ratio, wire.Met = ratio(r), yesNo(r <= 0.3)
		}
		cpu.Reference = fmt.Sprintf("%s + %s; %s + %s", seconds(ref.serverCPU), seconds(ref.clientCPU),
			seconds(after.serverCPU), seconds(after.clientCPU))
		streamOnly.Reference = row.Reference
		streamOnly.Ratio = ratio(mean.Seconds() / raw.received.Seconds())
	} else {
		row.Reference = "pg_recvlogical not found"
	}
	b.report.add(row, stored, phases, cpu, walsender, floorRow, wire, streamOnly)
	b.report.note("drain %s: backlog of %s WAL written in %s by %d connections; the sidecar flushed %d windows (%s in flush transactions, overlapping the stream); load average %s before the drains, %s after",
		count(int64(n)), mb(int64(endLSN-startLSN)), seconds(load.Took), b.cfg.DrainWriters, side.flushes, seconds(side.flushTime),
		loadBefore, loadAverage())
	return nil
}

// drainReference runs pg_recvlogical from the reference slot until it passes endLSN. It
// decodes nothing, writes to a pipe that only counts and never fsyncs: the server's decoding
// and the wire are all it measures.
func (b *bench) drainReference(ctx context.Context, path, url, slot, publication string, endLSN pglogrepl.LSN) (drainResult, error) {
	ws := watchWalsender(ctx, url, slot)
	cmd := exec.CommandContext(ctx, path,
		"-d", url, "--slot", slot, "--start", "--no-loop",
		"--plugin", "pgoutput", "-o", "proto_version=1", "-o", "publication_names="+publication,
		"-E", endLSN.String(), "-f", "-", "-F", "0")
	var stderr bytes.Buffer
	var out countingWriter
	cmd.Stderr, cmd.Stdout = &stderr, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	server := ws.stop()
	if err != nil {
		return drainResult{}, fmt.Errorf("pg_recvlogical: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return drainResult{
		received:  took,
		clientCPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(),
		serverCPU: server,
		bytes:     out.n,
	}, nil
}

// drainSidecar runs the pipeline from its stored position until n plays are received and
// stored.
func (b *bench) drainSidecar(ctx context.Context, url, slot string, n int64, profile bool) (drainResult, error) {
	if profile {
		f, err := os.Create(b.cfg.CPUProfile)
		if err != nil {
			return drainResult{}, fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return drainResult{}, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rec := NewRecorder(false)
	ws := watchWalsender(ctx, url, slot)
	defer ws.stop()
	cpu0 := cpuTime()
	start := time.Now()
	sc := StartSidecar(ctx, url, slot, time.Second, rec, b.log)
	defer sc.Stop()
	var res drainResult
	if err := sc.WaitReceived(ctx, 1); err != nil {
		return res, fmt.Errorf("sidecar: %w", err)
	}
	res.first = time.Since(start)
	if err := sc.WaitReceived(ctx, n); err != nil {
		return res, fmt.Errorf("sidecar: %w", err)
	}
	res.received = time.Since(start)
	if err := sc.WaitApplied(ctx, n); err != nil {
		return res, fmt.Errorf("sidecar: %w", err)
	}
	res.stored = time.Since(start)
	res.clientCPU = cpuTime() - cpu0
	res.serverCPU = ws.sample()
	for _, f := range rec.Flushes() {
		res.flushes++
		res.flushTime += f.Result.Duration
	}
	if err := sc.Stop(); err != nil {
		return res, fmt.Errorf("sidecar: %w", err)
	}
	return res, nil
}

// drainStreamOnly reads the backlog with replication.Stream alone — the sidecar's receive and
// decode path without windows, flushes or the flush's database work — from a third slot made
// at the same point. It separates the cost of the stream from the cost of applying it.
func (b *bench) drainStreamOnly(ctx context.Context, url, slot, publication string, n int64) (drainResult, error) {
	ws := watchWalsender(ctx, url, slot)
	defer ws.stop()
	cpu0 := cpuTime()
	start := time.Now()
	database, err := pgconn.ParseConfig(url)
	if err != nil {
		return drainResult{}, err
	}
	conn, err := replication.Connect(ctx, database)
	if err != nil {
		return drainResult{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// 0/0 starts at the new slot's confirmed position: its creation point.
	stream, err := replication.Start(ctx, conn, slot, publication, pipeline.StreamPlan(), 0, b.log)
	if err != nil {
		return drainResult{}, err
	}
	tables := pipeline.StreamPlan().TableNames()
	var plays int64
	for plays < n {
		msg, err := stream.Next(time.Now().Add(10 * time.Second))
		if err != nil {
			return drainResult{}, fmt.Errorf("stream: %w", err)
		}
		switch msg.Kind {
		case replication.MessageTransaction:
			plays += int64(pipeline.TransactionReceived{Tx: msg.Transaction, Tables: tables}.Rows("plays"))
		case replication.MessageKeepalive:
			if msg.ReplyRequested {
				if err := stream.SendStatus(0, false); err != nil {
					return drainResult{}, err
				}
			}
		case replication.MessageTimeout:
			return drainResult{}, fmt.Errorf("stream: nothing for 10s after %d plays", plays)
		}
	}
	return drainResult{received: time.Since(start), clientCPU: cpuTime() - cpu0, serverCPU: ws.sample(), bytes: stream.Bytes()}, nil
}

// dropSlot drops a slot whose client has gone. The walsender that served it exits a moment
// after the client closes its connection, and the slot stays active until it has.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("drop slot %s: %w", slot, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
