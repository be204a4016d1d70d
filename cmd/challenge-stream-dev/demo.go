package main

import (
	"context"
	"io"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/tools/demo"
	"github.com/challenge-stream/challenge-stream/internal/tools/workload"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// parseDemoFlags reads the flags of `demo` into the demo's configuration (without its
// logger and writers) and the level of the sidecar's logs.
func parseDemoFlags(args []string, stderr io.Writer) (demo.Config, zapcore.Level, error) {
	var cfg demo.Config
	level := zapcore.WarnLevel
	fs := newFlagSet("demo")
	fs.Float64Var(&cfg.Rate, "rate", 500, "plays per second the block indexer writes")
	fs.Float64Var(&cfg.CommentRate, "comment-rate", 20, "new comments per second (a tenth as many are edited or deleted)")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the load runs (Ctrl-C ends it earlier)")
	fs.DurationVar(&cfg.Window, "window", pipeline.DefaultWindow, "the sidecar's window")
	fs.DurationVar(&cfg.Block, "block", workload.DefaultBlockInterval, "time between blocks (one transaction each)")
	fs.TextVar(&level, "log-level", zapcore.WarnLevel, "level of the sidecar's logs on stderr: debug, info, warn or error")
	registerWorkload(fs, &cfg.Data)
	if err := parse(fs, args, stderr); err != nil {
		return cfg, level, err
	}
	switch {
	case cfg.Rate <= 0:
		return cfg, level, usagef("rate %g must be a positive number of plays per second", cfg.Rate)
	case cfg.CommentRate < 0:
		return cfg, level, usagef("comment rate %g must be a number >= 0", cfg.CommentRate)
	case cfg.Duration <= 0 || cfg.Window <= 0 || cfg.Block <= 0:
		return cfg, level, usagef("duration, window and block must be positive")
	}
	return cfg, level, checkWorkload(cfg.Data)
}

// demoCommand runs internal/tools/demo: the whole pipeline on a throw-away Postgres with
// synthetic data and a live status line, then a summary and the verify result.
func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, level, err := parseDemoFlags(args, stderr)
	if err != nil {
		return err
	}
	log := consoleLogger(stderr, level)
	defer func() { _ = log.Sync() }()
	cfg.Log, cfg.Stdout, cfg.Stderr = log, stdout, stderr
	return demo.Run(ctx, cfg)
}
