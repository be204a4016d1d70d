package replication

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSettingDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"60s": time.Minute, "1min": time.Minute, "500ms": 500 * time.Millisecond, "0": 0,
		"2h": 2 * time.Hour, "1d": 24 * time.Hour, "1500": 1500 * time.Millisecond,
	} {
		got, err := parseSettingDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "-1", "1 fortnight", "1.5s"} {
		_, err := parseSettingDuration(bad)
		require.Error(t, err, bad)
	}
}
