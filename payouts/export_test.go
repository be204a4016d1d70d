package payouts

import "time"

// SetClock replaces the scheduler's clock.
func (s *Scheduler) SetClock(now func() time.Time) { s.now = now }

// UntilNextFriday exports untilNextFriday.
var UntilNextFriday = untilNextFriday
