package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/replication"
)

// physicalSlot is the standby's slot on the primary.
const physicalSlot = "standby1"

// TestPrimaryFailover: a primary with a physical standby dies (immediate shutdown), the standby
// is promoted, and the sidecar, given both hosts with target_session_attrs=read-write, carries
// on against the new primary; verify is clean. On 17+ the slot was created with FAILOVER and
// synchronized to the standby, so the sidecar continues from it without recreating it; before
// 17, or with --failover-slot=false, the slot is lost with the primary and the sidecar takes
// the slot-loss path (recreate, catch up from the legacy checkpoints).
func TestPrimaryFailover(t *testing.T) {
	t.Parallel()
	t.Run("default", func(t *testing.T) { testPrimaryFailover(t, true) })
	t.Run("failover slot off", func(t *testing.T) { testPrimaryFailover(t, false, "--failover-slot=false") })
}

func testPrimaryFailover(t *testing.T, failoverSlot bool, flags ...string) {
	t.Parallel()
	if pgtest.Cluster() == nil {
		t.Skip("TEST_DATABASE_URL is set: this test needs servers of its own")
	}
	version := versionNum(t, pgtest.Cluster())            // the same binaries as the clusters below
	syncing := version >= replication.FailoverSlotVersion // the standby syncs failover slots
	if !failoverSlot && !syncing {
		t.Skip("no failover slots before 17: the default case takes the slot-loss path already")
	}
	primary := startCluster(t, map[string]string{"wal_sender_timeout": "10s"})
	failoverSlots := failoverSlot && syncing
	standbySettings := map[string]string{"hot_standby_feedback": "on"}
	if syncing {
		standbySettings["sync_replication_slots"] = "on"
	}
	standby, err := primary.NewStandby(t.Context(), pgcluster.StandbyOptions{PhysicalSlot: physicalSlot, Settings: standbySettings})
	require.NoError(t, err)
	t.Cleanup(func() { _ = standby.Stop() })
	if syncing {
		// The primary's logical walsenders send nothing the standby has not flushed, so the
		// synchronized slot never points past the standby's WAL. Set after the copy: the
		// promoted standby has no standby of its own to wait for.
		require.NoError(t, setAndReload(t, primary, "synchronized_standby_slots", physicalSlot))
	}

	e := failoverEnv(t, primary, standby, "failover_"+randomHex(t))
	e.artistWithTrack(11, 110)
	addr := freeAddr(t)
	// The default idle confirm floor: no idle stores, so the stored and confirmed positions
	// stay put while the test waits for the standby. flushedPast (a mark inside the last
	// transaction) then tells when the sidecar has caught up.
	p := e.runURL(e.db.URL, append([]string{"--window", "100ms", "--metrics-addr", addr, "--idle-confirm-bytes", "1048576"}, flags...)...)
	e.waitStreaming(p)
	e.flushedPast(e.commitPlays(110, 200))
	if syncing {
		var failover bool
		require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT failover FROM pg_replication_slots WHERE slot_name = $1`,
			e.db.Slot).Scan(&failover))
		require.Equal(t, failoverSlot, failover, "the slot's failover property on %d", version)
	}
	if failoverSlots {
		e.waitSlotSynced(standby)
	}
	e.waitReplayed(standby)

	primary.Crash()
	require.NoError(t, standby.Promote(e.ctx))
	e.db.Pool.Reset()
	e.flushedPast(e.commitPlays(110, 150))
	e.verified()

	recreated := scrape(t, addr, "challenge_stream_slot_recreated_total")
	gone := strings.Contains(p.out.String(), "replication slot is gone")
	if failoverSlots {
		require.Zero(t, recreated, "the synchronized slot carries on")
		require.NotContains(t, p.out.String(), "recreating", "the slot is never recreated")
	} else {
		require.Positive(t, recreated, "the slot was lost with the primary")
		require.Equal(t, recreated, scrape(t, addr, "challenge_stream_slot_recreated_total", `reason="failover"`),
			"the new timeline began after the stored position: recorded as a failover, not a dropped slot")
		require.True(t, gone, "the slot-loss path")
	}
}

// failoverEnv is an env whose database lives on primary and whose URL names both servers,
// so it follows a promotion (the pool too, once Reset).
func failoverEnv(t *testing.T, primary, standby *pgcluster.Cluster, name string) *env {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, primary.URL("postgres"))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write",
		primary.Port(), standby.Port(), name)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, hostdb.Create(ctx, pool))
	db := &pgtest.DB{Name: name, URL: url, Slot: "s_" + name, Publication: "p_" + name, Pool: pool}
	return &env{t: t, ctx: t.Context(), db: db}
}

func versionNum(t *testing.T, c *pgcluster.Cluster) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var v int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT current_setting('server_version_num')::int").Scan(&v))
	t.Logf("server_version_num %d", v)
	return v
}

func setAndReload(t *testing.T, c *pgcluster.Cluster, name, value string) error {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "ALTER SYSTEM SET "+name+" = "+pgx.Identifier{value}.Sanitize()); err != nil {
		return err
	}
	_, err = conn.Exec(t.Context(), "SELECT pg_reload_conf()")
	return err
}

// waitSlotSynced keeps traffic going until the standby holds a persistent synchronized copy of
// the slot at the primary's confirmed position. The standby keeps a fresh slot temporary until
// the primary's copy has moved past the standby's own catalog xmin and restart LSN; a standby
// snapshot logged on the primary moves both along.
func (e *env) waitSlotSynced(standby *pgcluster.Cluster) {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, standby.URL("postgres"))
	require.NoError(e.t, err)
	defer conn.Close(context.Background())
	synced := func() (pglogrepl.LSN, bool) {
		var s string
		err := conn.QueryRow(e.ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
			WHERE slot_name = $1 AND synced AND NOT temporary`, e.db.Slot).Scan(&s)
		if err != nil {
			return 0, false
		}
		lsn, err := pglogrepl.ParseLSN(s)
		return lsn, err == nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, ok := synced(); ok {
			break
		}
		require.False(e.t, time.Now().After(deadline), "slot %s not synchronized to the standby", e.db.Slot)
		mark := e.commitPlays(110, 1)
		e.db.Exec(e.t, "SELECT pg_log_standby_snapshot()")
		e.flushedPast(mark)
	}
	// Traffic has stopped: wait for the standby's copy to reach the primary's confirmed position.
	confirmed := e.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`)
	eventually(e.t, "synchronized slot to reach "+confirmed.String(), func() bool {
		lsn, ok := synced()
		return ok && lsn >= confirmed
	})
}

// waitReplayed waits until the standby has replayed everything the primary has written.
func (e *env) waitReplayed(standby *pgcluster.Cluster) {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, standby.URL("postgres"))
	require.NoError(e.t, err)
	defer conn.Close(context.Background())
	target := e.insertLSN()
	eventually(e.t, "standby to replay "+target.String(), func() bool {
		var s string
		if err := conn.QueryRow(e.ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&s); err != nil {
			return false
		}
		lsn, err := pglogrepl.ParseLSN(s)
		return err == nil && lsn >= target
	})
}
