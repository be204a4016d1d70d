package processors

import (
	"context"
	"slices"
)

// Op is a set of row operations a Source subscribes to.
type Op uint8

// The operations. Deletes are never subscribed: the publication does not carry them (see
// Source).
const (
	Insert Op = 1 << iota
	Update
)

// Source is one (table, column) a rule reads from the stream: a committed change of one of the
// Ops on Table makes the new row's integer Column a dirty key of the rule's key set Keys. The
// column is looked up by name in the stream's Relation messages, so the host may add, drop and
// reorder other columns freely.
//
// Deletes are not carried: the publication publishes inserts and updates, which is what every
// rule's rows are derived from, and publishing deletes would ship the plays pruning job's
// 50,000-row batches to the sidecar for nothing.
type Source struct {
	Table  string
	Ops    Op
	Column string
	Keys   string
	// Optional lets the column be NULL: the row then makes no key. Otherwise a NULL key is a
	// row the stream cannot interpret, and it stops.
	Optional bool
}

// Keys are the dirty keys of one rule by key set name (Source.Keys).
type Keys map[string][]int64

// Rule is one challenge rule as the pipeline sees it. The registry (Rules) is the only way a
// rule enters the pipeline: the publication is the union of the rules' source tables, the
// stream keeps exactly their keys, and every flush, catch-up and verify walks the registry.
//
// A rule is one of two kinds:
//   - incremental rules (p1–p3, c, p, u, fp, m, r, rv, rd, b, s, e, cs) carry the legacy
//     checkpoint the polling job advanced (family): the flush advances it, and re-activation
//     or a foreign writer derives the gap from it;
//   - full-rescan rules (v, t, cp, w): the polling job re-derived them from scratch every
//     tick. The sidecar derives them from scratch once (the first flush that sees the rule,
//     and the first after it is re-activated) and from its dirty keys after that.
type Rule struct {
	// Name names the rule in logs, metrics and its bookkeeping row; Challenges are the
	// challenge ids it writes.
	Name       string
	Challenges []string
	// Sources are what makes a key dirty.
	Sources []Source

	// active reports whether the catalog has the rule switched on. An inactive rule keeps no
	// keys and writes nothing.
	active func(Catalog) bool

	// rows derives the rows of the dirty keys (full-rescan rules only); all derives every row
	// from scratch, the polling job's tick (full-rescan rules, and the incremental rules whose
	// upstream once rescanned, for verify). Both run in the caller's transaction and only read;
	// the caller upserts.
	rows func(ctx context.Context, q Querier, cat Catalog, keys Keys) ([]Row, error)
	all  func(ctx context.Context, q Querier, cat Catalog) ([]Row, error)

	// Incremental rules only: the legacy checkpoint and the derivations that go with it.
	family *family
}

// Checkpoint is the rule's legacy checkpoint name, "" for a full-rescan rule.
func (r Rule) Checkpoint() string {
	if r.family == nil {
		return ""
	}
	return r.family.checkpoint
}

// CheckpointSources are the columns the rule's legacy checkpoint follows (the window keeps
// their highest value): one for most rules, reposts' and saves' blocknumber for cs; none for a
// full-rescan rule.
func (r Rule) CheckpointSources() []Source {
	if r.family == nil {
		return nil
	}
	return r.family.sources
}

// Rules is the registry: every rule, in the order a flush applies them. A flush takes reward
// rows' locks in this order, so a different order would let two writers deadlock. Adding a
// rule is one file that defines it and one line here.
func Rules() []Rule {
	return []Rule{
		milestonesRule(),
		weeklyCommentRule(),
		verifiedRule(),
		tastemakerRule(),
		commentPinRule(),
		remixWinnerRule(),
		trackUploadRule(),
		firstPlaylistRule(),
		mobileInstallRule(),
		referralRule(ChallengeReferral, false),
		referralRule(ChallengeVerifiedReferral, true),
		referredRule(),
		purchaseRule(ChallengePurchaseBuyer, false),
		purchaseRule(ChallengePurchaseSeller, true),
		listenStreakRule(),
		cosignRule(),
		profileCompletionRule(),
	}
}

// Tables is the union of the registry's source tables, sorted: what the publication carries.
func Tables() []string {
	var tables []string
	for _, r := range Rules() {
		for _, s := range r.Sources {
			if !slices.Contains(tables, s.Table) {
				tables = append(tables, s.Table)
			}
		}
	}
	slices.Sort(tables)
	return tables
}

// ChallengeIDs lists the challenge ids the registry writes, in registry order.
func ChallengeIDs() []string {
	var ids []string
	for _, r := range Rules() {
		ids = append(ids, r.Challenges...)
	}
	return ids
}

// booleanActive is the catalog check of a full-rescan rule writing one boolean challenge.
func booleanActive(id string) func(Catalog) bool {
	return func(c Catalog) bool { _, ok := c.Active[id]; return ok }
}
