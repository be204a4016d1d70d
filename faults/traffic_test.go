package faults

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The host rows the traffic writes to.
var (
	// artists are verified; each owns tracksPerArtist tracks with ids artist*10+k.
	artists = []int64{101, 102, 103, 104, 105, 106}
	// unverifiedArtist owns a track whose plays must earn nothing.
	unverifiedArtist int64 = 107
	// commenters write and edit comments.
	commenters = []int64{201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212}
	// unknownTrack has no tracks row.
	unknownTrack int64 = 999_999
)

// One-shot artists and commenters each see a single transaction: a reward that depends on one
// event only goes missing from the final verify if that event was lost. (Rewards of the busy
// artists above are re-derived from their totals on every later play, which would hide a lost
// transaction.) Artist oneShotBase+i owns track oneShotBase+i; commenters need no users row.
const (
	oneShotBase      = 1_000_000
	oneShotArtists   = 20_000
	oneShotCommenter = 2_000_000
)

// createOneShotArtists adds the verified one-shot artists and their tracks.
func createOneShotArtists(ctx context.Context, pool *pgxpool.Pool) error {
	for _, sql := range []string{
		`INSERT INTO users (user_id, is_current, is_verified, txhash, handle)
		 SELECT g, true, true, 'u' || g, 'h' FROM generate_series($1::int, $1::int + $2::int - 1) g`,
		`INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash, title)
		 SELECT g, g, true, false, 't' || g, 'x' FROM generate_series($1::int, $1::int + $2::int - 1) g`,
	} {
		if _, err := pool.Exec(ctx, sql, oneShotBase, oneShotArtists); err != nil {
			return err
		}
	}
	return nil
}

const tracksPerArtist = 2

// trackIDs are the tracks plays go to, in ascending order: every artist's, the unverified
// artist's and one unknown.
func trackIDs() []int64 {
	var ids []int64
	for _, a := range append(append([]int64(nil), artists...), unverifiedArtist) {
		for k := range int64(tracksPerArtist) {
			ids = append(ids, a*10+k)
		}
	}
	return append(ids, unknownTrack)
}

// traffic writes block-sized transactions — a multi-row plays INSERT, new comments and edits of
// older ones — from several writers at once, so serial ids and block numbers commit out of
// order. Failed transactions (the server restarting) are counted and the writer carries on.
type traffic struct {
	pool    *pgxpool.Pool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	block   atomic.Int64 // last comments.blocknumber handed out
	comment atomic.Int64 // last comment_id handed out
	oneShot atomic.Int64 // one-shot artists and commenters handed out

	committed, failed    atomic.Int64
	plays, comments, upd atomic.Int64
	ruleChanges          atomic.Int64 // rows written for v, t, cp and w
	lastErrMu            sync.Mutex
	lastErr              error
}

// startTraffic starts writers goroutines, each with its own generator seeded from seed.
func startTraffic(pool *pgxpool.Pool, writers int, seed uint64) *traffic {
	tr := &traffic{pool: pool}
	tr.block.Store(1000)
	tr.start(writers, seed)
	return tr
}

func (tr *traffic) start(writers int, seed uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	for w := range writers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			tr.write(ctx, rng)
		}()
	}
}

// resume starts writers on pool that go on from a stopped traffic's ids and block numbers.
func (tr *traffic) resume(pool *pgxpool.Pool, writers int, seed uint64) *traffic {
	next := startTraffic(pool, 0, seed)
	next.block.Store(tr.block.Load())
	next.comment.Store(tr.comment.Load())
	next.oneShot.Store(tr.oneShot.Load())
	next.start(writers, seed)
	return next
}

// stop stops the writers and waits for them.
func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

func (tr *traffic) write(ctx context.Context, rng *rand.Rand) {
	tracks := trackIDs()
	for ctx.Err() == nil {
		if err := tr.writeBlock(ctx, rng, tracks); err != nil {
			if ctx.Err() != nil {
				return
			}
			tr.failed.Add(1)
			tr.lastErrMu.Lock()
			tr.lastErr = err
			tr.lastErrMu.Unlock()
			pause(ctx, 200*time.Millisecond) // the server may be restarting
			continue
		}
		pause(ctx, time.Duration(10+rng.IntN(40))*time.Millisecond)
	}
}

// writeBlock writes one block: plays of a few tracks (mostly in 2025, some in 2024, which count
// for nothing), a new comment or two and sometimes an edit, hide or soft delete of an older one.
func (tr *traffic) writeBlock(ctx context.Context, rng *rand.Rand, tracks []int64) error {
	var (
		playTracks []int64
		playDays   []int32
	)
	// Tracks in ascending order: the host trigger locks each track's aggregate rows, and two
	// writers taking them in different orders would deadlock each other.
	chosen := map[int64]bool{}
	for range 1 + rng.IntN(4) {
		chosen[tracks[rng.IntN(len(tracks))]] = true
	}
	for _, track := range tracks {
		if !chosen[track] {
			continue
		}
		for range 1 + rng.IntN(40) {
			playTracks = append(playTracks, track)
			day := int32(rng.IntN(300))
			if rng.IntN(10) == 0 {
				day = -int32(1 + rng.IntN(100)) // 2024: before the milestone window
			}
			playDays = append(playDays, day)
		}
	}
	oneShot := tr.oneShot.Add(1)
	if oneShot <= oneShotArtists { // its id is above every other track's: the order holds
		for range 1 + rng.IntN(3) {
			playTracks = append(playTracks, oneShotBase+oneShot-1)
			playDays = append(playDays, int32(rng.IntN(300)))
		}
	}
	block := tr.block.Add(1)
	var (
		newComments int
		updated     bool
	)
	err := pgx.BeginFunc(ctx, tr.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO plays (play_item_id, created_at, user_id, country)
			SELECT t, DATE '2025-01-01' + d + interval '13 hours', CASE WHEN d % 3 = 0 THEN NULL ELSE 5000 + d END,
			       CASE WHEN d % 2 = 0 THEN 'DE' END
			FROM unnest($1::int[], $2::int[]) AS u(t, d)`, playTracks, playDays)
		if err != nil {
			return err
		}
		newComments = 1 + rng.IntN(3)
		for i := range newComments {
			id := tr.comment.Add(1)
			user := commenters[rng.IntN(len(commenters))]
			if i == 0 {
				user = oneShotCommenter + oneShot
			}
			_, err := tx.Exec(ctx, `INSERT INTO comments
				(comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, txhash, blockhash, is_visible)
				VALUES ($1, 'nice', $2, 1, 'Track', DATE '2025-01-01' + $3::int + interval '9 hours', $4, 'tx', 'bh', $5)`,
				id, user, rng.IntN(360), block, i == 0 || rng.IntN(8) != 0)
			if err != nil {
				return err
			}
		}
		if last := tr.comment.Load(); last > 0 && rng.IntN(3) == 0 {
			_, err := tx.Exec(ctx, `UPDATE comments
				SET is_delete = $2, is_visible = $3, is_edited = true, text = 'edited', blocknumber = $4
				WHERE comment_id = $1`, 1+rng.Int64N(last), rng.IntN(4) == 0, rng.IntN(4) != 0, block)
			if err != nil {
				return err
			}
			updated = true
		}
		n, err := writeRuleChanges(ctx, tx, rng, oneShot, tracks)
		tr.ruleChanges.Add(n)
		return err
	})
	if err != nil {
		return err
	}
	tr.committed.Add(1)
	tr.plays.Add(int64(len(playTracks)))
	tr.comments.Add(int64(newComments))
	if updated {
		tr.upd.Add(1)
	}
	return nil
}

// oneShotUser and oneShotEvent number the users and contests the rule changes create, one per
// block at most, so a lost transaction leaves its own reward missing.
const (
	oneShotUser  = 3_000_000
	oneShotEvent = 4_000_000
)

// writeRuleChanges adds, to a block's transaction, changes for the full-rescan rules: a newly
// verified user (v); a weekly trending score moving and a repost or save of a trending candidate
// (t); a pin of the block's new comment on a verified artist's track (cp); a remix contest
// hosted by a verified artist with the block's one-shot track as winner (w). One row per table
// and transaction, so concurrent writers cannot deadlock on them. It returns the rows written.
func writeRuleChanges(ctx context.Context, tx pgx.Tx, rng *rand.Rand, oneShot int64, tracks []int64) (int64, error) {
	var n int64
	exec := func(sql string, args ...any) error {
		n++
		_, err := tx.Exec(ctx, sql, args...)
		return err
	}
	candidate := tracks[rng.IntN(len(tracks)-1)] // any but the unknown track
	if rng.IntN(3) == 0 {
		err := exec(`INSERT INTO users (user_id, is_current, is_verified, txhash, handle) VALUES ($1, true, true, 'u', 'h')`,
			oneShotUser+oneShot)
		if err != nil {
			return n, err
		}
	}
	if rng.IntN(2) == 0 {
		err := exec(`INSERT INTO track_trending_scores (track_id, type, version, time_range, score)
			VALUES ($1, 'TRACKS', 'pnagD', 'week', $2)
			ON CONFLICT (track_id, type, version, time_range) DO UPDATE SET score = EXCLUDED.score`,
			candidate, rng.Float64()*1000)
		if err != nil {
			return n, err
		}
	}
	if rng.IntN(2) == 0 {
		table, column, kind := "reposts", "repost_item_id", "repost_type"
		if rng.IntN(2) == 0 {
			table, column, kind = "saves", "save_item_id", "save_type"
		}
		err := exec(`INSERT INTO `+table+` (user_id, `+column+`, `+kind+`, is_current, is_delete, created_at, txhash)
			VALUES ($1, $2, 'track', true, false, now(), 'r')`, oneShotCommenter+oneShot, candidate)
		if err != nil {
			return n, err
		}
	}
	if rng.IntN(5) == 0 {
		err := exec(`UPDATE tracks SET pinned_comment_id = (SELECT max(comment_id) FROM comments WHERE user_id = $2)
			WHERE track_id = $1 AND is_current`, candidate, oneShotCommenter+oneShot)
		if err != nil {
			return n, err
		}
	}
	if oneShot <= oneShotArtists && rng.IntN(10) == 0 {
		err := exec(`INSERT INTO events (event_id, event_type, user_id, event_data)
			VALUES ($1, 'remix_contest', $2, jsonb_build_object('winners', jsonb_build_array($3::int)))`,
			oneShotEvent+oneShot, artists[rng.IntN(len(artists))], oneShotBase+oneShot-1)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// lastError is the last failure of a traffic transaction, if any.
func (tr *traffic) lastError() error {
	tr.lastErrMu.Lock()
	defer tr.lastErrMu.Unlock()
	return tr.lastErr
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
