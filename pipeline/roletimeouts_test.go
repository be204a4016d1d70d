package pipeline_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

// TestTimeoutsOnTheRole: a DBA's timeouts on the sidecar's role in its database — tight
// statement, lock and idle-in-transaction timeouts, and an idle_session_timeout shorter than
// the quiet spells between plays — with the production status interval and idle-confirm
// threshold, so the flush connection really idles. The same walsender and flush backend stream
// throughout: before the flush session turned idle_session_timeout off for itself, every quiet
// spell ended it (57P05) and the whole session with it.
func TestTimeoutsOnTheRole(t *testing.T) {
	e := setup(t)
	for _, setting := range []string{"statement_timeout = '500ms'", "lock_timeout = '200ms'",
		"idle_in_transaction_session_timeout = '500ms'", "idle_session_timeout = '1s'"} {
		e.exec(`ALTER ROLE CURRENT_USER IN DATABASE ` + e.db.Name + ` SET ` + setting)
	}
	s := e.streamingArtist(0x49, 490, func(c *pipeline.Config) {
		c.StatusInterval = pipeline.DefaultStatusInterval
		c.IdleConfirmBytes = pipeline.DefaultIdleConfirmBytes
	})
	walsender, flush := e.sidecarBackends()
	for i := int64(1); i <= 3; i++ {
		e.plays(490, 100)
		eventually(t, "the plays applied", func() bool {
			current, _, found := e.row("p1", "49:250")
			return found && current >= min(100*i, 250)
		})
		time.Sleep(2500 * time.Millisecond) // the condition: quiet for 2.5 idle_session_timeouts
	}
	e.requireRow("p1", "49:250", 250, true)
	afterWalsender, afterFlush := e.sidecarBackends()
	require.Equal(t, walsender, afterWalsender, "the walsender streamed throughout")
	require.Equal(t, flush, afterFlush, "the flush session outlived the quiet spells")
	s.stop()
}
