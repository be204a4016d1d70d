package workload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Play is one row of a block's plays insert.
type Play struct {
	UserID  int64  // 0 = anonymous (NULL)
	TrackID int64  // may be unknown or deleted
	Country string // "" = NULL
}

// Comment is one row of a block's comments insert.
type Comment struct {
	ID, UserID, EntityID int64
	Text                 string
}

// CommentUpdate edits or soft-deletes an older comment in a block.
type CommentUpdate struct {
	ID     int64
	Delete bool // soft delete; otherwise an edit of the text
}

// Block is what a block indexer writes in one transaction.
type Block struct {
	Number   int64 // comments.blocknumber of its comments and updates
	Plays    []Play
	Comments []Comment
	Updates  []CommentUpdate
}

// Crossing is a play that takes an artist's count to a milestone's step: the moment the
// milestone's row must become complete.
type Crossing struct {
	ChallengeID string
	Specifier   string
	ArtistID    int64
	Block       int64
	// CommittedAt is when the block's COMMIT returned to the writer.
	CommittedAt time.Time
}

// NextBlock draws the contents of the next block. Most plays go to eligible artists' live
// tracks (so they move milestones), the rest anywhere, including deleted and unknown tracks.
func (h *Host) NextBlock(plays, comments, updates int) Block {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := Block{Number: h.nextBlock}
	h.nextBlock++
	for range plays {
		b.Plays = append(b.Plays, h.play())
	}
	// In track order, the plays trigger locks the aggregate rows in the same order in every
	// transaction, so concurrent writers cannot deadlock on them.
	slices.SortFunc(b.Plays, func(x, y Play) int { return cmp.Compare(x.TrackID, y.TrackID) })
	for range comments {
		id := h.nextComment
		h.nextComment++
		b.Comments = append(b.Comments, Comment{
			ID: id, UserID: h.commenter(), EntityID: 1 + h.rng.Int64N(max(1, h.maxTrack)),
			Text: "comment " + strconv.FormatInt(id, 10),
		})
	}
	for range updates {
		if h.nextComment <= 1 {
			break
		}
		b.Updates = append(b.Updates, CommentUpdate{ID: 1 + h.rng.Int64N(h.nextComment-1), Delete: h.rng.IntN(2) == 0})
	}
	return b
}

func (h *Host) play() Play {
	var p Play
	if len(h.hot) > 0 && h.rng.Float64() < 0.75 {
		tracks := h.hot[h.rng.IntN(len(h.hot))]
		p.TrackID = int64(tracks[h.rng.IntN(len(tracks))])
	} else {
		// Anywhere, with a few ids past the last track (plays of tracks not indexed yet).
		p.TrackID = 1 + h.rng.Int64N(h.maxTrack+h.maxTrack/50+1)
	}
	if h.listeners > 0 && h.rng.Float64() < 0.7 {
		p.UserID = h.artists + 1 + h.rng.Int64N(h.listeners)
	}
	if h.rng.IntN(2) == 0 {
		p.Country = countries[h.rng.IntN(len(countries))]
	}
	return p
}

func (h *Host) commenter() int64 {
	if h.listeners > 0 && h.rng.Float64() < 0.8 {
		return h.artists + 1 + h.rng.Int64N(h.listeners)
	}
	return 1 + h.rng.Int64N(max(1, h.artists))
}

// Observe moves the model's counts by a committed block's plays and returns the milestones
// they cross, stamped with the block's commit time.
func (h *Host) Observe(b Block, committedAt time.Time) []Crossing {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Crossing
	for _, p := range b.Plays {
		a := h.ownerOf(p.TrackID)
		if a == 0 {
			continue
		}
		before := h.count[a]
		h.count[a] = before + 1
		for _, t := range h.tiers {
			if before < t.Step && before+1 >= t.Step {
				out = append(out, Crossing{
					ChallengeID: t.ChallengeID,
					Specifier:   strconv.FormatInt(a, 16) + ":" + t.Suffix,
					ArtistID:    a, Block: b.Number, CommittedAt: committedAt,
				})
			}
		}
	}
	return out
}

func (h *Host) ownerOf(track int64) int64 {
	if track <= 0 || track >= int64(len(h.owner)) {
		return 0
	}
	return int64(h.owner[track])
}

const insertPlaysSQL = `
WITH ins AS (
    INSERT INTO plays (user_id, play_item_id, country)
    SELECT NULLIF(u, 0), t, NULLIF(c, '') FROM unnest($1::int[], $2::int[], $3::text[]) AS r(u, t, c)
    RETURNING id)
SELECT COALESCE(MAX(id), 0) FROM ins`

const insertCommentsSQL = `
INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, txhash, blockhash, blocknumber)
SELECT id, txt, u, e, 'Track', '0x' || to_hex(id) || '-0', $5, $6
FROM unnest($1::int[], $2::text[], $3::int[], $4::int[]) AS r(id, txt, u, e)`

const updateCommentSQL = `
UPDATE comments SET
    is_delete = is_delete OR $2,
    is_edited = is_edited OR NOT $2,
    text = CASE WHEN $2 THEN text ELSE text || ' (edited)' END,
    updated_at = now(), blocknumber = $3
WHERE comment_id = $1`

// Written is what writing a block returned.
type Written struct {
	MaxPlayID   int64 // highest plays.id of the block (0 without plays)
	CommittedAt time.Time
}

// Write writes a block in one transaction: one multi-row insert per table, one update per
// edited comment, all sent in one round trip.
func Write(ctx context.Context, conn *pgx.Conn, b Block) (Written, error) {
	var w Written
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		if len(b.Plays) > 0 {
			users := make([]int32, len(b.Plays))
			tracks := make([]int32, len(b.Plays))
			cs := make([]string, len(b.Plays))
			for i, p := range b.Plays {
				users[i], tracks[i], cs[i] = int32(p.UserID), int32(p.TrackID), p.Country
			}
			batch.Queue(insertPlaysSQL, users, tracks, cs).QueryRow(func(row pgx.Row) error {
				return row.Scan(&w.MaxPlayID)
			})
		}
		if len(b.Comments) > 0 {
			ids := make([]int32, len(b.Comments))
			texts := make([]string, len(b.Comments))
			users := make([]int32, len(b.Comments))
			entities := make([]int32, len(b.Comments))
			for i, c := range b.Comments {
				ids[i], texts[i], users[i], entities[i] = int32(c.ID), c.Text, int32(c.UserID), int32(c.EntityID)
			}
			batch.Queue(insertCommentsSQL, ids, texts, users, entities, blockhash(b.Number), int32(b.Number))
		}
		for _, u := range b.Updates {
			batch.Queue(updateCommentSQL, int32(u.ID), u.Delete, int32(b.Number))
		}
		if batch.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return Written{}, fmt.Errorf("write block %d: %w", b.Number, err)
	}
	w.CommittedAt = time.Now()
	return w, nil
}

// Traffic is a steady load of blocks.
type Traffic struct {
	// Rate is plays per second.
	Rate float64
	// CommentRate is new comments per second; a tenth as many older comments are edited or
	// soft-deleted.
	CommentRate float64
	// BlockInterval is the time between blocks: each block carries what accrued since the
	// last. Default 500ms.
	BlockInterval time.Duration
}

// DefaultBlockInterval is Traffic's default block interval.
const DefaultBlockInterval = 500 * time.Millisecond

// Applied is a committed block with what it did to the model.
type Applied struct {
	Block     Block
	Written   Written
	Crossings []Crossing
	Took      time.Duration // from BEGIN to the COMMIT's return
}

// Drive writes blocks at the traffic's rates until duration has passed or ctx is cancelled
// (both are a normal end: it returns nil), calling onBlock after each commit from its own
// goroutine. The rates are kept on average: a block that takes longer than the interval makes
// the next one bigger, as a lagging indexer would.
func (h *Host) Drive(ctx context.Context, conn *pgx.Conn, t Traffic, duration time.Duration, onBlock func(Applied)) error {
	if t.BlockInterval <= 0 {
		t.BlockInterval = DefaultBlockInterval
	}
	start := time.Now()
	tick := time.NewTicker(t.BlockInterval)
	defer tick.Stop()
	var plays, comments, updates int
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		elapsed := time.Since(start)
		if elapsed > duration {
			elapsed = duration
		}
		sec := elapsed.Seconds()
		np := int(math.Floor(t.Rate*sec)) - plays
		nc := int(math.Floor(t.CommentRate*sec)) - comments
		nu := int(math.Floor(t.CommentRate/10*sec)) - updates
		if np+nc+nu > 0 {
			b := h.NextBlock(np, nc, nu)
			begun := time.Now()
			w, err := Write(ctx, conn, b)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			plays, comments, updates = plays+np, comments+nc, updates+nu
			if onBlock != nil {
				onBlock(Applied{Block: b, Written: w, Crossings: h.Observe(b, w.CommittedAt), Took: time.Since(begun)})
			} else {
				h.Observe(b, w.CommittedAt)
			}
		}
		if elapsed >= duration {
			return nil
		}
	}
}

// BacklogResult describes a backlog load.
type BacklogResult struct {
	Plays, Transactions int
	Took                time.Duration
}

// Backlog writes n plays in transactions of perTx rows over conns connections at once, as fast
// as the server takes them (a block indexer catching up).
func (h *Host) Backlog(ctx context.Context, databaseURL string, n, perTx, conns int) (BacklogResult, error) {
	if perTx <= 0 || conns <= 0 {
		return BacklogResult{}, errors.New("backlog: rows per transaction and connections must be positive")
	}
	start := time.Now()
	var (
		mu    sync.Mutex
		left  = n
		txs   int
		first error
		wg    sync.WaitGroup
	)
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		k := min(perTx, left)
		left -= k
		return k
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
		left = 0
	}
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, databaseURL)
			if err != nil {
				fail(fmt.Errorf("backlog: connect: %w", err))
				return
			}
			defer conn.Close(context.WithoutCancel(ctx))
			for k := take(); k > 0; k = take() {
				b := h.NextBlock(k, 0, 0)
				w, err := Write(ctx, conn, b)
				if err != nil {
					fail(fmt.Errorf("backlog: %w", err))
					return
				}
				h.Observe(b, w.CommittedAt)
				mu.Lock()
				txs++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return BacklogResult{}, first
	}
	return BacklogResult{Plays: n, Transactions: txs, Took: time.Since(start)}, nil
}

// bigTxPlays is the statement of BigTransaction: the rows are made by the server, so the
// writer's memory does not grow with them. Tracks cycle through every id with a stride, so the
// transaction touches every track.
const bigTxPlays = `
INSERT INTO plays (user_id, play_item_id)
SELECT CASE WHEN g % 3 = 0 OR $3::bigint = 0 THEN NULL ELSE $2::bigint + 1 + g % GREATEST($3::bigint, 1) END,
       1 + (g * 7919) % $4::bigint
FROM generate_series(1, $1::bigint) AS g`

// BigTransaction inserts rows plays in a single INSERT statement and transaction, generated by
// the server, and moves the model's counts to match.
func (h *Host) BigTransaction(ctx context.Context, conn *pgx.Conn, rows int64) (time.Duration, error) {
	start := time.Now()
	if _, err := conn.Exec(ctx, bigTxPlays, rows, h.artists, h.listeners, h.maxTrack); err != nil {
		return 0, fmt.Errorf("big transaction: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for g := int64(1); g <= rows; g++ {
		if a := h.ownerOf(1 + (g*7919)%h.maxTrack); a != 0 {
			h.count[a]++
		}
	}
	return time.Since(start), nil
}
