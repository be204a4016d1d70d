package faults

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/processors"
)

// TestBlackHoledLeader: two replicas, each behind its own TCP proxy, under traffic. The
// leader's proxy turns into a black hole: both sockets stay open and nothing is relayed either
// way, and the proxy's kernel keeps ACKing, so no TCP keepalive or TCP_USER_TIMEOUT on the
// server ever fires. The leader lock lives on the replication connection, so it ends with the
// walsender at wal_sender_timeout (30 s on the test cluster, 60 s by default); the standby then
// takes over within its retry interval. The test reports the takeover time (black hole → the
// standby stores a position past a write made after it) and requires a clean verify.
// BLACKHOLE_RUNS repeats it.
func TestBlackHoledLeader(t *testing.T) {
	if pgtest.Cluster() == nil {
		t.Skip("needs the harness's own cluster")
	}
	runs := envInt(t, "BLACKHOLE_RUNS", 1)
	var took []string
	for run := 1; run <= runs; run++ {
		t.Run(fmt.Sprintf("run %d", run), func(t *testing.T) {
			r := blackHoleTakeover(t, uint64(run))
			took = append(took, r.String())
			t.Logf("black-holed leader: %s", r)
		})
	}
	t.Logf("BLACK HOLE TAKEOVER (wal_sender_timeout 30s, retry-max-interval 5s):\n  %s", strings.Join(took, "\n  "))
}

func blackHoleTakeover(t *testing.T, seed uint64) takeover {
	var res takeover
	ctx := t.Context()
	db := newTrafficDB(t)
	target := fmt.Sprintf("127.0.0.1:%d", pgtest.Cluster().Port())
	var sups []*supervisor
	start := func(p *proxy) *supervisor {
		u, err := url.Parse(db.URL)
		require.NoError(t, err)
		u.Host = p.addr()
		s := startSupervisor(t, []string{"run", "--database-url", u.String(), "--slot", db.Slot,
			"--publication", db.Publication, "--metrics-addr", "off", "--log-level", "debug", "--window", "200ms"})
		sups = append(sups, s)
		return s
	}
	until := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			for _, s := range sups {
				require.NoError(t, s.failed(), "waiting for %s", what)
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s", within, what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	activePID := func() int32 {
		var pid *int32
		if err := db.Pool.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`,
			db.Slot).Scan(&pid); err != nil || pid == nil {
			return 0
		}
		return *pid
	}
	progress := func(what string) {
		t.Helper()
		var text string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text))
		mark, err := pglogrepl.ParseLSN(text)
		require.NoError(t, err)
		// A play committed after the mark: the stored position passes it once that is applied,
		// also when no other traffic follows.
		_, err = db.Pool.Exec(ctx, `INSERT INTO plays (play_item_id, created_at) VALUES ($1, now())`, unknownTrack)
		require.NoError(t, err)
		until(what, 2*time.Minute, func() bool {
			lsn, _, err := checkpoints.LoadLSN(ctx, db.Pool, db.Slot)
			return err == nil && lsn > mark
		})
	}

	leaderProxy := startProxy(t, target)
	standbyProxy := startProxy(t, target)
	start(leaderProxy)
	until("the leader to stream", time.Minute, func() bool { return activePID() != 0 })
	leaderWalsender := activePID()
	standby := start(standbyProxy)
	until("the second replica to stand by", time.Minute, func() bool { return standby.countInLogs("standing by") > 0 })

	trafficPool, err := pgxpool.New(ctx, db.URL)
	require.NoError(t, err)
	defer trafficPool.Close()
	tr := startTraffic(trafficPool, 2, seed)
	defer tr.stop()
	progress("the leader to apply traffic")

	leaderProxy.stall() // never resumed: a black hole
	holed := time.Now()
	until("another walsender on the slot", 2*time.Minute, func() bool {
		pid := activePID()
		return pid != 0 && pid != leaderWalsender
	})
	res.slot = time.Since(holed)
	progress("the standby to apply traffic written after the black hole")
	res.applied = time.Since(holed)

	tr.stop()
	progress("the standby to apply everything")
	diffs, err := processors.Verify(ctx, db.Pool)
	require.NoError(t, err)
	for _, d := range diffs {
		t.Errorf("verify: %s", d)
	}
	return res
}

// takeover is how long after the black hole the standby's walsender had the slot, and how long
// until it had applied a write made after the black hole (the backlog written meanwhile
// included).
type takeover struct{ slot, applied time.Duration }

func (r takeover) String() string {
	return fmt.Sprintf("slot taken after %s, applying again after %s", r.slot.Round(100*time.Millisecond),
		r.applied.Round(100*time.Millisecond))
}
