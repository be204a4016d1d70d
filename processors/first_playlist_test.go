package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamFirstPlaylistTick is the polling job's FirstPlaylistProcessor.Reconcile
// (first_playlist.go): owners of playlists above the checkpoint who have a live playlist.
func upstreamFirstPlaylistTick(ctx context.Context, tx pgx.Tx) error {
	amount, ok, err := upstreamAmount(ctx, tx, "fp")
	if err != nil || !ok {
		return err
	}
	start, _, err := upstreamStart(ctx, tx, "fp")
	if err != nil {
		return err
	}
	var startingBlock int64
	if start != nil {
		startingBlock = *start
	}
	return upstreamIncremental(ctx, tx, processors.FirstPlaylistCheckpoint,
		`SELECT playlist_owner_id, blocknumber FROM playlists WHERE blocknumber > $1 ORDER BY blocknumber ASC LIMIT $2`,
		func(owners []int64) error {
			rows, err := tx.Query(ctx, `
SELECT x.owner_id FROM unnest($1::bigint[]) AS x(owner_id)
WHERE EXISTS (SELECT 1 FROM playlists pl WHERE pl.playlist_owner_id = x.owner_id
    AND pl.is_current = true AND pl.is_delete = false AND pl.blocknumber >= $2)`, owners, startingBlock)
			if err != nil {
				return err
			}
			qualifying, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				return err
			}
			for _, user := range qualifying {
				if err := upstreamUpsert(ctx, tx, "fp", fmt.Sprintf("%x", user), user, 1, 1, amount); err != nil {
					return err
				}
			}
			return nil
		})
}

func newPlaylistHistory(takesAway bool) *ownedRows {
	h := &ownedRows{
		table: "playlists", idColumn: "playlist_id", ownerColumn: "playlist_owner_id",
		insert: `INSERT INTO playlists (playlist_id, playlist_owner_id, blocknumber, is_current, is_delete, is_album)
			VALUES ($1, $2, $3, true, $4, $5)`,
		kinds:  [][]any{{false, false}, {false, true}, {true, false}},
		update: `UPDATE playlists SET blocknumber = $2, is_delete = $3, is_album = $4 WHERE playlist_id = $1`,
		edits:  [][]any{{false, false}, {false, true}},
		owners: []int64{200, 201, 202, 203, 204, 205, 0xfff},
		owner:  map[int64]int64{},
	}
	if takesAway {
		h.edits = append(h.edits, []any{true, false}, []any{true, true})
	}
	return h
}

// firstPlaylistGen is the fp history: playlists and albums both count (upstream's test reads
// only is_current and is_delete); the first block is before the starting block (2).
func firstPlaylistGen(takesAway bool) func(rng *rand.Rand, step int) []write {
	h := newPlaylistHistory(takesAway)
	return func(rng *rand.Rand, step int) []write {
		ws := h.gen(rng, "fp", takesAway)
		if step == 0 {
			ws = append(ws, write{sql: `UPDATE challenges SET starting_block = 2 WHERE id = 'fp'`})
		}
		return ws
	}
}

func TestFirstPlaylistParity(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "first_playlist", steps: 40, gen: firstPlaylistGen(false),
		reference: upstreamFirstPlaylistTick})
}

func TestFirstPlaylistParitySticky(t *testing.T) {
	t.Parallel()
	runParity(t, paritySpec{rule: "first_playlist", steps: 40, gen: firstPlaylistGen(true),
		reference: upstreamFirstPlaylistTick, takesAway: true})
}

// playlist is a playlists row of owner at block.
func playlist(id, owner, block int64, deleted, album bool) write {
	return write{
		sql: `INSERT INTO playlists (playlist_id, playlist_owner_id, blocknumber, is_current, is_delete, is_album)
			VALUES ($1, $2, $3, true, $4, $5)`,
		args:   []any{id, owner, block, deleted, album},
		change: &change{table: "playlists", op: processors.Insert, cols: map[string]int64{"playlist_id": id, "playlist_owner_id": owner, "blocknumber": block}},
	}
}

func TestFirstPlaylistCases(t *testing.T) {
	t.Parallel()
	earned := map[string]progress{"fp c8": {User: 200, Current: 1, Complete: true, Amount: 2}}
	runRuleCases(t, "first_playlist", []ruleCase{
		{name: "a playlist earns", steps: [][]write{{playlist(1, 200, 5, false, false)}}, want: earned},
		{name: "an album earns too", steps: [][]write{{playlist(1, 200, 5, false, true)}}, want: earned},
		{name: "a deleted playlist earns nothing", steps: [][]write{{playlist(1, 200, 5, true, false)}}},
		{
			name: "a playlist before the starting block earns nothing",
			steps: [][]write{{write{sql: `UPDATE challenges SET starting_block = 10 WHERE id = 'fp'`},
				playlist(1, 200, 9, false, false)}},
		},
		{
			name: "a NULL starting block is block 0",
			steps: [][]write{{write{sql: `UPDATE challenges SET starting_block = NULL WHERE id = 'fp'`},
				playlist(1, 200, 0, false, false)}},
			want: earned,
		},
		{
			name: "deleting the playlist keeps the reward",
			steps: [][]write{
				{playlist(1, 200, 5, false, false)},
				{write{sql: `UPDATE playlists SET is_delete = true, blocknumber = 6 WHERE playlist_id = 1`,
					change: &change{table: "playlists", op: processors.Update, cols: map[string]int64{"playlist_owner_id": 200, "blocknumber": 6}}}},
			},
			want: earned,
		},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{{playlist(1, 200, 5, false, false)}}},
	})
}
