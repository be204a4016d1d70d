package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// recorder remembers what the pipeline told it.
type recorder struct {
	mu           sync.Mutex
	state        pipeline.State
	transactions int
	plays        int
	flushes      []pipeline.Flushed
	recreated    []string
}

func (r *recorder) observe(e pipeline.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e := e.(type) {
	case pipeline.StateChanged:
		r.state = e.State
	case pipeline.TransactionReceived:
		r.transactions++
		r.plays += e.Rows("plays")
	case pipeline.Flushed:
		r.flushes = append(r.flushes, e)
	case pipeline.SlotRecreated:
		r.recreated = append(r.recreated, e.Reason)
	}
}

func (r *recorder) get() (state pipeline.State, transactions, plays int, flushes []pipeline.Flushed, recreated []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, r.transactions, r.plays, append([]pipeline.Flushed(nil), r.flushes...), append([]string(nil), r.recreated...)
}

// env is one test's database plus helpers to write host rows and run the sidecar.
type env struct {
	t   *testing.T
	ctx context.Context
	db  *pgtest.DB
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	return newEnv(t)
}

// newEnv is setup for a second database in the same test.
func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, ctx: t.Context(), db: pgtest.NewDB(t)}
}

// sidecar is a pipeline.Run in the background.
type sidecar struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	obs    *recorder
}

// config is the test configuration: fast status updates so idle confirms and waits are quick.
func (e *env) config() pipeline.Config {
	return pipeline.Config{
		Database:         e.db.ConnConfig(e.t),
		Slot:             e.db.Slot,
		Publication:      e.db.Publication,
		Window:           100 * time.Millisecond,
		StatusInterval:   100 * time.Millisecond,
		RetryMaxInterval: 200 * time.Millisecond,
		IdleConfirmBytes: 1, // confirm any movement, so caughtUp can wait for the insert position
		Log:              zaptest.NewLogger(e.t).Named(e.db.Slot),
	}
}

// start runs the sidecar until the test stops it (or ends).
func (e *env) start(mutate ...func(*pipeline.Config)) *sidecar {
	e.t.Helper()
	cfg := e.config()
	for _, m := range mutate {
		m(&cfg)
	}
	obs := &recorder{}
	cfg.Observe = obs.observe
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecar{t: e.t, cancel: cancel, done: make(chan error, 1), obs: obs}
	go func() { s.done <- pipeline.Run(ctx, cfg) }()
	e.t.Cleanup(func() { s.stopQuietly() })
	return s
}

// streamingArtist adds a verified artist with one track, starts the sidecar and waits until it
// streams.
func (e *env) streamingArtist(artist, track int64, mutate ...func(*pipeline.Config)) *sidecar {
	e.t.Helper()
	e.artist(artist, true)
	e.track(track, artist)
	s := e.start(mutate...)
	s.waitStreaming()
	return s
}

// playsApplied inserts n plays of a track and waits until the sidecar has stored past them.
func (e *env) playsApplied(trackID, n int64) {
	e.t.Helper()
	e.plays(trackID, n)
	e.caughtUp()
}

// restart stops the sidecar cleanly and starts a new one, waiting until it streams.
func (e *env) restart(s *sidecar, mutate ...func(*pipeline.Config)) *sidecar {
	e.t.Helper()
	s.stop()
	s = e.start(mutate...)
	s.waitStreaming()
	return s
}

// stop cancels the sidecar (a SIGTERM) and requires a clean exit.
func (s *sidecar) stop() {
	s.t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		require.NoError(s.t, err)
		s.done <- nil
	case <-time.After(30 * time.Second):
		s.t.Fatal("sidecar did not stop within 30s")
	}
}

func (s *sidecar) stopQuietly() {
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(30 * time.Second):
	}
}

// waitStreaming waits until the sidecar streams.
func (s *sidecar) waitStreaming() {
	s.t.Helper()
	eventually(s.t, "sidecar streaming", func() bool {
		state, _, _, _, _ := s.obs.get()
		return state == pipeline.StateStreaming
	})
}

// requireRecreated waits until the sidecar has recreated the slot as often as reasons lists
// and requires those reasons, in order.
func (s *sidecar) requireRecreated(reasons ...string) {
	s.t.Helper()
	eventually(s.t, "the slot recreated", func() bool {
		_, _, _, _, recreated := s.obs.get()
		return len(recreated) >= len(reasons)
	})
	_, _, _, _, recreated := s.obs.get()
	require.Equal(s.t, reasons, recreated)
}

// eventually polls cond until it holds or a minute passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) exec(sql string, args ...any) { e.t.Helper(); e.db.Exec(e.t, sql, args...) }

func (e *env) count(sql string, args ...any) int64 {
	e.t.Helper()
	return e.db.QueryInt(e.t, sql, args...)
}

func (e *env) artist(id int64, verified bool) {
	e.t.Helper()
	require.NoError(e.t, hostdb.AddUser(e.ctx, e.db.Pool, id, verified))
}

func (e *env) track(trackID, owner int64) {
	e.t.Helper()
	require.NoError(e.t, hostdb.AddTrack(e.ctx, e.db.Pool, trackID, owner))
}

var in2025 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func (e *env) plays(trackID, n int64) {
	e.t.Helper()
	require.NoError(e.t, hostdb.InsertPlays(e.ctx, e.db.Pool, trackID, n, in2025))
}

func (e *env) comment(commentID, userID int64, at time.Time, block int64) {
	e.t.Helper()
	require.NoError(e.t, hostdb.InsertComment(e.ctx, e.db.Pool, commentID, userID, at, block))
}

// storedLSN is the LSN the sidecar stored with its last flush (0 before the first).
func (e *env) storedLSN() pglogrepl.LSN {
	e.t.Helper()
	lsn, _, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
	if err != nil {
		return 0 // the state table does not exist before the sidecar's migrations ran
	}
	return lsn
}

// currentLSN is the server's WAL insert position: past every commit made so far (the write
// position can trail a commit made with synchronous_commit = off).
func (e *env) currentLSN() pglogrepl.LSN {
	e.t.Helper()
	var s string
	require.NoError(e.t, e.db.Pool.QueryRow(e.ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s))
	lsn, err := pglogrepl.ParseLSN(s)
	require.NoError(e.t, err)
	return lsn
}

// caughtUp waits until the sidecar has stored a position past everything written so far.
func (e *env) caughtUp() {
	e.t.Helper()
	target := e.currentLSN()
	eventually(e.t, "stored LSN to reach "+target.String(), func() bool { return e.storedLSN() >= target })
}

// verified requires that a from-scratch recompute finds no difference.
func (e *env) verified() {
	e.t.Helper()
	diffs, err := processors.Verify(e.ctx, e.db.Pool)
	require.NoError(e.t, err)
	require.Empty(e.t, diffs)
}

// row returns a user_challenges row's step count and completion ("" specifier → absent).
func (e *env) row(challenge, specifier string) (current int64, complete bool, found bool) {
	e.t.Helper()
	err := e.db.Pool.QueryRow(e.ctx, `SELECT current_step_count, is_complete FROM user_challenges
		WHERE challenge_id = $1 AND specifier = $2`, challenge, specifier).Scan(&current, &complete)
	if err != nil {
		return 0, false, false
	}
	return current, complete, true
}

func (e *env) requireRow(challenge, specifier string, current int64, complete bool) {
	e.t.Helper()
	got, gotComplete, found := e.row(challenge, specifier)
	require.True(e.t, found, "row %s %s missing", challenge, specifier)
	require.Equal(e.t, current, got, "%s %s current_step_count", challenge, specifier)
	require.Equal(e.t, complete, gotComplete, "%s %s is_complete", challenge, specifier)
}
