package verify

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkRun1000Lines times the offline checks on a change adding about
// 1,000 lines of Go across 10 files of a 50-file repository.
func BenchmarkRun1000Lines(b *testing.B) {
	base := map[string]string{"go.mod": goMod}
	for i := 0; i < 50; i++ {
		base[fmt.Sprintf("pkg%d/f.go", i)] = "package p\n\n" + bigFunc(fmt.Sprintf("F%d", i), 10+i%5)
	}
	edits := map[string]string{}
	for i := 0; i < 10; i++ {
		var s strings.Builder
		fmt.Fprintf(&s, "package p\n\n")
		for j := 0; j < 16; j++ {
			fmt.Fprintf(&s, "func G%d_%d(x int) int {\n\tif x > %d {\n\t\treturn x * %d\n\t}\n\treturn x + %d\n}\n\n", i, j, j, i+j, j*i)
		}
		edits[fmt.Sprintf("new%d/g.go", i)] = s.String()
	}
	fx := newFixture(b, base, edits)
	b.ResetTimer()
	var r *Report
	for i := 0; i < b.N; i++ {
		r = runFixture(b, fx, offline())
	}
	b.StopTimer()
	for _, c := range r.Checks {
		b.ReportMetric(c.Duration, c.Name+"-ms")
	}
	b.ReportMetric(float64(r.Metrics.LinesAdded), "lines")
}

func FuzzManifests(f *testing.F) {
	for _, s := range []string{goMod + "require example.com/x v1.0.0\n", `{"dependencies":{"a":"^1.0.0"}}`, "flask==2.0\n-r other.txt\n", "[dependencies]\nserde = \"1\"\n", "[project]\ndependencies = [\"x>=1\"]\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range manifests {
			m.parse(b, "x")
		}
		lines := splitLines(b)
		diffLines(lines, append(lines[:len(lines):len(lines)], "x"))
	})
}

func FuzzVersions(f *testing.F) {
	f.Add("1.0.0", "1.0.0rc1")
	f.Fuzz(func(t *testing.T, a, b string) {
		comparePEP440(a, b)
		compareSemver(a, b)
		resolveVersion(EcoNPM, a)
	})
}

// BenchmarkRenamePairing times loading a change that moves 150 files of
// 60 lines, each edited a little, into a new directory (150 × 150
// similarity candidates), and reports the renames found.
func BenchmarkRenamePairing(b *testing.B) {
	base, edits := map[string]string{}, map[string]string{}
	for i := 0; i < 150; i++ {
		var s strings.Builder
		for j := 0; j < 60; j++ {
			fmt.Fprintf(&s, "line %d of file %d: value %d\n", j, i, i*j)
		}
		p := fmt.Sprintf("old/f%03d.txt", i)
		base[p] = s.String()
		edits[p] = ""
		edits[fmt.Sprintf("new/g%03d.txt", i)] = s.String() + "one more line\n"
	}
	fx := newFixture(b, base, edits)
	cfg, _ := Config{}.withDefaults()
	repo, err := openRepo(b.Context(), fx.gitDir)
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	b.ResetTimer()
	renamed := 0
	for i := 0; i < b.N; i++ {
		c, err := loadChange(b.Context(), repo, fx.base, fx.head, cfg)
		if err != nil {
			b.Fatal(err)
		}
		renamed = 0
		for _, f := range c.files {
			if f.OldPath != "" && f.Status == "added" {
				renamed++
			}
		}
	}
	b.ReportMetric(float64(renamed), "renames")
}
