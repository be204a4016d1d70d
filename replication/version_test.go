package replication

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stretchr/testify/require"
)

func TestCheckServerVersion(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		num int
		ok  bool
	}{
		{90624, false}, {120022, false}, {130021, false}, {139999, false},
		{140000, true}, {140023, true}, {150018, true}, {170010, true}, {180004, true}, {190000, true},
	} {
		err := checkServerVersion(c.num)
		if c.ok {
			require.NoError(t, err, c.num)
			continue
		}
		require.ErrorIs(t, err, ErrServerVersion, c.num)
		require.Contains(t, err.Error(), "needs Postgres 14 or later")
	}
}

func TestParseMajor(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]int{
		"17.10": 17, "15.4 (Debian 15.4-1.pgdg120+1)": 15, "18beta1": 18, "14.23": 14, "": 0, "x": 0,
	} {
		require.Equal(t, want, parseMajor(v), v)
	}
}

// fakeServer answers CheckServer's queries as a server of the given version would.
type fakeServer struct{ versionNum string }

func (f fakeServer) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, errors.New("unexpected Exec")
}

func (f fakeServer) QueryRow(_ context.Context, sql string, _ ...any) pgx.Row {
	switch sql {
	case "SHOW server_version_num":
		return fakeRow{f.versionNum}
	case "SHOW wal_level":
		return fakeRow{"logical"}
	}
	return fakeRow{true}
}

type fakeRow struct{ v any }

func (r fakeRow) Scan(dest ...any) error {
	switch d := dest[0].(type) {
	case *string:
		*d = r.v.(string)
	case *bool:
		*d = r.v.(bool)
	}
	return nil
}

// TestCheckServerRefusesOldServer: CheckServer asks the version first and stops on an old one.
func TestCheckServerRefusesOldServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	require.ErrorIs(t, CheckServer(ctx, fakeServer{"130021"}, nil), ErrServerVersion)
	require.NoError(t, CheckServer(ctx, fakeServer{"140023"}, nil))
	require.Error(t, CheckServer(ctx, fakeServer{"fourteen"}, nil))
}
