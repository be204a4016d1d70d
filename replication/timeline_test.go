package replication

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func TestLastSwitchpoint(t *testing.T) {
	for name, tc := range map[string]struct {
		content string
		want    pglogrepl.LSN
		err     bool
	}{
		"one promotion":  {content: "1\t0/3000158\tno recovery target specified\n", want: 0x3000158},
		"two promotions": {content: "1\t0/3000158\tno recovery target specified\n\n2\t0/5A000000\tbefore 2026-12-01\n", want: 0x5A000000},
		"comments":       {content: "# restored\n1\t1/0\tat restore point \"r\"\n", want: 0x100000000},
		"empty":          {content: "", err: true},
		"malformed":      {content: "1\n", err: true},
		"bad lsn":        {content: "1\tnot-an-lsn\tx\n", err: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := lastSwitchpoint([]byte(tc.content))
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
