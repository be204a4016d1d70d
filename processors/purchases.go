package processors

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The USDC purchase challenges (upstream audio_matching.go), read from the host's view
// v_usdc_purchases: the valid sol_purchases rows with the content's current owner as seller.
const (
	// ChallengePurchaseBuyer is b: the buyer earns per (buyer, content) purchased.
	ChallengePurchaseBuyer = "b"
	// ChallengePurchaseSeller is s: the seller earns for the same purchase while verified.
	ChallengePurchaseSeller = "s"
)

// microsPerDollar is USDC's scale: a purchase amount is in millionths of a dollar, and a
// reward is the catalog amount per whole dollar paid.
const microsPerDollar = 1_000_000

// purchaseRule is b or s. Upstream walks v_usdc_purchases above its slot checkpoint; here a
// sol_purchases change makes its slot dirty and the slot's purchases are derived, so, as
// upstream, a purchase is read when it arrives and not again (a seller verified later does not
// earn s for an older purchase). A purchase validated after a purchase at a higher slot (its
// is_valid set later) is seen by its UPDATE here; upstream's checkpoint has passed it by then.
func purchaseRule(challenge string, seller bool) Rule {
	name := "purchase_buyer"
	if seller {
		name = "purchase_seller"
	}
	rows := func(ctx context.Context, q Querier, cat Catalog, slots []int64) ([]Row, error) {
		return purchaseRows(ctx, q, cat, challenge, seller, slots)
	}
	// verify checks b against every purchase, not s: a seller verified after a purchase is
	// owed nothing for it, so a from-scratch derivation of s is not what either side pays.
	var all func(ctx context.Context, q Querier, cat Catalog) ([]Row, error)
	if !seller {
		all = func(ctx context.Context, q Querier, cat Catalog) ([]Row, error) {
			return purchaseRows(ctx, q, cat, challenge, seller, nil)
		}
	}
	return incremental(Rule{
		Name:       name,
		Challenges: []string{challenge},
		Sources:    []Source{{Table: "sol_purchases", Ops: Insert | Update, Column: "slot", Keys: "slots"}},
		active:     booleanActive(challenge),
		all:        all,
	}, columnSpec{
		checkpoint: "challenges:" + challenge + ":last_slot",
		column:     "slot",
		lowest:     -1, // slots count from 0
		margin:     func(o CatchUpOptions) int64 { return o.BlockMargin },
		recompute: func(ctx context.Context, q Querier, cat Catalog, slots []int64) (Stats, error) {
			stats, err := recompute(ctx, q, cat, sortedKeys(slots), rows) // slot order: the first purchase is paid first
			if err != nil {
				return nil, fmt.Errorf("recompute %s: %w", name, err)
			}
			return stats, nil
		},
		events: true,
	})
}

// purchaseRows derives b or s from the purchases of the given slots (every slot when slots is
// nil). A (buyer, content) bought twice is one row with the earlier purchase's amount, the one
// upstream's slot-ordered walk writes first and the completed row then keeps; within a slot
// the signature breaks the tie. Purchases under a dollar earn nothing and so are not the first,
// as upstream.
func purchaseRows(ctx context.Context, q Querier, cat Catalog, challenge string, seller bool, slots []int64) ([]Row, error) {
	e, ok := cat.Active[challenge]
	if !ok || (slots != nil && len(slots) == 0) {
		return nil, nil
	}
	gate, filter := "", ""
	if seller {
		gate = `JOIN users s ON s.user_id = v.seller_user_id AND s.is_current = true AND s.is_verified = true`
	}
	if slots != nil {
		filter = `AND v.slot = ANY(@slots::bigint[])`
	}
	rows, err := q.Query(ctx, `SELECT DISTINCT ON (v.buyer_user_id, v.content_id)
		    v.buyer_user_id, v.seller_user_id, v.content_id, v.amount
		FROM v_usdc_purchases v `+gate+`
		WHERE v.seller_user_id IS NOT NULL AND v.amount >= @dollar `+filter+`
		ORDER BY v.buyer_user_id, v.content_id, v.slot, v.signature`,
		pgx.NamedArgs{"slots": sortedKeys(slots), "dollar": microsPerDollar})
	if err != nil {
		return nil, fmt.Errorf("list purchases: %w", err)
	}
	var (
		out                             []Row
		buyer, sellerID, content, micro int64
	)
	_, err = pgx.ForEachRow(rows, []any{&buyer, &sellerID, &content, &micro}, func() error {
		r := Row{ChallengeID: challenge, Specifier: hexUserID(buyer) + ":" + hexUserID(content), UserID: buyer,
			Current: 1, Step: 1, Amount: e.Amount * (micro / microsPerDollar)}
		if seller {
			r.UserID = sellerID
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list purchases: %w", err)
	}
	return out, nil
}
