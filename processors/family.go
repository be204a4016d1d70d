package processors

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// family is the legacy checkpoint of an incremental rule as both the window
// flush (ApplyWindow) and the catch-up (CatchUp) see it. Everything that differs between
// families is here, so neither of them names one.
type family struct {
	// checkpoint is the legacy checkpoint's name in indexing_checkpoints.
	checkpoint string
	// sources are the columns the checkpoint follows: the window keeps their highest value.
	sources []Source
	// maxSQL is a scalar query of the source column's current maximum, 0 on an empty table.
	maxSQL string
	// keys is the rule's key set a window makes dirty, and visit derives those keys.
	keys  string
	visit func(d *deriver, ctx context.Context) func(ids []int64) error
	// scan derives what changed in the source range (from − margin, to]: the incremental path
	// of the catch-up and of a flush's gap derivation.
	scan func(d *deriver, ctx context.Context, from, to int64, opts CatchUpOptions) (scanResult, error)
	// backfill derives all history (CatchUpOptions.FromScratch).
	backfill func(d *deriver, ctx context.Context, batch int64) (scanResult, error)
}

// The incremental rules' names (Rule.Name).
const (
	milestonesName = "milestones"
	commentsName   = "comments"
)

// milestonesRule is p1, p2 and p3 (SPEC §3.2): plays make their tracks dirty, and a track's
// eligible artist is recomputed.
func milestonesRule() Rule {
	return Rule{
		Name:       milestonesName,
		Challenges: []string{ChallengeP1, ChallengeP2, ChallengeP3},
		Sources:    []Source{{Table: "plays", Ops: Insert, Column: "play_item_id", Keys: "tracks"}},
		active:     func(c Catalog) bool { return len(c.Milestones) > 0 },
		family: &family{
			checkpoint: checkpoints.PlaysCheckpoint,
			sources:    []Source{{Table: "plays", Ops: Insert, Column: "id"}},
			maxSQL:     `SELECT COALESCE(MAX(id), 0) FROM plays`,
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
		},
	}
}

// weeklyCommentRule is c (SPEC §3.3): comment inserts and updates make their author dirty.
func weeklyCommentRule() Rule {
	return Rule{
		Name:       commentsName,
		Challenges: []string{ChallengeComment},
		Sources:    []Source{{Table: "comments", Ops: Insert | Update, Column: "user_id", Keys: "users"}},
		active:     func(c Catalog) bool { return c.Comments.Active },
		family: &family{
			checkpoint: checkpoints.CommentsCheckpoint,
			sources:    []Source{{Table: "comments", Ops: Insert | Update, Column: "blocknumber"}},
			maxSQL:     `SELECT COALESCE(MAX(blocknumber), 0) FROM comments`,
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
		},
	}
}

// incrementalRules are the registry's rules with a legacy checkpoint, in registry order. An
// inactive one is skipped and its checkpoint held, as the polling job does.
func incrementalRules() []Rule {
	return slices.DeleteFunc(Rules(), func(r Rule) bool { return r.family == nil })
}

// incrementalNames are the legacy checkpoints of the incremental rules, in registry order.
func incrementalNames() []string {
	var names []string
	for _, r := range incrementalRules() {
		names = append(names, r.family.checkpoint)
	}
	return names
}

// raise sets the family's value in l to v unless l already holds a higher one.
func (f *family) raise(l checkpoints.Legacy, v int64) {
	if cur, has := l[f.checkpoint]; !has || v > cur {
		l[f.checkpoint] = v
	}
}

// LegacyFrom is the legacy checkpoints' values a window saw, from its maxima by checkpoint name
// (Rule.Checkpoint); checkpoints without one, and names that are no rule's, are left out.
func LegacyFrom(maxima map[string]int64) checkpoints.Legacy {
	l := checkpoints.Legacy{}
	for _, name := range incrementalNames() {
		if v, ok := maxima[name]; ok {
			l[name] = v
		}
	}
	return l
}

// columnSpec describes the legacy checkpoint of a rule the polling job ran incrementally on one
// column of the rule's source tables.
type columnSpec struct {
	checkpoint string
	// column is the checkpoint's column, in every table of the rule's Sources.
	column string
	// lowest is below every value of the column (where a backfill starts), and margin how far
	// below the checkpoint a catch-up re-scans.
	lowest    int64
	margin    func(CatchUpOptions) int64
	recompute func(ctx context.Context, q Querier, cat Catalog, ids []int64) (Stats, error)
	// events says the keys are the source rows themselves (plays, blocks, slots), walked
	// rather than re-derived, and walking one twice changes nothing: the deriver does not
	// remember them, which for a catch-up over all plays would mean one entry per play.
	events bool
}

// blockSpec is the legacy checkpoint of a rule the polling job ran incrementally on its
// tables' blocknumber (u, fp, m, r, rv, rd, cs, p): the host bumps a row's blocknumber on every
// change, so the rows above the checkpoint are what changed. Rows without a blocknumber are
// invisible to the scans, as to the polling job's.
func blockSpec(checkpoint string, recompute func(ctx context.Context, q Querier, cat Catalog, ids []int64) (Stats, error)) columnSpec {
	return columnSpec{
		checkpoint: checkpoint,
		column:     "blocknumber",
		lowest:     math.MinInt32 - 1, // blocknumber is an int4: below its range is below every row
		margin:     func(o CatchUpOptions) int64 { return o.BlockMargin },
		recompute:  recompute,
	}
}

// incremental is r with the legacy checkpoint of spec. The checkpoint follows spec's column in
// each of r's source tables, and the catch-up's scans take their dirty keys from r's Sources,
// the very columns the stream takes them from. The scans range over the checkpoint column's
// index, which production has on every such table.
func incremental(r Rule, spec columnSpec) Rule {
	column := spec.column
	var next, collect, maxima, tables []string
	var sources []Source
	for _, s := range r.Sources {
		sources = append(sources, Source{Table: s.Table, Ops: s.Ops, Column: column})
		next = append(next, `(SELECT MIN(`+column+`) FROM `+s.Table+` WHERE `+column+` > $1::bigint)`)
		collect = append(collect, `SELECT `+s.Column+` AS k FROM `+s.Table+`
                  WHERE `+column+` > $1::bigint AND `+column+` <= $2::bigint`)
		maxima = append(maxima, `COALESCE((SELECT MAX(`+column+`) FROM `+s.Table+`), 0)`)
		tables = append(tables, s.Table)
	}
	scan := rangeScan{
		what:    strings.Join(tables, " and "),
		next:    `SELECT LEAST(` + strings.Join(next, ", ") + `)`,
		collect: `SELECT k, COUNT(*) FROM (` + strings.Join(collect, " UNION ALL ") + `) x GROUP BY 1`,
	}
	visit := func(d *deriver, ctx context.Context) func(ids []int64) error {
		if spec.events {
			return func(ids []int64) error {
				s, err := spec.recompute(ctx, d.q, d.cat, ids)
				d.stats.Add(s)
				return err
			}
		}
		return d.derive(ctx, r.Name, spec.recompute)
	}
	r.family = &family{
		checkpoint: spec.checkpoint,
		sources:    sources,
		maxSQL:     `SELECT GREATEST(` + strings.Join(maxima, ", ") + `)`,
		keys:       r.Sources[0].Keys,
		visit:      visit,
		scan: func(d *deriver, ctx context.Context, from, to int64, opts CatchUpOptions) (scanResult, error) {
			r, err := scan.run(ctx, d.q, from-spec.margin(opts), to, batchSize(opts), visit(d, ctx))
			r.reached = max(r.reached, from)
			return r, err
		},
		backfill: func(d *deriver, ctx context.Context, batch int64) (scanResult, error) {
			return scan.run(ctx, d.q, spec.lowest, math.MaxInt64, batch, visit(d, ctx))
		},
	}
	return r
}
