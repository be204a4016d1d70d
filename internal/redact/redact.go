// Package redact keeps database passwords out of logs and error messages.
package redact

import (
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

const mask = "xxxxx"

// URL returns the database URL with its password masked, for logging. A key/value DSN is
// reduced to host, port, user and database.
func URL(databaseURL string) string {
	if u, err := url.Parse(databaseURL); err == nil && u.Scheme != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), mask)
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", mask)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return "(unparsable database URL)"
	}
	return "host=" + cfg.Host + " user=" + cfg.User + " dbname=" + cfg.Database
}

// String masks every occurrence of the URL's password in s.
func String(s, databaseURL string) string {
	for _, secret := range secrets(databaseURL) {
		s = strings.ReplaceAll(s, secret, mask)
	}
	return s
}

// Secret masks every occurrence of password in s; an empty password masks nothing.
func Secret(s, password string) string {
	if password == "" {
		return s
	}
	return strings.ReplaceAll(s, password, mask)
}

// secrets are the password as written in the URL and as decoded.
func secrets(databaseURL string) []string {
	var out []string
	if u, err := url.Parse(databaseURL); err == nil {
		if p, ok := u.User.Password(); ok && p != "" {
			out = append(out, p)
		}
		if p := u.Query().Get("password"); p != "" {
			out = append(out, p)
		}
	}
	if cfg, err := pgconn.ParseConfig(databaseURL); err == nil && cfg.Password != "" {
		out = append(out, cfg.Password)
	}
	if i := strings.Index(databaseURL, "://"); i >= 0 {
		if at := strings.LastIndex(databaseURL, "@"); at > i {
			userinfo := databaseURL[i+3 : at]
			if c := strings.Index(userinfo, ":"); c >= 0 && c+1 < len(userinfo) {
				out = append(out, userinfo[c+1:])
			}
		}
	}
	return out
}

// Error returns err with every occurrence of the URL's password masked in its text. The chain
// is kept (errors.Is and errors.As see through it), so a caller can still match sentinels and
// Postgres errors; nil stays nil.
func Error(err error, databaseURL string) error {
	if err == nil {
		return nil
	}
	return maskedError{err: err, secrets: secrets(databaseURL)}
}

// ErrorSecret is Error for a password already taken out of its URL.
func ErrorSecret(err error, password string) error {
	if err == nil || password == "" {
		return err
	}
	return maskedError{err: err, secrets: []string{password}}
}

type maskedError struct {
	err     error
	secrets []string
}

func (e maskedError) Error() string {
	s := e.err.Error()
	for _, secret := range e.secrets {
		s = strings.ReplaceAll(s, secret, mask)
	}
	return s
}

func (e maskedError) Unwrap() error { return e.err }
