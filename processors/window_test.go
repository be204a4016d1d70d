package processors_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/processors"
)

// applyWindow runs the flush's rule step for a window of the given tracks and commenters whose
// legacy maxima are the current table maxima (everything since the last window is in it).
func (f *fixture) applyWindow(tracks, users []int64) processors.WindowResult {
	f.t.Helper()
	maxPlay, maxBlock := f.maxima()
	w := processors.Window{Keys: map[string]processors.Keys{
		"milestones": {"tracks": tracks}, "comments": {"users": users},
	}, Legacy: checkpoints.Legacy{}}
	if len(tracks) > 0 {
		w.Legacy[checkpoints.PlaysCheckpoint] = maxPlay
	}
	if len(users) > 0 {
		w.Legacy[checkpoints.CommentsCheckpoint] = maxBlock
	}
	var res processors.WindowResult
	f.inTx(func(tx pgx.Tx) {
		var err error
		res, err = processors.ApplyWindow(f.ctx, tx, w, processors.WindowOptions{})
		require.NoError(f.t, err)
	})
	return res
}

func (f *fixture) setActive(active bool, ids ...string) {
	f.t.Helper()
	f.exec(`UPDATE challenges SET active = $1 WHERE id = ANY($2::text[])`, active, ids)
}

// pollingPair is the same host history in two databases: one kept by the sidecar's flush
// (ApplyWindow per window), one by the polling job (CatchUp per tick, without margins, as the
// job ran).
type pollingPair struct {
	side, poll *fixture
}

func newPollingPair(t *testing.T) pollingPair {
	p := pollingPair{side: setup(t), poll: setup(t)}
	for _, f := range p.both() {
		f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
		f.history()
	}
	p.poll.catchUp(processors.CatchUpOptions{})
	p.side.catchUp(processors.CatchUpOptions{})
	p.requireEqual(t)
	return p
}

func (p pollingPair) both() []*fixture { return []*fixture{p.side, p.poll} }

// step writes the same events in both databases, then flushes one window in the sidecar's
// and runs one tick of the polling job.
func (p pollingPair) step(write func(f *fixture), tracks, users []int64) processors.WindowResult {
	for _, f := range p.both() {
		write(f)
	}
	p.poll.catchUp(processors.CatchUpOptions{})
	return p.side.applyWindow(tracks, users)
}

func (p pollingPair) requireEqual(t *testing.T) {
	t.Helper()
	require.Equal(t, p.poll.progressRows(), p.side.progressRows())
	require.Equal(t, p.poll.legacy(), p.side.legacy())
	require.Empty(t, p.side.verify())
}

// TestApplyWindowCommentRuleReactivated switches c off, lets comments arrive and windows flush
// meanwhile, switches it on again: one more comment later, the sidecar has derived the gap as
// the polling job does.
func TestApplyWindowCommentRuleReactivated(t *testing.T) {
	t.Parallel()
	p := newPollingPair(t)
	for _, f := range p.both() {
		f.setActive(false, "c")
	}
	held := p.side.legacy()[checkpoints.CommentsCheckpoint]

	res := p.step(func(f *fixture) {
		f.comment(comment{id: 100, user: 3000, at: "2025-06-02", block: 300})
		f.comment(comment{id: 101, user: 3001, at: "2025-06-03", block: 301})
		f.exec(`UPDATE comments SET is_visible = true, blocknumber = 302 WHERE comment_id = 5`) // 2001 un-hides
	}, nil, []int64{3000, 3001, 2001})
	require.Equal(t, heldWith(checkpoints.CommentsCheckpoint), res.Held)
	require.Empty(t, res.Stats)
	res = p.step(func(f *fixture) { f.plays(10, 5, in2025) }, []int64{10}, nil)
	require.Equal(t, heldWith(checkpoints.CommentsCheckpoint), res.Held, "held while inactive, whatever the window holds")
	res = p.step(func(f *fixture) {
		f.comment(comment{id: 102, user: 3002, at: "2025-06-04", block: 303})
	}, nil, []int64{3002})
	require.Equal(t, held, p.side.legacy()[checkpoints.CommentsCheckpoint], "an inactive family's checkpoint stays")
	require.Equal(t, p.poll.legacy(), p.side.legacy())
	require.NotContains(t, p.side.progressRows(), "c bb8:202523", "nothing derived while c is off")

	for _, f := range p.both() {
		f.setActive(true, "c")
	}
	res = p.step(func(f *fixture) {
		f.comment(comment{id: 103, user: 3003, at: "2025-06-05", block: 304})
	}, nil, []int64{3003})
	require.Equal(t, heldWith(), res.Held)
	require.Len(t, res.Gaps, 1)
	require.Equal(t, processors.Gap{Checkpoint: checkpoints.CommentsCheckpoint, From: held, To: 304, Scanned: res.Gaps[0].Scanned}, res.Gaps[0])
	require.EqualValues(t, 304, p.side.legacy()[checkpoints.CommentsCheckpoint])
	p.requireEqual(t)
	rows := p.side.progressRows()
	for _, spec := range []string{"bb8:202523", "bb9:202523", "bba:202523", "bbb:202523", "7d1:202510"} {
		require.Contains(t, rows, "c "+spec)
	}

	// Once derived, the gap is not derived again.
	res = p.step(func(f *fixture) {
		f.comment(comment{id: 104, user: 3004, at: "2025-06-05", block: 305})
	}, nil, []int64{3004})
	require.Empty(t, res.Gaps)
	p.requireEqual(t)
}

// TestApplyWindowMilestonesReactivated does the same with every p tier switched off.
func TestApplyWindowMilestonesReactivated(t *testing.T) {
	t.Parallel()
	p := newPollingPair(t)
	for _, f := range p.both() {
		f.setActive(false, "p1", "p2", "p3")
	}
	held := p.side.legacy()[checkpoints.PlaysCheckpoint]

	res := p.step(func(f *fixture) {
		f.plays(10, 200, in2025) // 1000 completes p1
		f.plays(18, 300, in2025) // 1006 reaches p2
	}, []int64{10, 18}, nil)
	require.Equal(t, heldWith(checkpoints.PlaysCheckpoint), res.Held)
	require.Empty(t, res.Stats)
	res = p.step(func(f *fixture) {
		f.comment(comment{id: 100, user: 3000, at: "2025-06-02", block: 300})
	}, nil, []int64{3000})
	require.Equal(t, heldWith(checkpoints.PlaysCheckpoint), res.Held)
	require.Equal(t, held, p.side.legacy()[checkpoints.PlaysCheckpoint])
	require.Equal(t, p.poll.legacy(), p.side.legacy())

	// One tier back is enough for the family to run again.
	for _, f := range p.both() {
		f.setActive(true, "p1", "p2")
	}
	res = p.step(func(f *fixture) { f.plays(11, 1, in2025) }, []int64{11}, nil)
	require.Equal(t, heldWith(), res.Held)
	require.Len(t, res.Gaps, 1)
	require.Equal(t, checkpoints.PlaysCheckpoint, res.Gaps[0].Checkpoint)
	require.Equal(t, held, res.Gaps[0].From)
	p.requireEqual(t)
	for _, f := range p.both() {
		f.setActive(true, "p3")
	}
	p.step(func(f *fixture) { f.plays(11, 1, in2025) }, []int64{11}, nil)
	p.requireEqual(t)
	require.Equal(t, progress{User: 1000, Current: 250, Complete: true, Amount: 25}, p.side.progressRows()["p1 3e8:250"])
}

// TestCatchUpHoldsInactiveFamily: a recovery or cut-over with c inactive leaves its checkpoint
// held, and the first window after re-activation derives the gap.
func TestCatchUpHoldsInactiveFamily(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.setActive(false, "c")
	f.history()
	res := f.catchUp(processors.CatchUpOptions{})
	require.True(t, res.Checkpoints[checkpoints.CommentsCheckpoint].Held)
	require.False(t, res.Checkpoints[checkpoints.PlaysCheckpoint].Held)
	require.Zero(t, res.Checkpoints[checkpoints.CommentsCheckpoint].Scanned)
	require.Zero(t, f.legacy()[checkpoints.CommentsCheckpoint])

	f.setActive(true, "c")
	r := f.applyWindow([]int64{10}, nil)
	require.Len(t, r.Gaps, 1)
	require.Empty(t, f.verify())
	_, maxBlock := f.maxima()
	require.Equal(t, maxBlock, f.legacy()[checkpoints.CommentsCheckpoint])
}

// TestApplyWindowForeignWriter emulates the polling job running alongside the sidecar: it
// writes an older count and moves the plays checkpoint. The next flush reports it once and
// re-derives what the job touched.
func TestApplyWindowForeignWriter(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.history()
	f.catchUp(processors.CatchUpOptions{})
	res := f.applyWindow([]int64{10}, []int64{2000})
	require.Empty(t, res.Foreign)

	f.plays(10, 20, in2025)
	maxPlay, _ := f.maxima()
	// The job counted before the last plays and wrote after them.
	f.exec(`UPDATE user_challenges SET current_step_count = 100 WHERE challenge_id = 'p1' AND specifier = '3e8:250'`)
	f.exec(`UPDATE indexing_checkpoints SET last_checkpoint = $1 WHERE tablename = $2`, maxPlay, checkpoints.PlaysCheckpoint)
	require.NotEmpty(t, f.verify())

	res = f.applyWindow(nil, []int64{2000})
	require.Equal(t, []string{checkpoints.PlaysCheckpoint}, res.Foreign)
	require.Len(t, res.Gaps, 1)
	require.True(t, res.Gaps[0].Foreign)
	require.Empty(t, f.verify(), "the gap derivation repaired the older count")

	res = f.applyWindow(nil, []int64{2000})
	require.Empty(t, res.Foreign, "reported once")
	require.Empty(t, res.Gaps)
}

// TestApplyWindowCommonCase: with every rule active and nobody else writing, the flush adds no
// write beyond the rows and checkpoints that change (the catch-up derived the full-rescan rules).
func TestApplyWindowCommonCase(t *testing.T) {
	t.Parallel()
	f := setup(t)
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 0})
	f.history()
	f.catchUp(processors.CatchUpOptions{})
	res := f.applyWindow([]int64{10}, []int64{2000})
	require.Empty(t, res.Held)
	require.Empty(t, res.Gaps)
	require.Empty(t, res.Foreign)
	require.Zero(t, f.count(`SELECT count(*) FROM challenge_stream.legacy_checkpoints WHERE held_since IS NOT NULL`))
	require.Equal(t, int64(2+len(untouched())), f.count(`SELECT count(*) FROM challenge_stream.legacy_checkpoints
		JOIN indexing_checkpoints USING (tablename) WHERE last_written = last_checkpoint`), "one per incremental rule")
}

// TestApplyWindowDroppedKeys: a window opened while a rule was off kept none of its keys; if the
// rule is on again (and was already released by an earlier flush) when that window is applied,
// the flush derives what the window missed — from the legacy checkpoint for an incremental rule,
// from scratch for a full-rescan one.
func TestApplyWindowDroppedKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.setLegacy(checkpoints.Legacy{checkpoints.PlaysCheckpoint: 0, checkpoints.CommentsCheckpoint: 10})
	require.NoError(t, hostdb.ActivateRules(f.ctx, f.db.Pool))
	f.applyWindow(nil, nil) // derives the full-rescan rules once: later windows are incremental

	f.comment(comment{id: 1, user: 0x77, at: "2025-06-02", block: 11})
	f.artist(0x78, true)
	w := processors.Window{Keys: map[string]processors.Keys{}, Dropped: []string{"comments", "verified"},
		Legacy: checkpoints.Legacy{checkpoints.CommentsCheckpoint: 11}}
	var res processors.WindowResult
	f.inTx(func(tx pgx.Tx) {
		var err error
		res, err = processors.ApplyWindow(f.ctx, tx, w, processors.WindowOptions{})
		require.NoError(t, err)
	})
	rows := f.progressRows()
	require.Contains(t, rows, "c 77:202523", "the comment's week, though its key was dropped")
	require.Contains(t, rows, "v 78", "the verified user, though its key was dropped")
	var gaps []string
	for _, g := range res.Gaps {
		gaps = append(gaps, g.Checkpoint)
	}
	require.Equal(t, []string{checkpoints.CommentsCheckpoint, checkpoints.RuleStateName("verified")}, gaps)
	require.Empty(t, f.verify())
}
