package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestLogDurationsCarryTheirUnit: a duration field reads "1.5s" in both formats, never a bare
// number of seconds.
func TestLogDurationsCarryTheirUnit(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		var buf bytes.Buffer
		c := commonFlags{logFormat: format, logLevel: "info"}
		c.logger(env{stderr: &buf}).Info("flushed", zap.Duration("took", 1500*time.Millisecond))
		require.Contains(t, buf.String(), "1.5s", format)
	}
}
