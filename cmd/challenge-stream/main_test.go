package main

import (
	"testing"

	"github.com/challenge-stream/challenge-stream/internal/pgtest"
)

// TestMain gives the package's tests one throw-away Postgres cluster (see internal/pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }
