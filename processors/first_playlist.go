package processors

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ChallengeFirstPlaylist is the first-playlist challenge: one complete row for a user who has a
// playlist.
const ChallengeFirstPlaylist = "fp"

// FirstPlaylistCheckpoint is fp's legacy checkpoint: the highest playlists.blocknumber applied.
const FirstPlaylistCheckpoint = "challenges:fp:last_blocknumber"

// ownedPlaylist is upstream's test of a playlists row pl that counts: the current version of a
// non-deleted playlist at or after the starting block (a NULL
// starting_block is 0).
const ownedPlaylist = `pl.is_current = true AND pl.is_delete = false AND pl.blocknumber >= @start`

// firstPlaylistRule is fp. Upstream (first_playlist.go) recomputes the owners of the playlists
// whose blocknumber passed its checkpoint; a playlists change here makes its owner dirty.
func firstPlaylistRule() Rule {
	return incremental(Rule{
		Name:       "first_playlist",
		Challenges: []string{ChallengeFirstPlaylist},
		Sources:    []Source{{Table: "playlists", Ops: Insert | Update, Column: "playlist_owner_id", Keys: "users"}},
		active:     booleanActive(ChallengeFirstPlaylist),
		all:        allFirstPlaylistRows,
	}, blockSpec(FirstPlaylistCheckpoint, recomputeFirstPlaylists))
}

func recomputeFirstPlaylists(ctx context.Context, q Querier, cat Catalog, users []int64) (Stats, error) {
	stats, err := recompute(ctx, q, cat, users, FirstPlaylistRows)
	if err != nil {
		return nil, fmt.Errorf("recompute first playlists: %w", err)
	}
	return stats, nil
}

// FirstPlaylistRows computes the fp rows of the given users.
func FirstPlaylistRows(ctx context.Context, q Querier, cat Catalog, users []int64) ([]Row, error) {
	e, ok := cat.Active[ChallengeFirstPlaylist]
	if !ok || len(users) == 0 {
		return nil, nil
	}
	return queryPlaylistOwners(ctx, q, e, `
SELECT k.user_id FROM unnest(@users::bigint[]) AS k(user_id)
WHERE EXISTS (SELECT 1 FROM playlists pl WHERE pl.playlist_owner_id = k.user_id AND `+ownedPlaylist+`)`,
		pgx.NamedArgs{"users": sortedKeys(users), "start": startingBlock(e)})
}

// allFirstPlaylistRows is the polling job's tick before it went incremental: every owner.
func allFirstPlaylistRows(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
	e, ok := cat.Active[ChallengeFirstPlaylist]
	if !ok {
		return nil, nil
	}
	return queryPlaylistOwners(ctx, q, e, `
SELECT DISTINCT pl.playlist_owner_id FROM playlists pl WHERE `+ownedPlaylist,
		pgx.NamedArgs{"start": startingBlock(e)})
}

// startingBlock is the entry's starting_block, 0 when NULL.
func startingBlock(e Entry) int64 {
	if e.StartingBlock == nil {
		return 0
	}
	return *e.StartingBlock
}

// queryPlaylistOwners turns a query of user ids into their fp rows.
func queryPlaylistOwners(ctx context.Context, q Querier, e Entry, sql string, args pgx.NamedArgs) ([]Row, error) {
	rows, err := q.Query(ctx, sql, args)
	if err != nil {
		return nil, fmt.Errorf("list playlist owners: %w", err)
	}
	var (
		out  []Row
		user int64
	)
	_, err = pgx.ForEachRow(rows, []any{&user}, func() error {
		out = append(out, Row{ChallengeID: ChallengeFirstPlaylist, Specifier: hexUserID(user), UserID: user,
			Current: 1, Step: 1, Amount: e.Amount})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list playlist owners: %w", err)
	}
	return out, nil
}
