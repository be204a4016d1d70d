package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/pipeline"
)

// flagSet is a flag.FlagSet whose flags also read an environment variable. The environment
// gives the default; a flag on the command line wins.
type flagSet struct {
	*flag.FlagSet
	e    env
	errs []error
}

func newFlagSet(name string, e env) *flagSet {
	fs := flag.NewFlagSet("challenge-stream "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagSet{FlagSet: fs, e: e}
}

func (f *flagSet) envOr(envName, def string) string {
	if envName != "" {
		if v := f.e.getenv(envName); v != "" {
			return v
		}
	}
	return def
}

func envHelp(usage, envName string) string {
	if envName == "" {
		return usage
	}
	return usage + " [$" + envName + "]"
}

func (f *flagSet) string(p *string, name, envName, def, usage string) {
	f.StringVar(p, name, f.envOr(envName, def), envHelp(usage, envName))
}

func (f *flagSet) bool(p *bool, name, envName string, usage string) {
	f.boolDefault(p, name, envName, false, usage)
}

// boolDefault is bool with a default of def (a flag on by default is turned off by name=false).
func (f *flagSet) boolDefault(p *bool, name, envName string, def bool, usage string) {
	if v := f.envOr(envName, ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q is not a boolean", envName, v))
		}
		def = b
	}
	f.BoolVar(p, name, def, envHelp(usage, envName))
}

func (f *flagSet) duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
	if v := f.envOr(envName, ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("$%s=%q is not a duration (e.g. 500ms, 1s)", envName, v))
		}
		def = d
	}
	f.DurationVar(p, name, def, envHelp(usage, envName))
}

// parse parses the arguments; any problem is a usage error naming the bad value. -h prints
// the flags and returns errHelp.
func (f *flagSet) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.SetOutput(f.e.stderr)
			f.PrintDefaults()
			return errHelp
		}
		return usageError{err.Error()}
	}
	if len(f.errs) > 0 {
		return usageError{f.errs[0].Error()}
	}
	if f.NArg() > 0 {
		// A URL given by position would carry its password: mask it.
		return usagef("unexpected argument %q", redact.String(f.Arg(0), f.Arg(0)))
	}
	return nil
}

// errHelp: the user asked for help; exit 0.
var errHelp = errors.New("help requested")

// commonFlags are shared by the commands that talk to the database.
type commonFlags struct {
	databaseURL string
	slot        string
	publication string
	logFormat   string
	logLevel    string

	// database is databaseURL parsed, set by validate: the one parse of the URL, which every
	// connection copies.
	database *pgx.ConnConfig
}

func (c *commonFlags) register(f *flagSet) {
	f.string(&c.databaseURL, "database-url", "DATABASE_URL", "", "Postgres URL of the host database (required)")
	if fl := f.Lookup("database-url"); fl.DefValue != "" {
		// The environment's URL is the flag's default, which -h prints: mask its password.
		fl.DefValue = redact.URL(fl.DefValue)
	}
	f.string(&c.slot, "slot", "CHALLENGE_STREAM_SLOT", "",
		"replication slot name (default "+pipeline.DefaultName+", or "+pipeline.DefaultName+"_<database> when another database of the cluster has that slot)")
	f.string(&c.publication, "publication", "CHALLENGE_STREAM_PUBLICATION", pipeline.DefaultName, "publication name")
	f.string(&c.logFormat, "log-format", "CHALLENGE_STREAM_LOG_FORMAT", "json", "log format: json or console")
	f.string(&c.logLevel, "log-level", "CHALLENGE_STREAM_LOG_LEVEL", "info", "log level: debug, info, warn or error")
}

// logger builds the process's logger; it writes to stderr.
func (c *commonFlags) logger(e env) *zap.Logger {
	level, _ := zapcore.ParseLevel(c.logLevel)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	// "1.5s", not a bare 1.5 whose unit the reader must guess.
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if c.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(e.stderr), level))
}

// validAddr accepts host:port or "off".
func validAddr(addr string) bool {
	if addr == "off" {
		return true
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n < 65536
}
