package gateway

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// goFiles returns the non-test Go files of at least minLines lines under
// GOROOT/src/<dir>, sorted.
func goFiles(t testing.TB, dir string, minLines int) map[string]string {
	root := filepath.Join(runtime.GOROOT(), "src", dir)
	out := map[string]string{}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Skipf("GOROOT source not readable: %v", err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, n))
		if err != nil || strings.Count(string(b), "\n") < minLines {
			continue
		}
		out[filepath.Join(dir, n)] = string(b)
	}
	return out
}

var identRE = regexp.MustCompile(`\b[A-Za-z_][A-Za-z0-9_]*\b`)

// editWhitespace re-indents with spaces, pads operators and commas, and
// strips trailing blank structure: what a formatter or a paste does.
func editWhitespace(s string) string {
	s = strings.ReplaceAll(s, "\t", "  ")
	s = strings.ReplaceAll(s, ", ", " , ")
	s = strings.ReplaceAll(s, " = ", "=")
	s = strings.ReplaceAll(s, "(", "( ")
	return s
}

// editIdents renames about a third of the distinct identifiers that are
// not keywords, consistently, as an agent refactoring the excerpt would.
func editIdents(s string, rng *rand.Rand) string {
	names := map[string]string{}
	return identRE.ReplaceAllStringFunc(s, func(w string) string {
		if keywords[strings.ToLower(w)] {
			return w
		}
		if r, ok := names[w]; ok {
			return r
		}
		r := w
		if rng.IntN(3) == 0 {
			r = "ren" + w + "X"
		}
		names[w] = r
		return r
	})
}

func excerpt(src string, n int, rng *rand.Rand) (string, bool) {
	lines := strings.Split(src, "\n")
	if len(lines) < n+1 {
		return "", false
	}
	// Skip mostly-blank excerpts: an excerpt worth worrying about has code.
	for try := 0; try < 20; try++ {
		start := rng.IntN(len(lines) - n)
		ex := strings.Join(lines[start:start+n], "\n")
		if len(strings.Join(strings.Fields(ex), "")) >= 12*n {
			return ex, true
		}
	}
	return "", false
}

// TestMeasureClassification prints detection and false-positive rates of
// the classification fingerprints on Go source from GOROOT. Run with -v to
// see the table; the assertions are floors, so a regression fails.
func TestMeasureClassification(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement; skipped with -short")
	}
	classified := goFiles(t, "net/http", 300)
	var unrelated []string
	for _, d := range []string{"go/parser", "go/printer", "encoding/json", "text/template", "archive/tar", "compress/flate", "image/png", "database/sql"} {
		for _, src := range goFiles(t, d, 100) {
			unrelated = append(unrelated, src)
		}
	}
	if len(classified) < 10 || len(unrelated) < 20 {
		t.Skipf("not enough GOROOT source (%d classified, %d unrelated files)", len(classified), len(unrelated))
	}
	var files []ClassifiedFile
	var srcs []string
	for _, p := range sortedKeys(classified) {
		files = append(files, ClassifiedFile{Path: p, Level: "restricted", Content: []byte(classified[p])})
		srcs = append(srcs, classified[p])
	}
	type row struct {
		mode, edit string
		n          int
		det, fp    float64
	}
	var rows []row
	const trials = 200
	for _, identNorm := range []bool{false, true} {
		ix, err := NewIndex(DefaultLevels, identNorm, files)
		if err != nil {
			t.Fatal(err)
		}
		mode := "plain"
		if identNorm {
			mode = "ident-norm"
		}
		for _, n := range []int{5, 20, 100} {
			for _, edit := range []string{"verbatim", "whitespace", "identifiers", "both"} {
				rng := rand.New(rand.NewPCG(uint64(n), 1))
				hit, tot := 0, 0
				for i := 0; i < trials; i++ {
					fi := rng.IntN(len(srcs))
					ex, ok := excerpt(srcs[fi], n, rng)
					if !ok {
						continue
					}
					switch edit {
					case "whitespace":
						ex = editWhitespace(ex)
					case "identifiers":
						ex = editIdents(ex, rng)
					case "both":
						ex = editWhitespace(editIdents(ex, rng))
					}
					tot++
					for _, m := range ix.Match(ex) {
						if m.File == fi {
							hit++
							break
						}
					}
				}
				rows = append(rows, row{mode: mode, edit: edit, n: n, det: float64(hit) / float64(max(tot, 1))})
			}
			rng := rand.New(rand.NewPCG(uint64(n), 2))
			fp, tot := 0, 0
			for i := 0; i < trials*2; i++ {
				ex, ok := excerpt(unrelated[rng.IntN(len(unrelated))], n, rng)
				if !ok {
					continue
				}
				tot++
				if len(ix.Match(ex)) > 0 {
					fp++
				}
			}
			rows = append(rows, row{mode: mode, edit: "unrelated (FP)", n: n, fp: float64(fp) / float64(max(tot, 1))})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "classification: %d classified files (GOROOT/src/net/http), %d unrelated files, k=%d w=%d min=%d\n", len(files), len(unrelated), fpK, fpW, minMatches)
	fmt.Fprintf(&b, "%-11s %-15s %6s %9s %9s\n", "mode", "excerpt edit", "lines", "detected", "false+")
	get := map[string]float64{}
	for _, r := range rows {
		if r.edit == "unrelated (FP)" {
			fmt.Fprintf(&b, "%-11s %-15s %6d %9s %8.1f%%\n", r.mode, r.edit, r.n, "", 100*r.fp)
			get[fmt.Sprintf("%s/fp/%d", r.mode, r.n)] = r.fp
		} else {
			fmt.Fprintf(&b, "%-11s %-15s %6d %8.1f%% %9s\n", r.mode, r.edit, r.n, 100*r.det, "")
			get[fmt.Sprintf("%s/%s/%d", r.mode, r.edit, r.n)] = r.det
		}
	}
	t.Log("\n" + b.String())
	// Floors (measured values are well above; see the table).
	for k, floor := range map[string]float64{
		"plain/verbatim/20": 0.95, "plain/whitespace/20": 0.95, "plain/verbatim/100": 0.99,
		"plain/identifiers/100": 0.9, "ident-norm/both/20": 0.9, "plain/verbatim/5": 0.6,
	} {
		if get[k] < floor {
			t.Errorf("detection %s = %.2f, want >= %.2f", k, get[k], floor)
		}
	}
	for k, ceil := range map[string]float64{"plain/fp/5": 0.01, "plain/fp/20": 0.01, "plain/fp/100": 0.02, "ident-norm/fp/20": 0.02} {
		if get[k] > ceil {
			t.Errorf("false positives %s = %.3f, want <= %.3f", k, get[k], ceil)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
