package main

import (
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// This file is where the command line becomes configuration: every check of a flag's value
// is here, and each failure is a usageError naming the bad value (exit 2, before any
// connection). The pipeline's own rules (names, intervals) live in pipeline.Config.Validate,
// which these checks call rather than repeat.

// validate checks what every database command needs and parses the database URL, once. The
// slot and publication names are the pipeline's to judge: run's validate passes them on with the
// rest of its configuration, the other commands check them with checkNames.
func (c *commonFlags) validate() error {
	if c.databaseURL == "" {
		return usagef("database URL is required (--database-url or DATABASE_URL)")
	}
	database, err := pgx.ParseConfig(c.databaseURL)
	if err != nil {
		return usagef("database URL does not parse: %s", redact.String(err.Error(), c.databaseURL))
	}
	if c.logFormat != "json" && c.logFormat != "console" {
		return usagef("log format %q must be json or console", c.logFormat)
	}
	if _, err := zapcore.ParseLevel(c.logLevel); err != nil {
		return usagef("log level %q must be debug, info, warn or error", c.logLevel)
	}
	c.database = database
	return nil
}

// checkNames checks the slot and publication names by the pipeline's rules.
func (c *commonFlags) checkNames() error {
	cfg := pipeline.Config{Database: c.database, Slot: c.slot, Publication: c.publication}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// validate checks run's flags and completes rf.cfg from them.
func (rf *runFlags) validate() error {
	if err := rf.commonFlags.validate(); err != nil {
		return err
	}
	// Zero means "the default" to the pipeline; on the command line it is a mistake.
	if rf.cfg.Window <= 0 {
		return usagef("window %s must be positive", rf.cfg.Window)
	}
	if rf.idleConfirmBytes <= 0 {
		return usagef("idle confirm bytes %d must be positive", rf.idleConfirmBytes)
	}
	if !validAddr(rf.metricsAddr) {
		return usagef("metrics address %q must be host:port or off", rf.metricsAddr)
	}
	if !validAddr(rf.opsFlags.debugAddr) {
		return usagef("debug address %q must be host:port or off", rf.opsFlags.debugAddr)
	}
	rf.cfg.Database, rf.cfg.Slot, rf.cfg.Publication = rf.database, rf.slot, rf.publication
	rf.cfg.IdleConfirmBytes = uint64(rf.idleConfirmBytes)
	if rf.decodingWorkMem <= 0 {
		return usagef("decoding work mem %d must be positive", rf.decodingWorkMem)
	}
	rf.cfg.DecodingWorkMem = uint64(rf.decodingWorkMem)
	switch rf.publishColumns {
	case "rules":
	case "all":
		rf.cfg.PublishWholeRows = true
	default:
		return usagef("publication columns %q must be rules or all", rf.publishColumns)
	}
	rf.cfg.DisableFailoverSlot = !rf.failoverSlot
	if err := rf.cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	return nil
}
