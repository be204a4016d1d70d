package processors_test

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamIncremental is the polling job's reconcileIncrementalUsers (incremental.go): the rows
// above the checkpoint, at most 5,000 in blocknumber order, make their users dirty; the users
// are recomputed and the checkpoint advances to the highest blocknumber read (to one below it
// when the batch was full).
func upstreamIncremental(ctx context.Context, tx pgx.Tx, checkpoint, dirtySQL string,
	recompute func(users []int64) error) error {
	const batch = 5000
	prev, err := upstreamReadCheckpoint(ctx, tx, checkpoint)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, dirtySQL, prev, batch)
	if err != nil {
		return err
	}
	var (
		users          []int64
		seen           = map[int64]bool{}
		scanned        int
		maxBlock       = prev
		user, blocknum int64
	)
	_, err = pgx.ForEachRow(rows, []any{&user, &blocknum}, func() error {
		scanned++
		maxBlock = max(maxBlock, blocknum)
		if !seen[user] {
			seen[user] = true
			users = append(users, user)
		}
		return nil
	})
	if err != nil || scanned == 0 {
		return err
	}
	if err := recompute(users); err != nil {
		return err
	}
	next := maxBlock
	if scanned >= batch && maxBlock-1 > prev {
		next = maxBlock - 1
	}
	if next <= prev {
		return nil
	}
	return upstreamWriteCheckpoint(ctx, tx, checkpoint, next)
}

// upstreamReadCheckpoint and upstreamWriteCheckpoint are upstream's readCheckpointInt and
// writeCheckpointInt: a named checkpoint of indexing_checkpoints, 0 when absent.
func upstreamReadCheckpoint(ctx context.Context, tx pgx.Tx, name string) (int64, error) {
	var v int64
	err := tx.QueryRow(ctx, `SELECT last_checkpoint FROM indexing_checkpoints WHERE tablename = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func upstreamWriteCheckpoint(ctx context.Context, tx pgx.Tx, name string, value int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES ($1, $2)
		ON CONFLICT (tablename) DO UPDATE SET last_checkpoint = EXCLUDED.last_checkpoint`, name, value)
	return err
}

// upstreamStart reads a challenge's starting_block and step_count as LoadChallenge does.
func upstreamStart(ctx context.Context, tx pgx.Tx, id string) (start, step *int64, err error) {
	err = tx.QueryRow(ctx, `SELECT starting_block, step_count FROM challenges WHERE id = $1`, id).Scan(&start, &step)
	return start, step, err
}

// ownedRows is a history of rows owned by users and versioned in place, as the indexer
// keeps tracks and playlists: every change moves the row to the step's block.
type ownedRows struct {
	table, idColumn, ownerColumn string
	// insert is the row's INSERT with $1 id, $2 owner, $3 blocknumber and a kind's columns
	// after them; kinds are the column values a new row may take (public, unlisted, a stem …).
	insert string
	kinds  [][]any
	// update sets a kind's columns ($3 on) of row $1 at block $2; edits are the kinds an edit
	// may give (deleted included when the history takes rewards away).
	update string
	edits  [][]any

	owners []int64
	owner  map[int64]int64 // row id → owner
	nextID int64
	block  int64
}

func (h *ownedRows) change(id, block int64, op processors.Op) *change {
	return &change{table: h.table, op: op, cols: map[string]int64{
		h.idColumn: id, h.ownerColumn: h.owner[id], "blocknumber": block,
	}}
}

// add inserts a row of a random kind for a random owner.
func (h *ownedRows) add(rng *rand.Rand) write {
	h.nextID++
	id, owner := h.nextID, h.owners[rng.IntN(len(h.owners))]
	h.owner[id] = owner
	args := append([]any{id, owner, h.block}, h.kinds[rng.IntN(len(h.kinds))]...)
	return write{sql: h.insert, args: args, change: h.change(id, h.block, processors.Insert)}
}

// edit gives a random row a random edit kind, in place.
func (h *ownedRows) edit(rng *rand.Rand) write {
	id := 1 + rng.Int64N(h.nextID)
	args := append([]any{id, h.block}, h.edits[rng.IntN(len(h.edits))]...)
	return write{sql: h.update, args: args, change: h.change(id, h.block, processors.Update)}
}

// gen is one step of the history: a new block, a few new rows and edits, and now and then a
// catalog amount change when the history takes rewards away (challenge is the rule's id).
func (h *ownedRows) gen(rng *rand.Rand, challenge string, takesAway bool) []write {
	h.block++
	var ws []write
	for range 1 + rng.IntN(3) {
		switch n := rng.IntN(10); {
		case n < 5 || h.nextID == 0:
			ws = append(ws, h.add(rng))
		case n < 9:
			ws = append(ws, h.edit(rng))
		case takesAway:
			ws = append(ws, setAmount(challenge, int64(1+rng.IntN(9))))
		}
	}
	return ws
}
