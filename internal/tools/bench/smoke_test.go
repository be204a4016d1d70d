package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/challenge-stream/challenge-stream/internal/tools/bench"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/internal/tools/testbin"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
)

// binary is challenge-stream, built for the memory section, which runs it as its own process.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// tiny is a run of every section in seconds: it proves the sections work, not how fast.
func tiny(t *testing.T, section string) bench.Config {
	db := pgtest.NewDB(t)
	binDir := ""
	if c := pgtest.Cluster(); c != nil {
		binDir = c.BinDir()
	}
	return bench.Config{
		ServerURL: db.URL,
		BinDir:    binDir,
		Binary:    binary,
		Sections:  []string{section},
		Workload: workload.Config{
			Artists: 100, TracksPerArtist: 4, Listeners: 200, Comments: 300, MilestoneGap: 2,
		},
		DrainPlays:    []int{1000, 2000},
		CPUProfile:    filepath.Join(t.TempDir(), "drain.pprof"),
		Rate:          300,
		Duration:      1500 * time.Millisecond,
		Warmup:        -1,
		Windows:       []time.Duration{200 * time.Millisecond},
		BlockInterval: 100 * time.Millisecond,
		PollRates:     []float64{50, 500},
		PollTick:      time.Second,
		PollRows:      167,
		PollDuration:  1500 * time.Millisecond,
		MemoryRows:    5000,
		Log:           zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		Progress:      testWriter{t},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestSmoke runs each section at a tiny size. Timing is never asserted: only that every
// section completes, fills its rows and leaves rows that verify.
func TestSmoke(t *testing.T) {
	// Sections run one after the other: the drain section's CPU profile is process-wide.
	for _, section := range bench.Sections() {
		t.Run(section, func(t *testing.T) {
			cfg := tiny(t, section)
			rep, err := bench.Run(context.Background(), cfg)
			require.NoError(t, err)
			var out strings.Builder
			require.NoError(t, rep.Write(&out))
			t.Log("\n" + out.String())

			var rows int
			for _, r := range rep.Rows {
				if r.Section == section {
					rows++
					require.NotEmpty(t, r.Sidecar, r.Measure)
				}
			}
			require.Positive(t, rows, "the section reports rows")
			parity := rep.Rows[len(rep.Rows)-1]
			require.Equal(t, "parity", parity.Section)
			require.Equal(t, "yes", parity.Met, parity.Sidecar)

			if section == bench.SectionDrain {
				info, err := os.Stat(cfg.CPUProfile)
				require.NoError(t, err)
				require.Positive(t, info.Size(), "the drain writes a CPU profile")
			}
		})
	}
}
