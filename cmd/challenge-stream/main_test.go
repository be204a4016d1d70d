package main

import (
	"testing"

	"github.com/challenge-stream/challenge-stream/internal/tools/pgtest"
)

// TestMain gives the package's tests one throw-away Postgres cluster (see internal/tools/pgtest).
func TestMain(m *testing.M) { pgtest.Main(m) }
