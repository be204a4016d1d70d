package processors

import (
	"context"
	"fmt"
)

// challengeTastemaker is the challenge of the early reposters and savers of a trending track.
const challengeTastemaker = "t"

// Upstream's constants: how many of the weekly ranking's tracks count, and how many of each
// track's earliest reposters and, separately, earliest savers earn the challenge.
const (
	tastemakerTracks    = 10
	tastemakerThreshold = 10
)

// tastemakerSQL is the polling job's tick in one statement: the top tastemakerTracks of the
// weekly TRACKS ranking, each joined with the union of its earliest tastemakerThreshold
// reposters and earliest tastemakerThreshold savers. One statement means one snapshot, and
// the per-track LATERAL keeps upstream's per-track LIMITs (a user who reposted and saved is
// one row; the two lists fill their limits independently).
//
// Upstream's ORDER BYs leave ties to the executor: equal scores at the edge of the top 10, and
// equal created_at at the edge of the earliest 10. Here score ties go to the lower track_id
// and created_at ties to the lower user_id, so that the stream, a catch-up and a verify agree
// with each other. Upstream's "DESC NULLS LAST" is written as plain DESC: score is NOT NULL,
// so the order is the same, and only plain DESC matches the (…, score DESC) index.
//
// The filter sits outside the LIMIT on purpose: the ranking is always the whole table's, and
// $1/$2 only choose which of its tracks to rederive. $3 and $4 are the two limits.
const tastemakerSQL = `
WITH top AS (
    SELECT track_id
    FROM track_trending_scores
    WHERE type = 'TRACKS' AND version = 'pnagD' AND time_range = 'week'
    ORDER BY score DESC, track_id
    LIMIT $3
)
SELECT top.track_id::bigint, m.user_id::bigint
FROM top
CROSS JOIN LATERAL (
    (SELECT r.user_id FROM reposts r
     WHERE r.repost_item_id = top.track_id AND r.repost_type = 'track'
       AND r.is_current AND NOT r.is_delete
     ORDER BY r.created_at, r.user_id
     LIMIT $4)
    UNION
    (SELECT s.user_id FROM saves s
     WHERE s.save_item_id = top.track_id AND s.save_type = 'track'
       AND s.is_current AND NOT s.is_delete
     ORDER BY s.created_at, s.user_id
     LIMIT $4)
) m
WHERE $1::bool OR top.track_id = ANY($2::bigint[])`

// tastemakerRule is challenge t. It is keyed by track, not by user: who earns depends on a
// track's place in the ranking and on the order of its reposts and saves.
//
// Rows are sticky (a complete row never reverts), so a track that leaves the top 10 keeps
// its rows and nothing has to be done for it: only tracks that are in the top 10 now can
// earn, which is why every key is resolved against the current ranking.
//
// The ranking is time passing, not one track's rows changing: a track enters the top 10
// when another one's score falls, with no change on its own rows. So any "ranking" key
// rederives the whole current top 10. "tracks" keys (a repost or save made or undone, which
// shifts who is among the earliest 10) rederive only those of their tracks that are in the
// top 10; a playlist's repost_item_id lands there too and is harmlessly filtered out.
//
// The publication carries no deletes. A track that enters the top 10 only because another
// track's track_trending_scores row was deleted earns at the next insert or update of that
// table, which the trending job rewrites hourly. Likewise a hard-deleted repost or save
// (the indexer versions them instead) lets the next user in at that track's next change.
func tastemakerRule() Rule {
	return Rule{
		Name:       "tastemaker",
		Challenges: []string{challengeTastemaker},
		Sources: []Source{
			{Table: "track_trending_scores", Ops: Insert | Update, Column: "track_id", Keys: "ranking"},
			{Table: "reposts", Ops: Insert | Update, Column: "repost_item_id", Keys: "tracks"},
			{Table: "saves", Ops: Insert | Update, Column: "save_item_id", Keys: "tracks"},
		},
		active: booleanActive(challengeTastemaker),
		rows: func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) {
			ranking, tracks := len(keys["ranking"]) > 0, sortedKeys(keys["tracks"])
			if !ranking && len(tracks) == 0 {
				return nil, nil
			}
			if ranking {
				tracks = nil
			}
			return tastemakerRows(ctx, q, cat, ranking, tracks)
		},
		all: func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
			return tastemakerRows(ctx, q, cat, true, nil)
		},
	}
}

// tastemakerRows derives the rows of the current top-10 tracks: all of them, or those among
// tracks.
func tastemakerRows(ctx context.Context, q Querier, cat Catalog, all bool, tracks []int64) ([]Row, error) {
	rule, ok := cat.Active[challengeTastemaker]
	if !ok {
		return nil, nil
	}
	rows, err := q.Query(ctx, tastemakerSQL, all, tracks, tastemakerTracks, tastemakerThreshold)
	if err != nil {
		return nil, fmt.Errorf("tastemakers: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var track, user int64
		if err := rows.Scan(&track, &user); err != nil {
			return nil, fmt.Errorf("tastemakers: %w", err)
		}
		out = append(out, Row{
			ChallengeID: challengeTastemaker, Specifier: tastemakerSpecifier(user, track), UserID: user,
			Current: 1, Step: 1, Amount: rule.Amount,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tastemakers: %w", err)
	}
	return out, nil
}

// tastemakerSpecifier is upstream's "<hex user>:t:<hex track>", lowercase and unpadded.
func tastemakerSpecifier(user, track int64) string {
	return fmt.Sprintf("%x:t:%x", user, track)
}
