package replication

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSyncStandbyMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		setting string
		want    bool
	}{
		{"", false},
		{"*", true},
		{" * ", true},
		{"standby1, standby2", false},
		{"standby1, *", true},
		{"FIRST 1 (*)", true},
		{"first 2 (s1, *)", true},
		{"ANY 1 (s1, s2)", false},
		{"2 (s1, \"challenge-stream\")", true},
		{"\"Challenge-Stream\"", true},
		{"\"challenge-stream-flush\"", false},
		{"\"*\"", true},
		{"\"a,b\", c", false},
		{"\"x\"\"y\"", false},
	} {
		require.Equal(t, tc.want, syncStandbyMatches(tc.setting, ApplicationName), "%q", tc.setting)
	}
}
