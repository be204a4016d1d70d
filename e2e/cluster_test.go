package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

// TestTwoDatabasesDefaultSlotName: two databases on one cluster, both running the sidecar
// with no --slot. Slot names are unique per cluster: the first takes the default name, the
// second, finding it taken, takes challenge_stream_<its database>, and both stream. Asked
// explicitly for the taken name, the second exits 1 with one line naming the slot, its
// database and --slot, and never touches the first's slot. Restarted, each keeps its name: no
// slot is created again.
func TestTwoDatabasesDefaultSlotName(t *testing.T) {
	t.Parallel()
	c := startCluster(t, map[string]string{})
	first := clusterEnv(t, c, "first_db")
	second := clusterEnv(t, c, "second_db")
	first.db.Slot, second.db.Slot = pipeline.DefaultName, pipeline.DerivedSlotName("second_db")
	first.db.Publication, second.db.Publication = pipeline.DefaultName, pipeline.DefaultName
	require.Equal(t, "challenge_stream_second_db", second.db.Slot)
	first.artistWithTrack(1, 10)
	second.artistWithTrack(2, 20)
	noSlot := []string{"--slot", "", "--window", "100ms"} // after run's own --slot: the default

	p1 := first.run(nil, noSlot...)
	first.waitStreaming(p1)
	pid := first.count(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, pipeline.DefaultName)

	taken := second.run(nil, "--slot", pipeline.DefaultName, "--window", "100ms")
	require.Equal(t, 1, taken.exited(60*time.Second))
	require.Contains(t, lastLine(taken.out.String()),
		"challenge_stream belongs to database first_db; choose another name with --slot")
	require.Equal(t, pid, first.count(`SELECT active_pid FROM pg_replication_slots
		WHERE slot_name = $1 AND database = 'first_db'`, pipeline.DefaultName), "the first's slot is untouched")

	p2 := second.run(nil, noSlot...)
	second.waitStreaming(p2)
	first.plays(10, 300)
	second.plays(20, 300)
	first.caughtUp()
	second.caughtUp()

	for _, p := range []*proc{p1, p2} {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, p.exited(30*time.Second))
	}
	p1, p2 = first.run(nil, noSlot...), second.run(nil, noSlot...)
	first.waitStreaming(p1)
	second.waitStreaming(p2)
	first.plays(10, 1)
	second.plays(20, 1)
	first.caughtUp()
	second.caughtUp()
	require.EqualValues(t, 301, first.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '1:1000'`))
	require.EqualValues(t, 301, second.count(`SELECT current_step_count FROM user_challenges WHERE specifier = '2:1000'`))
	require.EqualValues(t, 2, first.count(`SELECT count(*) FROM pg_replication_slots`), "one slot per database")
	require.NotContains(t, p1.out.String()+p2.out.String(), "recreating it", "no slot recreated")
	for _, e := range []*env{first, second} {
		require.Zero(t, e.count(`SELECT count(*) FROM challenge_stream.slot_checkpoints WHERE slot_name <> $1`, e.db.Slot))
		e.verified()
	}
}

// TestSynchronousStandbyNamesStar: with synchronous_standby_names = '*' the sidecar's logical
// walsender becomes a synchronous standby as soon as it reports a flush position (PG15), and
// every commit on the host would wait on the sidecar's windows. `run` refuses at start: exit 1,
// one line naming the setting and the fix, nothing created.
func TestSynchronousStandbyNamesStar(t *testing.T) {
	t.Parallel()
	c := startCluster(t, map[string]string{})
	e := clusterEnv(t, c, "syncrep")
	// Set only now: with '*' and no standby connected, every commit (CREATE DATABASE, the host
	// schema) would wait.
	_, err := e.db.Pool.Exec(e.ctx, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(e.ctx, `SELECT pg_reload_conf()`)
	require.NoError(t, err)
	eventually(t, "the setting to apply", func() bool {
		var v string
		err := e.db.Pool.QueryRow(e.ctx, `SHOW synchronous_standby_names`).Scan(&v)
		return err == nil && v == "*"
	})

	p := e.run(nil, "--window", "100ms")
	require.Equal(t, 1, p.exited(60*time.Second))
	last := lastLine(p.out.String())
	require.Contains(t, last, "synchronous_standby_names = '*'")
	require.Contains(t, last, "list the physical standbys by name")
	require.EqualValues(t, 0, e.count(`SELECT count(*) FROM pg_replication_slots`), "no slot was created")

	// Leave a server whose commits do not hang for the cleanup.
	_, err = e.db.Pool.Exec(context.Background(), `ALTER SYSTEM RESET synchronous_standby_names`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(context.Background(), `SELECT pg_reload_conf()`)
	require.NoError(t, err)
}
