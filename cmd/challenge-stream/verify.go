package main

import (
	"context"
	"fmt"

	"github.com/challenge-stream/challenge-stream/processors"
)

// verifyCommand recomputes every rule from scratch and diffs with user_challenges: exit 1 and a
// list of the differences if there are any.
func verifyCommand(ctx context.Context, e env) error {
	var c commonFlags
	f := newFlagSet("verify", e)
	c.register(f)
	if err := f.parse(e.args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	conn, err := connect(ctx, c.databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	diffs, err := processors.Verify(ctx, conn)
	if err != nil {
		return redacted(err, c.databaseURL)
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
}
