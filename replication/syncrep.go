package replication

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrSynchronousStandby means synchronous_standby_names matches our walsender, so the server
// may make it a synchronous standby: every commit on the host would then wait until we confirm
// it, which the sidecar only does after its window closes and its flush commits.
var ErrSynchronousStandby = errors.New("synchronous_standby_names matches the sidecar")

// syncMethod is the optional "FIRST n (" / "ANY n (" / "n (" before a list of standby names.
var syncMethod = regexp.MustCompile(`(?is)^\s*(?:(?:first|any)\s+)?[0-9]+\s*\((.*)\)\s*$`)

// syncStandbyMatches reports whether a synchronous_standby_names value lists appName or '*'.
// Like the server, it compares names case-insensitively; a name with characters outside an
// identifier (ours has a '-') can only be matched in double quotes.
func syncStandbyMatches(setting, appName string) bool {
	list := setting
	if m := syncMethod.FindStringSubmatch(setting); m != nil {
		list = m[1]
	}
	for _, name := range splitNames(list) {
		if name == "*" || strings.EqualFold(name, appName) {
			return true
		}
	}
	return false
}

// splitNames splits a comma-separated list of standby names, unquoting double-quoted ones.
func splitNames(list string) []string {
	var names []string
	var cur strings.Builder
	quoted, inQuotes := false, false
	flush := func() {
		name := cur.String()
		if !quoted {
			name = strings.TrimSpace(name)
		}
		if name != "" || quoted {
			names = append(names, name)
		}
		cur.Reset()
		quoted = false
	}
	for i := 0; i < len(list); i++ {
		c := list[i]
		switch {
		case inQuotes && c == '"' && i+1 < len(list) && list[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			inQuotes = !inQuotes
			quoted = true
		case c == ',' && !inQuotes:
			flush()
		case inQuotes || (c != ' ' && c != '\t' && c != '\n'):
			cur.WriteByte(c)
		}
	}
	flush()
	return names
}

// CheckSynchronousStandby returns ErrSynchronousStandby when the server's
// synchronous_standby_names would make our walsender a synchronous (or quorum) standby. On
// PG15 a logical walsender becomes one as soon as it reports a flush position; the host's
// commits then wait on the sidecar's windows, and with a session that does not override
// synchronous_commit the flush's own commit would wait for a confirmation that only follows it.
func CheckSynchronousStandby(ctx context.Context, q Querier) error {
	var setting string
	if err := q.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&setting); err != nil {
		return fmt.Errorf("show synchronous_standby_names: %w", err)
	}
	if syncStandbyMatches(setting, ApplicationName) {
		return fmt.Errorf("%w: synchronous_standby_names = '%s' would make the sidecar's walsender "+
			"(application_name %s) a synchronous standby, and every commit would wait for the sidecar; "+
			"list the physical standbys by name instead (e.g. 'FIRST 1 (standby1, standby2)')",
			ErrSynchronousStandby, setting, ApplicationName)
	}
	return nil
}
