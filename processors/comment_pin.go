package processors

import (
	"context"
	"fmt"
	"strconv"
)

// ChallengeCommentPin is the comment-pin challenge: one complete row per (commenter, track)
// once a verified track owner pins the commenter's comment.
const ChallengeCommentPin = "cp"

// pinnedComments is the upstream CommentPin join after its FROM tracks t. Upstream checks
// neither the owner's is_deactivated nor anything about the commenter or the comment's
// visibility and entity; neither does this, so both paths pay out the same pins.
const pinnedComments = `
JOIN comments cm ON cm.comment_id = t.pinned_comment_id
JOIN users u ON u.user_id = t.owner_id
WHERE t.pinned_comment_id IS NOT NULL
  AND t.is_current = true AND t.is_delete = false
  AND u.is_current = true AND u.is_verified = true
  AND cm.is_delete = false
  AND cm.user_id <> t.owner_id`

// The dirty-key lookups: the tracks themselves, and the tracks of the dirty owners.
const (
	pinsOfTracks = `
SELECT cm.user_id, t.track_id
FROM unnest($1::bigint[]) AS k(track_id)
JOIN tracks t ON t.track_id = k.track_id` + pinnedComments
	pinsOfOwners = `
SELECT cm.user_id, t.track_id
FROM unnest($1::bigint[]) AS k(owner_id)
JOIN tracks t ON t.owner_id = k.owner_id` + pinnedComments
)

// commentPinRule is challenge cp. Unpinning, deleting the comment or the owner losing
// verification keeps the row (completion is sticky), and a re-pin lands on the same
// specifier, so a (commenter, track) pair earns once.
//
// A pin is earned by a track row, its pinned comment and its owner's users row together, so a
// change of any of them makes the track dirty:
//   - "tracks": a tracks change, and a comments change through entity_id (the platform only
//     pins a track's own comments, so the pinned comment's entity_id is the track; entity_type
//     is not decoded, so a comment on a playlist costs one empty lookup of that id);
//   - "owners": a users change, resolved to the tracks the user owns (tracks_owner_id_idx).
//
// The one deviation from the polling job: a pin of a comment posted on ANOTHER track is only
// seen when the pinning track or its owner changes next. Resolving a comment to the tracks
// pinning it would need an index on tracks.pinned_comment_id, which the host does not have,
// for a pin the platform does not make.
func commentPinRule() Rule {
	return Rule{
		Name:       "comment_pin",
		Challenges: []string{ChallengeCommentPin},
		Sources: []Source{
			{Table: "tracks", Ops: Insert | Update, Column: "track_id", Keys: "tracks"},
			{Table: "comments", Ops: Insert | Update, Column: "entity_id", Keys: "tracks"},
			{Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "owners"},
		},
		active: booleanActive(ChallengeCommentPin),
		rows:   commentPinRows,
		all:    allCommentPinRows,
	}
}

// commentPinRows derives the cp rows of the dirty tracks and of the dirty owners' tracks. A
// track reached both ways yields its row twice; Upsert keeps one.
func commentPinRows(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) {
	rule, ok := cat.Active[ChallengeCommentPin]
	if !ok {
		return nil, nil
	}
	var out []Row
	for _, by := range []struct{ keys, sql string }{{"tracks", pinsOfTracks}, {"owners", pinsOfOwners}} {
		err := chunks(sortedKeys(keys[by.keys]), idBatchSize, func(batch []int64) error {
			rows, err := queryPins(ctx, q, rule, by.sql, batch)
			out = append(out, rows...)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// allCommentPinRows is the polling job's tick: every current pin, again.
func allCommentPinRows(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
	rule, ok := cat.Active[ChallengeCommentPin]
	if !ok {
		return nil, nil
	}
	return queryPins(ctx, q, rule, `SELECT cm.user_id, t.track_id FROM tracks t`+pinnedComments)
}

// queryPins turns a query of (commenter, track) pairs into their cp rows.
func queryPins(ctx context.Context, q Querier, rule Entry, sql string, args ...any) ([]Row, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list pinned comments: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var commenter, track int64
		if err := rows.Scan(&commenter, &track); err != nil {
			return nil, fmt.Errorf("list pinned comments: %w", err)
		}
		out = append(out, Row{
			ChallengeID: ChallengeCommentPin,
			Specifier:   pinSpecifier(commenter, track),
			UserID:      commenter,
			Current:     1,
			Step:        1,
			Amount:      rule.Amount,
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pinned comments: %w", err)
	}
	return out, nil
}

// pinSpecifier is "<hex commenter>:<hex track>", as upstream and the apps write it.
func pinSpecifier(commenter, track int64) string {
	return hexUserID(commenter) + ":" + strconv.FormatInt(track, 16)
}
