package processors

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// The caps of challenge w, the polling job's (and before it the platform's) constants.
const (
	remixWinnersPerContest  = 5
	remixWinnersPerHostWeek = 5
)

// remixWinnerRule is challenge w: one complete row per remixer whose track won a remix contest
// hosted by a verified user, specifier "<hex contest event id>:<hex remixer>".
//
// The polling job rewrote nothing it had minted: a candidate whose row exists is skipped, and
// the rest are capped at five rows per contest and five per host over a rolling seven days,
// both counted from user_challenges plus the rows minted in the same tick. Those counts make
// the rule order-dependent (which winners fill a cap) and time-dependent (the weekly cap
// frees as rows age), which is what shapes rows below.
//
// Where the sidecar differs from the polling job on purpose:
//   - Candidates are taken in (contest, position in the winners array) order. The job's query
//     had no ORDER BY, so which winners filled a cap was whatever the plan produced.
//   - The contest of a stored specifier is read as hex, as it was written. The job cast it as
//     decimal (SPLIT_PART(...)::bigint): once any contest id has a hex letter the cast fails
//     and so does every tick of the job, and an all-digit hex id counts another contest.
//   - A winners element that is not a plain decimal integer is skipped, and a winners value
//     that is not an array counts as no winners. The job's ::int cast and
//     jsonb_array_elements_text failed the whole tick on those; failing a flush would stop the
//     stream for every rule instead.
func remixWinnerRule() Rule {
	return Rule{
		Name:       "remix_winner",
		Challenges: []string{"w"},
		Sources: []Source{
			{Table: "events", Ops: Insert | Update, Column: "event_id", Keys: "events"},
			{Table: "users", Ops: Insert | Update, Column: "user_id", Keys: "hosts"},
			{Table: "tracks", Ops: Insert | Update, Column: "track_id", Keys: "tracks"},
		},
		active: booleanActive("w"),
		rows:   remixWinnerRows,
		all: func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
			return remixWinners(ctx, q, cat, nil, true)
		},
	}
}

// remixWinnerRows derives the contests the keys touch, plus every contest of a host with at
// least five rows.
//
// The second set is for time: a winner skipped because its host had five rows in the last
// seven days is minted by the polling job on the first tick after one of them ages out, and
// nothing changes in the stream then. Only a host with at least five rows can have been at
// that cap, and such hosts are few, so their contests are re-derived on every flush that has
// any w key; with users and tracks changing all the time, that is nearly every flush. What
// this misses: a host whose count dropped because user_challenges rows were deleted or a
// contest changed hands, neither of which the platform does.
func remixWinnerRows(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error) {
	rows, err := q.Query(ctx, remixScopeSQL, sortedKeys(keys["events"]), sortedKeys(keys["hosts"]),
		sortedKeys(keys["tracks"]), remixWinnersPerHostWeek)
	if err != nil {
		return nil, fmt.Errorf("remix contests of dirty keys: %w", err)
	}
	contests, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("remix contests of dirty keys: %w", err)
	}
	if len(contests) == 0 {
		return nil, nil
	}
	return remixWinners(ctx, q, cat, contests, false)
}

// remixWinnerTrack is a winners element as a track id: NULL unless it is a plain decimal
// integer, so that the cast cannot fail. 18 digits always fit a bigint.
const remixWinnerTrack = `CASE WHEN w.track ~ '^\s*[+-]?[0-9]{1,18}\s*$' THEN w.track::bigint END`

// remixWinnerElems unnests a contest's winners, any JSON shape (numbers or strings) as text.
const remixWinnerElems = `jsonb_array_elements_text(CASE WHEN jsonb_typeof(e.event_data->'winners') = 'array'
    THEN e.event_data->'winners' ELSE '[]'::jsonb END) WITH ORDINALITY AS w(track, pos)`

// remixScopeSQL finds the contests to derive: $1 the dirty contests themselves (the derivation
// drops those that are not live remix contests), those of the dirty hosts $2 (through the
// events(user_id) index), those naming a dirty track $3 among their winners (a scan of the
// remix contests, which are few), and those of the hosts with at least $4 rows (see
// remixWinnerRows).
const remixScopeSQL = `
SELECT event_id::bigint FROM unnest($1::bigint[]) AS event_id
UNION
SELECT e.event_id FROM events e
WHERE e.user_id = ANY($2::bigint[]) AND e.event_type = 'remix_contest' AND NOT e.is_deleted
UNION
SELECT e.event_id
FROM events e CROSS JOIN LATERAL ` + remixWinnerElems + `
WHERE e.event_type = 'remix_contest' AND NOT e.is_deleted AND ` + remixWinnerTrack + ` = ANY($3::bigint[])
UNION
SELECT e.event_id FROM events e
WHERE e.event_type = 'remix_contest' AND NOT e.is_deleted
  AND e.user_id IN (
      SELECT h.user_id
      FROM user_challenges uc JOIN events h ON to_hex(h.event_id) = split_part(uc.specifier, ':', 1)
      WHERE uc.challenge_id = 'w'
      GROUP BY h.user_id
      HAVING count(*) >= $4)`

// remixCandidatesSQL is the polling job's candidate query, ordered, over all remix contests
// ($2) or those in $1. The host is the contest's user with a current verified row (deactivated
// or not, as the job had it); the remixer is the owner of the winner's live track. A remixer
// named twice in one contest yields two candidates, the second of which finds the first's row.
const remixCandidatesSQL = `
SELECT e.event_id::bigint, e.user_id::bigint, t.owner_id::bigint
FROM events e
JOIN users u ON u.user_id = e.user_id AND u.is_current AND u.is_verified
CROSS JOIN LATERAL ` + remixWinnerElems + `
JOIN tracks t ON t.track_id = ` + remixWinnerTrack + ` AND t.is_current AND NOT t.is_delete
WHERE e.event_type = 'remix_contest' AND NOT e.is_deleted
  AND ($2 OR e.event_id = ANY($1::bigint[]))
ORDER BY e.event_id, w.pos, t.owner_id`

// remixContestCountSQL counts the stored rows of each contest by its specifier prefix ($1,
// without the colon), as the job's LIKE '<hex>:%' did, in one pass over the w rows.
const remixContestCountSQL = `
SELECT split_part(specifier, ':', 1), count(*)
FROM user_challenges
WHERE challenge_id = 'w' AND strpos(specifier, ':') > 0 AND split_part(specifier, ':', 1) = ANY($1::text[])
GROUP BY 1`

// remixHostWeekSQL counts each host's rows of the last seven days ($1 hosts). A row belongs to
// the host of the event its specifier names, whatever that event's type or state now, as in
// the job; the name is compared as hex (see remixWinnerRule).
const remixHostWeekSQL = `
SELECT e.user_id::bigint, count(*)
FROM user_challenges uc
JOIN events e ON to_hex(e.event_id) = split_part(uc.specifier, ':', 1)
WHERE uc.challenge_id = 'w' AND uc.created_at >= now() - interval '7 days'
  AND e.user_id = ANY($1::bigint[])
GROUP BY 1`

// remixWinners runs the polling job's tick over the given contests (all of them when every is
// set) and returns the rows it would mint.
func remixWinners(ctx context.Context, q Querier, cat Catalog, contests []int64, every bool) ([]Row, error) {
	rule, ok := cat.Active["w"]
	if !ok {
		return nil, nil
	}
	type candidate struct {
		contest, host, remixer int64
		specifier              string
	}
	rows, err := q.Query(ctx, remixCandidatesSQL, contests, every)
	if err != nil {
		return nil, fmt.Errorf("remix winner candidates: %w", err)
	}
	var cands []candidate
	var c candidate
	_, err = pgx.ForEachRow(rows, []any{&c.contest, &c.host, &c.remixer}, func() error {
		c.specifier = remixSpecifier(c.contest, c.remixer)
		cands = append(cands, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("remix winner candidates: %w", err)
	}
	if len(cands) == 0 {
		return nil, nil
	}

	var specs, prefixes []string
	var hosts []int64
	for _, c := range cands {
		specs = append(specs, c.specifier)
		prefixes = append(prefixes, strconv.FormatInt(c.contest, 16))
		hosts = append(hosts, c.host)
	}
	minted := map[string]bool{}
	rows, err = q.Query(ctx, `SELECT specifier FROM user_challenges WHERE challenge_id = 'w' AND specifier = ANY($1::text[])`, specs)
	if err != nil {
		return nil, fmt.Errorf("remix winners minted: %w", err)
	}
	var spec string
	if _, err := pgx.ForEachRow(rows, []any{&spec}, func() error { minted[spec] = true; return nil }); err != nil {
		return nil, fmt.Errorf("remix winners minted: %w", err)
	}
	perContest, err := remixCounts[string](ctx, q, remixContestCountSQL, prefixes)
	if err != nil {
		return nil, fmt.Errorf("remix winners per contest: %w", err)
	}
	perHost, err := remixCounts[int64](ctx, q, remixHostWeekSQL, sortedKeys(hosts))
	if err != nil {
		return nil, fmt.Errorf("remix winners per host week: %w", err)
	}

	// The job counted each contest and host at its first candidate and then added its own
	// mints, which comes to the stored counts read here plus this walk's mints; minted
	// likewise holds this walk's rows, so a remixer named twice is paid once.
	var out []Row
	for _, c := range cands {
		prefix := strconv.FormatInt(c.contest, 16)
		if minted[c.specifier] || perContest[prefix] >= remixWinnersPerContest ||
			perHost[c.host] >= remixWinnersPerHostWeek {
			continue
		}
		minted[c.specifier] = true
		perContest[prefix]++
		perHost[c.host]++
		out = append(out, Row{
			ChallengeID: "w", Specifier: c.specifier, UserID: c.remixer, Current: 1, Step: 1, Amount: rule.Amount,
		})
	}
	return out, nil
}

// remixCounts reads a (key, count) query into a map.
func remixCounts[K comparable](ctx context.Context, q Querier, sql string, arg any) (map[K]int64, error) {
	rows, err := q.Query(ctx, sql, arg)
	if err != nil {
		return nil, err
	}
	out := map[K]int64{}
	var (
		k K
		n int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&k, &n}, func() error { out[k] = n; return nil }); err != nil {
		return nil, err
	}
	return out, nil
}

// remixSpecifier is "<hex contest event id>:<hex remixer>".
func remixSpecifier(contest, remixer int64) string {
	return strconv.FormatInt(contest, 16) + ":" + hexUserID(remixer)
}
