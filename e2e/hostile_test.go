package e2e

import (
	"context"
	byteorder "encoding/binary"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
	"github.com/challenge-stream/challenge-stream/replication"
)

// Hostile and odd input: what other people do to the host database while the sidecar runs, and
// values at the edges of what the schema allows. Each test runs the real binary on its own
// database.

// hostile is a test's database with helpers for these tests.
type hostile struct{ *env }

func newHostile(t *testing.T) hostile { return hostile{setup(t)} }

// sentinelTrack is a track id no tracks row has; a play of it earns nothing.
const sentinelTrack = -1

// applied waits until the sidecar has applied everything committed so far: it commits a play
// after everything else and waits for the legacy plays checkpoint, which the flush holding that
// play (and so everything before it) advances in the same transaction as the stored LSN. Unlike
// a comparison with the server's WAL position, it does not depend on what other tests write.
func (h hostile) applied() {
	h.t.Helper()
	var id int64
	require.NoError(h.t, h.db.Pool.QueryRow(h.ctx,
		`INSERT INTO plays (play_item_id, created_at) VALUES ($1, now()) RETURNING id`, sentinelTrack).Scan(&id))
	eventually(h.t, "the sidecar to apply play "+strconv.FormatInt(id, 10), func() bool {
		legacy, err := checkpoints.ReadLegacy(h.ctx, h.db.Pool)
		return err == nil && legacy[checkpoints.PlaysCheckpoint] >= id
	})
}

// reward returns a row's current_step_count, amount and completeness; found is false without it.
func (h hostile) reward(challenge, specifier string) (current, amount int64, complete, found bool) {
	h.t.Helper()
	err := h.db.Pool.QueryRow(h.ctx, `SELECT current_step_count, amount, is_complete FROM user_challenges
		WHERE challenge_id = $1 AND specifier = $2`, challenge, specifier).Scan(&current, &amount, &complete)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false, false
	}
	require.NoError(h.t, err)
	return current, amount, complete, true
}

func (h hostile) requireReward(challenge, specifier string, current, amount int64, complete bool) {
	h.t.Helper()
	c, a, done, found := h.reward(challenge, specifier)
	require.True(h.t, found, "%s %s exists", challenge, specifier)
	require.Equal(h.t, []any{current, amount, complete}, []any{c, a, done}, "%s %s: current, amount, complete", challenge, specifier)
}

func (h hostile) requireNoReward(challenge, specifier string) {
	h.t.Helper()
	_, _, _, found := h.reward(challenge, specifier)
	require.False(h.t, found, "%s %s must not exist", challenge, specifier)
}

func (h hostile) comment(id, user int64, block any) {
	h.t.Helper()
	h.db.Exec(h.t, `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at, blocknumber, txhash, blockhash)
		VALUES ($1, 'nice', $2, 1, 'Track', $3, $4, 'tx', 'bh')`, id, user, in2025, block)
}

// isRunning reports whether the process is up.
func isRunning(p *proc) bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// commitXID runs sql in a transaction of its own and returns that transaction's id as pgoutput
// reports it.
func (h hostile) commitXID(sql string, args ...any) uint32 {
	h.t.Helper()
	var xid uint32
	err := pgx.BeginFunc(h.ctx, h.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(h.ctx, sql, args...); err != nil {
			return err
		}
		var full int64
		if err := tx.QueryRow(h.ctx, `SELECT txid_current()`).Scan(&full); err != nil {
			return err
		}
		xid = uint32(full) // the epoch is not on the wire
		return nil
	})
	require.NoError(h.t, err, sql)
	return xid
}

// pendingEnd returns the end LSN of transaction xid, which the slot must still hold: the server
// will send it again, because nobody confirmed past it. It peeks (without consuming) with the
// plugin options the sidecar uses.
func (h hostile) pendingEnd(xid uint32) pglogrepl.LSN {
	h.t.Helper()
	var end pglogrepl.LSN
	eventually(h.t, "the slot to be free for peeking", func() bool {
		rows, err := h.db.Pool.Query(h.ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', $2)`, h.db.Slot, h.db.Publication)
		if err != nil {
			return false // still active in the dying walsender
		}
		msgs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return false
		}
		end = transactionEnd(msgs, xid)
		return true
	})
	require.NotZero(h.t, end, "the slot still holds transaction %d", xid)
	return end
}

// transactionEnd scans pgoutput messages for transaction xid and returns its end LSN (0 when the
// slot does not hold it).
func transactionEnd(msgs [][]byte, xid uint32) pglogrepl.LSN {
	var current uint32
	for _, m := range msgs {
		switch {
		case len(m) == 21 && m[0] == 'B':
			current = byteorder.BigEndian.Uint32(m[17:])
		case len(m) == 26 && m[0] == 'C' && current == xid:
			return pglogrepl.LSN(byteorder.BigEndian.Uint64(m[10:]))
		}
	}
	return 0
}

// requireNotConfirmedPast checks that neither the stored LSN nor the slot's confirmed position
// reached the end of a transaction the sidecar could not interpret.
func (h hostile) requireNotConfirmedPast(end pglogrepl.LSN) {
	h.t.Helper()
	stored, _, err := checkpoints.LoadLSN(h.ctx, h.db.Pool, h.db.Slot)
	require.NoError(h.t, err)
	confirmed := h.lsn(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`)
	require.Less(h.t, stored, end, "stored LSN stays before the transaction it could not read")
	require.Less(h.t, confirmed, end, "confirmed_flush_lsn stays before the transaction it could not read")
}

// TestHostilePublicationGainsTables: someone adds tables no rule reads to the sidecar's
// publication (aggregate_plays, and notification, which the sidecar's own flushes write). Their
// inserts and updates arrive on the stream and are ignored; the rules still
// read them from the tables, and a restart accepts the altered publication.
func TestHostilePublicationGainsTables(t *testing.T) {
	h := newHostile(t)
	h.artistWithTrack(11, 110)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	h.db.Exec(t, "ALTER PUBLICATION "+pgx.Identifier{h.db.Publication}.Sanitize()+" ADD TABLE aggregate_plays, notification")

	require.NoError(t, hostdb.AddUser(h.ctx, h.db.Pool, 12, true))
	require.NoError(t, hostdb.AddTrack(h.ctx, h.db.Pool, 120, 12))
	h.db.Exec(t, `UPDATE users SET handle = 'renamed' WHERE user_id = 11`)
	h.db.Exec(t, `UPDATE tracks SET title = 'renamed' WHERE track_id = 110`)
	h.plays(110, 260)
	h.plays(120, 10)
	h.applied()
	require.True(t, isRunning(p))
	h.requireReward("p1", "b:250", 250, 25, true)
	h.requireReward("p2", "b:1000", 260, 100, false)
	h.requireReward("p1", "c:250", 10, 25, false)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exited(30*time.Second))
	p = h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	h.db.Exec(t, `UPDATE users SET is_deactivated = false WHERE user_id = 12`)
	h.plays(120, 5)
	h.applied()
	require.True(t, isRunning(p))
	h.requireReward("p1", "c:250", 15, 25, false)
	h.verified()
}

// TestHostileDroppedColumn: someone drops comments.blocknumber. The next comment's Relation
// message lacks a column the sidecar needs: it stops with exit 1 and one clear line, and neither
// stores nor confirms a position past that comment — so nothing is lost once the column is back
// and the sidecar runs again. A restart before that refuses again.
//
// It runs with --publication-columns=all, as the runbook says for such a migration: under the
// default column lists Postgres refuses the DROP (TestHostDDLOnListedColumnsRefused).
func TestHostileDroppedColumn(t *testing.T) {
	h := newHostile(t)
	p := h.run(nil, "--window", "100ms", "--publication-columns", "all")
	h.waitStreaming(p)
	h.comment(1, 21, 5)
	h.applied()
	h.requireReward("c", "15:202523", 1, 1, true)

	h.db.Exec(t, `ALTER TABLE comments DROP COLUMN blocknumber`)
	xid := h.commitXID(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at)
		VALUES (2, 'x', 22, 1, 'Track', $1)`, in2025)
	require.Equal(t, 1, p.exited(60*time.Second), "a missing column is permanent: exit 1")
	out := p.out.String()
	require.Contains(t, lastLine(out), "required column missing: comments.blocknumber", "the last line says what is wrong")

	end := h.pendingEnd(xid)
	h.requireNotConfirmedPast(end)
	h.requireNoReward("c", "16:202523")

	p = h.run(nil, "--window", "100ms", "--publication-columns", "all")
	require.Equal(t, 1, p.exited(60*time.Second), "a restart refuses again")
	require.Contains(t, lastLine(p.out.String()), "blocknumber")
	h.requireNotConfirmedPast(end)
}

// TestHostileRetypedColumn: plays.play_item_id retyped, with --publication-columns=all (the
// runbook's setting for such a migration). To text, the sidecar cannot read track ids: exit 1,
// nothing confirmed past the play. To bigint, nothing changes.
func TestHostileRetypedColumn(t *testing.T) {
	t.Run("text", func(t *testing.T) {
		h := newHostile(t)
		h.artistWithTrack(31, 310)
		p := h.run(nil, "--window", "100ms", "--publication-columns", "all")
		h.waitStreaming(p)
		h.plays(310, 10)
		h.applied()

		// The host's trigger cannot aggregate text ids; this test is about the sidecar.
		h.db.Exec(t, `CREATE OR REPLACE FUNCTION on_play() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`)
		h.db.Exec(t, `ALTER TABLE plays ALTER COLUMN play_item_id TYPE text`)
		xid := h.commitXID(`INSERT INTO plays (play_item_id, created_at) VALUES ('310', $1)`, in2025)
		require.Equal(t, 1, p.exited(60*time.Second), "a retyped column is permanent: exit 1")
		require.Contains(t, lastLine(p.out.String()), "plays.play_item_id")
		require.Contains(t, lastLine(p.out.String()), "not an integer type")
		h.requireNotConfirmedPast(h.pendingEnd(xid))
	})
	t.Run("bigint", func(t *testing.T) {
		h := newHostile(t)
		h.artistWithTrack(32, 320)
		p := h.run(nil, "--window", "100ms", "--publication-columns", "all")
		h.waitStreaming(p)
		h.plays(320, 100)
		h.applied()
		h.db.Exec(t, `ALTER TABLE plays ALTER COLUMN play_item_id TYPE bigint`)
		h.db.Pool.Reset() // the pooled sessions cached the host trigger's plan for the old type
		h.plays(320, 160)
		h.applied()
		require.True(t, isRunning(p))
		h.requireReward("p1", "20:250", 250, 25, true)
		h.requireReward("p2", "20:1000", 260, 100, false)
		h.verified()
	})
}

// TestHostDDLOnListedColumnsRefused: under the default column lists, Postgres refuses to retype
// or drop a column the rules read, so a host migration cannot silently break the stream; the
// sidecar keeps streaming. Restarted with --publication-columns=all it widens its
// publication to whole rows in one step, and the same migration runs; plays keep counting
// across it.
func TestHostDDLOnListedColumnsRefused(t *testing.T) {
	h := newHostile(t)
	if h.count(`SELECT current_setting('server_version_num')::int`) < replication.ColumnListVersion {
		t.Skip("publication column lists need Postgres 15")
	}
	h.artistWithTrack(33, 330)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	_, err := h.db.Pool.Exec(h.ctx, `ALTER TABLE plays ALTER COLUMN play_item_id TYPE bigint`)
	require.ErrorContains(t, err, "cannot alter type of a column used by a publication")
	_, err = h.db.Pool.Exec(h.ctx, `ALTER TABLE comments DROP COLUMN blocknumber`)
	require.ErrorContains(t, err, "depend")
	h.plays(330, 100)
	h.applied()
	require.True(t, isRunning(p))

	require.NoError(t, p.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.exited(30*time.Second))
	h.plays(330, 100) // while it is down, under the lists
	p = h.run(nil, "--window", "100ms", "--publication-columns", "all")
	h.waitStreaming(p)
	h.db.Exec(t, `ALTER TABLE plays ALTER COLUMN play_item_id TYPE bigint`)
	h.db.Pool.Reset() // the pooled sessions cached the host trigger's plan for the old type
	h.plays(330, 60)
	h.applied()
	h.requireReward("p2", "21:1000", 260, 100, false)
	h.verified()
}

// TestHostileIntLimits: ids at the int4 limit (user and track 2147483647, hex 7fffffff; plays
// ids and a block number up to 2147483647 in the int4 legacy checkpoints) and plays of tracks
// that do not exist (0, negative, absent).
func TestHostileIntLimits(t *testing.T) {
	h := newHostile(t)
	const maxInt4 = 2147483647
	h.artistWithTrack(maxInt4, maxInt4)
	h.db.Exec(t, `SELECT setval('plays_id_seq', $1)`, maxInt4-400)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)

	h.plays(maxInt4, 260)
	for _, track := range []int64{0, -5, maxInt4 - 1, 99999} {
		h.plays(track, 3)
	}
	h.comment(maxInt4, maxInt4, maxInt4)
	h.comment(1, maxInt4, nil) // a NULL block number is allowed
	h.applied()
	require.True(t, isRunning(p))

	h.requireReward("p1", "7fffffff:250", 250, 25, true)
	h.requireReward("p2", "7fffffff:1000", 260, 100, false)
	h.requireReward("c", "7fffffff:202523", 1, 1, true)
	require.EqualValues(t, 3, h.count(`SELECT count(*) FROM user_challenges`), "unknown tracks earn nothing")
	legacy, err := checkpoints.ReadLegacy(h.ctx, h.db.Pool)
	require.NoError(t, err)
	require.EqualValues(t, maxInt4, legacy[checkpoints.CommentsCheckpoint])
	require.Equal(t, h.count(`SELECT max(id) FROM plays`), legacy[checkpoints.PlaysCheckpoint])
	require.Greater(t, legacy[checkpoints.PlaysCheckpoint], int64(maxInt4-200))
	h.verified()
}

// TestHostileCatalog: catalog rows the reference tolerates — a non-numeric amount (the amount is
// 0), a NULL step_count (the tier is skipped, so the next tier's gate is the previous active
// step), a non-integer c amount (its leading integer, as the polling job's Sscanf("%d") keeps).
func TestHostileCatalog(t *testing.T) {
	h := newHostile(t)
	h.db.Exec(t, `UPDATE challenges SET amount = 'lots' WHERE id = 'p1'`)
	h.db.Exec(t, `UPDATE challenges SET step_count = NULL WHERE id = 'p2'`)
	h.db.Exec(t, `UPDATE challenges SET amount = '1.5' WHERE id = 'c'`)
	h.artistWithTrack(41, 410)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	h.plays(410, 300)
	h.comment(1, 42, 7)
	h.applied()
	require.True(t, isRunning(p))

	h.requireReward("p1", "29:250", 250, 0, true)
	h.requireNoReward("p2", "29:1000")
	h.requireReward("p3", "29:10000", 300, 1000, false)
	h.requireReward("c", "2a:202523", 1, 1, true)
	h.verified()
}

// TestHostileCatalogOdditiesLogged: the issue asks for odd catalog rows to be logged (once).
func TestHostileCatalogOdditiesLogged(t *testing.T) {
	h := newHostile(t)
	h.db.Exec(t, `UPDATE challenges SET amount = 'lots' WHERE id = 'p1'`)
	h.artistWithTrack(43, 430)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	h.plays(430, 10)
	h.applied()
	h.plays(430, 10)
	h.applied()
	require.Equal(t, 1, strings.Count(p.out.String(), `\"lots\"`), "the odd amount is logged once")
}

// TestHostileLockedRow: someone holds a lock on a reward row the flush needs for longer than
// the server's wal_sender_timeout (30 s in the test cluster). The flush waits; meanwhile the
// stream keeps answering the server — the same walsender stays connected and keeps receiving
// status updates — and when the lock goes, the flush applies.
func TestHostileLockedRow(t *testing.T) {
	h := newHostile(t)
	h.artistWithTrack(51, 510)
	p := h.run(nil, "--window", "100ms")
	h.waitStreaming(p)
	h.plays(510, 260)
	h.applied()
	h.requireReward("p2", "33:1000", 260, 100, false)

	var walsender int32
	require.NoError(t, h.db.Pool.QueryRow(h.ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`,
		h.db.Slot).Scan(&walsender))
	tx, err := h.db.Pool.Begin(h.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	var locked int
	require.NoError(t, tx.QueryRow(h.ctx, `SELECT count(*) FROM (SELECT 1 FROM user_challenges WHERE user_id = 51
		FOR UPDATE) l`).Scan(&locked))
	require.Equal(t, 2, locked)

	h.plays(510, 10)
	replies := map[time.Time]bool{}
	for end := time.Now().Add(35 * time.Second); time.Now().Before(end); time.Sleep(time.Second) { // the lock lasts
		var pid *int32
		var reply *time.Time
		require.NoError(t, h.db.Pool.QueryRow(h.ctx, `SELECT s.active_pid, r.reply_time FROM pg_replication_slots s
			LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, h.db.Slot).Scan(&pid, &reply))
		require.True(t, isRunning(p), "the sidecar keeps running while its flush waits")
		require.NotNil(t, pid, "the slot stays active")
		require.Equal(t, walsender, *pid, "the same walsender: the connection was never dropped")
		if reply != nil {
			replies[*reply] = true
		}
	}
	require.GreaterOrEqual(t, len(replies), 3, "status updates kept arriving while the flush waited")
	h.requireReward("p2", "33:1000", 260, 100, false) // still waiting for the lock

	require.NoError(t, tx.Rollback(h.ctx))
	h.applied()
	h.requireReward("p2", "33:1000", 270, 100, false)
	h.verified()
}

func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestHostileNullIDs: someone drops NOT NULL from an id the rules key on and writes a NULL. The
// sidecar cannot attribute the row: it stops with exit 1 and one clear line, and confirms
// nothing past the row.
func TestHostileNullIDs(t *testing.T) {
	for _, tc := range []struct {
		name, alter, insert, want string
	}{
		{
			name:   "plays.play_item_id",
			alter:  `ALTER TABLE plays ALTER COLUMN play_item_id DROP NOT NULL`,
			insert: `INSERT INTO plays (play_item_id, created_at) VALUES (NULL, now())`,
			want:   "plays.play_item_id is NULL",
		},
		{
			name:  "comments.user_id",
			alter: `ALTER TABLE comments ALTER COLUMN user_id DROP NOT NULL`,
			insert: `INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, blocknumber)
				VALUES (1, 'x', NULL, 1, 'Track', 9)`,
			want: "comments.user_id is NULL",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostile(t)
			p := h.run(nil, "--window", "100ms")
			h.waitStreaming(p)
			h.db.Exec(t, tc.alter)
			// The host's trigger cannot aggregate a NULL track; this test is about the sidecar.
			h.db.Exec(t, `CREATE OR REPLACE FUNCTION on_play() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`)
			xid := h.commitXID(tc.insert)
			require.Equal(t, 1, p.exited(60*time.Second), "an unattributable row is permanent: exit 1")
			require.Contains(t, lastLine(p.out.String()), tc.want)
			h.requireNotConfirmedPast(h.pendingEnd(xid))
		})
	}
}
