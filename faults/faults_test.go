package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/internal/tools/testbin"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
)

// binary is the challenge-stream executable built for this test run.
var binary string

// TestMain builds the binary and gives this package its own cluster: the suite restarts it.
func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// fault is one kind of thing the suite breaks. inject returns once the fault is over (a stall
// lifted, a lock released, a restarted server up); the sidecar's recovery is awaited afterwards.
type fault struct {
	name   string
	inject func(s *suite, rng *rand.Rand) error
}

func faultKinds() []fault {
	return []fault{
		{"kill -9 of the sidecar", (*suite).kill9},
		{"kill -9 between flush commit and confirm", (*suite).failpoint},
		{"postgres immediate restart", (*suite).restartPostgres},
		{"postgres fast restart", (*suite).fastRestart},
		{"postgres smart restart", (*suite).smartRestart},
		{"terminate the walsender", (*suite).terminateWalsender},
		{"terminate the flush connection", (*suite).terminateFlush},
		{"proxy cuts all connections", (*suite).proxyCut},
		{"proxy stalls all connections", (*suite).proxyStall},
		{"black hole until the server drops the walsender", (*suite).blackHole},
		{"locks on user_challenges rows", (*suite).lockRewards},
		{"polling reference runs concurrently", (*suite).concurrentCatchUp},
		{"flush cancelled (pg_cancel_backend)", (*suite).cancelFlush},
		{"flush hits statement_timeout", (*suite).flushTimeout},
		{"flush deadlocks with a row-lock holder", (*suite).deadlockFlush},
		{"flush fails while the sidecar stops", (*suite).stopDuringFailedFlush},
		{"commits held in SyncRep", (*suite).holdInSyncRep},
		{"kill -9 inside a streamed transaction", (*suite).killInStreamedTransaction},
		{"streamed transaction rolled back", (*suite).abortStreamedTransaction},
		{"publication dropped (and recreated) under traffic", (*suite).dropPublication},
	}
}

// suite is one run of the fault loop and everything it breaks.
type suite struct {
	t       *testing.T
	ctx     context.Context
	db      *pgtest.DB
	cluster *pgcluster.Cluster
	proxy   *proxy
	sc      *supervisor
	pool    *pgxpool.Pool // direct to Postgres, for the faults and checks
	// firstXid is the server's full transaction id when the suite started.
	firstXid uint64

	mu    sync.Mutex
	notes []string
}

func (s *suite) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.t.Log(msg)
	s.mu.Lock()
	s.notes = append(s.notes, msg)
	s.mu.Unlock()
}

// TestFaultInjection is the suite (see the package documentation).
func TestFaultInjection(t *testing.T) {
	cluster := pgtest.Cluster()
	if cluster == nil {
		t.Skip("the fault suite restarts Postgres: it needs the harness's own cluster, not TEST_DATABASE_URL")
	}
	kinds := faultKinds()
	cycles := envInt(t, "FAULT_CYCLES", len(kinds))
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FAULT_SEED"); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "FAULT_SEED")
	}
	t.Logf("fault suite: seed %d (replay with FAULT_SEED=%d), %d cycles", seed, seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0))

	ctx := t.Context()
	db := newTrafficDB(t)

	s := &suite{t: t, ctx: ctx, db: db, cluster: cluster, pool: db.Pool}
	// The harness starts the cluster past 2³² transactions (pgtest.EpochEnv), so every fault
	// runs where a 32-bit xid is not the whole transaction id; the server's own xid says so.
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&s.firstXid))
	t.Logf("cluster: xid epoch %d, current xid %d (epoch %d)", cluster.XIDEpoch(), s.firstXid, s.firstXid>>32)
	if os.Getenv(pgtest.EpochEnv) != "0" {
		require.GreaterOrEqual(t, cluster.XIDEpoch(), uint32(1), "the cluster's xid epoch (%s=0 runs in epoch 0)", pgtest.EpochEnv)
		require.GreaterOrEqual(t, s.firstXid>>32, uint64(1), "the server's current xid is past epoch 0")
	}
	s.proxy = startProxy(t, fmt.Sprintf("127.0.0.1:%d", cluster.Port()))
	u, err := url.Parse(db.URL)
	require.NoError(t, err)
	u.Host = s.proxy.addr()
	s.sc = startSupervisor(t, []string{"run", "--database-url", u.String(), "--slot", db.Slot,
		"--publication", db.Publication, "--metrics-addr", "off", "--log-level", "debug", "--window", "200ms",
		"--decoding-work-mem", decodingWorkMem})
	s.eventually("the first start to store its position", func() bool {
		_, found, err := checkpoints.LoadLSN(ctx, s.pool, db.Slot)
		return err == nil && found
	})

	inv := s.watchConfirmed()
	defer inv.stop()
	trafficPool, err := pgxpool.New(ctx, db.URL)
	require.NoError(t, err)
	defer trafficPool.Close()
	tr := startTraffic(trafficPool, 2, seed)
	defer tr.stop()
	s.waitProgress()

	started := time.Now()
	survived := map[string]int{}
	var deck []fault
	for cycle := 1; cycle <= cycles; cycle++ {
		// Every kind comes once per round of len(kinds) cycles, in a random order, so even the
		// short CI run breaks everything once.
		if len(deck) == 0 {
			deck = append(deck, kinds...)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		f := deck[0]
		deck = deck[1:]
		pause(ctx, time.Duration(rng.IntN(1500))*time.Millisecond) // a random moment
		t.Logf("cycle %d/%d: %s", cycle, cycles, f.name)
		at := time.Now()
		require.NoError(t, f.inject(s, rng), "cycle %d: inject %s", cycle, f.name)
		s.waitProgress()
		survived[f.name]++
		t.Logf("cycle %d/%d: %s survived (recovered in %s)", cycle, cycles, f.name, time.Since(at).Round(time.Millisecond))
	}

	// Let the traffic run a little longer after the last fault, stop it, then wait until the
	// sidecar has applied everything: a sentinel play, committed last, moves the legacy plays
	// checkpoint only when the flush holding it (and so everything before it) commits.
	pause(ctx, 2*time.Second)
	tr.stop()
	sentinel := s.sentinelPlay()
	s.eventually("the sidecar to apply the last play", func() bool {
		legacy, err := checkpoints.ReadLegacy(ctx, s.pool)
		return err == nil && legacy[checkpoints.PlaysCheckpoint] >= sentinel
	})
	require.NoError(t, s.sc.failed())
	require.True(t, s.sc.running(), "the sidecar runs at the end")
	legacy, err := checkpoints.ReadLegacy(ctx, s.pool)
	require.NoError(t, err)
	var maxBlock int64
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT COALESCE(max(blocknumber), 0) FROM comments`).Scan(&maxBlock))
	require.GreaterOrEqual(t, legacy[checkpoints.CommentsCheckpoint], maxBlock, "the legacy comments checkpoint covers every comment")

	diffs, err := processors.Verify(ctx, s.pool)
	require.NoError(t, err)
	for _, d := range diffs {
		t.Errorf("verify: %s", d)
	}
	s.requireWrittenOnce()

	code, err := s.sc.stop(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, 0, code, "SIGTERM at the end exits 0")
	inv.stop()
	// A recreated slot starts confirmed at its consistent point, which is stored only when the
	// catch-up in its snapshot commits: until then it is ahead of the old stored position, and
	// a crash then finds it so and recreates it again (reason confirmed_ahead).
	newSlots := s.sc.loggedStrings(pipeline.SlotCreatedLog, "consistent_point")
	for _, v := range inv.violations() {
		if slices.Contains(newSlots, v.confirmed.String()) {
			continue
		}
		t.Errorf("confirmed past the stored position: confirmed_flush_lsn %s, stored %s", v.confirmed, v.stored)
	}

	var rows int64
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM user_challenges`).Scan(&rows))
	s.report(seed, cycles, time.Since(started), survived, tr, rows)
}

// newTrafficDB is a test database with the users and tracks the traffic writes to, with every
// registered rule active as in production.
func newTrafficDB(t *testing.T) *pgtest.DB {
	t.Helper()
	ctx := t.Context()
	db := pgtest.NewDB(t)
	require.NoError(t, hostdb.ActivateRules(ctx, db.Pool))
	for _, a := range artists {
		require.NoError(t, hostdb.AddUser(ctx, db.Pool, a, true))
	}
	require.NoError(t, hostdb.AddUser(ctx, db.Pool, unverifiedArtist, false))
	for _, track := range trackIDs() {
		if track != unknownTrack {
			require.NoError(t, hostdb.AddTrack(ctx, db.Pool, track, track/10))
		}
	}
	require.NoError(t, createOneShotArtists(ctx, db.Pool))
	return db
}

// report writes the numbers the README quotes.
func (s *suite) report(seed uint64, cycles int, took time.Duration, survived map[string]int, tr *traffic, rows int64) {
	var b strings.Builder
	outcome := "verify clean, every reward row written once, never confirmed past the stored LSN"
	if s.t.Failed() {
		outcome = "FAILED (see above)"
	}
	fmt.Fprintf(&b, "FAULT SUITE RESULT: seed %d, %d cycles in %s: %s\n", seed, cycles, took.Round(time.Second), outcome)
	names := make([]string, 0, len(survived))
	for name := range survived {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "  %-45s %s\n", "fault", "survived")
	for _, name := range names {
		fmt.Fprintf(&b, "  %-45s %d\n", name, survived[name])
	}
	fmt.Fprintf(&b, "  traffic: %d transactions (%d failed while the server was down), %d plays, %d comments, %d comment edits, %d rows for v, t, cp and w\n",
		tr.committed.Load(), tr.failed.Load(), tr.plays.Load(), tr.comments.Load(), tr.upd.Load(), tr.ruleChanges.Load())
	if err := tr.lastError(); err != nil {
		fmt.Fprintf(&b, "  traffic: last failure: %v\n", err)
	}
	fmt.Fprintf(&b, "  sidecar: %d processes, %d reconnects, %d slot recreations, %d failpoint kills; %d user_challenges rows\n",
		s.sc.runCount(), s.sc.countInLogs("session ended; reconnecting"),
		s.sc.countInLogs("replication slot is gone"),
		s.sc.countInLogs("failpoint reached"), rows)
	var lastXid uint64
	if err := s.pool.QueryRow(s.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&lastXid); err != nil {
		s.t.Errorf("read the current xid: %v", err)
	}
	fmt.Fprintf(&b, "  cluster: xid epoch %d; current xid %d (epoch %d) at the start, %d (epoch %d) at the end\n",
		s.cluster.XIDEpoch(), s.firstXid, s.firstXid>>32, lastXid, lastXid>>32)
	s.mu.Lock()
	for _, n := range s.notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	s.mu.Unlock()
	s.t.Log(b.String())
}

// requireWrittenOnce checks that nothing was applied twice: the host's trigger inserts a
// notification on every write of a complete row, and a complete row never needs a second write
// (its progress is capped at the step, its amount and completed_at are frozen).
func (s *suite) requireWrittenOnce() {
	rows, err := s.pool.Query(s.ctx, `
		SELECT uc.challenge_id, uc.specifier, count(n.id)
		FROM user_challenges uc
		LEFT JOIN notification n ON n.user_id = uc.user_id AND n.specifier = uc.specifier
		WHERE uc.is_complete
		GROUP BY 1, 2
		HAVING count(n.id) <> 1
		ORDER BY 1, 2`)
	require.NoError(s.t, err)
	type written struct {
		challenge, specifier string
		n                    int64
	}
	bad, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (written, error) {
		var w written
		err := r.Scan(&w.challenge, &w.specifier, &w.n)
		return w, err
	})
	require.NoError(s.t, err)
	for _, w := range bad {
		s.t.Errorf("complete row %s %s was written %d times", w.challenge, w.specifier, w.n)
	}
}

// kill9 kills the sidecar at a random moment: in a window, during a flush, while reconnecting.
func (s *suite) kill9(*rand.Rand) error {
	s.sc.kill9()
	return nil
}

// failpoint restarts the sidecar with the after-flush-commit failpoint armed for its 1st to 3rd
// flush with changes: it dies by SIGKILL after that flush committed and before it confirmed the
// LSN, so the server re-sends what was already applied.
func (s *suite) failpoint(rng *rand.Rand) error {
	n := 1 + rng.IntN(3)
	before := s.sc.runCount()
	s.sc.kill9(fmt.Sprintf("CHALLENGE_STREAM_FAILPOINT=after-flush-commit:%d", n))
	s.eventually("the armed sidecar to die at the failpoint", func() bool { return s.sc.runCount() >= before+2 })
	if !strings.Contains(lastLines(s.sc.logPath(before+1), 5), "failpoint reached") {
		return fmt.Errorf("run %d did not die at the failpoint:\n%s", before+1, lastLines(s.sc.logPath(before+1), 20))
	}
	return nil
}

func (s *suite) restartPostgres(*rand.Rand) error {
	return s.cluster.Restart(s.ctx, pgcluster.Immediate, time.Minute)
}

// fastRestart is pg_ctl restart -m fast: the walsender sends the rest of the WAL and waits for
// the sidecar to report it flushed, so a sidecar that never does hangs the restart.
func (s *suite) fastRestart(*rand.Rand) error {
	return s.cluster.Restart(s.ctx, pgcluster.Fast, plannedShutdownLimit)
}

// smartRestart is pg_ctl restart -m smart: new connections are refused and the server waits
// for every session to end. The host's own clients (the traffic, the suite's checks) end theirs
// here as applications do when asked; the sidecar must end its own by itself.
func (s *suite) smartRestart(*rand.Rand) error {
	admin, err := pgx.Connect(s.ctx, s.cluster.URL(s.db.Name)) // opened before connections are refused
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(s.ctx))
	restarted := make(chan error, 1)
	go func() { restarted <- s.cluster.Restart(s.ctx, pgcluster.Smart, plannedShutdownLimit) }()
	for end := time.Now().Add(time.Second); time.Now().Before(end); pause(s.ctx, 100*time.Millisecond) {
		if _, err := admin.Exec(s.ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
			  AND application_name NOT LIKE 'challenge-stream%'`); err != nil {
			return fmt.Errorf("end the host's own sessions: %w", err)
		}
	}
	_ = admin.Close(s.ctx)
	return <-restarted
}

func (s *suite) terminateWalsender(*rand.Rand) error {
	var n int
	s.eventually("a walsender to terminate", func() bool {
		err := s.pool.QueryRow(s.ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(active_pid))
			FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, s.db.Slot).Scan(&n)
		return err == nil && n > 0
	})
	return nil
}

func (s *suite) terminateFlush(*rand.Rand) error {
	var n int
	s.eventually("a flush connection to terminate", func() bool {
		err := s.pool.QueryRow(s.ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
			FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`,
			pipeline.FlushApplicationName, s.db.Name).Scan(&n)
		return err == nil && n > 0
	})
	return nil
}

func (s *suite) proxyCut(*rand.Rand) error {
	if n := s.proxy.cut(); n == 0 {
		s.note("proxy cut found no open connection (the sidecar was between connections)")
	}
	return nil
}

func (s *suite) proxyStall(rng *rand.Rand) error {
	s.proxy.stall()
	pause(s.ctx, time.Duration(2000+rng.IntN(3000))*time.Millisecond)
	s.proxy.resume()
	return nil
}

// blackHole stops the proxy relaying anything, both ways, with every socket left open (a host
// cut off behind a middlebox whose kernel keeps ACKing, so no keepalive fires), until the
// server ends the sidecar's walsender at wal_sender_timeout; then the path heals and the
// sidecar finds its replication connection gone.
func (s *suite) blackHole(*rand.Rand) error {
	walsender := func() int32 {
		var pid *int32
		if err := s.pool.QueryRow(s.ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`,
			s.db.Slot).Scan(&pid); err != nil || pid == nil {
			return 0
		}
		return *pid
	}
	before := walsender()
	if before == 0 {
		s.note("black hole found no walsender (the sidecar was between connections)")
	}
	s.proxy.stall()
	defer s.proxy.resume()
	at := time.Now()
	s.eventually("the server to end the black-holed walsender", func() bool { return walsender() != before || before == 0 })
	s.t.Logf("the server ended the black-holed walsender after %s", time.Since(at).Round(100*time.Millisecond))
	return nil
}

// lockRewards holds row locks on the reward rows of every artist and commenter for a few
// seconds, in the order the flush takes them (milestones, then c; by specifier): the flush
// waits, then applies.
func (s *suite) lockRewards(rng *rand.Rand) error {
	hold := time.Duration(2000+rng.IntN(3000)) * time.Millisecond
	locked, err := s.holdRewardLocks(hold)
	if isDeadlock(err) {
		s.note("the row locks deadlocked with a flush; Postgres aborted the lock holder")
		return nil
	}
	if err != nil {
		return err
	}
	s.t.Logf("held %d user_challenges row locks for %s", locked, hold)
	return nil
}

var errRollback = errors.New("rollback")

// concurrentCatchUp runs the polling reference — processors.CatchUp, each tick in its own
// transaction, advancing the legacy checkpoints — in a tight loop for a few seconds while the
// stream flushes the same users. It has no row budget (the product's catch-up has none): a
// tick every 100 ms reads only what arrived since the last one.
func (s *suite) concurrentCatchUp(rng *rand.Rand) error {
	until := time.Now().Add(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
	var ticks, deadlocks int
	var scanned int64
	for time.Now().Before(until) {
		err := pgx.BeginFunc(s.ctx, s.pool, func(tx pgx.Tx) error {
			res, err := processors.CatchUp(s.ctx, tx, processors.CatchUpOptions{})
			scanned += res.Scanned()
			return err
		})
		switch {
		case isDeadlock(err):
			deadlocks++
		case err != nil:
			return fmt.Errorf("catch-up tick: %w", err)
		}
		ticks++
		pause(s.ctx, 100*time.Millisecond)
	}
	s.t.Logf("polling reference: %d ticks, %d source rows scanned, %d deadlocks (retried)", ticks, scanned, deadlocks)
	if deadlocks > 0 {
		s.note("polling reference: %d of %d ticks deadlocked with a flush and were retried", deadlocks, ticks)
	}
	return nil
}

func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// waitProgress waits until the sidecar stores a position past everything written so far: it has
// recovered from the last fault and applies the traffic again.
func (s *suite) waitProgress() {
	s.t.Helper()
	var target pglogrepl.LSN
	s.eventually("the server to answer", func() bool {
		var err error
		target, err = s.insertLSN()
		return err == nil
	})
	s.eventually("the stored position to pass "+target.String(), func() bool {
		lsn, _, err := checkpoints.LoadLSN(s.ctx, s.pool, s.db.Slot)
		return err == nil && lsn > target
	})
}

func (s *suite) insertLSN() (pglogrepl.LSN, error) {
	var text string
	if err := s.pool.QueryRow(s.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(text)
}

// sentinelPlay commits one play of an unknown track after all other traffic and returns its id.
func (s *suite) sentinelPlay() int64 {
	var id int64
	s.eventually("the sentinel play to commit", func() bool {
		return s.pool.QueryRow(s.ctx, `INSERT INTO plays (play_item_id, created_at) VALUES ($1, now()) RETURNING id`,
			unknownTrack).Scan(&id) == nil
	})
	return id
}

// eventually polls cond until it holds; it fails the test after two minutes or as soon as the
// sidecar exits on its own.
func (s *suite) eventually(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if err := s.sc.failed(); err != nil {
			s.t.Fatalf("waiting for %s: %v", what, err)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// confirmWatch samples the slot's confirmed_flush_lsn and then the stored LSN throughout the
// run. The stored LSN only grows, so confirmed (read first) > stored (read second) means the
// sidecar confirmed a position it had not durably applied: the server could then discard
// changes that were never applied.
type confirmWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	bad    []confirmedAhead
}

type confirmedAhead struct{ confirmed, stored pglogrepl.LSN }

func (s *suite) watchConfirmed() *confirmWatch {
	ctx, cancel := context.WithCancel(s.ctx)
	w := &confirmWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			var confirmed *string
			err := s.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
				WHERE slot_name = $1`, s.db.Slot).Scan(&confirmed)
			if err == nil && confirmed != nil {
				c, _ := pglogrepl.ParseLSN(*confirmed)
				stored, found, err := checkpoints.LoadLSN(ctx, s.pool, s.db.Slot)
				if err == nil && found && c > stored {
					w.mu.Lock()
					w.bad = append(w.bad, confirmedAhead{confirmed: c, stored: stored})
					w.mu.Unlock()
				}
			}
			pause(ctx, 50*time.Millisecond)
		}
	}()
	return w
}

func (w *confirmWatch) stop() { w.cancel(); <-w.done }

func (w *confirmWatch) violations() []confirmedAhead {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.bad)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}
