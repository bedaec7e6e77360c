package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
// ("path<TAB>line<TAB>rule") goes to $ENCLAVE_SECRET_OUT. The rules are
// the default ones (Enclave's and the vendored gitleaks set), or only
// Enclave's with ENCLAVE_SECRET_RULES=builtin, or the gitleaks-format file
// $ENCLAVE_SECRET_RULES.
// Skipped when the variables are unset.
func TestSecretCorpusScan(t *testing.T) {
	dir, out := os.Getenv("ENCLAVE_SECRET_CORPUS"), os.Getenv("ENCLAVE_SECRET_OUT")
	if dir == "" || out == "" {
		t.Skip("set ENCLAVE_SECRET_CORPUS and ENCLAVE_SECRET_OUT (bench/secrets.sh does)")
	}
	rules, err := defaultRules()
	switch p := os.Getenv("ENCLAVE_SECRET_RULES"); p {
	case "":
	case "builtin":
		rules, err = loadSecretRules(builtinRules)
	default:
		var src []byte
		if src, err = os.ReadFile(p); err == nil {
			rules, err = loadSecretRules(src)
		}
	}
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
	for _, bb := range []struct {
		name string
		load func() (*ruleSet, error)
	}{
		{"default", defaultRules},
		{"builtin", func() (*ruleSet, error) { return loadSecretRules(builtinRules) }},
		{"gitleaks", func() (*ruleSet, error) { return loadSecretRules(gitleaksRules) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			rules, err := bb.load()
			if err != nil {
				b.Fatal(err)
			}
			benchScan(b, rules)
		})
	}
}

func benchScan(b *testing.B, rules *ruleSet) {
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

// TestSecretRuleSamples: scanLine(rules, line) = rule ids found, for one
// fake sample of each vendor format and near misses that must stay quiet.
func TestSecretRuleSamples(t *testing.T) {
	rules, err := loadSecretRules(builtinRules)
	if err != nil {
		t.Fatal(err)
	}
	hex32 := "0123456789abcdef0123456789abcdef"
	for _, c := range []struct{ text, want string }{
		{`TWILIO_KEY="SK` + hex32 + `"`, "twilio-api-key"},
		{`k := "SG.` + strings.Repeat("a1B2", 5) + `xy.` + strings.Repeat("Zq9_", 10) + `abc"`, "sendgrid-api-key"},
		{`token: shpat_` + hex32, "shopify-token"},
		{`t := "dop_v1_` + hex32 + hex32 + `"`, "digitalocean-token"},
		{`v := "hvs.` + strings.Repeat("Ab3_x", 19) + `"`, "vault-token"},
		{`h := "hf_` + strings.Repeat("aBcDeFgHiJkLmNoPq", 2) + `"`, "huggingface-token"},
		{`d := "dapi` + hex32 + `"`, "databricks-token"},
		{`AGE-SECRET-KEY-1` + strings.Repeat("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 2)[:58], "age-secret-key"},
		{`g := "glsa_` + strings.Repeat("Ab3x", 8) + `_0a1b2c3d"`, "grafana-token"},
		{`PMAK-` + hex32[:24] + `-` + hex32 + `ab`, "postman-api-key"},
		{`glpat-abcdefghij0123456789-`, "gitlab-token"},
		{`DB_PASSWORD=q8Vz3LmP0xT7wKe2`, "env-secret"},
		{`export API_TOKEN=Zr81mQv0sLp4Xw9Nc2`, "env-secret"},
		{`req.Header.Set("Authorization", "Bearer 9fQz-Lm3.vX81_kPa0Rt7wNc")`, "bearer-token"},
		// Near misses.
		{`DB_PASSWORD=${DB_PASSWORD}`, ""},
		{`API_KEY=changeme`, ""},
		{`TOKEN_FILE=aaaaaaaaaaaaaaaa`, ""},
		{`Authorization: Bearer $TOKEN`, ""},
		{`secretName := "prod-db-credentials"`, ""},
		{`encodeUserPassword: "encodeUserPassword",`, ""},
		{`SK` + hex32 + `ff`, ""},
	} {
		var got []string
		for _, f := range scanLine(rules, "f", line{N: 1, Text: c.text}) {
			got = append(got, f.Rule)
		}
		want := []string{}
		if c.want != "" {
			want = []string{c.want}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("scanLine(%q) = %v, want %v", c.text, got, want)
		}
	}
}

// TestGitleaksRuleFeatures: the loader honours the gitleaks rule-file
// features a rule set from gitleaks relies on, and leaves out (reports
// more) the allowlists it cannot apply to one line.
func TestGitleaksRuleFeatures(t *testing.T) {
	src := `
title = "t"
minVersion = "v8.25.0"
[allowlist]
paths = ['''(?:^|/)vendor/''']
[[rules]]
id = "php-only"
regex = '''phpkey_[a-z0-9]{12}'''
path = '''\.php$'''
[[rules]]
id = "first-group"
regex = '''(?:tok_([a-z0-9]{12})|tik_([a-z0-9]{12}))'''
keywords = ["tok_", "tik_"]
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''^#\s*example''']
[[rules.allowlists]]
regexTarget = "match"
regexes = ['''^tik_0{12}$''']
[[rules.allowlists]]
condition = "AND"
paths = ['''_test\.go$''']
regexes = ['''.''']
`
	rules, err := loadSecretRules([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, text, want string }{
		{"a.php", "phpkey_abcdef012345", "php-only"},
		{"a.go", "phpkey_abcdef012345", ""},
		{"vendor/x/a.php", "phpkey_abcdef012345", ""},
		{"a.go", "x = tik_abcdef012345", "first-group:abcd"},
		{"a.go", "# example tok_abcdef012345", ""},
		{"a.go", "tik_000000000000", ""},
		{"a_test.go", "tok_abcdef012345", "first-group:abcd"},
	} {
		var got []string
		for _, f := range scanLine(rules, c.file, line{N: 1, Text: c.text}) {
			got = append(got, f.Rule)
			if f.Rule == "first-group" {
				// The redacted secret starts with the captured group,
				// not with the whole match's tok_/tik_.
				got[len(got)-1] += ":" + strings.TrimPrefix(f.Message, ": ")[:4]
			}
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("scanLine(%s, %q) = %v, want %q", c.file, c.text, got, c.want)
		}
	}
	if _, err := loadSecretRules([]byte("[[rules]]\nid = \"x\"\nregex = 'a'\n[[rules.allowlists]]\nregexTarget = \"word\"\nregexes = ['b']\n")); err == nil {
		t.Error("loadSecretRules(regexTarget = word) = nil error")
	}
}

// The embedded gitleaks rule file is the pinned release's, unedited.
func TestGitleaksRulesPinned(t *testing.T) {
	sum := sha256.Sum256(gitleaksRules)
	if got := hex.EncodeToString(sum[:]); got != gitleaksRulesSHA256 {
		t.Errorf("sha256(gitleaks/gitleaks.toml) = %s, want %s (gitleaks %s); refresh with gitleaks/update.sh", got, gitleaksRulesSHA256, gitleaksVersion)
	}
	rules, err := defaultRules()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range rules.rules {
		if ids[r.id] {
			t.Errorf("default rules: duplicate id %q", r.id)
		}
		ids[r.id] = true
	}
	for _, id := range []string{"aws-access-key-id", "generic-api-key", "gitleaks-jwt"} {
		if !ids[id] {
			t.Errorf("default rules lack %q", id)
		}
	}
}

// The default rules find formats only gitleaks' set describes, keep
// gitleaks' allowlists, and report a secret both sets match once.
func TestDefaultSecretRules(t *testing.T) {
	rules, err := defaultRules()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ text, want string }{
		// Formats with no rule in rules.toml.
		{`FLY_TOKEN="fo1_Xq9Lm2Vb7Rt4Nz8Kc1Pw6Yd3Hs5Jf0Ga-Ue_TiOoBxQ"`, "flyio-access-token"},
		{`PYPI="pypi-AgEIcHlwaS5vcmc` + strings.Repeat("Qm9vN2xKc3", 6) + `"`, "pypi-upload-token"},
		// Enclave's rule reports it; gitleaks' aws-access-token stays quiet.
		{`aws_access_key_id = AKIAQYLPMN5HHHFPZAM2`, "aws-access-key-id"},
		// gitleaks' allowlist for documented example keys holds.
		{`aws_access_key_id = AKIAIOSFODNN7EXAMPLE`, ""},
		{`encapKey = ech.encapsulatedKey`, ""},
	} {
		var got []string
		for _, f := range scanLine(rules, "f.env", line{N: 1, Text: c.text}) {
			got = append(got, f.Rule)
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("scanLine(%q) = %v, want [%s]", c.text, got, c.want)
		}
	}
}

// Each rule keeps its own allowlist: rules that share the file's global
// allowlist must not overwrite each other's entries.
func TestSecretRuleAllowlistsAreSeparate(t *testing.T) {
	src := `
[allowlist]
regexes = ['''^g1$''', '''^g2$''', '''^g3$''']
stopwords = ["zzz"]
[[rules]]
id = "a"
regex = '''a_([a-z0-9]{8})'''
[[rules.allowlists]]
regexes = ['''^allowa00$''']
stopwords = ["stopa"]
[[rules]]
id = "b"
regex = '''b_([a-z0-9]{8})'''
[[rules.allowlists]]
regexes = ['''^allowb00$''']
stopwords = ["stopb"]
`
	rules, err := loadSecretRules([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ text, want string }{
		{"a_allowa00", ""},
		{"b_allowb00", ""},
		{"a_allowb00", "a"},
		{"b_allowa00", "b"},
		{"a_xstopaxx", ""},
		{"a_xstopbxx", "a"},
	} {
		var got []string
		for _, f := range scanLine(rules, "f", line{N: 1, Text: c.text}) {
			got = append(got, f.Rule)
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("scanLine(%q) = %v, want [%s]", c.text, got, c.want)
		}
	}
}
