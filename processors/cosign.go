package processors

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ChallengeCosign is cs (upstream cosign.go): a verified artist saving or reposting a remix of
// their own track earns the remixer a reward.
const ChallengeCosign = "cs"

// CosignCheckpoint is cs's legacy checkpoint: the highest reposts or saves blocknumber applied.
const CosignCheckpoint = "challenges:cs:last_blocknumber"

// cosignCap is how many cosigns one artist (the cosigner) can pay in cosignWindow.
const (
	cosignCap    = 5
	cosignWindow = "30 days"
)

// cosignRule is cs. The trigger is the artist's action, and the cap makes the order of actions
// matter, so, like b and s, it consumes actions rather than re-deriving users: the dirty keys
// are the blocknumbers of reposts and saves rows that changed, and the flush walks the actions
// of those blocks in block order, as upstream walks the actions above its checkpoint.
//
// A cosign the cap held back is not retried when an action comes later, as upstream; a
// catch-up's re-scan below the checkpoint (BlockMargin) reads it again and pays it if the
// cosigner's last 30 days allow it by then. A remix recorded after the artist's action is not
// a cosign on either side (remixes is not a source).
func cosignRule() Rule {
	spec := blockSpec(CosignCheckpoint, walkCosigns)
	spec.events = true
	// A NULL blocknumber is an action upstream's range scan never reads: no key.
	return incremental(Rule{
		Name:       "cosign",
		Challenges: []string{ChallengeCosign},
		Sources: []Source{
			{Table: "reposts", Ops: Insert | Update, Column: "blocknumber", Keys: "blocks", Optional: true},
			{Table: "saves", Ops: Insert | Update, Column: "blocknumber", Keys: "blocks", Optional: true},
		},
		active: booleanActive(ChallengeCosign),
	}, spec)
}

// cosign is an action that cosigns a remix: the artist (cosigner) and the remix's owner and
// track.
type cosign struct {
	Block, Artist, Remixer, Remix int64
}

func (c cosign) specifier() string { return hexUserID(c.Artist) + ":" + hexUserID(c.Remix) }

// walkCosigns pays the cosigns among the actions of the given blocks, in block order (ties by
// artist and remix), each unless its row exists or the artist has paid cosignCap in the window.
func walkCosigns(ctx context.Context, q Querier, cat Catalog, blocks []int64) (Stats, error) {
	e, ok := cat.Active[ChallengeCosign]
	if !ok || len(blocks) == 0 {
		return Stats{}, nil
	}
	stats := Stats{}
	err := chunks(sortedKeys(blocks), idBatchSize, func(batch []int64) error {
		s, err := walkCosignBatch(ctx, q, e, batch)
		stats.Add(s)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("walk cosigns: %w", err)
	}
	return stats, nil
}

func walkCosignBatch(ctx context.Context, q Querier, e Entry, blocks []int64) (Stats, error) {
	rows, err := q.Query(ctx, `
SELECT a.blocknumber::bigint, a.artist, child.owner_id, r.child_track_id
FROM (SELECT user_id AS artist, repost_item_id AS track_id, blocknumber FROM reposts
      WHERE blocknumber = ANY(@blocks::bigint[]) AND is_current AND NOT is_delete AND repost_type = 'track'
      UNION ALL
      SELECT user_id, save_item_id, blocknumber FROM saves
      WHERE blocknumber = ANY(@blocks::bigint[]) AND is_current AND NOT is_delete AND save_type = 'track') a
JOIN remixes r ON r.child_track_id = a.track_id
JOIN tracks parent ON parent.track_id = r.parent_track_id AND parent.is_current AND parent.owner_id = a.artist
JOIN tracks child ON child.track_id = r.child_track_id AND child.is_current
JOIN users u ON u.user_id = a.artist AND u.is_current AND u.is_verified
ORDER BY 1, 2, 4`, pgx.NamedArgs{"blocks": blocks})
	if err != nil {
		return nil, fmt.Errorf("list cosigns: %w", err)
	}
	cosigns, err := pgx.CollectRows(rows, pgx.RowToStructByPos[cosign])
	if err != nil {
		return nil, fmt.Errorf("list cosigns: %w", err)
	}
	if len(cosigns) == 0 {
		return Stats{}, nil
	}
	paid, recent, err := cosignsPaid(ctx, q, cosigns)
	if err != nil {
		return nil, err
	}
	var out []Row
	for _, c := range cosigns {
		spec := c.specifier()
		artist := hexUserID(c.Artist)
		if paid[spec] || recent[artist] >= cosignCap {
			continue
		}
		paid[spec] = true
		recent[artist]++
		out = append(out, Row{ChallengeID: ChallengeCosign, Specifier: spec, UserID: c.Remixer,
			Current: 1, Step: 1, Amount: e.Amount})
	}
	return Upsert(ctx, q, out)
}

// cosignsPaid reads which of the cosigns have a row already and how many rows each artist's
// cosigns made in the last cosignWindow, by the artist's hex id (the specifier's first part:
// the cap counts the cosigner's rows, whoever earned them).
func cosignsPaid(ctx context.Context, q Querier, cosigns []cosign) (paid map[string]bool, recent map[string]int, err error) {
	var specs, prefixes []string
	for _, c := range cosigns {
		specs = append(specs, c.specifier())
		prefixes = append(prefixes, hexUserID(c.Artist))
	}
	rows, err := q.Query(ctx, `
SELECT specifier, created_at >= now() - @window::interval FROM user_challenges
WHERE challenge_id = @id AND (specifier = ANY(@specs::text[])
    OR (split_part(specifier, ':', 1) = ANY(@prefixes::text[]) AND created_at >= now() - @window::interval))`,
		pgx.NamedArgs{"id": ChallengeCosign, "specs": specs, "prefixes": prefixes, "window": cosignWindow})
	if err != nil {
		return nil, nil, fmt.Errorf("read paid cosigns: %w", err)
	}
	paid, recent = map[string]bool{}, map[string]int{}
	wanted := map[string]bool{}
	for _, s := range specs {
		wanted[s] = true
	}
	var (
		spec     string
		inWindow bool
	)
	_, err = pgx.ForEachRow(rows, []any{&spec, &inWindow}, func() error {
		if wanted[spec] {
			paid[spec] = true
		}
		if inWindow {
			artist, _, _ := strings.Cut(spec, ":")
			recent[artist]++
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read paid cosigns: %w", err)
	}
	return paid, recent, nil
}
