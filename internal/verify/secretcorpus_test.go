package verify

import (
	"bytes"
	"fmt"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretCorpusScan is the entry point bench/secrets.sh uses to run
// the secret scanner over a labelled corpus: every line of every file under
// $ENCLAVE_SECRET_CORPUS is treated as added, and one line per finding
// ("path<TAB>line<TAB>rule") goes to $ENCLAVE_SECRET_OUT. Skipped when the
// variables are unset.
func TestSecretCorpusScan(t *testing.T) {
	dir, out := os.Getenv("ENCLAVE_SECRET_CORPUS"), os.Getenv("ENCLAVE_SECRET_OUT")
	if dir == "" || out == "" {
		t.Skip("set ENCLAVE_SECRET_CORPUS and ENCLAVE_SECRET_OUT (bench/secrets.sh does)")
	}
	rules, err := loadSecretRules(builtinRules)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	files, lines := 0, 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(data, 0) >= 0 {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		files++
		for i, l := range splitLines(data) {
			lines++
			for _, f := range scanLine(rules, rel, line{N: i + 1, Text: l}) {
				fmt.Fprintf(&b, "%s\t%d\t%s\n", f.File, f.Line, f.Rule)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned %d files, %d lines", files, lines)
}

// BenchmarkScanSecretsGoSource times the rules over ordinary Go source
// (the common case: no secret) and reports lines per second.
func BenchmarkScanSecretsGoSource(b *testing.B) {
	rules, err := loadSecretRules(builtinRules)
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(build.Default.GOROOT, "src", "net", "http", "server.go"))
	if err != nil {
		b.Skipf("no Go source to scan: %v", err)
	}
	ls := splitLines(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for n, l := range ls {
			scanLine(rules, "x.go", line{N: n + 1, Text: l})
		}
	}
	b.ReportMetric(float64(len(ls)*b.N)/b.Elapsed().Seconds(), "lines/s")
}
