package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/challenge-stream/challenge-stream/processors"
)

// verifyCommand recomputes every rule from scratch and diffs with user_challenges: exit 1 and a
// list of the differences if there are any.
func verifyCommand(ctx context.Context, e env) error {
	return withDB(ctx, e, "verify", nil, func(_ commonFlags, conn *pgx.Conn) error {
		diffs, err := processors.Verify(ctx, conn)
		if err != nil {
			return err
		}
		for _, d := range diffs {
			fmt.Fprintln(e.stdout, d.String())
		}
		if len(diffs) > 0 {
			fmt.Fprintf(e.stdout, "%d differences\n", len(diffs))
			return errDifferences
		}
		fmt.Fprintln(e.stdout, "no differences")
		return nil
	})
}
