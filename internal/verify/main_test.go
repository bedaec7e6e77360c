package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/sandbox"
)

func TestMain(m *testing.M) {
	if sandbox.MaybeRunInternal() {
		return
	}
	// Tests run with fake runners that answer every program alike: a gosec
	// that happens to be installed on this machine must not be run through
	// them. Tests that want gosec say so with withGosec.
	lookGosec = func() (string, error) { return "", exec.ErrNotFound }
	os.Exit(m.Run())
}

// fixture is a repository with a base commit and a head commit made from
// it by applying edits (content "" deletes; a "->" prefix makes a symlink).
type fixture struct {
	gitDir, base, head string
}

func gitT(t testing.TB, dir string, args ...string) string {
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

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.RemoveAll(full)
		if c == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newFixture(t testing.TB, base, edits map[string]string) fixture {
	t.Helper()
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "-b", "main")
	if base == nil {
		base = map[string]string{}
	}
	base["README.md"] = "# project\n"
	writeFiles(t, dir, base)
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "-m", "base")
	b := gitT(t, dir, "rev-parse", "HEAD")
	writeFiles(t, dir, edits)
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "--allow-empty", "-m", "head")
	h := gitT(t, dir, "rev-parse", "HEAD")
	return fixture{gitDir: filepath.Join(dir, ".git"), base: b, head: h}
}

// offline is a config with the checks that run programs switched off.
func offline() Config {
	return Config{Checks: map[string]Action{CheckTests: "off"}}
}

// fakeRunner is a Runner whose answer the test chooses.
type fakeRunner struct {
	run func(spec RunSpec) (RunResult, error)
}

func (f *fakeRunner) Run(ctx context.Context, spec RunSpec) (RunResult, error) { return f.run(spec) }

var _ Runner = (*fakeRunner)(nil)

// quietVet answers every run with success and no output.
var quietVet = &fakeRunner{run: func(RunSpec) (RunResult, error) { return RunResult{}, nil }}

func runFixture(t testing.TB, fx fixture, cfg Config) *Report {
	t.Helper()
	r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: quietVet})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return r
}

func findRule(r *Report, check, rule string) *Finding {
	for i, f := range r.Findings {
		if f.Check == check && f.Rule == rule {
			return &r.Findings[i]
		}
	}
	return nil
}
