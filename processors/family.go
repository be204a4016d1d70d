package processors

import (
	"context"
	"fmt"
	"slices"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// family is the legacy checkpoint of an incremental rule (p, c) as both the window flush
// (ApplyWindow) and the catch-up (CatchUp) see it. Everything that differs between families is
// here, so neither of them names one.
type family struct {
	// checkpoint is the legacy checkpoint's name in indexing_checkpoints.
	checkpoint string
	// source is the column the checkpoint follows: the window keeps its highest value.
	source Source
	// stored picks the family's checkpoint out of the stored state.
	stored func(checkpoints.LegacyState) checkpoints.LegacyCheckpoint
	// get and set read and write the family's value in a checkpoints.Legacy; clear marks it as
	// "leave alone" for AdvanceLegacy.
	get   func(checkpoints.Legacy) (value int64, has bool)
	set   func(l *checkpoints.Legacy, value int64)
	clear func(l *checkpoints.Legacy)
	// sourceMax is the family's current source maximum (plays.id, comments.blocknumber).
	sourceMax func(maxima) int64
	// keys is the rule's key set a window makes dirty, and visit derives those keys.
	keys  string
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

// milestonesRule is p1, p2 and p3 (SPEC §3.2): plays make their tracks dirty, and a track's
// eligible artist is recomputed.
func milestonesRule() Rule {
	return Rule{
		Name:       "milestones",
		Challenges: []string{ChallengeP1, ChallengeP2, ChallengeP3},
		Sources:    []Source{{Table: "plays", Ops: Insert, Column: "play_item_id", Keys: "tracks"}},
		active:     func(c Catalog) bool { return len(c.Milestones) > 0 },
		family: &family{
			checkpoint: checkpoints.PlaysCheckpoint,
			source:     Source{Table: "plays", Ops: Insert, Column: "id"},
			stored:     func(s checkpoints.LegacyState) checkpoints.LegacyCheckpoint { return s.Plays },
			get:        func(l checkpoints.Legacy) (int64, bool) { return l.LastPlayID, l.HasPlayID },
			set:        func(l *checkpoints.Legacy, v int64) { l.LastPlayID, l.HasPlayID = v, true },
			clear:      func(l *checkpoints.Legacy) { l.HasPlayID = false },
			sourceMax:  func(m maxima) int64 { return m.playID },
			keys:       "tracks",
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
	}
}

// weeklyCommentRule is c (SPEC §3.3): comment inserts and updates make their author dirty.
func weeklyCommentRule() Rule {
	return Rule{
		Name:       "comments",
		Challenges: []string{ChallengeComment},
		Sources:    []Source{{Table: "comments", Ops: Insert | Update, Column: "user_id", Keys: "users"}},
		active:     func(c Catalog) bool { return c.Comments.Active },
		family: &family{
			checkpoint: checkpoints.CommentsCheckpoint,
			source:     Source{Table: "comments", Ops: Insert | Update, Column: "blocknumber"},
			stored:     func(s checkpoints.LegacyState) checkpoints.LegacyCheckpoint { return s.Comments },
			get:        func(l checkpoints.Legacy) (int64, bool) { return l.LastCommentBlock, l.HasCommentBlock },
			set:        func(l *checkpoints.Legacy, v int64) { l.LastCommentBlock, l.HasCommentBlock = v, true },
			clear:      func(l *checkpoints.Legacy) { l.HasCommentBlock = false },
			sourceMax:  func(m maxima) int64 { return m.commentBlock },
			keys:       "users",
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

// incrementalRules are the registry's rules with a legacy checkpoint, in registry order. An
// inactive one is skipped and its checkpoint held, as the polling job does.
func incrementalRules() []Rule {
	return slices.DeleteFunc(Rules(), func(r Rule) bool { return r.family == nil })
}

// raise sets the family's value in l to v unless l already holds a higher one.
func (f *family) raise(l *checkpoints.Legacy, v int64) {
	if cur, has := f.get(*l); !has || v > cur {
		f.set(l, v)
	}
}

// LegacyFrom is the legacy checkpoints' values a window saw, from its maxima by checkpoint name
// (Rule.Checkpoint); checkpoints without one are left out.
func LegacyFrom(maxima map[string]int64) checkpoints.Legacy {
	var l checkpoints.Legacy
	for _, r := range incrementalRules() {
		if v, ok := maxima[r.family.checkpoint]; ok {
			r.family.set(&l, v)
		}
	}
	return l
}
