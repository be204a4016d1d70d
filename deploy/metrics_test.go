package deploy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/challenge-stream/challenge-stream/metrics"
	"github.com/challenge-stream/challenge-stream/pipeline"
	"github.com/challenge-stream/challenge-stream/processors"
	"github.com/challenge-stream/challenge-stream/replication"
)

// externalMetrics are the series the rules read from elsewhere: Prometheus' own up, and
// postgres_exporter's replication_slot collector (on by default; names as it exports them).
var externalMetrics = map[string]bool{
	"up":                                 true,
	"pg_replication_slot_slot_is_active": true,
	"pg_replication_slot_slot_current_wal_lsn":     true,
	"pg_replication_slot_slot_confirmed_flush_lsn": true,
	"pg_replication_slot_safe_wal_size_bytes":      true,
	"pg_replication_slot_wal_status":               true,
}

// registered is every series name the binary's metrics expose, histogram and summary series
// included. Labelled families appear only once they have a child, so the observer is driven
// through every event first; the live binary's own /metrics adds the rest.
func registered(t *testing.T, bin liveBinary) map[string]bool {
	t.Helper()
	m := metrics.New(pipeline.DefaultName)
	m.Observe(pipeline.StateChanged{State: pipeline.StateStreaming})
	m.Observe(pipeline.TransactionReceived{Tx: &replication.Transaction{Rows: []int{1, 1}, Truncates: 1},
		Tables: []string{"plays", "comments"}})
	m.Observe(pipeline.Flushed{
		LSN: 1, Changes: 2, Keys: 2, Duration: time.Millisecond,
		Rules:       []processors.RuleResult{{Rule: "milestones", Keys: 1, Duration: time.Millisecond}},
		Stats:       processors.Stats{"p1": {Inserted: 1, Updated: 1, Unchanged: 1}},
		FirstCommit: time.Unix(1, 0), CommittedAt: time.Unix(2, 0),
	})
	m.Observe(pipeline.StatusSent{Received: pglogrepl.LSN(2), Applied: pglogrepl.LSN(1), ServerWALEnd: pglogrepl.LSN(3)})
	m.Observe(pipeline.Reconnecting{Err: nil})
	m.Observe(pipeline.SlotRecreated{Reason: "lost"})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)

	names := map[string]bool{}
	typeLine := regexp.MustCompile(`(?m)^# TYPE (\S+) (\S+)$`)
	for _, text := range []string{rec.Body.String(), bin.get(t, "/metrics")} {
		for _, match := range typeLine.FindAllStringSubmatch(text, -1) {
			name, kind := match[1], match[2]
			names[name] = true
			switch kind {
			case "histogram":
				names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
			case "summary":
				names[name+"_sum"], names[name+"_count"] = true, true
			}
		}
	}
	require.True(t, names["challenge_stream_upserts_total"], "the driven observer must produce every family")
	return names
}

var (
	promQLStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promQLBraces    = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promQLGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promQLIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promQLOperators = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true}
)

// metricNames extracts the metric names from a PromQL expression: identifiers that are not
// functions (followed by a parenthesis), keywords, label names or values.
func metricNames(expr string) []string {
	e := promQLStrings.ReplaceAllString(expr, `""`)
	e = promQLBraces.ReplaceAllString(e, " ")
	e = promQLGrouping.ReplaceAllString(e, " ")
	e = regexp.MustCompile(`\b\d[\w.]*`).ReplaceAllString(e, " ") // numbers, 1e9, 5m
	var names []string
	for _, m := range promQLIdent.FindAllStringSubmatch(e, -1) {
		if m[1] != "" || promQLOperators[strings.ToLower(m[0])] {
			continue
		}
		names = append(names, m[0])
	}
	return names
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, []string{"a_b", "c"},
		metricNames(`max by (slot) (a_b{job="x", le="+Inf"}[5m]) or on() vector(0) and rate(c[$__rate_interval]) > 1e9`))
	require.Equal(t, []string{"up"}, metricNames(`absent(up{job="challenge-stream"})`))
}

// alertExprs reads the rules' expressions.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	require.NoError(t, yaml.UnmarshalStrict(readFile(t, "prometheus/alerts.yaml"), &rules))
	exprs := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], r.Alert)
			exprs[r.Alert] = r.Expr
		}
	}
	require.NotEmpty(t, exprs)
	return exprs
}

// dashboardExprs reads the dashboard's queries.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(readFile(t, "grafana/challenge-stream.json"), &dash))
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for i, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, p.Title)
			exprs[p.Title+"#"+string(rune('A'+i))] = tg.Expr
		}
	}
	for i, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && strings.HasPrefix(q, "label_values(") {
			metric, _, _ := strings.Cut(strings.TrimPrefix(q, "label_values("), ",")
			exprs["variable#"+string(rune('0'+i))] = metric
		}
	}
	return exprs
}

// TestEveryMetricIsRegistered: a metric renamed in metrics/ without the rules and the dashboard
// would leave an alert that can never fire and a blank panel.
func TestEveryMetricIsRegistered(t *testing.T) {
	bin := startBinary(t)
	names := registered(t, bin)
	for file, exprs := range map[string]map[string]string{
		"prometheus/alerts.yaml":        alertExprs(t),
		"grafana/challenge-stream.json": dashboardExprs(t),
	} {
		var seen []string
		for where, expr := range exprs {
			used := metricNames(expr)
			require.NotEmpty(t, used, "%s %s: no metric in %q", file, where, expr)
			for _, n := range used {
				require.True(t, names[n] || externalMetrics[n], "%s %s: %s is not a metric the binary registers", file, where, n)
				seen = append(seen, n)
			}
		}
		sort.Strings(seen)
		t.Logf("%s uses %d metric references", file, len(seen))
	}
}

// TestDashboardShowsWhatItShould: the panels the issue asks for, by the metric they read.
func TestDashboardShowsWhatItShould(t *testing.T) {
	t.Parallel()
	var all []string
	for _, e := range dashboardExprs(t) {
		all = append(all, metricNames(e)...)
	}
	for _, want := range []string{
		"challenge_stream_slot_lag_bytes", "challenge_stream_events_total", "challenge_stream_flush_duration_seconds_bucket",
		"challenge_stream_commit_to_flush_seconds_bucket", "challenge_stream_upserts_total", "challenge_stream_leader",
	} {
		require.Contains(t, all, want)
	}
}

// TestEveryAlertHasAFiringTest: promtool test rules only checks the cases written down; this
// makes sure each rule has one in which it fires.
func TestEveryAlertHasAFiringTest(t *testing.T) {
	t.Parallel()
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(readFile(t, "prometheus/alerts_test.yaml"), &tests))
	require.Equal(t, []string{"alerts.yaml"}, tests.RuleFiles)
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			fires[a.Alertname] = fires[a.Alertname] || len(a.ExpAlerts) > 0
		}
	}
	for alert := range alertExprs(t) {
		require.True(t, fires[alert], "alerts_test.yaml has no case in which %s fires", alert)
	}
}
