package bench

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/internal/tools/pollingjob"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/processors"
)

// countWritesSQL counts the rows written to user_challenges, per statement (transition
// tables), and leaves the host's own trigger alone.
const countWritesSQL = `
CREATE TABLE bench_writes (op text NOT NULL, n bigint NOT NULL);
CREATE FUNCTION bench_count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_writes SELECT TG_OP, count(*) FROM new_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_count_inserts AFTER INSERT ON user_challenges
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bench_count_writes();
CREATE TRIGGER bench_count_updates AFTER UPDATE ON user_challenges
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bench_count_writes();`

type writeCounts struct{ inserts, updates, notifications int64 }

func (w writeCounts) sub(o writeCounts) writeCounts {
	return writeCounts{w.inserts - o.inserts, w.updates - o.updates, w.notifications - o.notifications}
}

func (w writeCounts) writes() int64 { return w.inserts + w.updates }

func readWrites(ctx context.Context, conn *pgx.Conn) (writeCounts, error) {
	var w writeCounts
	err := conn.QueryRow(ctx, `SELECT
    (SELECT COALESCE(SUM(n), 0) FROM bench_writes WHERE op = 'INSERT')::bigint,
    (SELECT COALESCE(SUM(n), 0) FROM bench_writes WHERE op = 'UPDATE')::bigint,
    (SELECT count(*) FROM notification)`).Scan(&w.inserts, &w.updates, &w.notifications)
	if err != nil {
		return w, fmt.Errorf("count writes: %w", err)
	}
	return w, nil
}

// writesSection streams a steady load through the sidecar on one copy of the database, then
// replays the same blocks on a second copy window by window — the same windows, so the same
// dirty artists and commenters — writing with pollingjob.UpsertReference, and compares the
// rows each wrote to user_challenges.
func (b *bench) writesSection(ctx context.Context) error {
	b.progress("writes: %s plays/s for %s, then the same windows with the reference upsert", rate(b.cfg.Rate), b.cfg.Duration)
	nameA, urlA, hostA, err := b.clone(ctx, "writes_skip")
	if err != nil {
		return err
	}
	defer b.drop(ctx, nameA)
	nameB, urlB, _, err := b.clone(ctx, "writes_ref")
	if err != nil {
		return err
	}
	defer b.drop(ctx, nameB)
	connA, err := pgx.Connect(ctx, urlA)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer connA.Close(context.WithoutCancel(ctx))
	connB, err := pgx.Connect(ctx, urlB)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer connB.Close(context.WithoutCancel(ctx))
	for _, c := range []*pgx.Conn{connA, connB} {
		if _, err := c.Exec(ctx, countWritesSQL); err != nil {
			return fmt.Errorf("install write counter: %w", err)
		}
	}

	rec := NewRecorder(true)
	sc := StartSidecar(ctx, urlA, nameA, time.Second, rec, b.log)
	defer sc.Stop()
	if err := sc.WaitStreaming(ctx); err != nil {
		return fmt.Errorf("start sidecar: %w", err)
	}
	before, err := readWrites(ctx, connA)
	if err != nil {
		return err
	}
	var (
		blocks  []workload.Applied
		plays   int
		elapsed = time.Now()
	)
	err = hostA.Drive(ctx, connA, b.traffic(b.cfg.Rate), b.cfg.Duration, func(a workload.Applied) {
		blocks = append(blocks, a)
		plays += len(a.Block.Plays)
	})
	if err != nil {
		return err
	}
	if err := sc.WaitApplied(ctx, int64(plays)); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	if err := sc.Stop(); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	elapsedA := time.Since(elapsed)
	after, err := readWrites(ctx, connA)
	if err != nil {
		return err
	}
	skip := after.sub(before)
	var sentA int64
	for _, f := range rec.Flushes() {
		t := f.Result.Stats.Total()
		sentA += int64(t.Total())
	}

	windows, err := groupWindows(blocks, rec.Transactions(), rec.Flushes())
	if err != nil {
		return err
	}
	before, err = readWrites(ctx, connB)
	if err != nil {
		return err
	}
	for _, w := range windows {
		if err := replayWindow(ctx, connB, w); err != nil {
			return err
		}
	}
	after, err = readWrites(ctx, connB)
	if err != nil {
		return err
	}
	ref := after.sub(before)
	if err := b.verify(ctx, urlA, "writes (skip)"); err != nil {
		return err
	}
	if err := b.verify(ctx, urlB, "writes (reference)"); err != nil {
		return err
	}

	per1k := func(n int64) float64 { return float64(n) * 1000 / float64(max(plays, 1)) }
	row := Row{
		Section:   "writes",
		Measure:   fmt.Sprintf("user_challenges rows written per 1,000 plays (%s plays, %d windows)", count(int64(plays)), len(windows)),
		Sidecar:   fmt.Sprintf("%.1f (%s ins + %s upd)", per1k(skip.writes()), count(skip.inserts), count(skip.updates)),
		Reference: fmt.Sprintf("%.1f (%s ins + %s upd) UpsertReference", per1k(ref.writes()), count(ref.inserts), count(ref.updates)),
		Target:    "fewer",
		Met:       yesNo(skip.writes() < ref.writes()),
	}
	if skip.writes() > 0 {
		row.Ratio = ratio(float64(skip.writes()) / float64(ref.writes()))
	}
	notes := Row{
		Section:   "writes",
		Measure:   "  notifications (host trigger) per 1,000 plays",
		Sidecar:   fmt.Sprintf("%.1f", per1k(skip.notifications)),
		Reference: fmt.Sprintf("%.1f", per1k(ref.notifications)),
	}
	if ref.notifications > 0 {
		notes.Ratio = ratio(float64(skip.notifications) / float64(ref.notifications))
	}
	b.report.add(row, notes)
	b.report.note("writes: %s plays at %s plays/s streamed in %s; the sidecar's flushes sent %s rows to the upsert, so the reference would write %.1f per 1,000 plays on the very same windows (the replay measured %.1f)",
		count(int64(plays)), rate(b.cfg.Rate), seconds(elapsedA), count(sentA), per1k(sentA), per1k(ref.writes()))
	return nil
}

// replayedWindow is one of the sidecar's windows: the blocks that committed in it and the IDs
// its transactions made dirty.
type replayedWindow struct {
	blocks             []workload.Block
	tracks, commenters []int64
}

// groupWindows assigns each block to the flush that stored its transaction.
func groupWindows(blocks []workload.Applied, txs []Tx, flushes []Flush) ([]replayedWindow, error) {
	byPlayID := map[int64]Tx{}
	byBlock := map[int64]Tx{}
	for _, t := range txs {
		if t.MaxPlayID > 0 {
			byPlayID[t.MaxPlayID] = t
		}
		if t.MaxBlock > 0 {
			byBlock[t.MaxBlock] = t
		}
	}
	lsns := make([]pglogrepl.LSN, 0, len(flushes))
	for _, f := range flushes {
		lsns = append(lsns, f.LSN)
	}
	slices.Sort(lsns)
	windows := map[int]*replayedWindow{}
	for _, a := range blocks {
		t, ok := byPlayID[a.Written.MaxPlayID]
		if a.Written.MaxPlayID == 0 || !ok {
			t, ok = byBlock[a.Block.Number]
		}
		if !ok {
			return nil, fmt.Errorf("block %d never arrived on the stream", a.Block.Number)
		}
		i := sort.Search(len(lsns), func(i int) bool { return lsns[i] >= t.EndLSN })
		if i == len(lsns) {
			return nil, fmt.Errorf("block %d was never flushed", a.Block.Number)
		}
		w := windows[i]
		if w == nil {
			w = &replayedWindow{}
			windows[i] = w
		}
		w.blocks = append(w.blocks, a.Block)
		w.tracks = append(w.tracks, t.Tracks...)
		w.commenters = append(w.commenters, t.Commenters...)
	}
	idx := make([]int, 0, len(windows))
	for i := range windows {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]replayedWindow, 0, len(idx))
	for _, i := range idx {
		w := windows[i]
		slices.Sort(w.tracks)
		slices.Sort(w.commenters)
		w.tracks = slices.Compact(w.tracks)
		w.commenters = slices.Compact(w.commenters)
		out = append(out, *w)
	}
	return out, nil
}

// replayWindow writes a window's blocks, then applies the window as the polling job's upsert
// would: the same rows as a flush, every one of them written.
func replayWindow(ctx context.Context, conn *pgx.Conn, w replayedWindow) error {
	for _, blk := range w.blocks {
		if _, err := workload.Write(ctx, conn, blk); err != nil {
			return err
		}
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		cat, err := processors.LoadCatalog(ctx, tx)
		if err != nil {
			return err
		}
		artists, err := processors.ArtistsForTracks(ctx, tx, w.tracks)
		if err != nil {
			return err
		}
		rows, err := processors.MilestoneRows(ctx, tx, cat, artists)
		if err != nil {
			return err
		}
		comments, err := processors.WeeklyCommentRows(ctx, tx, cat, w.commenters)
		if err != nil {
			return err
		}
		return pollingjob.UpsertReference(ctx, tx, append(rows, comments...))
	})
}
