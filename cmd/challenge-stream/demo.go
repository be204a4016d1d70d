package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/challenge-stream/challenge-stream/internal/demo"
	"github.com/challenge-stream/challenge-stream/internal/workload"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// parseDemoFlags reads the flags of `demo` into the demo's configuration (without its
// logger and writers).
func parseDemoFlags(e env) (demo.Config, string, error) {
	var (
		cfg                    demo.Config
		rate, commentRate, lvl string
		wf                     workloadFlags
	)
	f := newFlagSet("demo", e)
	const p = "CHALLENGE_STREAM_DEMO_"
	f.string(&rate, "rate", p+"RATE", "500", "plays per second the block indexer writes")
	f.string(&commentRate, "comment-rate", p+"COMMENT_RATE", "20", "new comments per second (a tenth as many are edited or deleted)")
	f.duration(&cfg.Duration, "duration", p+"DURATION", 30*time.Second, "how long the load runs (Ctrl-C ends it earlier)")
	f.duration(&cfg.Window, "window", "CHALLENGE_STREAM_WINDOW", pipeline.DefaultWindow, "the sidecar's window")
	f.duration(&cfg.Block, "block", p+"BLOCK", workload.DefaultBlockInterval, "time between blocks (one transaction each)")
	f.string(&lvl, "log-level", p+"LOG_LEVEL", "warn", "level of the sidecar's logs on stderr: debug, info, warn or error")
	wf.register(f, p)
	if err := f.parse(e.args); err != nil {
		return cfg, "", err
	}
	var err error
	if cfg.Rate, err = parsePositiveFloat(rate); err != nil {
		return cfg, "", usagef("rate %q must be a positive number of plays per second", rate)
	}
	if cfg.CommentRate, err = strconv.ParseFloat(commentRate, 64); err != nil || cfg.CommentRate < 0 {
		return cfg, "", usagef("comment rate %q must be a number >= 0", commentRate)
	}
	if cfg.Duration <= 0 || cfg.Window <= 0 || cfg.Block <= 0 {
		return cfg, "", usagef("duration, window and block must be positive")
	}
	if _, err := parseLevel(lvl); err != nil {
		return cfg, "", err
	}
	if cfg.Data, err = wf.config(); err != nil {
		return cfg, "", err
	}
	return cfg, lvl, nil
}

// demoCommand runs internal/demo: the whole pipeline on a throw-away Postgres with synthetic
// data and a live status line, then a summary and the verify result.
func demoCommand(ctx context.Context, e env) error {
	cfg, level, err := parseDemoFlags(e)
	if err != nil {
		return err
	}
	log := consoleLogger(e, level)
	defer func() { _ = log.Sync() }()
	cfg.Log, cfg.Stdout, cfg.Stderr = log, e.stdout, e.stderr
	err = demo.Run(ctx, cfg)
	if errors.Is(err, demo.ErrDifferences) {
		return errDifferences // printed by the demo
	}
	return err
}
