package processors

import (
	"context"
	"fmt"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// family is one rule family — the rules that share a source table and a legacy checkpoint — as
// both the window flush (ApplyWindow) and the catch-up (CatchUp) see it. Everything that differs
// between families is here, so neither of them names a family: the shape a rule registry fills.
type family struct {
	// checkpoint is the legacy checkpoint's name in indexing_checkpoints.
	checkpoint string
	// active reports whether any of the family's rules is active in the catalog. An inactive
	// family is skipped and its checkpoint held, as the polling job does.
	active func(Catalog) bool
	// stored picks the family's checkpoint out of the stored state.
	stored func(checkpoints.LegacyState) checkpoints.LegacyCheckpoint
	// get and set read and write the family's value in a checkpoints.Legacy; clear marks it as
	// "leave alone" for AdvanceLegacy.
	get   func(checkpoints.Legacy) (value int64, has bool)
	set   func(l *checkpoints.Legacy, value int64)
	clear func(l *checkpoints.Legacy)
	// sourceMax is the family's current source maximum (plays.id, comments.blocknumber).
	sourceMax func(maxima) int64
	// dirty is what a window made dirty for the family, and visit derives those keys.
	dirty func(Window) []int64
	visit func(d *deriver, ctx context.Context) func(ids []int64) error
	// scan derives what changed in the source range (from − margin, to]: the incremental path
	// of the catch-up and of a flush's gap derivation.
	scan func(d *deriver, ctx context.Context, from, to int64, opts CatchUpOptions) (scanResult, error)
	// backfill derives all history (CatchUpOptions.FromScratch).
	backfill func(d *deriver, ctx context.Context, batch int64) (scanResult, error)
	// report records the family's part of a catch-up in its result.
	report func(r *CatchUpResult, o catchUpOutcome)
}

// catchUpOutcome is what a catch-up did for one family.
type catchUpOutcome struct {
	scanned      int64
	seeded, held bool
}

// maxima are the families' source maxima visible to the transaction.
type maxima struct{ playID, commentBlock int64 }

// families are the rule families in the order a flush applies them: milestones, then c. A
// flush takes the reward rows' locks in that order, so a different order would let two
// writers deadlock.
func families() []family {
	return []family{
		{
			checkpoint: checkpoints.PlaysCheckpoint,
			active:     func(c Catalog) bool { return len(c.Milestones) > 0 },
			stored:     func(s checkpoints.LegacyState) checkpoints.LegacyCheckpoint { return s.Plays },
			get:        func(l checkpoints.Legacy) (int64, bool) { return l.LastPlayID, l.HasPlayID },
			set:        func(l *checkpoints.Legacy, v int64) { l.LastPlayID, l.HasPlayID = v, true },
			clear:      func(l *checkpoints.Legacy) { l.HasPlayID = false },
			sourceMax:  func(m maxima) int64 { return m.playID },
			dirty:      func(w Window) []int64 { return w.TrackIDs },
			visit:      (*deriver).tracks,
			scan:       (*deriver).scanPlays,
			backfill: func(d *deriver, ctx context.Context, batch int64) (scanResult, error) {
				var maxTrack int64
				err := d.q.QueryRow(ctx, `SELECT COALESCE(MAX(play_item_id), 0) FROM aggregate_monthly_plays`).Scan(&maxTrack)
				if err != nil {
					return scanResult{}, fmt.Errorf("read maxima: %w", err)
				}
				return aggregateScan().run(ctx, d.q, 0, maxTrack, batch, d.tracks(ctx))
			},
			report: func(r *CatchUpResult, o catchUpOutcome) {
				r.PlaysScanned, r.PlaysSeeded, r.PlaysHeld = o.scanned, o.seeded, o.held
			},
		},
		{
			checkpoint: checkpoints.CommentsCheckpoint,
			active:     func(c Catalog) bool { return c.Comments.Active },
			stored:     func(s checkpoints.LegacyState) checkpoints.LegacyCheckpoint { return s.Comments },
			get:        func(l checkpoints.Legacy) (int64, bool) { return l.LastCommentBlock, l.HasCommentBlock },
			set:        func(l *checkpoints.Legacy, v int64) { l.LastCommentBlock, l.HasCommentBlock = v, true },
			clear:      func(l *checkpoints.Legacy) { l.HasCommentBlock = false },
			sourceMax:  func(m maxima) int64 { return m.commentBlock },
			dirty:      func(w Window) []int64 { return w.UserIDs },
			visit:      (*deriver).commenters,
			scan:       (*deriver).scanComments,
			backfill: func(d *deriver, ctx context.Context, batch int64) (scanResult, error) {
				var maxCommentID int64
				err := d.q.QueryRow(ctx, `SELECT COALESCE(MAX(comment_id), 0) FROM comments`).Scan(&maxCommentID)
				if err != nil {
					return scanResult{}, fmt.Errorf("read maxima: %w", err)
				}
				return commentIDScan().run(ctx, d.q, 0, maxCommentID, batch, d.commenters(ctx))
			},
			report: func(r *CatchUpResult, o catchUpOutcome) {
				r.CommentsScanned, r.CommentsSeeded, r.CommentsHeld = o.scanned, o.seeded, o.held
			},
		},
	}
}

// raise sets the family's value in l to v unless l already holds a higher one.
func (f family) raise(l *checkpoints.Legacy, v int64) {
	if cur, has := f.get(*l); !has || v > cur {
		f.set(l, v)
	}
}
