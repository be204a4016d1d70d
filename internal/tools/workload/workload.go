package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// Config sizes the synthetic host database. Zero fields take the defaults.
type Config struct {
	// Seed makes the database and the traffic reproducible. Default 1.
	Seed uint64
	// Artists is the number of users who own tracks. Default 5,000.
	Artists int
	// VerifiedShare is the share of artists that are verified (a few of those are
	// deactivated). Default 0.4.
	VerifiedShare float64
	// TracksPerArtist is the mean number of tracks per artist. Default 10.
	TracksPerArtist int
	// Listeners is the number of users who only play and comment. Default 20,000.
	Listeners int
	// Comments is the number of comments in the history, spread over the last year.
	// Default 30,000.
	Comments int
	// MilestoneGap: most eligible artists start between 1 and MilestoneGap plays below one of
	// the milestones. Default 20.
	MilestoneGap int
}

// Defaults for Config.
const (
	DefaultSeed            = 1
	DefaultArtists         = 5_000
	DefaultVerifiedShare   = 0.4
	DefaultTracksPerArtist = 10
	DefaultListeners       = 20_000
	DefaultComments        = 30_000
	DefaultMilestoneGap    = 20
)

func (c Config) withDefaults() Config {
	if c.Seed == 0 {
		c.Seed = DefaultSeed
	}
	if c.Artists == 0 {
		c.Artists = DefaultArtists
	}
	if c.VerifiedShare == 0 {
		c.VerifiedShare = DefaultVerifiedShare
	}
	if c.TracksPerArtist == 0 {
		c.TracksPerArtist = DefaultTracksPerArtist
	}
	if c.Listeners == 0 {
		c.Listeners = DefaultListeners
	}
	if c.Comments == 0 {
		c.Comments = DefaultComments
	}
	if c.MilestoneGap == 0 {
		c.MilestoneGap = DefaultMilestoneGap
	}
	return c
}

// Validate checks the configuration after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Artists < 0, c.TracksPerArtist < 0, c.Listeners < 0, c.Comments < 0, c.MilestoneGap < 0:
		return errors.New("workload sizes must not be negative")
	case c.VerifiedShare < 0 || c.VerifiedShare > 1:
		return fmt.Errorf("verified share %g must be between 0 and 1", c.VerifiedShare)
	}
	return nil
}

// Tier is a milestone as the model tracks it.
type Tier struct {
	ChallengeID string
	Suffix      string
	Step        int64
}

// Host is the model of a generated database: what counts for whom, and every eligible artist's
// play count. It is safe for concurrent use.
type Host struct {
	mu  sync.Mutex
	pcg *rand.PCG
	rng *rand.Rand // draws from pcg

	artists, listeners int64 // artist ids are 1..artists, listener ids follow
	maxTrack           int64
	// owner is the eligible artist a play of the track counts for (index = track id), 0 when
	// the track is deleted or its owner is not eligible.
	owner []int32
	// hot lists the live tracks of each eligible artist that has some.
	hot   [][]int32
	count map[int64]int64 // eligible artist → plays counted by the milestone rule
	tiers []Tier

	nextComment int64
	nextBlock   int64
}

// Clone returns an independent copy of the model, for a copy of its database (CREATE
// DATABASE … TEMPLATE). The copy draws the same random traffic as the original would.
func (h *Host) Clone() *Host {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &Host{
		artists: h.artists, listeners: h.listeners, maxTrack: h.maxTrack,
		owner: h.owner, hot: h.hot, tiers: h.tiers,
		nextComment: h.nextComment, nextBlock: h.nextBlock,
		count: make(map[int64]int64, len(h.count)),
	}
	for k, v := range h.count {
		c.count[k] = v
	}
	// The PCG state is a plain value: a copy continues the same stream independently.
	pcg := *h.pcg
	c.pcg = &pcg
	c.rng = rand.New(c.pcg)
	return c
}

// Count is the play count the milestone rule sees for an eligible artist.
func (h *Host) Count(artist int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[artist]
}

// EligibleArtists is the number of verified, active artists.
func (h *Host) EligibleArtists() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.count)
}

// Tracks is the highest track id.
func (h *Host) Tracks() int64 { return h.maxTrack }

// Tiers are the active milestones, as read from the catalog.
func (h *Host) Tiers() []Tier { return h.tiers }

// Sizes reports what Generate wrote.
type Sizes struct {
	Users, Tracks, Aggregates, Comments int64
	EligibleArtists                     int
	Rewards                             int64 // user_challenges rows derived from the history
	Took                                time.Duration
}

// Generate fills the host tables of an empty host schema (see internal/tools/hostdb) in conn's
// database, derives the reward rows of the history and sets the legacy checkpoints, as the
// polling job would have left them. It returns the model of what it wrote.
func Generate(ctx context.Context, conn *pgx.Conn, cfg Config) (*Host, Sizes, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Sizes{}, err
	}
	cfg = cfg.withDefaults()
	start := time.Now()
	cat, err := processors.LoadCatalog(ctx, conn)
	if err != nil {
		return nil, Sizes{}, fmt.Errorf("generate: %w", err)
	}
	g := newGenerator(cfg, cat)
	g.build(start)
	sizes := Sizes{EligibleArtists: len(g.host.count)}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, t := range g.tables() {
			n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.columns, t.rows)
			if err != nil {
				return fmt.Errorf("copy %s: %w", t.name, err)
			}
			switch t.name {
			case "users":
				sizes.Users = n
			case "tracks":
				sizes.Tracks = n
			case "aggregate_monthly_plays":
				sizes.Aggregates = n
			case "comments":
				sizes.Comments = n
			}
		}
		return nil
	})
	if err != nil {
		return nil, Sizes{}, fmt.Errorf("generate: %w", err)
	}
	// Statistics first: planned without them, the derivation's joins over millions of
	// freshly copied rows took most of the generation at production size.
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return nil, Sizes{}, fmt.Errorf("generate: analyze: %w", err)
	}
	// The history's rewards, as the polling job would have derived them; this also sets the
	// legacy checkpoints, so a sidecar started here cuts over from them.
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		res, err := processors.CatchUp(ctx, tx, processors.CatchUpOptions{FromScratch: true})
		if err != nil {
			return err
		}
		t := res.Stats.Total()
		sizes.Rewards = int64(t.Inserted + t.Updated + t.Unchanged)
		return nil
	})
	if err != nil {
		return nil, Sizes{}, fmt.Errorf("generate: derive history: %w", err)
	}
	// Vacuumed as a production host's tables are: autovacuum would otherwise start on
	// millions of freshly inserted rows in the middle of the first measured run.
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return nil, Sizes{}, fmt.Errorf("generate: vacuum: %w", err)
	}
	sizes.Took = time.Since(start)
	return g.host, sizes, nil
}

type table struct {
	name    string
	columns []string
	rows    [][]any
}

type generator struct {
	cfg   Config
	rng   *rand.Rand
	host  *Host
	users table
	track table
	// aggs are the aggregate_monthly_plays rows, kept compact (millions at production size)
	// and turned into COPY rows one at a time; aggp the aggregate_plays rows.
	aggs []aggRow
	aggp table
	comm table
}

// aggRow is one aggregate_monthly_plays row; month counts from January 2000, country indexes
// aggCountries.
type aggRow struct {
	track   int32
	month   int32
	country uint8
	count   int32
}

// aggCountries are the countries of the aggregate rows; "" is a play without a country.
var aggCountries = append([]string{""}, countries...)

func (r aggRow) values() []any {
	return []any{int64(r.track), monthStart(int(r.month)), aggCountries[r.country], r.count}
}

// monthIndex counts months from January 2000; monthStart is its inverse.
func monthIndex(t time.Time) int { return (t.Year()-2000)*12 + int(t.Month()) - 1 }

func monthStart(m int) time.Time {
	return time.Date(2000+m/12, time.Month(1+m%12), 1, 0, 0, 0, 0, time.UTC)
}

func newGenerator(cfg Config, cat processors.Catalog) *generator {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	h := &Host{
		artists:   int64(cfg.Artists),
		listeners: int64(cfg.Listeners),
		count:     map[int64]int64{},
	}
	for _, t := range cat.Milestones {
		h.tiers = append(h.tiers, Tier{ChallengeID: t.ChallengeID, Suffix: t.Suffix, Step: t.Step})
	}
	return &generator{
		cfg:   cfg,
		rng:   rng,
		host:  h,
		users: table{name: "users", columns: []string{"user_id", "handle", "is_current", "is_verified", "is_deactivated", "blocknumber", "txhash"}},
		track: table{name: "tracks", columns: []string{"track_id", "title", "owner_id", "is_current", "is_delete", "blocknumber", "txhash"}},
		aggp:  table{name: "aggregate_plays", columns: []string{"play_item_id", "count"}},
		comm: table{name: "comments", columns: []string{"comment_id", "text", "user_id", "entity_id", "entity_type",
			"created_at", "updated_at", "is_delete", "is_visible", "txhash", "blockhash", "blocknumber"}},
	}
}

// tables are Generate's COPYs, one per table.
func (g *generator) tables() []copyTable {
	aggs := g.aggs
	return []copyTable{
		g.users.copy(), g.track.copy(),
		{name: "aggregate_monthly_plays", columns: []string{"play_item_id", "timestamp", "country", "count"},
			rows: pgx.CopyFromSlice(len(aggs), func(i int) ([]any, error) { return aggs[i].values(), nil })},
		g.aggp.copy(), g.comm.copy(),
	}
}

// copyTable is one COPY of Generate.
type copyTable struct {
	name    string
	columns []string
	rows    pgx.CopyFromSource
}

func (t table) copy() copyTable {
	return copyTable{name: t.name, columns: t.columns, rows: pgx.CopyFromRows(t.rows)}
}

func (g *generator) chance(p float64) bool { return g.rng.Float64() < p }

func (g *generator) build(now time.Time) {
	cfg, h, rng := g.cfg, g.host, g.rng
	h.owner = []int32{0}
	var trackID int64
	for a := int64(1); a <= h.artists; a++ {
		verified := g.chance(cfg.VerifiedShare)
		deactivated := verified && g.chance(0.03)
		eligible := verified && !deactivated
		g.users.rows = append(g.users.rows, []any{a, "artist" + strconv.FormatInt(a, 10), true, verified, deactivated, int32(a), txhash(a, 2)})
		if g.chance(0.2) {
			// An older version of the row, disagreeing about verification: only the current
			// row may decide eligibility.
			g.users.rows = append(g.users.rows, []any{a, "artist" + strconv.FormatInt(a, 10), false, !verified, false, int32(a), txhash(a, 1)})
		}

		n := 1 + rng.IntN(2*cfg.TracksPerArtist-1)
		var live []int32
		for range n {
			trackID++
			deleted := g.chance(0.03)
			g.track.rows = append(g.track.rows, []any{trackID, "track " + strconv.FormatInt(trackID, 10), a, true, deleted, int32(trackID), txhash(trackID, 2)})
			if g.chance(0.1) {
				// An older version owned by someone else: plays must resolve through the live row.
				other := 1 + rng.Int64N(h.artists)
				g.track.rows = append(g.track.rows, []any{trackID, "old title", other, false, false, int32(trackID), txhash(trackID, 1)})
			}
			owner := int32(0)
			if eligible && !deleted {
				owner = int32(a)
				live = append(live, int32(trackID))
			}
			h.owner = append(h.owner, owner)
			if owner == 0 {
				g.history(trackID, false, 0, now)
			}
		}
		if eligible && len(live) > 0 {
			h.hot = append(h.hot, live)
			target := g.startingCount()
			h.count[a] = target
			g.spread(live, target, now)
		}
	}
	h.maxTrack = trackID
	for l := h.artists + 1; l <= h.artists+h.listeners; l++ {
		g.users.rows = append(g.users.rows, []any{l, "listener" + strconv.FormatInt(l, 10), true, false, false, int32(l), txhash(l, 2)})
	}
	g.comments(now)
	h.pcg = rand.NewPCG(cfg.Seed^0x5bd1e995, 0x2545f4914f6cdd1d)
	h.rng = rand.New(h.pcg)
}

// startingCount puts most eligible artists just below a milestone, the rest anywhere.
func (g *generator) startingCount() int64 {
	tiers := g.host.tiers
	if len(tiers) == 0 || g.chance(0.3) {
		return g.rng.Int64N(12_000)
	}
	// Lower tiers are more common, as in production.
	i := 0
	switch r := g.rng.Float64(); {
	case r < 0.5:
		i = 0
	case r < 0.85:
		i = 1
	default:
		i = 2
	}
	i = min(i, len(tiers)-1)
	return max(0, tiers[i].Step-1-g.rng.Int64N(int64(g.cfg.MilestoneGap)))
}

var countries = []string{"US", "DE", "BR", "JP", "NG"}

// historyMonths is the longest run of months a track's history covers. With runs of 1 to 7
// months (4 on average) and a country split now and then, a track has about 5 aggregate rows:
// years of monthly aggregates in production are several rows per track, not one.
const historyMonths = 7

// history writes a track's monthly aggregates: a run of consecutive months, ending last month
// for most tracks (still played) and earlier for the rest. Months before 2025 carry plays the
// rule ignores. A track that counts for an eligible artist carries exactly since2025 plays from
// January 2025 on, spread over its months since then (fewer months when it has fewer plays);
// other tracks carry random counts. A month's plays are split between a country and none now
// and then: the rule sums all of them.
func (g *generator) history(track int64, counts bool, since2025 int64, now time.Time) {
	first2025 := monthIndex(time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC))
	last := max(first2025, monthIndex(now)-1)
	end := last
	if g.chance(0.4) {
		end = first2025 + g.rng.IntN(last-first2025+1)
	}
	start := end - g.rng.IntN(historyMonths)
	plays := make([]int64, end-start+1) // by month, from start
	counted := 0                        // months since 2025 in the run
	for i := range plays {
		if start+i >= first2025 {
			counted++
		}
	}
	for i := range plays {
		if !counts || start+i < first2025 {
			plays[i] = 1 + g.rng.Int64N(400)
		}
	}
	if counts && counted > 0 && since2025 > 0 {
		// The counted months are the last ones of the run; with fewer plays than months only
		// the last months get one each.
		months := plays[len(plays)-int(min(int64(counted), since2025)):]
		for i, share := range g.shares(since2025-int64(len(months)), len(months)) {
			months[i] = 1 + share
		}
	}
	var total int64
	for i, n := range plays {
		if n == 0 {
			continue
		}
		total += n
		month := int32(start + i)
		if n > 1 && g.chance(0.3) {
			part := 1 + g.rng.Int64N(n-1)
			g.aggs = append(g.aggs, aggRow{track: int32(track), month: month, country: uint8(1 + g.rng.IntN(len(countries))), count: int32(part)})
			n -= part
		}
		g.aggs = append(g.aggs, aggRow{track: int32(track), month: month, count: int32(n)})
	}
	if total > 0 {
		g.aggp.rows = append(g.aggp.rows, []any{track, total})
	}
}

// spread distributes an artist's count over their live tracks.
func (g *generator) spread(live []int32, total int64, now time.Time) {
	for i, share := range g.shares(total, len(live)) {
		g.history(int64(live[i]), true, share, now)
	}
}

// shares splits total into n random parts (weights 1 to 10; the last part takes what rounding
// leaves), so the parts always add up to total.
func (g *generator) shares(total int64, n int) []int64 {
	weights := make([]int64, n)
	var sum int64
	for i := range weights {
		weights[i] = 1 + g.rng.Int64N(10)
		sum += weights[i]
	}
	parts := make([]int64, n)
	left := total
	for i := range parts {
		parts[i] = total * weights[i] / sum
		if i == n-1 {
			parts[i] = left
		}
		left -= parts[i]
	}
	return parts
}

// comments writes a year of comment history in ascending block order, and leaves the model's
// next comment id and block number after it.
func (g *generator) comments(now time.Time) {
	h, n := g.host, g.cfg.Comments
	year := int64(365 * 24 * time.Hour)
	at := make([]time.Time, n)
	for i := range at {
		at[i] = now.Add(-time.Duration(g.rng.Int64N(year))).UTC().Truncate(time.Microsecond)
	}
	slices.SortFunc(at, time.Time.Compare)
	for i, created := range at {
		id := int64(i + 1)
		g.comm.rows = append(g.comm.rows, []any{
			id, "comment " + strconv.FormatInt(id, 10), g.commenter(), 1 + g.rng.Int64N(max(1, h.maxTrack)), "Track",
			created, created, g.chance(0.04), !g.chance(0.02), txhash(id, 0), blockhash(id), int32(id),
		})
	}
	h.nextComment = int64(n) + 1
	h.nextBlock = int64(n) + 1
}

// commenter is a listener most of the time, an artist otherwise.
func (g *generator) commenter() int64 {
	h := g.host
	if h.listeners > 0 && g.chance(0.8) {
		return h.artists + 1 + g.rng.Int64N(h.listeners)
	}
	return 1 + g.rng.Int64N(max(1, h.artists))
}

func txhash(id int64, version int) string {
	return "0x" + strconv.FormatInt(id, 16) + "-" + strconv.Itoa(version)
}

func blockhash(block int64) string { return "0xb" + strconv.FormatInt(block, 16) }
