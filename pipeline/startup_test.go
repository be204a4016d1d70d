package pipeline_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/replication"
)

// TestInterruptedBackfillResumes: a --backfill first start is stopped right after it created
// the slot, before its catch-up committed (a SIGTERM during a long backfill, a terminated
// backend). The retry finds a slot without a stored position and must still derive all
// history, not seed the checkpoints to the current maxima.
func TestInterruptedBackfillResumes(t *testing.T) {
	e := setup(t)
	e.artist(0x41, true)
	e.track(410, 0x41)
	e.plays(410, 300) // history, before the sidecar
	e.comment(1, 0x42, in2025, 50)

	reached := make(chan struct{})
	release := make(chan struct{})
	s := e.start(func(c *pipeline.Config) {
		c.Backfill = true
		pipeline.SetAfterCreateSlot(c, func() {
			close(reached)
			<-release
		})
	})
	select {
	case <-reached:
	case <-time.After(time.Minute):
		t.Fatal("the first start did not create its slot")
	}
	s.cancel() // the stop signal arrives while the catch-up is about to run
	close(release)
	s.stop()
	require.EqualValues(t, 1, e.count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, e.db.Slot),
		"the interrupted start left its slot")
	_, found, err := checkpoints.LoadLSN(e.ctx, e.db.Pool, e.db.Slot)
	require.NoError(t, err)
	require.False(t, found, "and no stored position")
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM user_challenges`))

	s = e.start(func(c *pipeline.Config) { c.Backfill = true })
	s.waitStreaming()
	e.caughtUp()
	e.requireRow("p2", "41:1000", 300, false)
	e.requireRow("c", "42:202511", 1, true)
	e.verified()
	s.stop()
}

// TestPublicationRecreatedWhileDown: the publication is dropped and recreated while the sidecar
// is down and plays arrive. The slot can never deliver the plays written while it was gone:
// before 18 pgoutput fails on them with "publication ... does not exist" (SQLSTATE 42704) at
// every attempt, 18 skips them with a warning. The start sees another publication oid than the
// stored one and treats it as slot loss: it recreates the slot and catches up from the legacy
// checkpoints.
func TestPublicationRecreatedWhileDown(t *testing.T) {
	e := setup(t)
	e.artist(0x43, true)
	e.track(430, 0x43)
	s := e.start()
	s.waitStreaming()
	e.plays(430, 100)
	e.caughtUp()
	s.stop()

	e.plays(430, 50)
	e.exec(`DROP PUBLICATION ` + e.db.Publication)
	e.plays(430, 50) // decoded with no publication of that name
	// Every table the rules read, so nothing is missed that the start would widen (reason
	// publication_widened, TestManagedPublicationWidenedUnderABacklog).
	e.exec(`CREATE PUBLICATION ` + e.db.Publication + ` FOR TABLE ` + strings.Join(pipeline.StreamPlan().TableNames(), ", ") +
		` WITH (publish = 'insert, update')`)
	e.plays(430, 100)
	e.comment(1, 0x43, in2025, 3)

	s = e.start()
	s.waitStreaming()
	e.caughtUp()
	s.requireRecreated(pipeline.ReasonPublication)
	e.requireRow("p1", "43:250", 250, true)
	e.requireRow("p2", "43:1000", 300, false)
	e.requireRow("c", "43:202511", 1, true)
	e.plays(430, 1)
	e.caughtUp()
	e.requireRow("p2", "43:1000", 301, false)
	e.verified()
	s.stop()
}

// TestPublicationDroppedWhileStreaming: the publication is dropped while the sidecar streams,
// plays arrive, and it is recreated. Postgres 18 streams on and skips the plays written
// meanwhile; older servers fail on them. Either way no flush stores a position through a
// publication other than the stored one's (checkpoints.StoreLSN), the next session recreates
// the slot and catches up, and every play counts once.
func TestPublicationDroppedWhileStreaming(t *testing.T) {
	e := setup(t)
	s := e.streamingArtist(0x48, 480)
	e.playsApplied(480, 100)
	e.exec(`DROP PUBLICATION ` + e.db.Publication)
	e.plays(480, 70)
	e.exec(`CREATE PUBLICATION ` + e.db.Publication + ` FOR TABLE ` + strings.Join(pipeline.StreamPlan().TableNames(), ", ") +
		` WITH (publish = 'insert, update')`)
	e.plays(480, 30)
	s.requireRecreated(pipeline.ReasonPublication)
	s.waitStreaming()
	e.plays(480, 1)
	e.caughtUp()
	e.requireRow("p1", "48:250", 201, false)
	e.verified()
	s.stop()
}

// TestSlotNameTakenByAnotherDatabase: slot names are unique per cluster. A second database
// whose sidecar uses the same slot name stops with ErrSlotTaken and leaves the first's slot
// alone; with a name of its own it streams too.
func TestSlotNameTakenByAnotherDatabase(t *testing.T) {
	first := setup(t)
	second := newEnv(t)
	first.artist(0x44, true)
	first.track(440, 0x44)
	second.artist(0x45, true)
	second.track(450, 0x45)
	s1 := first.start()
	s1.waitStreaming()
	var pid int32
	require.NoError(t, first.db.Pool.QueryRow(first.ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`,
		first.db.Slot).Scan(&pid))

	cfg := second.config()
	cfg.Slot = first.db.Slot
	err := pipeline.Run(t.Context(), cfg)
	require.Error(t, err)
	require.Contains(t, err.Error(), first.db.Slot+" belongs to database "+first.db.Name+"; choose another name with --slot")
	var samePID int32
	require.NoError(t, first.db.Pool.QueryRow(first.ctx, `SELECT active_pid FROM pg_replication_slots
		WHERE slot_name = $1 AND database = $2`, first.db.Slot, first.db.Name).Scan(&samePID))
	require.Equal(t, pid, samePID, "the first database's slot is untouched and still streams")

	s2 := second.start()
	s2.waitStreaming()
	first.plays(440, 300)
	second.plays(450, 300)
	first.caughtUp()
	second.caughtUp()
	first.requireRow("p2", "44:1000", 300, false)
	second.requireRow("p2", "45:1000", 300, false)
	first.verified()
	second.verified()
	s1.stop()
	s2.stop()
}

// TestStopWhileReconnectingSaysSo: SIGTERM while the pipeline waits to reconnect (here to a
// port nobody listens on) has nothing to flush; Run returns nil, and the log says it stopped
// and why it was reconnecting, rather than exiting without a word.
func TestStopWhileReconnectingSaysSo(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().(*net.TCPAddr)
	require.NoError(t, l.Close()) // nobody listens there now
	database, err := pgx.ParseConfig(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/none?sslmode=disable&connect_timeout=2", addr.Port))
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	reconnecting := make(chan struct{}, 1)
	cfg := pipeline.Config{Database: database, Log: zap.New(core), RetryMaxInterval: time.Minute,
		Observe: func(e pipeline.Event) {
			if _, ok := e.(pipeline.Reconnecting); ok {
				select {
				case reconnecting <- struct{}{}:
				default:
				}
			}
		}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- pipeline.Run(ctx, cfg) }()
	<-reconnecting
	cancel()
	require.NoError(t, <-done)
	stopped := logs.FilterMessage("stopped while reconnecting; nothing was pending").All()
	require.Len(t, stopped, 1)
	require.Contains(t, stopped[0].ContextMap()["error"], "connect")
}

// TestHostUpdatesWorkUnderThePublication: the publication a first start creates sends only
// what the rules read, and every source table's UPDATEs still work on the host — its column
// list carries the replica identity. Checked against a publication without it, where the
// same statements fail.
func TestHostUpdatesWorkUnderThePublication(t *testing.T) {
	e := newEnv(t)
	s := e.start()
	s.waitStreaming()
	updates := map[string]string{}
	for _, table := range pipeline.StreamPlan().TableNames() {
		var key string
		require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT a.attname FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			WHERE i.indrelid = to_regclass('public.' || $1) AND i.indisprimary`, table).Scan(&key))
		// The replica identity is checked when the statement starts, whatever rows it touches.
		updates[table] = fmt.Sprintf("UPDATE public.%s SET %s = %[2]s WHERE false", table, key)
	}
	for table, sql := range updates {
		_, err := e.db.Pool.Exec(e.ctx, sql)
		require.NoError(t, err, table)
	}
	s.stop()

	if e.count(`SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
		return // whole rows: nothing to compare with
	}
	e.exec(`CREATE PUBLICATION without_identity FOR TABLE public.plays (play_item_id)`)
	_, err := e.db.Pool.Exec(e.ctx, updates["plays"])
	require.ErrorContains(t, err, "cannot update table", "the check the lists pass")
}

// TestAdoptedPublicationNarrowedUnderABacklog: a whole-row publication an earlier version
// made is adopted (the managed comment) while the sidecar is down and plays arrive. The next
// start narrows it to the rules' columns; the backlog written before that is decoded from
// whole rows, what follows from the lists, and every play counts once.
func TestAdoptedPublicationNarrowedUnderABacklog(t *testing.T) {
	e := setup(t)
	if e.count(`SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
		t.Skip("publication column lists need Postgres 15")
	}
	e.exec(`CREATE PUBLICATION ` + e.db.Publication + ` FOR TABLE ` + strings.Join(pipeline.StreamPlan().TableNames(), ", ") +
		` WITH (publish = 'insert, update')`)
	e.artist(0x46, true)
	e.track(460, 0x46)
	s := e.start()
	s.waitStreaming()
	e.plays(460, 100)
	e.caughtUp()
	s.stop()
	require.Zero(t, e.count(`SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
		WHERE p.pubname = $1 AND r.prattrs IS NOT NULL`, e.db.Publication), "a DBA's publication is left whole")

	e.plays(460, 200)
	e.exec(`COMMENT ON PUBLICATION ` + e.db.Publication + ` IS '` + replication.ManagedComment + `'`)
	s = e.start()
	s.waitStreaming()
	e.plays(460, 50)
	e.caughtUp()
	var plays []string
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT attnames::text[] FROM pg_publication_tables
		WHERE pubname = $1 AND tablename = 'plays'`, e.db.Publication).Scan(&plays))
	require.ElementsMatch(t, []string{"id", "play_item_id"}, plays, "narrowed at the start")
	e.requireRow("p2", "46:1000", 350, false)
	e.verified()
	s.stop()
}

// TestManagedPublicationWidenedUnderABacklog: a managed publication sends less than the rules
// read (an older version's narrower list, someone's edit, a row filter) while plays wait in
// the slot. pgoutput decodes those plays under the publication as it was, so they can never
// arrive with what the rules read: the start drops the slot before it widens the publication,
// recreates it and catches up, and every play counts once. "slot already dropped" is the state
// a start leaves that died between the drop and the widening.
func TestManagedPublicationWidenedUnderABacklog(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		narrow   string
		dropSlot bool
	}{
		"column left out":                       {narrow: `ADD TABLE public.plays (id)`},
		"column left out, slot already dropped": {narrow: `ADD TABLE public.plays (id)`, dropSlot: true},
		"rows filtered":                         {narrow: `ADD TABLE public.plays (id, play_item_id) WHERE (id < 0)`},
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			if e.count(`SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
				t.Skip("publication column lists and row filters need Postgres 15")
			}
			s := e.streamingArtist(0x47, 470)
			e.playsApplied(470, 100)
			s.stop()
			e.exec(`ALTER PUBLICATION ` + e.db.Publication + ` DROP TABLE public.plays; ALTER PUBLICATION ` + e.db.Publication + ` ` + c.narrow)
			e.plays(470, 200)
			if c.dropSlot {
				e.exec(`SELECT pg_drop_replication_slot($1)`, e.db.Slot)
			}
			s = e.start()
			s.waitStreaming()
			e.plays(470, 50)
			e.caughtUp()
			s.requireRecreated(pipeline.ReasonPublicationWidened)
			var plays []string
			var filter *string
			require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT attnames::text[], rowfilter FROM pg_publication_tables
				WHERE pubname = $1 AND tablename = 'plays'`, e.db.Publication).Scan(&plays, &filter))
			require.ElementsMatch(t, []string{"id", "play_item_id"}, plays, "widened to what the rules read")
			require.Nil(t, filter, "the filter is gone")
			e.requireRow("p2", "47:1000", 350, false)
			e.verified()
			s.stop()
		})
	}
}
