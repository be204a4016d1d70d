package processors

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func productionTiers() []Tier {
	return []Tier{
		{ChallengeID: "p1", Suffix: "250", Step: 250, Amount: 25},
		{ChallengeID: "p2", Suffix: "1000", Step: 1000, Amount: 100},
		{ChallengeID: "p3", Suffix: "10000", Step: 10000, Amount: 1000},
	}
}

func TestMilestoneRows(t *testing.T) {
	t.Parallel()
	type want struct {
		id      string
		current int64
	}
	tests := []struct {
		name  string
		count int64
		tiers []Tier
		want  []want
	}{
		{name: "zero", count: 0, tiers: productionTiers()},
		{name: "negative", count: -5, tiers: productionTiers()},
		{name: "below p1", count: 249, tiers: productionTiers(), want: []want{{"p1", 249}}},
		{name: "p1 exactly", count: 250, tiers: productionTiers(), want: []want{{"p1", 250}, {"p2", 250}}},
		{name: "300", count: 300, tiers: productionTiers(), want: []want{{"p1", 250}, {"p2", 300}}},
		{name: "p2 exactly", count: 1000, tiers: productionTiers(),
			want: []want{{"p1", 250}, {"p2", 1000}, {"p3", 1000}}},
		{name: "1500", count: 1500, tiers: productionTiers(),
			want: []want{{"p1", 250}, {"p2", 1000}, {"p3", 1500}}},
		{name: "p3 exactly", count: 10000, tiers: productionTiers(),
			want: []want{{"p1", 250}, {"p2", 1000}, {"p3", 10000}}},
		{name: "10500", count: 10500, tiers: productionTiers(),
			want: []want{{"p1", 250}, {"p2", 1000}, {"p3", 10000}}},
		{name: "p1 inactive, below p2", count: 100, tiers: productionTiers()[1:], want: []want{{"p2", 100}}},
		{name: "p1 inactive, 1500", count: 1500, tiers: productionTiers()[1:],
			want: []want{{"p2", 1000}, {"p3", 1500}}},
		{name: "p2 inactive, 300", count: 300, tiers: []Tier{productionTiers()[0], productionTiers()[2]},
			want: []want{{"p1", 250}, {"p3", 300}}},
		{name: "p2 inactive, 249", count: 249, tiers: []Tier{productionTiers()[0], productionTiers()[2]},
			want: []want{{"p1", 249}}},
		{name: "no tiers", count: 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rows := milestoneRows(400, tt.count, tt.tiers)
			var got []want
			for _, r := range rows {
				got = append(got, want{r.ChallengeID, r.Current})
				require.Equal(t, int64(400), r.UserID)
				require.Equal(t, "190:"+map[string]string{"p1": "250", "p2": "1000", "p3": "10000"}[r.ChallengeID], r.Specifier)
				for _, tier := range tt.tiers {
					if tier.ChallengeID == r.ChallengeID {
						require.Equal(t, tier.Step, r.Step)
						require.Equal(t, tier.Amount, r.Amount)
					}
				}
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestRowComplete(t *testing.T) {
	t.Parallel()
	require.True(t, Row{Current: 250, Step: 250}.Complete())
	require.False(t, Row{Current: 249, Step: 250}.Complete())
	require.False(t, Row{Current: 5, Step: 0}.Complete(), "step 0 never completes")
}

func TestSpecifiers(t *testing.T) {
	t.Parallel()
	require.Equal(t, "190:250", milestoneSpecifier(400, "250"))
	require.Equal(t, "1:10000", milestoneSpecifier(1, "10000"))
	require.Equal(t, "ff:1000", milestoneSpecifier(255, "1000"))
	require.Equal(t, "7fffffff:250", milestoneSpecifier(2147483647, "250"))
	require.Equal(t, "2bc:202502", weekSpecifier(700, 2025, 2))
	require.Equal(t, "2bc:202553", weekSpecifier(700, 2025, 53))
	require.Equal(t, "a:202601", weekSpecifier(10, 2026, 1))
}

func TestDedupeRows(t *testing.T) {
	t.Parallel()
	in := []Row{
		{ChallengeID: "p2", Specifier: "a:1000", Current: 1},
		{ChallengeID: "p1", Specifier: "b:250", Current: 2},
		{ChallengeID: "p1", Specifier: "a:250", Current: 3},
		{ChallengeID: "p2", Specifier: "a:1000", Current: 4},
	}
	out := dedupeRows(in)
	require.Equal(t, []Row{
		{ChallengeID: "p1", Specifier: "a:250", Current: 3},
		{ChallengeID: "p1", Specifier: "b:250", Current: 2},
		{ChallengeID: "p2", Specifier: "a:1000", Current: 4},
	}, out)
	require.Equal(t, int64(1), in[0].Current, "input left alone")
}

func TestParseAmount(t *testing.T) {
	t.Parallel()
	s := func(v string) *string { return &v }
	tests := []struct {
		in    *string
		want  int64
		plain bool
	}{
		{s("25"), 25, true},
		{s(" 100 "), 100, true},
		{s("-3"), -3, true},
		{s("+7"), 7, true},
		{s("2147483647"), 2147483647, true},
		{s("-2147483648"), -2147483648, true},
		{s("2147483648"), 0, false}, // Sscanf reads it, but it does not fit user_challenges.amount
		{s("abc"), 0, false},
		{s("25.5"), 25, false},
		{s("1,000"), 1, false},
		{s("100 tokens"), 100, false},
		{s("\n100"), 0, false},
		{s(""), 0, false},
		{nil, 0, false},
	}
	for _, tt := range tests {
		got, plain := parseAmount(tt.in)
		require.Equal(t, tt.want, got, quoteOrNull(tt.in))
		require.Equal(t, tt.plain, plain, quoteOrNull(tt.in))
	}
}

func TestStatsAdd(t *testing.T) {
	t.Parallel()
	s := Stats{"p1": {Inserted: 1}}
	s.Add(Stats{"p1": {Updated: 2, Unchanged: 3}, "c": {Inserted: 4}})
	require.Equal(t, Stats{"p1": {Inserted: 1, Updated: 2, Unchanged: 3}, "c": {Inserted: 4}}, s)
	require.Equal(t, Counts{Inserted: 5, Updated: 2, Unchanged: 3}, s.Total())
	require.Equal(t, 10, s.Total().Total())
}

func TestDifferenceString(t *testing.T) {
	t.Parallel()
	d := Difference{ChallengeID: "p1", Specifier: "190:250", UserID: 400, Field: "current_step_count", Want: "250", Got: "7"}
	require.Equal(t, "p1 190:250 (user 400): current_step_count: want 250, got 7", d.String())
}

func TestVerifyPairDifferences(t *testing.T) {
	t.Parallel()
	i := func(v int64) *int64 { return &v }
	b := func(v bool) *bool { return &v }
	pair := func() verifyPair {
		var p verifyPair
		p.challengeID, p.specifier = "p1", "190:250"
		p.hasWant, p.hasGot = true, true
		p.want.user, p.want.current, p.want.step, p.want.amount = i(400), i(200), i(250), i(25)
		p.got.user, p.got.current, p.got.amount = i(400), i(200), i(25)
		p.got.complete, p.got.hasCompletedAt = b(false), b(false)
		return p
	}
	fields := func(p verifyPair) []string {
		var f []string
		for _, d := range p.differences() {
			f = append(f, d.Field)
		}
		return f
	}

	require.Empty(t, fields(pair()))

	p := pair()
	p.got.complete, p.got.hasCompletedAt, p.got.amount = b(true), b(true), i(99)
	require.Empty(t, fields(p), "sticky completion with a frozen amount is fine")

	p = pair()
	p.got.amount = i(99)
	require.Equal(t, []string{"amount"}, fields(p))

	p = pair()
	p.want.current = i(250)
	p.got.current = i(250)
	require.Equal(t, []string{"is_complete"}, fields(p))

	p = pair()
	p.got.current = nil
	require.Equal(t, []string{"current_step_count"}, fields(p))

	p = pair()
	p.got.hasCompletedAt = b(true)
	require.Equal(t, []string{"completed_at"}, fields(p))

	p = pair()
	p.got.user = i(401)
	require.Equal(t, []string{"user_id"}, fields(p))

	p = pair()
	p.hasGot = false
	require.Equal(t, []string{"row"}, fields(p))

	p = pair()
	p.hasWant = false
	require.Equal(t, []string{"row"}, fields(p))
	p.historical = true
	require.Empty(t, fields(p))
	p.got.user = i(401)
	require.Equal(t, []string{"user_id"}, fields(p), "a historical row must still belong to its specifier's user")

	p = pair()
	p.hasWant, p.historical = false, true
	p.specifier = "190:1000"
	require.Equal(t, []string{"specifier"}, fields(p), "p1 never has a 1000 suffix")
	p.challengeID, p.specifier = "c", "190:202554"
	require.Equal(t, []string{"specifier"}, fields(p))
	p.specifier = "190:202553"
	require.Empty(t, fields(p))
}
