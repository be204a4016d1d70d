package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamTrackUploadTick is the polling job's TrackUploadProcessor.Reconcile (track_upload.go,
// the incremental version): owners of tracks above the checkpoint, each counted up to the step.
func upstreamTrackUploadTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "u")
	if err != nil || !ok {
		return err
	}
	start, step, err := upstreamStart(ctx, tx, "u")
	if err != nil || start == nil || step == nil {
		return err
	}
	return upstreamIncremental(ctx, tx, processors.TrackUploadCheckpoint,
		`SELECT owner_id, blocknumber FROM tracks WHERE blocknumber > $1 ORDER BY blocknumber ASC LIMIT $2`,
		func(owners []int64) error {
			rows, err := tx.Query(ctx, `
SELECT x.owner_id, fc.cnt FROM unnest($1::bigint[]) AS x(owner_id)
JOIN LATERAL (SELECT count(*)::int AS cnt FROM (
    SELECT 1 FROM tracks t WHERE t.owner_id = x.owner_id AND t.is_current = true AND t.is_delete = false
      AND t.is_unlisted = false AND t.stem_of IS NULL AND t.blocknumber >= $2 LIMIT $3) z) fc ON true`,
				owners, *start, *step)
			if err != nil {
				return err
			}
			type counted struct{ Owner, N int64 }
			counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[counted])
			if err != nil {
				return err
			}
			for _, c := range counts {
				if c.N == 0 {
					continue
				}
				if err := upstreamUpsert(ctx, tx, "u", fmt.Sprintf("%x", c.Owner), c.Owner, c.N, *step, amount); err != nil {
					return err
				}
			}
			return nil
		})
}

// The kinds of tracks rows: is_delete, is_unlisted, stem_of.
var (
	publicTrack   = []any{false, false, nil}
	unlistedTrack = []any{false, true, nil}
	stemTrack     = []any{false, false, `{"parent_track_id": 1}`}
	deletedTrack  = []any{true, false, nil}
)

func newTrackHistory(takesAway bool) *ownedRows {
	h := &ownedRows{
		table: "tracks", idColumn: "track_id", ownerColumn: "owner_id",
		insert: `INSERT INTO tracks (track_id, owner_id, blocknumber, is_current, is_delete, is_unlisted, stem_of)
			VALUES ($1, $2, $3, true, $4, $5, $6)`,
		kinds:  [][]any{publicTrack, publicTrack, unlistedTrack, stemTrack},
		update: `UPDATE tracks SET blocknumber = $2, is_delete = $3, is_unlisted = $4, stem_of = $5 WHERE track_id = $1`,
		edits:  [][]any{publicTrack},
		owners: []int64{100, 101, 102, 103, 0x3e8},
		owner:  map[int64]int64{},
	}
	if takesAway {
		h.edits = [][]any{publicTrack, unlistedTrack, stemTrack, deletedTrack, deletedTrack}
	}
	return h
}

// trackUploadGen is the u history: the first blocks are before the challenge's starting block
// (3), so their tracks never count.
func trackUploadGen(takesAway bool) func(rng *rand.Rand, step int) []write {
	h := newTrackHistory(takesAway)
	return func(rng *rand.Rand, step int) []write {
		ws := h.gen(rng, "u", takesAway)
		if step == 0 {
			ws = append(ws, write{sql: `UPDATE challenges SET starting_block = 3 WHERE id = 'u'`})
		}
		return ws
	}
}

func TestTrackUploadParity(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "uploads", steps: 40, gen: trackUploadGen(false), reference: upstreamTrackUploadTick})
}

func TestTrackUploadParitySticky(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "uploads", steps: 40, gen: trackUploadGen(true),
		reference: upstreamTrackUploadTick, takesAway: true})
}

// track is a tracks row of owner at block with the kind's columns (publicTrack, …).
func track(id, owner, block int64, kind []any) write {
	return write{
		sql: `INSERT INTO tracks (track_id, owner_id, blocknumber, is_current, is_delete, is_unlisted, stem_of)
			VALUES ($1, $2, $3, true, $4, $5, $6)`,
		args:   append([]any{id, owner, block}, kind...),
		change: &change{table: "tracks", op: processors.Insert, cols: map[string]int64{"track_id": id, "owner_id": owner, "blocknumber": block}},
	}
}

// retrack gives track id of owner the kind's columns at block, in place.
func retrack(id, owner, block int64, kind []any) write {
	return write{
		sql:    `UPDATE tracks SET blocknumber = $2, is_delete = $3, is_unlisted = $4, stem_of = $5 WHERE track_id = $1`,
		args:   append([]any{id, block}, kind...),
		change: &change{table: "tracks", op: processors.Update, cols: map[string]int64{"track_id": id, "owner_id": owner, "blocknumber": block}},
	}
}

func TestTrackUploadCases(t *testing.T) {
	t.Parallel()
	uploads := func(current int64, complete bool, amount int64) map[string]progress {
		return map[string]progress{"u 64": {User: 100, Current: current, Complete: complete, Amount: amount}}
	}
	runRuleCases(t, "uploads", []ruleCase{
		{
			name:  "one track counts one",
			steps: [][]write{{track(1, 100, 5, publicTrack)}},
			want:  uploads(1, false, 1),
		},
		{
			name: "the third completes and the count stops at the step",
			steps: [][]write{
				{track(1, 100, 5, publicTrack), track(2, 100, 5, publicTrack)},
				{track(3, 100, 6, publicTrack), track(4, 100, 6, publicTrack), track(5, 100, 7, publicTrack)},
			},
			want: uploads(3, true, 1),
		},
		{
			name:  "unlisted tracks, stems and deleted tracks do not count",
			steps: [][]write{{track(1, 100, 5, unlistedTrack), track(2, 100, 5, stemTrack), track(3, 100, 5, deletedTrack), track(4, 100, 5, publicTrack)}},
			want:  uploads(1, false, 1),
		},
		{
			name: "tracks before the starting block do not count",
			steps: [][]write{
				{write{sql: `UPDATE challenges SET starting_block = 10 WHERE id = 'u'`}, track(1, 100, 9, publicTrack)},
				{track(2, 100, 10, publicTrack)},
			},
			want: uploads(1, false, 1),
		},
		{
			name: "a track deleted lowers an incomplete count",
			steps: [][]write{
				{track(1, 100, 5, publicTrack), track(2, 100, 5, publicTrack)},
				{retrack(2, 100, 6, deletedTrack)},
			},
			want: uploads(1, false, 1),
		},
		{
			name: "every track deleted keeps the row as it was",
			steps: [][]write{
				{track(1, 100, 5, publicTrack)},
				{retrack(1, 100, 6, deletedTrack)},
			},
			want: uploads(1, false, 1),
		},
		{
			name: "a complete row stays complete with its amount",
			steps: [][]write{
				{track(1, 100, 5, publicTrack), track(2, 100, 5, publicTrack), track(3, 100, 5, publicTrack)},
				{setAmount("u", 9), retrack(3, 100, 6, unlistedTrack)},
			},
			want: uploads(2, true, 1),
		},
		{
			name:  "a NULL starting block switches the rule off",
			steps: [][]write{{write{sql: `UPDATE challenges SET starting_block = NULL WHERE id = 'u'`}, track(1, 100, 5, publicTrack)}},
		},
		{
			name:  "a NULL step switches the rule off",
			steps: [][]write{{write{sql: `UPDATE challenges SET step_count = NULL WHERE id = 'u'`}, track(1, 100, 5, publicTrack)}},
		},
		{
			name:     "inactive rule writes nothing",
			inactive: true,
			steps:    [][]write{{track(1, 100, 5, publicTrack)}},
		},
	})
}

// TestCatchUpFromTrackCheckpoint: after a lost slot the catch-up scans tracks from u's
// checkpoint, less the block margin (a track can commit below a checkpoint already taken), and
// advances the checkpoint to the highest block.
func TestCatchUpFromTrackCheckpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		margin int64
		want   []string
	}{
		{margin: 0, want: []string{"u 65"}},
		{margin: 100, want: []string{"u 64", "u 65"}},
	} {
		t.Run(fmt.Sprint("margin ", tc.margin), func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			f.exec(`UPDATE challenges SET active = true WHERE id = 'u'`)
			f.runWrites([]write{track(1, 100, 30, publicTrack), track(2, 101, 50, publicTrack)})
			f.setLegacy(checkpoints.Legacy{processors.TrackUploadCheckpoint: 40})
			res := f.catchUp(processors.CatchUpOptions{BlockMargin: tc.margin})
			require.EqualValues(t, 50, res.Legacy[processors.TrackUploadCheckpoint])
			require.EqualValues(t, 50, f.legacy()[processors.TrackUploadCheckpoint])
			var got []string
			for k := range f.ruleRows(ruleNamed(t, "uploads")) {
				got = append(got, k)
			}
			require.ElementsMatch(t, tc.want, got)
		})
	}
}
