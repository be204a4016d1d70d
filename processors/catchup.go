package processors

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/challenge-stream/challenge-stream/checkpoints"
)

// DefaultCatchUpBatchSize is the width of one scan range: plays ids, comment block numbers, or
// (when backfilling) track ids and comment ids.
const DefaultCatchUpBatchSize = 50_000

// DefaultBlockMargin is the BlockMargin of recovery, cut-over and a rule's re-activation. The
// skew it covers is the time between a transaction taking its block number and committing:
// normally seconds, hours for a transaction left open. 100,000 blocks is about a day of blocks
// at one a second; at production's comment rate (about 321,000 comments in total) that re-reads
// a few thousand comments at most, through the blocknumber index, and re-derives their users
// once each; tracks and playlists change more slowly still. Over-scanning only costs that time;
// a margin too small loses rewards.
const DefaultBlockMargin = 100_000

// CatchUpOptions tune CatchUp. The zero value catches up from the legacy checkpoints without a
// row limit and without a margin.
type CatchUpOptions struct {
	// BatchSize is the width of one scan range (ids or block numbers, not rows).
	// 0 means DefaultCatchUpBatchSize.
	BatchSize int64
	// FromScratch ignores the checkpoints and derives every rule over all history, then sets
	// the checkpoints to the current maxima (the --backfill of a first run). Milestones are
	// found from aggregate_monthly_plays, not from plays: the counts are computed from the
	// aggregates, and plays older than 400 days are pruned while their aggregates remain.
	FromScratch bool
	// PlayIDMargin re-scans this many ids below the plays checkpoint. plays.id is a serial: an
	// id taken before a higher one can commit after it, so a checkpoint taken from a snapshot
	// may already be past rows that were still in flight. Re-deriving an artist is idempotent,
	// so the overlap costs only reads.
	PlayIDMargin int64
	// BlockMargin re-scans this many block numbers at and below every blocknumber checkpoint
	// (comments, tracks, playlists, user_events), and as many slots below the sol_purchases
	// ones. A row's blocknumber is bumped by every edit and two blocks'
	// transactions can commit out of order, so a checkpoint taken from the stream may already
	// be past a block that committed later. Like PlayIDMargin the overlap costs only reads.
	BlockMargin int64
	// CommentNullBlocks also re-derives every user with a comment whose blocknumber is NULL:
	// such a comment is invisible to any blocknumber scan, so after a lost slot nothing else
	// would find it. The NULL pass reads all such rows on every call.
	CommentNullBlocks bool
}

// CatchUpResult says what CatchUp did.
type CatchUpResult struct {
	Stats Stats
	// Checkpoints is what the catch-up did for each incremental rule, by legacy checkpoint name.
	Checkpoints map[string]CheckpointCatchUp
	// Artists and Users count the distinct artists and commenters recomputed.
	Artists int
	Users   int
	// Legacy holds the checkpoints as advanced (every incremental rule's).
	Legacy checkpoints.Legacy
	// Rules are the full-rescan rules' results: a catch-up derives each active one from
	// scratch, as a polling tick did.
	Rules []RuleResult
	// Oddities are the catalog's, see Catalog.
	Oddities []string
}

// CheckpointCatchUp is what a catch-up did for one incremental rule.
type CheckpointCatchUp struct {
	// Scanned counts the source rows read to find dirty keys: plays rows (or, FromScratch,
	// aggregate_monthly_plays rows), comments rows, tracks or playlists rows.
	Scanned int64
	// Seeded reports a checkpoint that was absent and has been seeded to the current maximum
	// without deriving anything.
	Seeded bool
	// Held reports a rule that is inactive: like the polling job, CatchUp neither scanned for
	// it nor advanced its checkpoint (an absent one is seeded), and the checkpoint is marked
	// held so that the first flush that finds the rule active again derives the gap
	// (ApplyWindow).
	Held bool
}

// Scanned is the source rows read over every incremental rule.
func (r CatchUpResult) Scanned() int64 {
	var n int64
	for _, c := range r.Checkpoints {
		n += c.Scanned
	}
	return n
}

// CatchUp is the polling design, kept as the tool for recovery and cut-over: it finds what
// changed after the legacy checkpoints, re-derives it with the same functions the stream uses,
// and advances the checkpoints to the maxima it applied.
//
// Plays are scanned by id and comments by block number, in ranges of opts.BatchSize, up to the
// maxima visible to q. Each range's distinct tracks (resolved to eligible artists) and
// commenters are recomputed; an artist or user is recomputed at most once per call, because
// the recompute reads their whole state as q sees it.
//
// A checkpoint that is absent (the polling job never ran here) is seeded to the current
// maximum and nothing is derived for it: the stream takes over "from now". Use FromScratch to
// derive all history instead.
//
// CatchUp opens no transaction. Run it in the caller's transaction, typically a REPEATABLE
// READ one that imported a replication slot's exported snapshot: then everything committed
// before the slot's consistent point is applied here and everything after arrives on the
// stream, with no gap and no overlap.
func CatchUp(ctx context.Context, q Querier, opts CatchUpOptions) (CatchUpResult, error) {
	if opts.BatchSize < 0 || opts.PlayIDMargin < 0 || opts.BlockMargin < 0 {
		return CatchUpResult{}, errors.New("catch up: BatchSize and the margins must not be negative")
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultCatchUpBatchSize
	}

	cat, err := LoadCatalog(ctx, q)
	if err != nil {
		return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
	}
	state, err := checkpoints.ReadLegacyState(ctx, q, incrementalNames())
	if err != nil {
		return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
	}
	prev := state.Legacy()
	m, err := sourceMaxima(ctx, q)
	if err != nil {
		return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
	}

	res := CatchUpResult{Stats: Stats{}, Checkpoints: map[string]CheckpointCatchUp{}, Oddities: cat.Oddities}
	next := checkpoints.Legacy{}
	d := newDeriver(q, cat)
	incremental := incrementalRules()
	for _, r := range incremental {
		f := r.family
		from, has := prev[f.checkpoint]
		var o CheckpointCatchUp
		switch {
		case !r.active(cat):
			// Like the polling job: an inactive family's checkpoint stays where the family
			// stopped (an absent one is seeded), so re-activating it derives the gap.
			o.Held, o.Seeded = true, !has
			if !has {
				from = m[f.checkpoint]
			}
			next[f.checkpoint] = from
		case opts.FromScratch:
			r, err := f.backfill(d, ctx, opts.BatchSize)
			if err != nil {
				return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
			}
			o.Scanned = r.rows
			next[f.checkpoint] = max(from, m[f.checkpoint])
		case !has:
			o.Seeded = true
			next[f.checkpoint] = m[f.checkpoint]
		default:
			r, err := f.scan(d, ctx, from, m[f.checkpoint], opts)
			if err != nil {
				return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
			}
			o.Scanned = r.rows
			next[f.checkpoint] = max(from, r.reached)
		}
		res.Checkpoints[f.checkpoint] = o
	}

	if err := checkpoints.AdvanceLegacy(ctx, q, next); err != nil {
		return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
	}
	for _, r := range incremental {
		if held := !r.active(cat); state[r.family.checkpoint].Held != held {
			if err := checkpoints.HoldLegacy(ctx, q, r.family.checkpoint, held); err != nil {
				return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
			}
		}
	}
	states, err := checkpoints.ReadRuleStates(ctx, q, fullRescanNames(Rules()))
	if err != nil {
		return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
	}
	res.Stats.Add(d.stats)
	for _, r := range Rules() {
		if r.family != nil {
			continue
		}
		// The polling job's tick: every full-rescan rule derived from scratch.
		rr, held, err := applyFullRescan(ctx, q, cat, r, states[r.Name], nil, true)
		if err != nil {
			return CatchUpResult{}, fmt.Errorf("catch up: %w", err)
		}
		if !held {
			res.Stats.Add(rr.Stats)
			res.Rules = append(res.Rules, rr)
		}
	}
	res.Legacy = next
	res.Artists = d.derived(milestonesName)
	res.Users = d.derived(commentsName)
	return res, nil
}

// maxima are the incremental rules' source maxima visible to the transaction, by checkpoint
// name.
type maxima map[string]int64

// sourceMaxima reads the incremental rules' source maxima visible (plays.id,
// comments.blocknumber, …) in one round trip.
func sourceMaxima(ctx context.Context, q Querier) (maxima, error) {
	rules := incrementalRules()
	exprs := make([]string, len(rules))
	values := make([]int64, len(rules))
	dest := make([]any, len(rules))
	for i, r := range rules {
		exprs[i] = "(" + r.family.maxSQL + ")"
		dest[i] = &values[i]
	}
	if err := q.QueryRow(ctx, "SELECT "+strings.Join(exprs, ", ")).Scan(dest...); err != nil {
		return nil, fmt.Errorf("read maxima: %w", err)
	}
	m := maxima{}
	for i, r := range rules {
		m[r.family.checkpoint] = values[i]
	}
	return m, nil
}

// deriver re-derives the keys of the incremental rules with one catalog and one upsert, each
// key at most once per rule: a recompute reads the key's whole state, so a second one in the
// same transaction would change nothing.
type deriver struct {
	q     Querier
	cat   Catalog
	done  map[string]map[int64]struct{} // by rule name
	stats Stats
}

func newDeriver(q Querier, cat Catalog) *deriver {
	return &deriver{q: q, cat: cat, done: map[string]map[int64]struct{}{}, stats: Stats{}}
}

// derive returns a visitor recomputing the rule's rows of the ids it is given that it has not
// recomputed yet.
func (d *deriver) derive(ctx context.Context, rule string,
	recompute func(ctx context.Context, q Querier, cat Catalog, ids []int64) (Stats, error),
) func(ids []int64) error {
	return func(ids []int64) error {
		if len(ids) == 0 {
			return nil
		}
		done := d.done[rule]
		if done == nil {
			done = map[int64]struct{}{}
			d.done[rule] = done
		}
		s, err := recompute(ctx, d.q, d.cat, notYet(ids, done))
		if err != nil {
			return err
		}
		d.stats.Add(s)
		return nil
	}
}

// derived counts the keys the rule's visitor recomputed.
func (d *deriver) derived(rule string) int { return len(d.done[rule]) }

// tracks returns a visitor deriving the eligible artists of the tracks it is given.
func (d *deriver) tracks(ctx context.Context) func(trackIDs []int64) error {
	artists := d.derive(ctx, milestonesName, recomputeMilestones)
	return func(trackIDs []int64) error {
		if len(d.cat.Milestones) == 0 || len(trackIDs) == 0 {
			return nil
		}
		ids, err := ArtistsForTracks(ctx, d.q, trackIDs)
		if err != nil {
			return err
		}
		return artists(ids)
	}
}

// commenters returns a visitor deriving the users it is given.
func (d *deriver) commenters(ctx context.Context) func(userIDs []int64) error {
	if !d.cat.Comments.Active {
		return func([]int64) error { return nil }
	}
	return d.derive(ctx, commentsName, recomputeWeeklyComments)
}

// scanPlays derives what the plays with ids in (from - PlayIDMargin, to] touch.
func (d *deriver) scanPlays(ctx context.Context, from, to int64, opts CatchUpOptions) (scanResult, error) {
	r, err := playScan().run(ctx, d.q, from-opts.PlayIDMargin, to, batchSize(opts), d.tracks(ctx))
	r.reached = max(r.reached, from)
	return r, err
}

// scanComments derives the users of the comments with block numbers in
// (from - BlockMargin, to], and with opts.CommentNullBlocks those of every comment
// without a block number.
func (d *deriver) scanComments(ctx context.Context, from, to int64, opts CatchUpOptions) (scanResult, error) {
	var nulls int64
	if opts.CommentNullBlocks {
		// The btree index on blocknumber also finds the NULLs (see TestCatchUpScansUseIndexes).
		ids, n, err := collectIDs(ctx, d.q, "comments without a blocknumber",
			`SELECT user_id, COUNT(*) FROM comments WHERE blocknumber IS NULL GROUP BY user_id`)
		if err != nil {
			return scanResult{}, err
		}
		if err := d.commenters(ctx)(ids); err != nil {
			return scanResult{}, err
		}
		nulls = n
	}
	r, err := commentBlockScan().run(ctx, d.q, from-opts.BlockMargin, to, batchSize(opts), d.commenters(ctx))
	r.reached = max(r.reached, from)
	r.rows += nulls
	return r, err
}

func batchSize(opts CatchUpOptions) int64 {
	if opts.BatchSize > 0 {
		return opts.BatchSize
	}
	return DefaultCatchUpBatchSize
}

// notYet returns the ids not in done and adds them to done.
func notYet(ids []int64, done map[int64]struct{}) []int64 {
	out := ids[:0:0]
	for _, id := range ids {
		if _, ok := done[id]; ok {
			continue
		}
		done[id] = struct{}{}
		out = append(out, id)
	}
	return out
}

// rangeScan walks one indexed key column of a table in ranges (lo, hi] and hands each range's
// distinct dirty ids to a visitor.
type rangeScan struct {
	what string
	// next returns the smallest key above $1 (NULL when none), so empty stretches of the key
	// space cost one index probe instead of a query per range.
	next string
	// collect returns (dirty id, rows) for the keys in ($1, $2].
	collect string
}

// The scans are values built on demand rather than package variables, so nothing global can be
// changed from outside.

func playScan() rangeScan {
	return rangeScan{
		what:    "plays",
		next:    `SELECT MIN(id) FROM plays WHERE id > $1::bigint`,
		collect: `SELECT play_item_id, COUNT(*) FROM plays WHERE id > $1::bigint AND id <= $2::bigint GROUP BY play_item_id`,
	}
}

func commentBlockScan() rangeScan {
	return rangeScan{
		what: "comments",
		next: `SELECT MIN(blocknumber) FROM comments WHERE blocknumber > $1::bigint`,
		collect: `SELECT user_id, COUNT(*) FROM comments
                  WHERE blocknumber > $1::bigint AND blocknumber <= $2::bigint GROUP BY user_id`,
	}
}

func aggregateScan() rangeScan {
	return rangeScan{
		what: "aggregate_monthly_plays",
		next: `SELECT MIN(play_item_id) FROM aggregate_monthly_plays WHERE play_item_id > $1::bigint`,
		collect: `SELECT play_item_id, COUNT(*) FROM aggregate_monthly_plays
                  WHERE play_item_id > $1::bigint AND play_item_id <= $2::bigint AND "timestamp" >= DATE '2025-01-01'
                  GROUP BY play_item_id`,
	}
}

func commentIDScan() rangeScan {
	return rangeScan{
		what:    "comments",
		next:    `SELECT MIN(comment_id) FROM comments WHERE comment_id > $1::bigint`,
		collect: `SELECT user_id, COUNT(*) FROM comments WHERE comment_id > $1::bigint AND comment_id <= $2::bigint GROUP BY user_id`,
	}
}

type scanResult struct {
	reached int64 // every key <= reached has been visited
	rows    int64
}

// run visits the keys in (lo, maxKey] range by range.
func (s rangeScan) run(ctx context.Context, q Querier, lo, maxKey, width int64,
	visit func(ids []int64) error,
) (scanResult, error) {
	res := scanResult{reached: lo}
	for {
		var first *int64
		if err := q.QueryRow(ctx, s.next, lo).Scan(&first); err != nil {
			return res, fmt.Errorf("scan %s after %d: %w", s.what, lo, err)
		}
		if first == nil || *first > maxKey {
			res.reached = max(res.reached, maxKey)
			return res, nil
		}
		lo = *first - 1
		hi := min(lo+width, maxKey)
		ids, n, err := s.collectRange(ctx, q, lo, hi)
		if err != nil {
			return res, err
		}
		if err := visit(ids); err != nil {
			return res, err
		}
		res.rows += n
		res.reached = hi
		lo = hi
	}
}

func (s rangeScan) collectRange(ctx context.Context, q Querier, lo, hi int64) ([]int64, int64, error) {
	return collectIDs(ctx, q, fmt.Sprintf("%s (%d, %d]", s.what, lo, hi), s.collect, lo, hi)
}

func collectIDs(ctx context.Context, q Querier, what, sql string, args ...any) ([]int64, int64, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("scan %s: %w", what, err)
	}
	defer rows.Close()
	var (
		ids   []int64
		total int64
	)
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, 0, fmt.Errorf("scan %s: %w", what, err)
		}
		ids = append(ids, id)
		total += n
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("scan %s: %w", what, err)
	}
	return ids, total, nil
}
