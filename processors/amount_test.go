package processors

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sscanfInt is the polling job's reading of a catalog amount.
func sscanfInt(s string) (int64, bool) {
	var n int
	_, err := fmt.Sscanf(s, "%d", &n)
	return int64(n), err == nil
}

// scanIntCorpus mixes the amounts seen in catalogs with the corners of fmt's scanner: space
// before the number (and the newline that is not space to Sscanf), signs, a trailing tail, base
// prefixes, underscores, overflow, non-ASCII digits and invalid UTF-8.
func scanIntCorpus() []string {
	out := []string{
		"", " ", "0", "25", "100", "1000", "-5", "+5", "-0", "+", "-", "--5", "+-5", "- 5", "+ 5",
		"25.5", "1,000", "1 000", "7 ", " 7", "\t7", "\v7", "\f7", "\r7", "\n7", "\r\n7", "\r\r\n7",
		" \n7", "7\n", "\u00a07", "\u20087", "\u30007", "\u00857", "\u180e7", "\ufeff7", "\u200b7",
		"abc", "x25", "25abc", "0x1F", "0X1f", "0b101", "0o17", "017", "1_000", "1e3", "１２",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
		"99999999999999999999", "2147483647", "2147483648", "\xff7", "7\xff", "\xe2\x80", "\xe2\x80\x83" + "7",
		"%d", "NaN", "Inf", "true",
	}
	for _, ws := range []string{"", " ", "\t", "\r", "\u3000"} {
		for _, tail := range []string{"", ".5", ",5", " 5", "\n", "x"} {
			for _, num := range []string{"1", "-12", "+123", "00042"} {
				out = append(out, ws+num+tail)
			}
		}
	}
	return out
}

func TestScanIntMatchesSscanf(t *testing.T) {
	t.Parallel()
	for _, s := range scanIntCorpus() {
		wantN, wantOK := sscanfInt(s)
		gotN, gotOK := scanInt(s)
		require.Equal(t, wantN, gotN, "%q", s)
		require.Equal(t, wantOK, gotOK, "%q", s)
	}
}

func TestScanIntExamples(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"25.5", 25, true},
		{"1,000", 1, true},
		{" 7", 7, true},
		{"\n7", 0, false},
		{"abc", 0, false},
		{"", 0, false},
		{"-5", -5, true},
		{"0x1F", 0, true},
		{"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		n, ok := scanInt(tt.in)
		require.Equal(t, tt.want, n, "%q", tt.in)
		require.Equal(t, tt.ok, ok, "%q", tt.in)
	}
}

// FuzzScanInt checks scanInt against fmt.Sscanf itself, and parseAmount's notion of plain.
func FuzzScanInt(f *testing.F) {
	for _, s := range scanIntCorpus() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		wantN, wantOK := sscanfInt(s)
		gotN, gotOK := scanInt(s)
		if gotN != wantN || gotOK != wantOK {
			t.Fatalf("scanInt(%q) = %d, %v; Sscanf gives %d, %v", s, gotN, gotOK, wantN, wantOK)
		}
		n, plain := parseAmount(&s)
		strict, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
		if plain != (err == nil && strict == wantN && wantOK) {
			t.Fatalf("parseAmount(%q) plain = %v", s, plain)
		}
		if plain && n != strict {
			t.Fatalf("parseAmount(%q) = %d, want %d", s, n, strict)
		}
	})
}
