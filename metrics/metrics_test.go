package metrics

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/challenge-stream/challenge-stream/internal/buildinfo"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape returns the handler's exposition and its samples by series ("name{labels}" → value).
func scrape(t *testing.T, m *Metrics) (string, map[string]float64) {
	t.Helper()
	body, values, err := gather(m)
	require.NoError(t, err)
	return body, values
}

// gather is scrape without assertions, for use off the test's goroutine.
func gather(m *Metrics) (string, map[string]float64, error) {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return "", nil, fmt.Errorf("status %d", rec.Code)
	}
	body := rec.Body.String()
	values := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return "", nil, fmt.Errorf("line %q: %w", line, err)
		}
		values[line[:i]] = v
	}
	return body, values, sc.Err()
}

func TestHandlerExposesFamilies(t *testing.T) {
	t.Parallel()
	body, values := scrape(t, New("cs_slot"))
	for _, family := range []string{
		"challenge_stream_events_total counter",
		"challenge_stream_truncates_total counter",
		"challenge_stream_transactions_total counter",
		"challenge_stream_flushes_total counter",
		"challenge_stream_flush_duration_seconds histogram",
		"challenge_stream_dirty_set_size histogram",
		"challenge_stream_commit_to_flush_seconds histogram",
		"challenge_stream_last_flush_timestamp_seconds gauge",
		"challenge_stream_received_lsn gauge",
		"challenge_stream_stored_lsn gauge",
		"challenge_stream_confirmed_lsn gauge",
		"challenge_stream_replication_lag_bytes gauge",
		"challenge_stream_status_updates_total counter",
		"challenge_stream_reconnects_total counter",
		"challenge_stream_slot_recreated_total counter",
		"challenge_stream_state gauge",
		"challenge_stream_leader gauge",
		"challenge_stream_build_info gauge",
		"challenge_stream_slot_exists gauge",
		"challenge_stream_slot_active gauge",
		"challenge_stream_slot_wal_status gauge",
		"challenge_stream_slot_wal_retained_bytes gauge",
		"challenge_stream_slot_lag_bytes gauge",
		"challenge_stream_slot_poll_errors_total counter",
		"go_goroutines gauge",
		"process_resident_memory_bytes gauge",
	} {
		require.Contains(t, body, "# TYPE "+family+"\n")
	}
	// Labelled series exist at zero before anything happens, so rate() and increase() see the
	// first event.
	for _, table := range processors.Tables() {
		require.Contains(t, values, fmt.Sprintf(`challenge_stream_events_total{table=%q}`, table), "every source table's series exists")
	}
	for _, r := range processors.Rules() {
		require.Contains(t, values, fmt.Sprintf(`challenge_stream_rule_from_scratch_total{rule=%q}`, r.Name))
		if c := r.Checkpoint(); c != "" {
			require.Contains(t, values, fmt.Sprintf(`challenge_stream_foreign_checkpoint_writes_total{checkpoint=%q}`, c))
		}
	}
	require.Contains(t, values, `challenge_stream_slot_recreated_total{reason="lost"}`)
	require.Contains(t, values, `challenge_stream_slot_recreated_total{reason="missing"}`)
	require.Equal(t, 1.0, values[`challenge_stream_state{state="starting"}`])
	require.Equal(t, 0.0, values[`challenge_stream_state{state="streaming"}`])
	require.Equal(t, 0.0, values[`challenge_stream_leader{slot="cs_slot"}`])
	bi := buildinfo.Get()
	require.Equal(t, 1.0, values[fmt.Sprintf(`challenge_stream_build_info{goversion=%q,revision=%q,version=%q}`,
		bi.GoVersion, bi.Revision, bi.Version)])
}

// TestLeaderFollowsState: the lock holder is the leader while it catches up or streams; a
// standby, and a leader that lost its connection, are not.
func TestLeaderFollowsState(t *testing.T) {
	t.Parallel()
	m := New("cs_slot")
	for _, tc := range []struct {
		state  pipeline.State
		leader float64
	}{
		{pipeline.StateStandby, 0},
		{pipeline.StateCatchingUp, 1},
		{pipeline.StateStreaming, 1},
		{pipeline.StateReconnecting, 0},
		{pipeline.StateStarting, 0},
		{pipeline.StateStopped, 0},
	} {
		m.Observe(pipeline.StateChanged{State: tc.state})
		_, values := scrape(t, m)
		require.Equal(t, tc.leader, values[`challenge_stream_leader{slot="cs_slot"}`], tc.state.String())
	}
}

func TestObserverMovesCounters(t *testing.T) {
	t.Parallel()
	m := New("cs_slot")
	m.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	tables := []string{"plays", "comments"}
	m.Observe(pipeline.TransactionReceived{Tx: &replication.Transaction{Rows: []int{3, 2}}, Tables: tables})
	m.Observe(pipeline.TransactionReceived{Tx: &replication.Transaction{Rows: []int{1, 0}, Truncates: 1}, Tables: tables})
	committed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	m.Observe(pipeline.Flushed{
		LSN:     pglogrepl.LSN(0x1_0000_0010),
		Changes: 6, Keys: 6,
		Rules: []processors.RuleResult{
			{Rule: "milestones", Keys: 4, Duration: 200 * time.Millisecond},
			{Rule: "verified", Keys: 2, Duration: 10 * time.Millisecond, FromScratch: true},
		},
		Stats: processors.Stats{
			"p1": {Inserted: 2, Updated: 1},
			"c":  {Unchanged: 5},
		},
		Duration:           250 * time.Millisecond,
		FirstCommit:        committed.Add(-1500 * time.Millisecond),
		CommittedAt:        committed,
		ForeignCheckpoints: []string{"challenges:u:last_blocknumber"},
	})
	m.Observe(pipeline.StatusSent{Received: 0x2000, Applied: 0x1000, ServerWALEnd: 0x1800})
	m.Observe(pipeline.Reconnecting{Err: nil})
	m.Observe(pipeline.SlotRecreated{Reason: "lost"})
	m.SlotPolled(replication.SlotInfo{Exists: true, Active: true, WALStatus: "extended", RetainedBytes: 4096, LagBytes: 100})
	m.DecodingPolled(replication.DecodingStats{Found: true, SpilledTxns: 1, SpilledBytes: 2048, StreamedTxns: 3, StreamedBytes: 1 << 20, TotalTxns: 40, TotalBytes: 5 << 20})
	m.DecodingWorkMem(16 << 20)
	m.TrendingSettled(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC))
	m.OwnersPolled([]processors.Ownership{
		{Challenge: "u", Rule: "uploads", Owner: processors.OwnedBySidecar},
		{Challenge: "e", Owner: processors.OwnedByPollingJob},
		{Challenge: "fp", Rule: "first_playlist", Owner: processors.OwnedByNobody},
	})

	_, v := scrape(t, m)
	for series, want := range map[string]float64{
		`challenge_stream_state{state="streaming"}`:                                                    1,
		`challenge_stream_state{state="starting"}`:                                                     0,
		`challenge_stream_transactions_total`:                                                          2,
		`challenge_stream_events_total{table="plays"}`:                                                 4,
		`challenge_stream_events_total{table="comments"}`:                                              2,
		`challenge_stream_rule_flush_duration_seconds_sum{rule="milestones"}`:                          0.2,
		`challenge_stream_rule_dirty_keys_sum{rule="verified"}`:                                        2,
		`challenge_stream_rule_from_scratch_total{rule="verified"}`:                                    1,
		`challenge_stream_rule_from_scratch_total{rule="milestones"}`:                                  0,
		`challenge_stream_truncates_total`:                                                             1,
		`challenge_stream_flushes_total`:                                                               1,
		`challenge_stream_flush_duration_seconds_count`:                                                1,
		`challenge_stream_flush_duration_seconds_sum`:                                                  0.25,
		`challenge_stream_dirty_set_size_sum`:                                                          6,
		`challenge_stream_upserts_total{challenge="p1",outcome="inserted"}`:                            2,
		`challenge_stream_upserts_total{challenge="p1",outcome="updated"}`:                             1,
		`challenge_stream_upserts_total{challenge="c",outcome="unchanged"}`:                            5,
		`challenge_stream_commit_to_flush_seconds_count`:                                               1,
		`challenge_stream_commit_to_flush_seconds_sum`:                                                 1.5,
		`challenge_stream_last_flush_timestamp_seconds`:                                                float64(committed.Unix()),
		`challenge_stream_stored_lsn`:                                                                  float64(0x1_0000_0010),
		`challenge_stream_received_lsn`:                                                                0x2000,
		`challenge_stream_confirmed_lsn`:                                                               0x1000,
		`challenge_stream_replication_lag_bytes`:                                                       0x800,
		`challenge_stream_status_updates_total`:                                                        1,
		`challenge_stream_reconnects_total`:                                                            1,
		`challenge_stream_slot_recreated_total{reason="lost"}`:                                         1,
		`challenge_stream_slot_recreated_total{reason="missing"}`:                                      0,
		`challenge_stream_slot_exists`:                                                                 1,
		`challenge_stream_slot_active`:                                                                 1,
		`challenge_stream_slot_wal_status{status="extended"}`:                                          1,
		`challenge_stream_slot_wal_status{status="reserved"}`:                                          0,
		`challenge_stream_slot_wal_retained_bytes`:                                                     4096,
		`challenge_stream_slot_lag_bytes`:                                                              100,
		`challenge_stream_slot_decoded_bytes{how="spilled"}`:                                           2048,
		`challenge_stream_slot_decoded_bytes{how="streamed"}`:                                          1 << 20,
		`challenge_stream_slot_decoded_transactions{how="total"}`:                                      40,
		`challenge_stream_decoding_work_mem_bytes`:                                                     16 << 20,
		`challenge_stream_trending_settled_week_timestamp_seconds`:                                     float64(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC).Unix()),
		`challenge_stream_challenge_owned{challenge="u"}`:                                              1,
		`challenge_stream_challenge_owned{challenge="e"}`:                                              0,
		`challenge_stream_challenge_owned{challenge="fp"}`:                                             0,
		`challenge_stream_foreign_checkpoint_writes_total{checkpoint="challenges:u:last_blocknumber"}`: 1,
	} {
		require.Contains(t, v, series)
		require.InDelta(t, want, v[series], 1e-9, series)
	}
}

func TestLSNOnlyFlushMeasuresNoLatency(t *testing.T) {
	t.Parallel()
	m := New("cs_slot")
	m.Observe(pipeline.Flushed{LSN: 0x10, CommittedAt: time.Unix(100, 0)})
	_, v := scrape(t, m)
	require.Equal(t, 1.0, v[`challenge_stream_flushes_total`])
	require.Equal(t, 0.0, v[`challenge_stream_commit_to_flush_seconds_count`])
	require.Equal(t, 1.0, v[`challenge_stream_dirty_set_size_bucket{le="1"}`])
}

func TestMissingSlotClearsGauges(t *testing.T) {
	t.Parallel()
	m := New("cs_slot")
	m.SlotPolled(replication.SlotInfo{Exists: true, Active: true, WALStatus: "lost", RetainedBytes: 10, LagBytes: 10})
	m.SlotPolled(replication.SlotInfo{})
	_, v := scrape(t, m)
	require.Equal(t, 0.0, v[`challenge_stream_slot_exists`])
	require.Equal(t, 0.0, v[`challenge_stream_slot_active`])
	require.Equal(t, 0.0, v[`challenge_stream_slot_wal_status{status="lost"}`])
	require.Equal(t, 0.0, v[`challenge_stream_slot_wal_retained_bytes`])
}

func TestLagBytes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		applied, walEnd pglogrepl.LSN
		want            uint64
	}{
		{"behind", 0x100, 0x180, 0x80},
		{"caught up", 0x100, 0x100, 0},
		{"no keepalive yet", 0x100, 0, 0},
	} {
		require.Equal(t, tc.want, lagBytes(tc.applied, tc.walEnd), tc.name)
	}
}

func TestSlotPollerSurvivesUnreachableDatabase(t *testing.T) {
	t.Parallel()
	m := New("cs_slot")
	// Port 1 on loopback refuses connections at once.
	database, err := pgx.ParseConfig("postgres://u:secret@127.0.0.1:1/db?connect_timeout=2")
	require.NoError(t, err)
	p := m.NewSlotPoller(database, "s", time.Hour, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	require.Eventually(t, func() bool {
		_, v, err := gather(m)
		return err == nil && v[`challenge_stream_slot_poll_errors_total`] == 1
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	<-done
}

// TestLeaderFollowsTheChosenSlotName: with no slot configured the leader series appears under
// the name the pipeline chooses, carries the state it is in, and moves if it chooses again.
func TestLeaderFollowsTheChosenSlotName(t *testing.T) {
	m := New("")
	_, values := scrape(t, m)
	for series := range values {
		require.NotContains(t, series, "challenge_stream_leader", "no series before the name is known")
	}
	m.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	m.Observe(pipeline.SlotNamed{Slot: "challenge_stream"})
	_, values = scrape(t, m)
	require.Equal(t, 1.0, values[`challenge_stream_leader{slot="challenge_stream"}`], "the state before the name")
	m.Observe(pipeline.SlotNamed{Slot: "challenge_stream_b"})
	m.Observe(pipeline.StateChanged{State: pipeline.StateStandby})
	_, values = scrape(t, m)
	require.Equal(t, 0.0, values[`challenge_stream_leader{slot="challenge_stream_b"}`])
	require.NotContains(t, values, `challenge_stream_leader{slot="challenge_stream"}`, "moved, not duplicated")
}
