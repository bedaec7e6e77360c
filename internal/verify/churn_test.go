package verify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// commitAt commits the work tree of dir with the given date.
func commitAt(t *testing.T, dir string, when time.Time, msg string) string {
	t.Helper()
	date := when.UTC().Format(time.RFC3339)
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "--allow-empty", "-m", msg}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
			"GIT_AUTHOR_DATE=" + date, "GIT_COMMITTER_DATE=" + date}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	return gitT(t, dir, "rev-parse", "HEAD")
}

func numbered(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		b.WriteString(prefix + " line " + string(rune('a'+i%26)) + strings.Repeat("x", i) + "\n")
	}
	return b.String()
}

// Recent churn: the change rewrites 3 lines committed a year before the
// base and 2 lines committed two days before it; only the 2 count.
// Session churn: of the 5 lines the first snapshot added, the second
// rewrote 2.
func TestChurn(t *testing.T) {
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "-b", "main")
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	writeFiles(t, dir, map[string]string{"go.mod": goMod, "a.txt": numbered("old", 1, 10)})
	commitAt(t, dir, now.AddDate(-1, 0, 0), "old")
	recent := numbered("old", 1, 5) + numbered("recent", 1, 4) + numbered("old", 6, 10)
	writeFiles(t, dir, map[string]string{"a.txt": recent})
	commitAt(t, dir, now.AddDate(0, 0, -2), "recent")
	writeFiles(t, dir, map[string]string{"README.md": "# later\n"})
	base := commitAt(t, dir, now.Add(-time.Hour), "base")

	// Snapshot 1: rewrite old lines 1-3 and recent lines 1-2, add b.txt.
	head1 := strings.Replace(recent, numbered("old", 1, 3), numbered("new", 1, 3), 1)
	head1 = strings.Replace(head1, numbered("recent", 1, 2), numbered("newer", 1, 2), 1)
	writeFiles(t, dir, map[string]string{"a.txt": head1, "b.txt": numbered("agent", 1, 5)})
	commitAt(t, dir, now, "snapshot 1")
	// Snapshot 2: the agent rewrites 2 of its own b.txt lines.
	writeFiles(t, dir, map[string]string{"b.txt": strings.Replace(numbered("agent", 1, 5), numbered("agent", 2, 3), numbered("again", 2, 3), 1)})
	head := commitAt(t, dir, now.Add(time.Hour), "snapshot 2")

	r, err := Run(context.Background(), Options{GitDir: filepath.Join(dir, ".git"), Base: base, Head: head, Config: offline(), Sandbox: quietVet})
	if err != nil {
		t.Fatal(err)
	}
	m := r.Metrics
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"ChurnRecentLines", m.ChurnRecentLines, 2},
		{"ChurnSessionLines", m.ChurnSessionLines, 2},
		{"SessionSnapshots", m.SessionSnapshots, 2},
		{"ChurnWindowDays", m.ChurnWindowDays, 21},
		{"LinesDeleted", m.LinesDeleted, 5},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if m.ChurnPartial {
		t.Error("ChurnPartial = true, want false")
	}

	// A window shorter than two days makes none of it recent; a negative
	// one turns the blame off.
	for _, w := range []time.Duration{24 * time.Hour, -1} {
		cfg := offline()
		cfg.ChurnWindow = w
		r, err = Run(context.Background(), Options{GitDir: filepath.Join(dir, ".git"), Base: base, Head: head, Config: cfg, Sandbox: quietVet})
		if err != nil {
			t.Fatal(err)
		}
		if r.Metrics.ChurnRecentLines != 0 {
			t.Errorf("window %v: ChurnRecentLines = %d, want 0", w, r.Metrics.ChurnRecentLines)
		}
	}
}

// A textconv driver named in the repository's config and attributes does
// not run when the gate blames.
func TestChurnBlameHardened(t *testing.T) {
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "-b", "main")
	canary := filepath.Join(dir, "ran")
	writeFiles(t, dir, map[string]string{"a.txt": numbered("old", 1, 6), ".gitattributes": "*.txt diff=evil\n"})
	base := commitAt(t, dir, time.Now().Add(-time.Hour), "base")
	gitT(t, dir, "config", "diff.evil.textconv", "touch "+canary+" #")
	writeFiles(t, dir, map[string]string{"a.txt": numbered("new", 1, 2) + numbered("old", 3, 6)})
	head := commitAt(t, dir, time.Now(), "head")
	r, err := Run(context.Background(), Options{GitDir: filepath.Join(dir, ".git"), Base: base, Head: head, Config: offline(), Sandbox: quietVet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("a textconv driver from the repository's config ran")
	}
	if r.Metrics.ChurnRecentLines != 2 || r.Metrics.ChurnPartial {
		t.Errorf("ChurnRecentLines = %d, partial %v; want 2, false", r.Metrics.ChurnRecentLines, r.Metrics.ChurnPartial)
	}
}

// Session churn from enclave run's checkpoints: the final snapshot's
// parent is the base, and the checkpoints taken while the agent worked
// hang off refs/enclave/checkpoints. Lines the first checkpoint added and
// the second rewrote count.
func TestSessionChurnFromCheckpoints(t *testing.T) {
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "-b", "main")
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	writeFiles(t, dir, map[string]string{"go.mod": goMod})
	base := commitAt(t, dir, now.Add(-time.Hour), "base")
	writeFiles(t, dir, map[string]string{"b.txt": numbered("agent", 1, 5)})
	cp1 := commitAt(t, dir, now, "checkpoint 1")
	final := strings.Replace(numbered("agent", 1, 5), numbered("agent", 2, 4), numbered("again", 2, 4), 1)
	writeFiles(t, dir, map[string]string{"b.txt": final})
	cp2 := commitAt(t, dir, now.Add(time.Minute), "checkpoint 2")
	gitT(t, dir, "update-ref", checkpointRef, cp2)
	tree := gitT(t, dir, "rev-parse", cp2+"^{tree}")
	head := gitT(t, dir, "commit-tree", tree, "-p", base, "-m", "final snapshot")
	_ = cp1

	r, err := Run(context.Background(), Options{GitDir: filepath.Join(dir, ".git"), Base: base, Head: head, Config: offline(), Sandbox: quietVet})
	if err != nil {
		t.Fatal(err)
	}
	if m := r.Metrics; m.SessionSnapshots != 3 || m.ChurnSessionLines != 3 {
		t.Errorf("SessionSnapshots, ChurnSessionLines = %d, %d; want 3, 3", m.SessionSnapshots, m.ChurnSessionLines)
	}
}
