package pipeline

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/replication"
)

func TestDerivedSlotName(t *testing.T) {
	for db, want := range map[string]string{
		"audius":      "challenge_stream_audius",
		"second_db":   "challenge_stream_second_db",
		"Audius-Prod": "challenge_stream_audius_prod_",
		"audius_prod": "challenge_stream_audius_prod",
		"日本":          "challenge_stream___",
	} {
		got := DerivedSlotName(db)
		require.True(t, strings.HasPrefix(got, want), "%s: %s", db, got)
		require.True(t, replication.ValidIdentifier(got), got)
	}
	require.NotEqual(t, DerivedSlotName("audius-prod"), DerivedSlotName("audius_prod"), "a changed name gets a hash")
	require.NotEqual(t, DerivedSlotName("Audius"), DerivedSlotName("audius"))
	long := strings.Repeat("a", 63)
	require.Len(t, DerivedSlotName(long), 63)
	require.NotEqual(t, DerivedSlotName(long), DerivedSlotName(long+"b"), "a shortened name gets a hash")
}

func TestUseDerivedName(t *testing.T) {
	for _, c := range []struct {
		name  string
		found slotsFound
		want  bool
	}{
		{"nothing anywhere: the default, as before", slotsFound{}, false},
		{"the default taken by another database", slotsFound{defaultElsewhere: true}, true},
		{"this database streams under the default", slotsFound{defaultHere: true}, false},
		{"this database streams under the derived name", slotsFound{derivedHere: true}, true},
		{"derived here, the other database's slot gone meanwhile", slotsFound{derivedHere: true, defaultElsewhere: false}, true},
		{"both here (the default wins: nothing deployed changes)", slotsFound{defaultHere: true, derivedHere: true}, false},
		{"default here and elsewhere: ours, the other is refused by preflight", slotsFound{defaultHere: true, defaultElsewhere: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) { require.Equal(t, c.want, useDerivedName(c.found)) })
	}
}
