package processors_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/checkpoints"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/processors"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fixture is one test's host database plus helpers that write host rows the way the platform
// does (plays through INSERT, so the trigger keeps the aggregates) and run the rules.
type fixture struct {
	t   *testing.T
	ctx context.Context
	db  *pgtest.DB
}

func setup(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: t.Context(), db: pgtest.NewDB(t)}
	conn, err := pgx.Connect(f.ctx, f.db.URL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(f.ctx))
	// CatchUp and ApplyWindow keep their bookkeeping in the project's schema.
	require.NoError(t, migrations.Apply(f.ctx, conn, nil))
	return f
}

func (f *fixture) exec(sql string, args ...any) { f.t.Helper(); f.db.Exec(f.t, sql, args...) }

func (f *fixture) count(sql string, args ...any) int64 {
	f.t.Helper()
	return f.db.QueryInt(f.t, sql, args...)
}

// artist adds a current users row.
func (f *fixture) artist(id int64, verified bool) {
	f.t.Helper()
	f.userRow(id, true, verified, false, fmt.Sprintf("u%d", id))
}

func (f *fixture) userRow(id int64, current, verified, deactivated bool, txhash string) {
	f.t.Helper()
	f.exec(`INSERT INTO users (user_id, is_current, is_verified, is_deactivated, txhash, handle)
		VALUES ($1, $2, $3, $4, $5, 'h')`, id, current, verified, deactivated, txhash)
}

// track adds a live track row.
func (f *fixture) track(trackID, owner int64) {
	f.t.Helper()
	f.trackRow(trackID, owner, true, false, fmt.Sprintf("t%d", trackID))
}

func (f *fixture) trackRow(trackID, owner int64, current, deleted bool, txhash string) {
	f.t.Helper()
	f.exec(`INSERT INTO tracks (track_id, owner_id, is_current, is_delete, txhash, title)
		VALUES ($1, $2, $3, $4, $5, 'x')`, trackID, owner, current, deleted, txhash)
}

// deleteTrack versions a track the way the indexer does: the live row becomes historical and
// a deleted row becomes current.
func (f *fixture) deleteTrack(trackID int64) {
	f.t.Helper()
	var owner int64
	require.NoError(f.t, f.db.Pool.QueryRow(f.ctx,
		`UPDATE tracks SET is_current = false WHERE track_id = $1 AND is_current RETURNING owner_id`,
		trackID).Scan(&owner))
	f.trackRow(trackID, owner, true, true, fmt.Sprintf("t%d-del", trackID))
}

// plays inserts n plays of a track at a time, a third of them anonymous, over a few
// countries. The host trigger updates one aggregate row per play; many updates of one row in
// one transaction grow a version chain that every later update walks, so large counts go in
// transactions of playChunk rows.
func (f *fixture) plays(trackID, n int64, at string) {
	f.t.Helper()
	const playChunk = 500
	for done := int64(0); done < n; done += playChunk {
		f.exec(`INSERT INTO plays (play_item_id, created_at, user_id, country)
			SELECT $1, $2::timestamp, CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
			       CASE WHEN g % 4 <> 0 THEN 'C' || (g % 4) END
			FROM generate_series(1, $3::int) g`, trackID, at, min(playChunk, n-done))
	}
}

type comment struct {
	id      int64
	user    int64
	at      string
	deleted bool
	hidden  bool
	block   int64
}

func (f *fixture) comment(c comment) {
	f.t.Helper()
	f.exec(`INSERT INTO comments (comment_id, text, user_id, entity_id, entity_type, created_at,
		is_delete, is_visible, blocknumber) VALUES ($1, 'hi', $2, 1, 'Track', $3::timestamp, $4, $5, $6)`,
		c.id, c.user, c.at, c.deleted, !c.hidden, c.block)
}

func (f *fixture) inTx(fn func(tx pgx.Tx)) {
	f.t.Helper()
	tx, err := f.db.Pool.Begin(f.ctx)
	require.NoError(f.t, err)
	defer func() { _ = tx.Rollback(f.ctx) }()
	fn(tx)
	require.NoError(f.t, tx.Commit(f.ctx))
}

// milestones runs the streaming path for plays on the given tracks.
func (f *fixture) milestones(trackIDs ...int64) processors.Stats {
	f.t.Helper()
	var stats processors.Stats
	f.inTx(func(tx pgx.Tx) {
		cat, err := processors.LoadCatalog(f.ctx, tx)
		require.NoError(f.t, err)
		artists, err := processors.ArtistsForTracks(f.ctx, tx, trackIDs)
		require.NoError(f.t, err)
		stats, err = processors.RecomputeMilestones(f.ctx, tx, cat, artists)
		require.NoError(f.t, err)
	})
	return stats
}

// weekly runs the streaming path for comments of the given users.
func (f *fixture) weekly(userIDs ...int64) processors.Stats {
	f.t.Helper()
	var stats processors.Stats
	f.inTx(func(tx pgx.Tx) {
		cat, err := processors.LoadCatalog(f.ctx, tx)
		require.NoError(f.t, err)
		stats, err = processors.RecomputeWeeklyComments(f.ctx, tx, cat, userIDs)
		require.NoError(f.t, err)
	})
	return stats
}

func (f *fixture) catchUp(opts processors.CatchUpOptions) processors.CatchUpResult {
	f.t.Helper()
	var res processors.CatchUpResult
	f.inTx(func(tx pgx.Tx) {
		var err error
		res, err = processors.CatchUp(f.ctx, tx, opts)
		require.NoError(f.t, err)
	})
	return res
}

func (f *fixture) verify() []processors.Difference {
	f.t.Helper()
	diffs, err := processors.Verify(f.ctx, f.db.Pool)
	require.NoError(f.t, err)
	return diffs
}

func (f *fixture) setLegacy(l checkpoints.Legacy) {
	f.t.Helper()
	require.NoError(f.t, checkpoints.AdvanceLegacy(f.ctx, f.db.Pool, l))
}

func (f *fixture) legacy() checkpoints.Legacy {
	f.t.Helper()
	l, err := checkpoints.ReadLegacy(f.ctx, f.db.Pool)
	require.NoError(f.t, err)
	return l
}

// stored is a user_challenges row.
type stored struct {
	UserID      int64
	Complete    bool
	Current     int64
	Amount      int64
	CompletedAt *time.Time
}

// rows returns user_challenges keyed "challenge specifier".
func (f *fixture) rows() map[string]stored {
	f.t.Helper()
	rows, err := f.db.Pool.Query(f.ctx, `SELECT challenge_id, specifier, user_id, is_complete,
		current_step_count, amount, completed_at FROM user_challenges`)
	require.NoError(f.t, err)
	out := map[string]stored{}
	var id, spec string
	var r stored
	_, err = pgx.ForEachRow(rows, []any{&id, &spec, &r.UserID, &r.Complete, &r.Current, &r.Amount, &r.CompletedAt},
		func() error {
			out[id+" "+spec] = r
			return nil
		})
	require.NoError(f.t, err)
	return out
}

// progress is the comparable part of a row: who, how far, complete, amount.
type progress struct {
	User     int64
	Current  int64
	Complete bool
	Amount   int64
}

// progressRows is rows() without timestamps, checking on the way that completed_at is set
// exactly on complete rows.
func (f *fixture) progressRows() map[string]progress {
	f.t.Helper()
	out := map[string]progress{}
	for k, r := range f.rows() {
		require.Equal(f.t, r.Complete, r.CompletedAt != nil, "completed_at of %s", k)
		out[k] = progress{User: r.UserID, Current: r.Current, Complete: r.Complete, Amount: r.Amount}
	}
	return out
}

// countWrites installs a trigger that counts row writes on user_challenges and returns a
// function reading the count.
func (f *fixture) countWrites() func() int64 {
	f.t.Helper()
	f.exec(`CREATE TABLE uc_writes (op text NOT NULL)`)
	f.exec(`CREATE FUNCTION count_uc_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO uc_writes VALUES (TG_OP); RETURN NULL; END $$`)
	f.exec(`CREATE TRIGGER count_uc_write AFTER INSERT OR UPDATE ON user_challenges
		FOR EACH ROW EXECUTE FUNCTION count_uc_write()`)
	return func() int64 { return f.count(`SELECT count(*) FROM uc_writes`) }
}

// pgxTx keeps test closures short.
type pgxTx = pgx.Tx

// untouched are the incremental rules' checkpoints other than p's and c's (u, fp, …): the p
// and c fixtures have no rows for them and their challenges start inactive, so a catch-up
// seeds them at 0 and a flush holds them.
func untouched() []string {
	var names []string
	for _, r := range processors.Rules() {
		if c := r.Checkpoint(); c != "" && c != checkpoints.PlaysCheckpoint && c != checkpoints.CommentsCheckpoint {
			names = append(names, c)
		}
	}
	return names
}

// withUntouched is l with the untouched checkpoints at 0, or, for one that follows plays.id as
// p's does (e's), at p's value: a catch-up seeds it from the same plays.
func withUntouched(l checkpoints.Legacy) checkpoints.Legacy {
	for _, r := range processors.Rules() {
		if c := r.Checkpoint(); slices.Contains(untouched(), c) {
			l[c] = 0
			if r.CheckpointSources()[0] == (processors.Source{Table: "plays", Ops: processors.Insert, Column: "id"}) {
				l[c] = l[checkpoints.PlaysCheckpoint]
			}
		}
	}
	return l
}

// heldWith is the names a flush of the p and c fixtures holds: the given ones and the
// untouched ones, in registry order.
func heldWith(names ...string) []string {
	var out []string
	for _, r := range processors.Rules() {
		if c := r.Checkpoint(); c != "" && (slices.Contains(names, c) || slices.Contains(untouched(), c)) {
			out = append(out, c)
		}
	}
	return out
}
