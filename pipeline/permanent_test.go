package pipeline

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/replication"
)

// TestServerVersionIsPermanent: an old server stays old; run exits instead of retrying.
func TestServerVersionIsPermanent(t *testing.T) {
	t.Parallel()
	require.True(t, isPermanent(fmt.Errorf("check server: %w", replication.ErrServerVersion)))
}
