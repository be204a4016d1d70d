package e2e

import (
	"context"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/challenge-stream/challenge-stream/internal/tools/hostdb"
)

// leastPrivilegeSQL is the runbook's role script; the tests run it as written, with the role
// renamed so that tests sharing a cluster do not collide.
const (
	leastPrivilegeSQL  = "../docs/least-privilege.sql"
	leastPrivilegeRole = "challenge_stream_sidecar"
	// docPublication is the publication the script creates.
	docPublication = "challenge_stream"
)

// TestLeastPrivilegeRole: an admin runs docs/least-privilege.sql; `run` as that role (not a
// superuser, not the owner of any host table) migrates its own schema, creates its slot,
// streams and applies, and verify finds no difference.
func TestLeastPrivilegeRole(t *testing.T) {
	e := setup(t)
	role := e.leastPrivilegeRole()
	e.artistWithTrack(21, 210)

	p := e.runAs(role)
	e.waitStreaming(p)
	mark := e.commitPlays(210, 300)
	require.NoError(t, hostdb.InsertComment(e.ctx, e.db.Pool, 1, 21, in2025, 3))
	e.db.Exec(t, `UPDATE comments SET text = 'edited', blocknumber = 4 WHERE comment_id = 1`)
	e.flushedPast(mark)
	e.waitRow("p2", "15:1000", 300)
	e.waitRow("c", "15:202523", 1)
	require.EqualValues(t, 1, e.count(`SELECT count(*) FROM user_challenges WHERE specifier = '15:250' AND is_complete`))
	require.Equal(t, role, e.text(`SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'challenge_stream'`),
		"the role created and owns its schema")
	require.Equal(t, role, e.text(`SELECT r.rolname FROM pg_stat_replication s JOIN pg_roles r ON r.oid = s.usesysid
		JOIN pg_replication_slots sl ON sl.active_pid = s.pid WHERE sl.slot_name = $1`, e.db.Slot),
		"the role streams from the slot")
	require.NotContains(t, p.out.String(), "session ended; reconnecting")
	e.verified()
}

// TestRoleWithoutReplication: a role with every grant but the REPLICATION attribute makes `run`
// exit 1 with one line naming the problem, at once, not after a retry loop.
func TestRoleWithoutReplication(t *testing.T) {
	e := setup(t)
	role := e.leastPrivilegeRole()
	e.db.Exec(t, `ALTER ROLE `+pgx.Identifier{role}.Sanitize()+` NOREPLICATION`)

	p := e.runAs(role)
	require.Equal(t, 1, p.exited(30*time.Second))
	out := p.out.String()
	var last string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "challenge-stream: ") {
			require.Empty(t, last, "one error line")
			last = line
		}
	}
	require.Contains(t, last, "replication")
	require.Contains(t, last, "SQLSTATE 42501")
	require.NotContains(t, out, "session ended; reconnecting", "a permanent error is not retried")
}

// leastPrivilegeRole runs docs/least-privilege.sql as superuser with a role name unique to the
// test and returns that name. The role is dropped when the test ends.
func (e *env) leastPrivilegeRole() string {
	e.t.Helper()
	script, err := os.ReadFile(leastPrivilegeSQL)
	require.NoError(e.t, err)
	role := "r_" + e.db.Name
	if len(role) > 63 {
		role = role[:63]
	}
	require.Contains(e.t, string(script), leastPrivilegeRole)
	renamed := regexp.MustCompile(`\b`+leastPrivilegeRole+`\b`).ReplaceAllString(string(script), role)
	e.t.Cleanup(func() { e.dropRole(role) })
	for _, stmt := range splitSQL(renamed) {
		// One statement at a time, as psql does: CREATE INDEX CONCURRENTLY refuses to run in the
		// implicit transaction of a multi-statement query.
		_, err := e.db.Pool.Exec(e.ctx, stmt)
		require.NoError(e.t, err, stmt)
	}
	return role
}

// dropRole drops what the role owns in the test's database (its schema), its grants, and the
// role. It runs before the database is dropped, after the sidecar was killed.
func (e *env) dropRole(role string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ident := pgx.Identifier{role}.Sanitize()
	if _, err := e.db.Pool.Exec(ctx, `DROP OWNED BY `+ident+` CASCADE`); err != nil {
		e.t.Logf("drop objects owned by %s: %v", role, err)
	}
	if _, err := e.db.Pool.Exec(ctx, `DROP ROLE IF EXISTS `+ident); err != nil {
		e.t.Logf("drop role %s: %v", role, err)
	}
}

// runAs starts `run` connecting as role (the test cluster trusts local TCP connections) with the
// publication the script created.
func (e *env) runAs(role string) *proc {
	e.t.Helper()
	u, err := url.Parse(e.db.URL)
	require.NoError(e.t, err)
	u.User = url.User(role)
	return e.runURL(u.String(), "--window", "100ms", "--publication", docPublication)
}

// runURL is run with another database URL (the flags given later win).
func (e *env) runURL(databaseURL string, flags ...string) *proc {
	e.t.Helper()
	return e.run(nil, append([]string{"--database-url", databaseURL}, flags...)...)
}

func (e *env) text(sql string, args ...any) string {
	e.t.Helper()
	var s string
	require.NoError(e.t, e.db.Pool.QueryRow(e.ctx, sql, args...).Scan(&s), sql)
	return s
}

var dollarTag = regexp.MustCompile(`^\$[A-Za-z_]*\$`)

// splitSQL splits a script into statements at semicolons outside quotes, dollar quotes and
// comments, and drops the comments.
func splitSQL(script string) []string {
	var stmts []string
	var b strings.Builder
	flush := func() {
		if s := strings.TrimSpace(b.String()); s != "" {
			stmts = append(stmts, s)
		}
		b.Reset()
	}
	for i := 0; i < len(script); {
		rest := script[i:]
		switch {
		case strings.HasPrefix(rest, "--"):
			end := strings.IndexByte(rest, '\n')
			if end < 0 {
				end = len(rest)
			}
			i += end
		case rest[0] == '\'':
			end := strings.IndexByte(rest[1:], '\'')
			if end < 0 {
				end = len(rest) - 2
			}
			b.WriteString(rest[:end+2])
			i += end + 2
		case dollarTag.MatchString(rest):
			tag := dollarTag.FindString(rest)
			end := strings.Index(rest[len(tag):], tag)
			if end < 0 {
				end = len(rest) - 2*len(tag)
			}
			n := len(tag) + end + len(tag)
			b.WriteString(rest[:n])
			i += n
		case rest[0] == ';':
			flush()
			i++
		default:
			b.WriteByte(rest[0])
			i++
		}
	}
	flush()
	return stmts
}
