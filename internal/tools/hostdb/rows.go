package hostdb

import (
	"context"
	"fmt"
	"time"
)

// The functions below write host rows the way the platform's indexer does, for tests and the
// demo. Plays go through INSERT so the host trigger keeps the aggregates.

// AddUser adds a current users row.
func AddUser(ctx context.Context, db Execer, userID int64, verified bool) error {
	_, err := db.Exec(ctx, `INSERT INTO users (user_id, is_current, is_verified, txhash, handle)
		VALUES ($1, true, $2, $3, 'h')`, userID, verified, fmt.Sprintf("u%d", userID))
	if err != nil {
		return fmt.Errorf("add user %d: %w", userID, err)
	}
	return nil
}

// AddTrack adds a live track row owned by owner.
func AddTrack(ctx context.Context, db Execer, trackID, owner int64) error {
	_, err := db.Exec(ctx, `INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash, title)
		VALUES ($1, $2, true, false, $3, 'x')`, trackID, owner, fmt.Sprintf("t%d", trackID))
	if err != nil {
		return fmt.Errorf("add track %d: %w", trackID, err)
	}
	return nil
}

// InsertPlays inserts n plays of a track created at the given time in one statement (one
// transaction unless db is inside one). Every third play is anonymous.
func InsertPlays(ctx context.Context, db Execer, trackID, n int64, at time.Time) error {
	_, err := db.Exec(ctx, `INSERT INTO plays (play_item_id, created_at, user_id, country)
		SELECT $1, $2::timestamp, CASE WHEN g % 3 = 0 THEN NULL ELSE g END, CASE WHEN g % 2 = 0 THEN 'DE' END
		FROM generate_series(1, $3::int) g`, trackID, at, n)
	if err != nil {
		return fmt.Errorf("insert %d plays of track %d: %w", n, trackID, err)
	}
	return nil
}

// InsertComment inserts a visible comment.
func InsertComment(ctx context.Context, db Execer, commentID, userID int64, at time.Time, block int64) error {
	_, err := db.Exec(ctx, `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, txhash, blockhash)
		VALUES ($1, 'nice', $2, 1, 'Track', $3, $4, 'tx', 'bh')`, commentID, userID, at, block)
	if err != nil {
		return fmt.Errorf("insert comment %d: %w", commentID, err)
	}
	return nil
}
