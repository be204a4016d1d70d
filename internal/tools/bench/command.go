package bench

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/internal/tools/pgcluster"
)

// RunAndReport is `challenge-stream-dev bench`: it runs the benchmark on cfg.ServerURL, or on a
// throw-away server it starts when that is empty, and writes the table to w, also after a
// failure (with the rows measured so far). Differences found by verify wrap ErrDifferences;
// other errors carry no password of the server URL.
func RunAndReport(ctx context.Context, cfg Config, w io.Writer) error {
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	if cfg.ServerURL == "" {
		fmt.Fprintln(progress, "bench: starting a throw-away PostgreSQL with wal_level=logical")
		c, err := StartServer(ctx)
		if err != nil {
			return err
		}
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintln(progress, "bench: stop the throw-away PostgreSQL:", err)
			}
		}()
		cfg.ServerURL = c.URL("postgres")
		cfg.BinDir = c.BinDir()
	}
	rep, err := Run(ctx, cfg)
	if rep != nil {
		if werr := rep.Write(w); werr != nil {
			return werr
		}
	}
	switch {
	case errors.Is(err, ErrDifferences):
		return err
	case err != nil:
		return errors.New(redact.String(err.Error(), cfg.ServerURL))
	}
	return nil
}

// StartServer starts a throw-away PostgreSQL with wal_level = logical for a command that
// brings its own (bench, demo). The caller stops it.
func StartServer(ctx context.Context) (*pgcluster.Cluster, error) {
	// Shared buffers hold the production-size database (about 460 MB at 10x), as a production
	// primary's hold its hot tables; at the test default of 256 MB every run at that size would
	// read from the kernel's page cache what a host that has been running keeps in memory.
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"shared_buffers": "1GB"}})
	switch {
	case errors.Is(err, pgcluster.ErrNoServer):
		return nil, fmt.Errorf("this command runs its own throw-away PostgreSQL, but %w", err)
	case err != nil:
		return nil, fmt.Errorf("start a throw-away PostgreSQL: %w", err)
	}
	return c, nil
}
