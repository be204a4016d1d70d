package pipeline

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The window rule as a table: each case is a rule state and a view of the loop, and what the
// rule decides.
func TestWindowRule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := windowRule{window: time.Second, maxSize: 10}
	open := windowView{hasChanges: true, size: 3, openedAt: t0}
	with := func(f func(*windowRule)) windowRule { r := base; f(&r); return r }
	view := func(f func(*windowView)) windowView { v := open; f(&v); return v }

	t.Run("due", func(t *testing.T) {
		for _, c := range []struct {
			name       string
			rule       windowRule
			view       windowView
			at         time.Duration
			due, early bool
		}{
			{"empty window", base, windowView{openedAt: t0}, 2 * time.Second, false, false},
			{"while a flush runs, even past its length", base, view(func(v *windowView) { v.flushing = true }), 2 * time.Second, false, false},
			{"before its length", base, open, 500 * time.Millisecond, false, false},
			{"at its length", base, open, time.Second, true, false},
			{"full", base, view(func(v *windowView) { v.size = 10 }), 0, true, false},
			{"caught up: at once", with(func(r *windowRule) { r.caughtUp = true }), open, 0, true, false},
			{"caught up, fixed windows: its length", with(func(r *windowRule) { r.caughtUp, r.fixed = true, true }), open, 0, false, false},
			{"behind: stretched to 8 windows", with(func(r *windowRule) { r.behind = true }), open, 7 * time.Second, false, false},
			{"behind, probed WAL end reached: early", with(func(r *windowRule) { r.behind, r.serverEnd = true, 5000 }),
				view(func(v *windowView) { v.received, v.probeable = 5000, true }), time.Second, true, true},
			{"behind, WAL end reached but no probe possible", with(func(r *windowRule) { r.behind, r.serverEnd = true, 5000 }),
				view(func(v *windowView) { v.received = 5000 }), time.Second, false, false},
			{"behind, already closed early once", with(func(r *windowRule) { r.behind, r.serverEnd, r.closedEarly = true, 5000, true }),
				view(func(v *windowView) { v.received, v.probeable = 5000, true }), time.Second, false, false},
		} {
			t.Run(c.name, func(t *testing.T) {
				due, early := c.rule.due(c.view, t0.Add(c.at))
				require.Equal(t, c.due, due, "due")
				require.Equal(t, c.early, early, "early")
			})
		}
	})

	t.Run("length", func(t *testing.T) {
		for _, c := range []struct {
			name string
			rule windowRule
			want time.Duration
		}{
			{"configured", base, time.Second},
			{"a flush of half a window does not stretch", with(func(r *windowRule) { r.lastFlush = 500 * time.Millisecond }), time.Second},
			{"a slow flush stretches to four times itself", with(func(r *windowRule) { r.lastFlush = 600 * time.Millisecond }), 2400 * time.Millisecond},
			{"at most eight windows", with(func(r *windowRule) { r.lastFlush = 5 * time.Second }), 8 * time.Second},
			{"a backlog takes the longest stretch", with(func(r *windowRule) { r.behind = true }), 8 * time.Second},
		} {
			require.Equal(t, c.want, c.rule.length(), c.name)
		}
	})

	t.Run("wakeAt", func(t *testing.T) {
		require.True(t, base.wakeAt(windowView{}).IsZero(), "an empty window needs no wake-up")
		require.True(t, base.wakeAt(view(func(v *windowView) { v.flushing = true })).IsZero(),
			"a window waiting for the flusher sets no time: the flush wakes the loop")
		require.Equal(t, t0.Add(time.Second), base.wakeAt(open))
		probing := with(func(r *windowRule) { r.behind, r.probedAt = true, t0.Add(300*time.Millisecond) })
		require.Equal(t, t0.Add(400*time.Millisecond), probing.wakeAt(view(func(v *windowView) { v.probeable = true })),
			"the next probe comes before the stretched window's end")
	})

	t.Run("caught up resets the stretch", func(t *testing.T) {
		r := with(func(r *windowRule) { r.behind, r.lastFlush, r.closedEarly = true, 3*time.Second, true })
		r.caughtUpNow()
		require.Equal(t, time.Second, r.length())
		require.False(t, r.closedEarly)
		r.took(t0.Add(-time.Minute), t0, true, 100)
		require.False(t, r.caughtUp)
		require.True(t, r.behind, "a transaction a minute old is a backlog")
	})
}
