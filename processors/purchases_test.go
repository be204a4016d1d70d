package processors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// upstreamPurchaseTick is AudioMatchingProcessor.Reconcile (b, or s when seller): every valid
// purchase above the slot checkpoint, in slot order, each upserted with the catalog amount per
// dollar; s only while the seller is verified.
func upstreamPurchaseTick(challenge string, seller bool) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		amount, ok, err := upstreamAmount(ctx, tx, challenge)
		if err != nil || !ok {
			return err
		}
		checkpoint := "challenges:" + challenge + ":last_slot"
		prev, err := upstreamReadCheckpoint(ctx, tx, checkpoint)
		if err != nil {
			return err
		}
		gate := ""
		if seller {
			gate = `JOIN users seller ON seller.user_id = v.seller_user_id AND seller.is_current = true AND seller.is_verified = true`
		}
		rows, err := tx.Query(ctx, `SELECT v.slot, v.buyer_user_id, v.seller_user_id, v.content_id, v.amount
			FROM v_usdc_purchases v `+gate+` WHERE v.slot > $1 AND v.seller_user_id IS NOT NULL
			ORDER BY v.slot ASC, v.signature`, prev)
		if err != nil {
			return err
		}
		type purchase struct{ Slot, Buyer, Seller, Content, Micro int64 }
		purchases, err := pgx.CollectRows(rows, pgx.RowToStructByPos[purchase])
		if err != nil {
			return err
		}
		maxSlot := prev
		for _, p := range purchases {
			maxSlot = max(maxSlot, p.Slot)
			dollars := p.Micro / 1_000_000
			if dollars <= 0 {
				continue
			}
			recipient := p.Buyer
			if seller {
				recipient = p.Seller
			}
			err := upstreamUpsert(ctx, tx, challenge, fmt.Sprintf("%x:%x", p.Buyer, p.Content), recipient, 1, 1, amount*dollars)
			if err != nil {
				return err
			}
		}
		if maxSlot <= prev {
			return nil
		}
		return upstreamWriteCheckpoint(ctx, tx, checkpoint, maxSlot)
	}
}

// purchase is a sol_purchases row.
func purchase(signature string, slot, buyer int64, contentType string, content, micro int64, valid any) write {
	return write{
		sql: `INSERT INTO sol_purchases (signature, instruction_index, amount, slot, content_type, content_id,
			buyer_user_id, is_valid) VALUES ($1, 0, $2, $3, $4, $5, $6, $7)`,
		args:   []any{signature, micro, slot, contentType, content, buyer, valid},
		change: &change{table: "sol_purchases", op: processors.Insert, cols: map[string]int64{"slot": slot, "content_id": content}},
	}
}

// purchaseHistory is the b and s history: verified seller 500 and unverified 501 own the
// tracks and a playlist; buyers buy at one slot per step, now and then twice the same content,
// under a dollar, content that does not exist, or an invalid purchase. Sticky, the amounts
// change and, late in the history, the verified seller loses verification or a track moves to
// the unverified seller: each takes an s reward away from what the final state derives, never
// adds one.
type purchaseHistory struct {
	sticky   bool
	seq      int
	txhash   int
	verified map[int64]bool
}

var (
	purchaseContent = []struct {
		kind string
		id   int64
	}{{"track", 1}, {"track", 2}, {"track", 3}, {"track", 4}, {"playlist", 10}, {"album", 11}, {"track", 99}}
	purchaseAmounts = []int64{500_000, 1_000_000, 2_500_000, 7_000_000}
)

func (h *purchaseHistory) gen(rng *rand.Rand, step int) []write {
	var ws []write
	if step == 0 {
		h.verified = map[int64]bool{500: true, 501: false}
		ws = append(ws,
			insertUser(500, userState{verified: true}, "a"), insertUser(501, userState{}, "a"),
			track(1, 500, 1, publicTrack), track(2, 500, 1, publicTrack), track(3, 501, 1, publicTrack), track(4, 500, 1, publicTrack),
			playlist(10, 500, 1, false, false), playlist(11, 501, 1, false, true))
	}
	slot := int64(1000 + 10*step)
	for range 1 + rng.IntN(3) {
		switch n := rng.IntN(10); {
		case n < 7:
			h.seq++
			c := purchaseContent[rng.IntN(len(purchaseContent))]
			var valid any = true
			if rng.IntN(8) == 0 {
				valid = false
			}
			ws = append(ws, purchase(fmt.Sprintf("sig%03d", h.seq), slot, 600+rng.Int64N(4), c.kind, c.id,
				purchaseAmounts[rng.IntN(len(purchaseAmounts))], valid))
		case n < 8 && h.sticky && h.verified[500] && step >= 25:
			h.verified[500] = false
			h.txhash++
			ws = append(ws, updateUser(500, userState{}, fmt.Sprint("v", h.txhash))...)
		case n < 9 && h.sticky && step >= 25:
			ws = append(ws, write{sql: `UPDATE tracks SET owner_id = 501 WHERE track_id = $1`, args: []any{1 + rng.Int64N(4)}})
		case h.sticky:
			ws = append(ws, setAmount([]string{"b", "s"}[rng.IntN(2)], int64(1+rng.IntN(9))))
		}
	}
	return ws
}

func TestPurchaseParity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rule      string
		reference func(ctx context.Context, tx pgx.Tx) error
	}{
		{"purchase_buyer", upstreamPurchaseTick("b", false)},
		{"purchase_seller", upstreamPurchaseTick("s", true)},
	} {
		for _, sticky := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sticky=%v", tc.rule, sticky), func(t *testing.T) {
				t.Parallel()
				h := &purchaseHistory{sticky: sticky}
				runParity(t, paritySpec{rule: tc.rule, steps: 40, gen: h.gen, reference: tc.reference,
					takesAway: sticky, checkpointAhead: true})
			})
		}
	}
}

func TestPurchaseCases(t *testing.T) {
	t.Parallel()
	sellers := []write{insertUser(500, userState{verified: true}, "a"), insertUser(501, userState{}, "a"),
		track(1, 500, 1, publicTrack), track(2, 501, 1, publicTrack), playlist(10, 500, 1, false, true)}
	withSellers := func(ws ...write) []write { return append(append([]write{}, sellers...), ws...) }
	buyer := func(content string, amount int64) map[string]progress {
		return map[string]progress{"b 258:" + content: {User: 600, Current: 1, Complete: true, Amount: amount}}
	}
	runRuleCases(t, "purchase_buyer", []ruleCase{
		{name: "the buyer earns per dollar", steps: [][]write{withSellers(purchase("a", 5, 600, "track", 1, 3_400_000, true))}, want: buyer("1", 3)},
		{name: "an album counts", steps: [][]write{withSellers(purchase("a", 5, 600, "album", 10, 2_000_000, true))}, want: buyer("a", 2)},
		{name: "under a dollar earns nothing", steps: [][]write{withSellers(purchase("a", 5, 600, "track", 1, 999_999, true))}},
		{name: "an invalid purchase earns nothing", steps: [][]write{withSellers(purchase("a", 5, 600, "track", 1, 5_000_000, false))}},
		{name: "content without a current owner earns nothing", steps: [][]write{withSellers(purchase("a", 5, 600, "track", 7, 5_000_000, true))}},
		{
			name: "the same content bought twice keeps the first amount",
			steps: [][]write{
				withSellers(purchase("b", 6, 600, "track", 1, 9_000_000, true), purchase("a", 5, 600, "track", 1, 2_000_000, true)),
				{purchase("c", 7, 600, "track", 1, 4_000_000, true)},
			},
			want: buyer("1", 2),
		},
		{
			// Upstream's checkpoint has passed slot 5 when the purchase there is validated; the
			// validation's UPDATE reaches the stream.
			name: "a purchase validated after a later one earns",
			steps: [][]write{
				withSellers(purchase("a", 5, 600, "track", 1, 2_000_000, nil), purchase("b", 6, 600, "track", 2, 1_000_000, true)),
				{write{sql: `UPDATE sol_purchases SET is_valid = true WHERE signature = 'a'`,
					change: &change{table: "sol_purchases", op: processors.Update, cols: map[string]int64{"slot": 5}}}},
			},
			want: map[string]progress{
				"b 258:1": {User: 600, Current: 1, Complete: true, Amount: 2},
				"b 258:2": {User: 600, Current: 1, Complete: true, Amount: 1},
			},
		},
		{name: "inactive rule writes nothing", inactive: true, steps: [][]write{withSellers(purchase("a", 5, 600, "track", 1, 3_000_000, true))}},
	})
	runRuleCases(t, "purchase_seller", []ruleCase{
		{
			name:  "a verified seller earns five per dollar",
			steps: [][]write{withSellers(purchase("a", 5, 600, "track", 1, 2_000_000, true))},
			want:  map[string]progress{"s 258:1": {User: 500, Current: 1, Complete: true, Amount: 10}},
		},
		{name: "an unverified seller earns nothing", steps: [][]write{withSellers(purchase("a", 5, 600, "track", 2, 2_000_000, true))}},
		{
			name: "a seller losing verification keeps the reward",
			steps: [][]write{
				withSellers(purchase("a", 5, 600, "track", 1, 2_000_000, true)),
				updateUser(500, userState{}, "b"),
			},
			want: map[string]progress{"s 258:1": {User: 500, Current: 1, Complete: true, Amount: 10}},
		},
	})
}
