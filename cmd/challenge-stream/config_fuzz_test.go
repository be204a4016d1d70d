package main

import (
	"bytes"
	"errors"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// FuzzConfig feeds arbitrary flags, environment and database URLs to the flag and environment
// parsing of `run`. Invariants:
//   - it never panics;
//   - every error is a usageError (exit 2, one line), or errHelp;
//   - a successful parse yields a configuration that passes pipeline.Config.Validate;
//   - when the URL carries a password (userinfo, a password= query parameter or a password=
//     keyword), neither the error line nor the -h output contains it, whatever bytes it holds.
//
// The inputs: args are the flags, one per line; environ is KEY=VALUE lines; dbURL is the
// database URL, in which PASSWORD is replaced by the password (wrapped in markers so that it
// cannot occur in a message by chance); viaEnv passes the URL as $DATABASE_URL instead of
// --database-url.
//
// The seed corpus is testdata/fuzz/FuzzConfig (one file per case; add a case by adding a file).
// The package's TestMain starts a Postgres cluster unless TEST_DATABASE_URL is set; the fuzzer
// does not need one (every fuzz worker runs TestMain), so run it with:
//
//	TEST_DATABASE_URL=postgres://unused go test ./cmd/challenge-stream -run '^$' -fuzz FuzzConfig -fuzztime 10s
func FuzzConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, args, environ, dbURL string, viaEnv bool, password string) {
		secret := "Kx7" + password + "Zq4"
		got := parseForFuzz(t, args, environ, strings.ReplaceAll(dbURL, "PASSWORD", secret), viaEnv)
		if !passwordPosition.MatchString(dbURL) {
			return
		}
		neutral := parseForFuzz(t, args, environ, strings.ReplaceAll(dbURL, "PASSWORD", "NeutralPw"), viaEnv)
		for _, form := range secretForms(secret) {
			if strings.Count(got.line, form) > strings.Count(neutral.line, form) {
				t.Fatalf("error line shows the password %q: %s", secret, got.line)
			}
			if strings.Count(got.help, form) > strings.Count(neutral.help, form) {
				t.Fatalf("-h output shows the password %q:\n%s", secret, got.help)
			}
		}
	})
}

// passwordPosition matches a URL or DSN in which PASSWORD stands where a password goes.
var passwordPosition = regexp.MustCompile(`://[^/@:?#\s]*:PASSWORD@|(^|[\s?&])password=PASSWORD($|[\s&])|(^|\s)password='PASSWORD'($|\s)`)

// fuzzResult is what a user would see: the exit line and any -h output.
type fuzzResult struct {
	line string
	help string
}

func parseForFuzz(t *testing.T, args, environ, dbURL string, viaEnv bool) fuzzResult {
	t.Helper()
	vars := map[string]string{}
	for _, kv := range strings.Split(environ, "\n") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var argv []string
	if viaEnv {
		vars["DATABASE_URL"] = dbURL
	} else {
		argv = append(argv, "--database-url", dbURL)
	}
	if args != "" {
		argv = append(argv, strings.Split(args, "\n")...)
	}
	var stdout, stderr bytes.Buffer
	rf, err := parseRunFlags(env{args: argv, stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return vars[k] }})

	var res fuzzResult
	var usage usageError
	switch {
	case err == nil:
		if verr := rf.cfg.Validate(); verr != nil {
			t.Fatalf("parse accepted a configuration that does not validate: %v", verr)
		}
		if rf.cfg.Database == nil {
			t.Fatal("parse accepted a configuration without database settings")
		}
	case errors.Is(err, errHelp):
		res.help = stderr.String()
	case errors.As(err, &usage):
		var line bytes.Buffer
		if code := exitCode(err, &line); code != exitUsage {
			t.Fatalf("usage error %q exits %d, want %d", err, code, exitUsage)
		}
		res.line = line.String()
		if strings.Count(res.line, "\n") != 1 || !strings.HasSuffix(res.line, "\n") {
			t.Fatalf("usage error is not one line: %q", res.line)
		}
	default:
		t.Fatalf("error %v (%T) is not a usage error", err, err)
	}
	return res
}

// secretForms are the spellings in which a password could show up in a message: as written,
// percent-encoded or decoded, and Go-quoted.
func secretForms(secret string) []string {
	forms := []string{secret, url.PathEscape(secret), url.QueryEscape(secret)}
	if q := strconv.Quote(secret); len(q) > 2 {
		forms = append(forms, q[1:len(q)-1])
	}
	if d, err := url.PathUnescape(secret); err == nil && d != "" {
		forms = append(forms, d)
	}
	if d, err := url.QueryUnescape(secret); err == nil && d != "" {
		forms = append(forms, d)
	}
	return forms
}
