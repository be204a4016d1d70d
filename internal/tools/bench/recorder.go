package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// Flush is one committed flush as the recorder saw it.
type Flush struct {
	Start, Commit time.Time // the flush transaction ran within [Start, Commit]
	LSN           pglogrepl.LSN
	Result        pipeline.Flushed
}

// Tx is one received transaction.
type Tx struct {
	EndLSN     pglogrepl.LSN
	CommitTime time.Time
	ReceivedAt time.Time
	MaxPlayID  int64 // 0 without plays
	MaxBlock   int64 // highest comments.blocknumber, 0 without comments
	Plays      int
	CumPlays   int64 // plays received up to and including this transaction
	// Tracks and Commenters are copies of the transaction's IDs, kept only when the recorder
	// was made with keepIDs.
	Tracks, Commenters []int64
}

// Recorder observes a pipeline (Observe) and keeps what the benchmarks and the demo measure. Its
// methods are cheap and never block the pipeline for long; readers take the same lock.
type Recorder struct {
	keepIDs bool

	mu           sync.Mutex
	state        pipeline.State
	txs          []Tx
	plays        int64 // received
	flushes      []Flush
	flushed      pglogrepl.LSN
	appliedPlays int64 // plays of transactions ending at or before flushed
	applied      int   // index into txs of the first transaction not yet applied
	received     pglogrepl.LSN
	walEnd       pglogrepl.LSN
	reconnects   int
	lastErr      error
	changed      chan struct{} // closed and replaced whenever something changes
}

// NewRecorder returns a recorder; keepIDs keeps every transaction's track and commenter IDs
// (the write amplification benchmark replays them).
func NewRecorder(keepIDs bool) *Recorder {
	return &Recorder{keepIDs: keepIDs, changed: make(chan struct{})}
}

func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Observe records a pipeline event (pipeline.Config.Observe).
func (r *Recorder) Observe(e pipeline.Event) {
	switch e := e.(type) {
	case pipeline.StateChanged:
		r.stateChanged(e.State)
	case pipeline.TransactionReceived:
		r.transactionReceived(e)
	case pipeline.Flushed:
		r.flushDone(e)
	case pipeline.StatusSent:
		r.mu.Lock()
		r.received, r.walEnd = e.Received, e.ServerWALEnd
		r.mu.Unlock()
	case pipeline.Reconnecting:
		r.mu.Lock()
		r.reconnects++
		r.lastErr = e.Err
		r.mu.Unlock()
	}
}

func (r *Recorder) stateChanged(s pipeline.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = s
	r.notifyLocked()
}

func (r *Recorder) transactionReceived(e pipeline.TransactionReceived) {
	now := time.Now()
	tx := e.Tx
	r.mu.Lock()
	defer r.mu.Unlock()
	plays := e.Rows("plays")
	r.plays += int64(plays)
	t := Tx{EndLSN: tx.EndLSN, CommitTime: tx.CommitTime, ReceivedAt: now, Plays: plays, CumPlays: r.plays}
	t.MaxPlayID, _ = e.Max(checkpoints.PlaysCheckpoint)
	t.MaxBlock, _ = e.Max(checkpoints.CommentsCheckpoint)
	if r.keepIDs {
		t.Tracks = keys(e.Keys("milestones", "tracks"))
		t.Commenters = keys(e.Keys("comments", "users"))
	}
	r.txs = append(r.txs, t)
	r.notifyLocked()
}

func keys(set map[int64]struct{}) []int64 {
	out := make([]int64, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	return out
}

func (r *Recorder) flushDone(res pipeline.Flushed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushes = append(r.flushes, Flush{Start: res.CommittedAt.Add(-res.Duration), Commit: res.CommittedAt, LSN: res.LSN, Result: res})
	if res.LSN > r.flushed {
		r.flushed = res.LSN
	}
	for r.applied < len(r.txs) && r.txs[r.applied].EndLSN <= r.flushed {
		r.appliedPlays = r.txs[r.applied].CumPlays
		r.applied++
	}
	r.notifyLocked()
}

// Snapshot is a consistent copy of the recorder's counters.
type Snapshot struct {
	State          pipeline.State
	PlaysReceived  int64
	PlaysApplied   int64
	Transactions   int
	Flushes        int
	FlushedLSN     pglogrepl.LSN
	LastFlush      Flush
	Reconnects     int
	LastReconnect  error
	PendingCommits int // received transactions not yet applied
}

// Snapshot returns the current counters.
func (r *Recorder) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{
		State: r.state, PlaysReceived: r.plays, PlaysApplied: r.appliedPlays, Transactions: len(r.txs),
		Flushes: len(r.flushes), FlushedLSN: r.flushed, Reconnects: r.reconnects, LastReconnect: r.lastErr,
		PendingCommits: len(r.txs) - r.applied,
	}
	if len(r.flushes) > 0 {
		s.LastFlush = r.flushes[len(r.flushes)-1]
	}
	return s
}

// Flushes returns a copy of the flushes so far.
func (r *Recorder) Flushes() []Flush {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Flush(nil), r.flushes...)
}

// Transactions returns a copy of the received transactions so far.
func (r *Recorder) Transactions() []Tx {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Tx(nil), r.txs...)
}

// errExited means the pipeline returned while a wait was pending.
var errExited = errors.New("pipeline stopped")

// wait blocks until pred (called under the lock) holds, ctx ends or exited is closed.
func (r *Recorder) wait(ctx context.Context, exited <-chan struct{}, pred func() bool) error {
	for {
		r.mu.Lock()
		ok, ch := pred(), r.changed
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errExited
		case <-ch:
		}
	}
}

// Sidecar is an in-process pipeline.Run: start it, wait on its recorder, stop it. The demo
// and the benchmarks run the real pipeline this way.
type Sidecar struct {
	rec    *Recorder
	cancel context.CancelFunc
	exited chan struct{}
	err    error // Run's result, set before exited closes
}

// StartSidecar runs the pipeline on the database until Stop, reporting to rec. Slot and
// publication are both named slot. Stop must be called.
func StartSidecar(ctx context.Context, databaseURL, slot string, window time.Duration, rec *Recorder, log *zap.Logger) *Sidecar {
	runCtx, cancel := context.WithCancel(ctx)
	s := &Sidecar{rec: rec, cancel: cancel, exited: make(chan struct{})}
	database, err := pgx.ParseConfig(databaseURL)
	cfg := pipeline.Config{
		Database: database, Slot: slot, Publication: slot, Window: window,
		Log: log, Observe: rec.Observe,
	}
	go func() {
		defer close(s.exited)
		if err != nil {
			s.err = fmt.Errorf("parse database URL: %w", err)
			return
		}
		s.err = pipeline.Run(runCtx, cfg)
	}()
	return s
}

// Stop cancels the pipeline, which flushes what it holds and confirms, waits for it and
// returns what Run returned. Calling it again returns the same.
func (s *Sidecar) Stop() error {
	s.cancel()
	<-s.exited
	return s.err
}

// Exited is closed when Run has returned (after Stop, or on a permanent error).
func (s *Sidecar) Exited() <-chan struct{} { return s.exited }

// WaitStreaming waits until the pipeline streams (after its start-up catch-up).
func (s *Sidecar) WaitStreaming(ctx context.Context) error {
	return s.wrap(s.rec.wait(ctx, s.exited, func() bool { return s.rec.state == pipeline.StateStreaming }))
}

// WaitApplied waits until the plays received so far reach n and are all applied: the stored
// LSN has passed the transaction that brought the n-th play.
func (s *Sidecar) WaitApplied(ctx context.Context, n int64) error {
	return s.wrap(s.rec.wait(ctx, s.exited, func() bool { return s.rec.appliedPlays >= n }))
}

// WaitReceived waits until n plays have been received.
func (s *Sidecar) WaitReceived(ctx context.Context, n int64) error {
	return s.wrap(s.rec.wait(ctx, s.exited, func() bool { return s.rec.plays >= n }))
}

func (s *Sidecar) wrap(err error) error {
	if errors.Is(err, errExited) && s.err != nil {
		return s.err
	}
	return err
}
