package bench

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one line of the table: a measure, what challenge-stream did, what the reference did
// (pg_recvlogical, the polling job, the reference upsert), their ratio and the target.
type Row struct {
	Section   string
	Measure   string
	Sidecar   string
	Reference string
	Ratio     string
	Target    string
	Met       string // "yes", "NO" or empty when there is no target
}

// Report is the benchmark's result.
type Report struct {
	Environment []string
	Rows        []Row
	Notes       []string
}

func (r *Report) add(rows ...Row) { r.Rows = append(r.Rows, rows...) }

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Write prints the table, the environment above it and the notes below.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	for _, e := range r.Environment {
		b.WriteString(e + "\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tMEASURE\tCHALLENGE-STREAM\tREFERENCE\tRATIO\tTARGET\tMET")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			row.Section, row.Measure, dash(row.Sidecar), dash(row.Reference), dash(row.Ratio), dash(row.Target), dash(row.Met))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count formats an integer with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// rate formats a rate per second.
func rate(n float64) string { return count(int64(n + 0.5)) }

// seconds formats a duration for the table: milliseconds below 10 s, seconds above.
func seconds(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

func ratio(x float64) string {
	switch {
	case x == 0:
		return ""
	case x >= 10:
		return fmt.Sprintf("%.0f", x)
	default:
		// Three digits, so a ratio just under a target does not print as the target.
		return fmt.Sprintf("%.3g", x)
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func mb(bytes int64) string { return fmt.Sprintf("%.1f MB", float64(bytes)/(1<<20)) }

func signedMB(bytes int64) string { return fmt.Sprintf("%+.1f MB", float64(bytes)/(1<<20)) }

// percentiles formats p50 / p99 of latencies, with a lower bound (">") where pending
// crossings decide it.
func percentiles(l Latencies) string {
	p := func(q float64) string {
		d, censored, ok := l.Percentile(q)
		switch {
		case !ok:
			return "n/a"
		case censored:
			return ">" + seconds(d)
		default:
			return seconds(d)
		}
	}
	return p(0.5) + " / " + p(0.99)
}
