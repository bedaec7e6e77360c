package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/verify"
)

func gitVerifyT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// The session's gates.verify section reaches the gate: an allow rule
// accepts a planted key under testdata/ with its reason, a rule action
// raises duplication-free quality findings, and a key outside the allowed
// path still fails.
func TestVerifyUsesSessionPolicy(t *testing.T) {
	src := t.TempDir()
	pol := `version: 1
gates:
  verify:
    checks: {tests: "off", static: "off"}
    rules: {quality/out-of-scope: fail}
    scope: ["internal/**", "testdata/**"]
    allow:
      - {check: secrets, path: "testdata/**", reason: fixture keys are fake}
`
	if err := os.WriteFile(filepath.Join(src, policy.FileName), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.LoadFor(src, "")
	if err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{ID: "s1", Dir: src, PolicySource: p.Source, PolicyHash: p.Hash}

	repo := t.TempDir()
	gitVerifyT(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "README.md"), []byte("# x\n"), 0o644)
	gitVerifyT(t, repo, "add", "-A")
	gitVerifyT(t, repo, "commit", "-q", "-m", "base")
	base := gitVerifyT(t, repo, "rev-parse", "HEAD")
	key := "AKIA" + "QYLPMN5HFIQR7XYA"
	for name, body := range map[string]string{
		"testdata/creds.txt": "aws_access_key_id = " + key + "\n",
		"notes/todo.txt":     "nothing secret here\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(repo, name)), 0o755)
		os.WriteFile(filepath.Join(repo, name), []byte(body), 0o644)
	}
	gitVerifyT(t, repo, "add", "-A")
	gitVerifyT(t, repo, "commit", "-q", "-m", "head")
	head := gitVerifyT(t, repo, "rev-parse", "HEAD")

	run := func(p *policy.Policy) *verify.Report {
		t.Helper()
		rep, err := verify.Run(context.Background(), verify.Options{GitDir: filepath.Join(repo, ".git"), Base: base, Head: head, Config: verifyConfig(p.Gates.Verify)})
		if err != nil {
			t.Fatalf("verify.Run: %v", err)
		}
		return rep
	}

	got, err := sessionPolicy(sess, "")
	if err != nil {
		t.Fatalf("sessionPolicy = %v", err)
	}
	rep := run(got)
	if len(rep.Allowlisted) != 1 || rep.Allowlisted[0].Reason != "fixture keys are fake" || rep.Allowlisted[0].Finding.Check != verify.CheckSecrets {
		t.Errorf("allowlisted = %+v, want the testdata key with the policy's reason", rep.Allowlisted)
	}
	var scope *verify.Finding
	for i, f := range rep.Findings {
		if f.Check == verify.CheckSecrets {
			t.Errorf("secret finding %+v survived the allow rule", f)
		}
		if f.Rule == "out-of-scope" && f.File == "notes/todo.txt" {
			scope = &rep.Findings[i]
		}
	}
	if scope == nil || scope.Action != verify.ActionFail || rep.Result != verify.Fail {
		t.Errorf("out-of-scope finding = %+v, result %s; want action fail from the policy's rules, result fail", scope, rep.Result)
	}
	for _, c := range rep.Checks {
		if c.Name == verify.CheckTests && c.Status != "skipped" {
			t.Errorf("tests check status %q, want skipped (checks.tests: off)", c.Status)
		}
	}

	// Without the policy the same change fails on the secret.
	rep = run(policy.Default())
	if len(rep.Allowlisted) != 0 || rep.Result != verify.Fail {
		t.Errorf("default policy: allowlisted %+v, result %s; want none, fail", rep.Allowlisted, rep.Result)
	}

	// An edited policy is not silently used for a session that ran under
	// another one.
	if err := os.WriteFile(filepath.Join(src, policy.FileName), []byte(pol+"    osv: /nonexistent\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := sessionPolicy(sess, ""); err == nil || !strings.Contains(err.Error(), "changed since session") {
		t.Errorf("sessionPolicy(edited) = %v, want a changed-since error", err)
	}
	if p, err := sessionPolicy(sess, filepath.Join(src, policy.FileName)); err != nil || p.Gates.Verify.OSV != "/nonexistent" {
		t.Errorf("sessionPolicy(--policy) = %v, %v; want the edited policy", p, err)
	}
	// A built-in session gets this binary's defaults, whatever their hash
	// was when it ran.
	if p, err := sessionPolicy(&store.Session{ID: "s2", Dir: src, PolicySource: policy.SourceBuiltin, PolicyHash: "0123"}, ""); err != nil || p.Source != policy.SourceBuiltin {
		t.Errorf("sessionPolicy(built-in) = %v, %v", p, err)
	}
}

// gates.verify.secret_rules replaces the built-in secret rules with the
// named gitleaks-format file.
func TestVerifySecretRulesFile(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.toml")
	os.WriteFile(rules, []byte("[[rules]]\nid = \"house-token\"\nregex = '''house_[a-z0-9]{16}'''\n"), 0o644)
	p, err := policy.Parse("enclave.yaml", []byte("version: 1\ngates:\n  verify:\n    checks: {tests: \"off\", static: \"off\"}\n    secret_rules: "+rules+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := readSecretRules(p.Gates.Verify.SecretRules)
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	gitVerifyT(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("x\n"), 0o644)
	gitVerifyT(t, repo, "add", "-A")
	gitVerifyT(t, repo, "commit", "-q", "-m", "base")
	base := gitVerifyT(t, repo, "rev-parse", "HEAD")
	os.WriteFile(filepath.Join(repo, "a.txt"), []byte("x\nk = house_0123456789abcdef\n"), 0o644)
	gitVerifyT(t, repo, "commit", "-q", "-am", "head")
	head := gitVerifyT(t, repo, "rev-parse", "HEAD")
	cfg := verifyConfig(p.Gates.Verify)
	cfg.SecretRules = data
	rep, err := verify.Run(context.Background(), verify.Options{GitDir: filepath.Join(repo, ".git"), Base: base, Head: head, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Rule != "house-token" || rep.Findings[0].Line != 2 {
		t.Errorf("findings = %+v, want house-token on a.txt:2", rep.Findings)
	}
	if _, err := readSecretRules(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "gates.verify.secret_rules") {
		t.Errorf("readSecretRules(missing) = %v, want an error naming the setting", err)
	}
}

// gates.verify.test_network reaches the gate's config as the test run's
// allowlist, and nothing else gets it; churn_window reaches it too.
func TestVerifyConfigTestNetwork(t *testing.T) {
	p, err := policy.Parse("enclave.yaml", []byte("version: 1\ngates:\n  verify:\n    churn_window: 7d\n    test_network:\n      - {host: registry.example.com, methods: [GET]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := verifyConfig(p.Gates.Verify)
	if len(cfg.TestNetwork) != 1 || cfg.TestNetwork[0].Host != "registry.example.com" || strings.Join(cfg.TestNetwork[0].Methods, ",") != "GET" {
		t.Errorf("verifyConfig(test_network).TestNetwork = %+v, want the registry rule", cfg.TestNetwork)
	}
	if cfg.ChurnWindow != 7*24*time.Hour {
		t.Errorf("verifyConfig(churn_window: 7d).ChurnWindow = %v, want 168h", cfg.ChurnWindow)
	}
	if cfg := verifyConfig(policy.Default().Gates.Verify); len(cfg.TestNetwork) != 0 {
		t.Errorf("default policy: TestNetwork = %+v, want none", cfg.TestNetwork)
	}
}
