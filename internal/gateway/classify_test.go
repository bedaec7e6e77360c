package gateway

import (
	"fmt"
	"strings"
	"testing"
)

// ledgerSource is a 40-line Go file that repeats phrases far apart (an
// error string, identifiers declared at the bottom and used at the top),
// as real code does. The identifiers carry a 12-character tag, as in
// test/gateway, so each repeat is longer than a k-gram.
func ledgerSource(tag string) string {
	return strings.ReplaceAll(strings.Join([]string{
		"package ledger",
		"",
		"import (",
		"	\"errors\"",
		"	\"sort\"",
		")",
		"",
		"// settleQx moves reserved balances between the treasury vaults.",
		"func settleQx(vaults map[string]int64, from, to string, amount int64) error {",
		"	if amount <= 0 {",
		"		return errors.New(\"ledgerQx: non-positive transfer\")",
		"	}",
		"	if vaults[from] < amount+reserveFloorQx {",
		"		return errInsufficientQx",
		"	}",
		"	vaults[from] -= amount",
		"	vaults[to] += amount",
		"	auditTrailQx = append(auditTrailQx, transferQx{from, to, amount})",
		"	return nil",
		"}",
		"",
		"// rebalanceQx spreads the overflow of the largest vault to the rest.",
		"func rebalanceQx(vaults map[string]int64) []string {",
		"	names := make([]string, 0, len(vaults))",
		"	for name := range vaults {",
		"		names = append(names, name)",
		"	}",
		"	sort.Slice(names, func(i, j int) bool { return vaults[names[i]] > vaults[names[j]] })",
		"	overflowQx := vaults[names[0]] - ceilingQx",
		"	for _, name := range names[1:] {",
		"		share := overflowQx / int64(len(names)-1)",
		"		vaults[name] += share",
		"		vaults[names[0]] -= share",
		"	}",
		"	return names",
		"}",
		"",
		"var errInsufficientQx = errors.New(\"ledgerQx: insufficient reserve\")",
		"var reserveFloorQx, ceilingQx int64 = 125000, 9800000",
		"",
	}, "\n"), "Qx", tag)
}

// numbered formats lines first..last of src as a read tool numbers them:
// Claude Code 2.1.331's Read tool writes "N<tab>line" (seen in the
// realclients request log), older versions "%6d→line".
func numbered(src, format string, first, last int) string {
	lines := strings.Split(src, "\n")
	var b strings.Builder
	for i := first; i <= last; i++ {
		fmt.Fprintf(&b, format, i, lines[i-1])
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestMatchSpan: the span recorded for an excerpt is the lines it came
// from, also when the file repeats a phrase of the excerpt further down
// (which once stretched the span of Claude's Read output of lines 1-30 to
// 8-38).
func TestMatchSpan(t *testing.T) {
	for _, tag := range []string{"Zq5e0c3a91b7", "Zq00ff12ab34", "Zqdeadbeef01", "Zq9c81d2e4f0"} {
		t.Run(tag, func(t *testing.T) { testMatchSpan(t, ledgerSource(tag)) })
	}
}

func testMatchSpan(t *testing.T, src string) {
	ix, err := NewIndex(DefaultLevels, false, []ClassifiedFile{{Path: "secret/ledger.go", Level: "restricted", Content: []byte(src)}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(src, "\n")
	plain := func(a, b int) string { return strings.Join(lines[a-1:b], "\n") }
	for _, tt := range []struct {
		name       string
		text       string
		start, end int // the span read; the match must lie within it
		slack      int // lines at the start too short to carry a fingerprint
	}{
		{"plain 1-30", plain(1, 30), 1, 30, 8},
		{"read tool 1-30", numbered(src, "%d\t%s", 1, 30), 1, 30, 8},
		{"read tool 9-20", numbered(src, "%d\t%s", 9, 20), 9, 20, 1},
		{"read tool 21-39", numbered(src, "%d\t%s", 21, 39), 21, 39, 2},
		{"old read tool 1-30", numbered(src, "%6d\u2192%s", 1, 30), 1, 30, 8},
		{"plain 8-15", plain(8, 15), 8, 15, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ms := ix.Match(tt.text)
			if len(ms) != 1 {
				t.Fatalf("Match = %+v, want one match", ms)
			}
			m := ms[0]
			if m.FileStart < tt.start || m.FileStart > tt.start+tt.slack || m.FileEnd > tt.end || m.FileEnd < tt.end-2 {
				t.Errorf("Match span = lines %d-%d, want within %d-%d, starting by line %d and ending at or after %d",
					m.FileStart, m.FileEnd, tt.start, tt.end, tt.start+tt.slack, tt.end-2)
			}
		})
	}
}
