package redact

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestErrorKeepsTheChain: the password leaves the text, the chain stays, so a caller still
// matches sentinels and Postgres errors after redaction.
func TestErrorKeepsTheChain(t *testing.T) {
	sentinel := errors.New("sentinel")
	pgErr := &pgconn.PgError{Code: "28P01", Message: "password authentication failed: s3cr3t!"}
	err := Error(fmt.Errorf("connect: %w: %w", sentinel, pgErr), "postgres://app:s3cr3t!@db/host")
	require.NotContains(t, err.Error(), "s3cr3t!")
	require.Contains(t, err.Error(), mask)
	require.ErrorIs(t, err, sentinel)
	var got *pgconn.PgError
	require.ErrorAs(t, err, &got)
	require.Equal(t, "28P01", got.Code)

	require.NoError(t, Error(nil, "postgres://app:x@db/host"))
	require.NoError(t, ErrorSecret(nil, "x"))
	require.Same(t, sentinel, ErrorSecret(sentinel, ""), "no password, nothing to mask")
	require.Equal(t, "a xxxxx b", ErrorSecret(errors.New("a pw b"), "pw").Error())
}
