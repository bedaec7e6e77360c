package workspace

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// plantGitTraps fills the copy's .git and tree with every way we know for
// a repository to run code when git is invoked on it. Each trap creates a
// file in markers named after itself.
func plantGitTraps(t *testing.T, copyDir, markers string) {
	t.Helper()
	cmd := func(name string) string {
		return fmt.Sprintf("touch %s/%s", markers, name)
	}
	gitDir := filepath.Join(copyDir, ".git")
	hooks := filepath.Join(gitDir, "hooks")
	os.MkdirAll(hooks, 0o755)
	for _, h := range []string{"pre-commit", "post-commit", "post-checkout", "post-index-change", "pre-auto-gc",
		"reference-transaction", "fsmonitor-watchman", "pre-push", "post-rewrite", "commit-msg", "prepare-commit-msg"} {
		writeT(t, filepath.Join(hooks, h), "#!/bin/sh\n"+cmd("hook-"+h)+"\n")
		os.Chmod(filepath.Join(hooks, h), 0o755)
	}
	writeT(t, filepath.Join(copyDir, "evil-hooks", "post-index-change"), "#!/bin/sh\n"+cmd("hookspath")+"\n")
	os.Chmod(filepath.Join(copyDir, "evil-hooks", "post-index-change"), 0o755)
	cfg, err := os.OpenFile(filepath.Join(gitDir, "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, `[core]
	fsmonitor = "%s; echo"
	sshCommand = "%s; ssh"
	pager = "%s; cat"
	hooksPath = %s/evil-hooks
	editor = "%s; true"
	askPass = "%s"
[filter "evil"]
	clean = "%s; cat"
	smudge = "%s; cat"
	process = "%s"
	required = true
[diff "evil"]
	command = "%s"
	textconv = "%s; cat"
[merge "evil"]
	driver = "%s"
[include]
	path = %s/evil-include
`, cmd("fsmonitor"), cmd("sshCommand"), cmd("pager"), copyDir, cmd("editor"), cmd("askpass"),
		cmd("filter-clean"), cmd("filter-smudge"), cmd("filter-process"), cmd("diff-command"), cmd("textconv"), cmd("merge-driver"), copyDir)
	cfg.Close()
	writeT(t, filepath.Join(copyDir, "evil-include"), "[diff]\n\texternal = \""+cmd("diff-external")+"\"\n")
	writeT(t, filepath.Join(copyDir, ".gitattributes"), "* filter=evil diff=evil merge=evil\n*.crlf text eol=crlf\n")
}

func markersIn(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestHostileGitConfigNeverRuns(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "b.txt": "b\n"})
	w := prepare(t, repo)
	markers := t.TempDir()
	plantGitTraps(t, w.Copy, markers)
	writeT(t, filepath.Join(w.Copy, "a.txt"), "changed by agent\n")
	writeT(t, filepath.Join(w.Copy, "dos.crlf"), "line\r\nline2\n")

	c := snapshot(t, w)
	var p bytes.Buffer
	if err := c.Patch(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	if err := c.BinaryPatch(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Snapshot(context.Background()); err != nil { // a second run with a warm index
		t.Fatal(err)
	}
	if m := markersIn(t, markers); len(m) != 0 {
		t.Fatalf("agent-planted git code ran during Snapshot/Patch: %v", m)
	}
	got := filesByPath(c)
	if _, ok := got["a.txt"]; !ok {
		t.Errorf("change lacks a.txt: %+v", c.Files)
	}
	// The blob is the bytes on disk: no eol conversion asked by the
	// agent's .gitattributes.
	blob := shadowRev(t, c, c.Head+":dos.crlf")
	if want := gitBlobID([]byte("line\r\nline2\n")); blob != want {
		t.Errorf("dos.crlf recorded as %s, want the exact bytes %s", blob, want)
	}

	// Control: the traps are live. Plain git in the copy, with the copy's
	// configuration, trips them; if this ever stops, the test above proves
	// nothing and must be updated.
	ctl := exec.Command("git", "diff", "HEAD")
	ctl.Dir = w.Copy
	ctl.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	ctl.Run()
	ctl = exec.Command("git", "status")
	ctl.Dir = w.Copy
	ctl.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	ctl.Run()
	fired := strings.Join(markersIn(t, markers), " ")
	for _, want := range []string{"fsmonitor", "filter-"} {
		if !strings.Contains(fired, want) {
			t.Errorf("control: plain git in the copy did not trip %s (fired: %q); the test above proves less than it claims", want, fired)
		}
	}
	t.Logf("control: traps fired with the copy's own config: %s", fired)
}

func gitBlobID(content []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(content))
	h.Write(content)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// allObjects lists every object reachable or not in the shadow (alternates
// included) with its content, so a test can check what was ever read.
func shadowObjectContents(t *testing.T, c *Change) []byte {
	t.Helper()
	sh := shadow{gitDir: c.gitDir, home: c.home}
	cmd := sh.cmd("cat-file", "--batch-all-objects", "--batch", "--unordered")
	out, err := cmd.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSymlinksAreNotFollowed(t *testing.T) {
	testEnv(t)
	secretDir := t.TempDir()
	secret := "TOP-SECRET-CANARY-7f3a\n"
	writeT(t, filepath.Join(secretDir, "secret.txt"), secret)
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "dir/tracked.txt": "tracked\n"})
	w := prepare(t, repo)

	os.Symlink(filepath.Join(secretDir, "secret.txt"), filepath.Join(w.Copy, "to-secret"))
	os.Symlink("/etc/passwd", filepath.Join(w.Copy, "to-passwd"))
	os.Symlink(repo, filepath.Join(w.Copy, "to-user-repo"))
	os.Symlink(secretDir, filepath.Join(w.Copy, "to-secret-dir"))
	// Replace a tracked directory with a link to a directory outside that
	// holds a file of the same name.
	writeT(t, filepath.Join(secretDir, "tracked.txt"), secret)
	os.RemoveAll(filepath.Join(w.Copy, "dir"))
	os.Symlink(secretDir, filepath.Join(w.Copy, "dir"))

	c := snapshot(t, w)
	got := filesByPath(c)
	for name, target := range map[string]string{
		"to-secret": filepath.Join(secretDir, "secret.txt"), "to-passwd": "/etc/passwd",
		"to-user-repo": repo, "to-secret-dir": secretDir, "dir": secretDir,
	} {
		f, ok := got[name]
		if !ok || f.NewMode != "120000" {
			t.Errorf("change[%s] = %+v, want a symlink (mode 120000)", name, f)
			continue
		}
		if blob := shadowRev(t, c, c.Head+":"+name); blob != gitBlobID([]byte(target)) {
			t.Errorf("%s recorded as %s, want the link text %q", name, blob, target)
		}
	}
	if f := got["dir/tracked.txt"]; f.Status != Deleted {
		t.Errorf("dir/tracked.txt = %+v, want deleted (its directory became a link)", f)
	}
	if _, ok := got["dir/secret.txt"]; ok {
		t.Error("snapshot descended into a symlinked directory")
	}
	all := shadowObjectContents(t, c)
	passwd, _ := os.ReadFile("/etc/passwd")
	if bytes.Contains(all, []byte(secret)) || (len(passwd) > 0 && bytes.Contains(all, passwd)) {
		t.Error("the content behind a symlink was read into the shadow repository")
	}
	var p bytes.Buffer
	if err := c.Patch(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.String(), "TOP-SECRET") {
		t.Error("Patch shows the content behind a symlink")
	}
}

func TestNestedRepositories(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "lib/x.txt": "x\n"})
	w := prepare(t, repo)
	// A real nested repository with a commit (git would add a gitlink).
	nested := filepath.Join(w.Copy, "vendor/thing")
	writeT(t, filepath.Join(nested, "f.txt"), "f\n")
	tgit(t, nested, "init", "-q")
	tgit(t, nested, "add", "-A")
	tgit(t, nested, "commit", "-q", "-m", "nested")
	// A gitfile pointing at the user's repository.
	writeT(t, filepath.Join(w.Copy, "sneaky/.git"), "gitdir: "+filepath.Join(repo, ".git")+"\n")
	writeT(t, filepath.Join(w.Copy, "sneaky/y.txt"), "y\n")
	// Names git refuses, which would otherwise stop the snapshot.
	writeT(t, filepath.Join(w.Copy, ".GIT/config"), "x")
	writeT(t, filepath.Join(w.Copy, "sub/.git./x"), "x")
	os.Symlink("a.txt", filepath.Join(w.Copy, ".gitmodules"))
	// A .git inside a tracked directory: tracked files there still count.
	writeT(t, filepath.Join(w.Copy, "lib/.git/HEAD"), "ref: refs/heads/main\n")
	writeT(t, filepath.Join(w.Copy, "lib/x.txt"), "x2\n")
	writeT(t, filepath.Join(w.Copy, "ok.txt"), "ok\n")

	c := snapshot(t, w)
	got := filesByPath(c)
	if f := got["ok.txt"]; f.Status != Added {
		t.Errorf("ok.txt = %+v, want added", f)
	}
	for p, f := range got {
		if f.NewMode == "160000" {
			t.Errorf("snapshot recorded a gitlink at %s", p)
		}
		if strings.HasPrefix(p, "vendor/") || strings.HasPrefix(p, "sneaky/") || strings.HasPrefix(strings.ToLower(p), ".git") && p != ".gitattributes" {
			t.Errorf("snapshot recorded %s from a nested repository or refused name", p)
		}
	}
	skipped := map[string]string{}
	for _, n := range c.Skipped {
		skipped[n.Path] = n.Reason
	}
	for _, p := range []string{"vendor/thing", "sneaky", ".GIT", "sub/.git.", ".gitmodules", "lib"} {
		if skipped[p] == "" {
			t.Errorf("Skipped lacks %s: %+v", p, c.Skipped)
		}
	}
}

func TestHiddenPaths(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{
		"a.txt": "a\n", "secrets/tracked.key": "committed secret\n", ".gitignore": "*.local\n",
	})
	writeT(t, filepath.Join(repo, ".env"), "API_KEY=untracked\n")
	writeT(t, filepath.Join(repo, "app/.env"), "API_KEY=nested\n")
	writeT(t, filepath.Join(repo, "secrets/new.key"), "untracked secret\n")
	w := prepare(t, repo, ".env", "secrets/**")

	for _, p := range []string{".env", "app/.env", "secrets"} {
		if exists(filepath.Join(w.Copy, p)) {
			t.Errorf("hidden %s is in the copy", p)
		}
	}
	if len(w.Warnings) != 1 || !strings.Contains(w.Warnings[0], "secrets") {
		t.Errorf("Warnings = %q, want one about the committed secrets/", w.Warnings)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("agent git status = %q, want clean (hidden paths are not agent deletions)", st)
	}
	// The agent writes to hidden paths; none of it may reach the diff.
	writeT(t, filepath.Join(w.Copy, ".env"), "API_KEY=from-agent\n")
	writeT(t, filepath.Join(w.Copy, "secrets/tracked.key"), "overwrite\n")
	writeT(t, filepath.Join(w.Copy, "deep/x/.env"), "y\n")
	writeT(t, filepath.Join(w.Copy, "b.txt"), "b\n")
	c := snapshot(t, w)
	if len(c.Files) != 1 || c.Files[0].Path != "b.txt" {
		t.Errorf("Files = %+v, want only b.txt", c.Files)
	}
	skipped := map[string]bool{}
	for _, n := range c.Skipped {
		skipped[n.Path] = true
	}
	for _, p := range []string{".env", "secrets", "deep/x/.env"} {
		if !skipped[p] {
			t.Errorf("Skipped lacks hidden %s: %+v", p, c.Skipped)
		}
	}
	for _, p := range []string{".env", "secrets/tracked.key", "deep/x/.env"} {
		if _, err := (shadow{gitDir: c.gitDir, home: c.home}).git(context.Background(), "cat-file", "-e", c.Head+":"+p); err == nil {
			t.Errorf("hidden %s is in the head tree", p)
		}
	}
	// And the user's files behind the hidden paths are untouched.
	if got := readT(t, filepath.Join(repo, ".env")); got != "API_KEY=untracked\n" {
		t.Errorf("user .env = %q", got)
	}
}

func TestSnapshotSkipsSpecialFiles(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n"})
	w := prepare(t, repo)
	if err := mkfifo(filepath.Join(w.Copy, "pipe")); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(w.Copy, "b.txt"), "b\n")
	c := snapshot(t, w) // must not block reading the fifo
	if got := filesByPath(c); len(got) != 1 || got["b.txt"].Status != Added {
		t.Errorf("Files = %+v, want only b.txt added", c.Files)
	}
}

// The agent swaps its .git for a link to the user's repository (or for a
// file): enclave must neither use it nor write through it, and must keep
// scanning the rest of the copy.
func TestAgentReplacesDotGit(t *testing.T) {
	testEnv(t)
	for _, kind := range []string{"symlink", "file"} {
		t.Run(kind, func(t *testing.T) {
			repo := newRepo(t, map[string]string{"a.txt": "a\n"})
			w := prepare(t, repo)
			before := treeDigest(t, repo)
			os.RemoveAll(filepath.Join(w.Copy, ".git"))
			if kind == "symlink" {
				os.Symlink(filepath.Join(repo, ".git"), filepath.Join(w.Copy, ".git"))
			} else {
				writeT(t, filepath.Join(w.Copy, ".git"), "gitdir: "+filepath.Join(repo, ".git")+"\n")
			}
			nested := filepath.Join(w.Copy, "zzz")
			writeT(t, filepath.Join(nested, "f"), "f\n")
			tgit(t, nested, "init", "-q")
			tgit(t, nested, "add", "-A")
			tgit(t, nested, "commit", "-q", "-m", "n")
			writeT(t, filepath.Join(w.Copy, "b.txt"), "b\n")
			c := snapshot(t, w)
			if got := filesByPath(c); len(got) != 1 || got["b.txt"].Status != Added {
				t.Errorf("Files = %+v, want only b.txt", c.Files)
			}
			if after := treeDigest(t, repo); after != before {
				t.Error("the user's repository changed")
			}
		})
	}
}

// The agent takes read permission away from its own files and
// directories; the snapshot still records them (without changing modes).
func TestUnreadableFilesInCopy(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "d/b.txt": "b\n"})
	w := prepare(t, repo)
	writeT(t, filepath.Join(w.Copy, "d/c.txt"), "c\n")
	os.Chmod(filepath.Join(w.Copy, "a.txt"), 0o200)
	writeT(t, filepath.Join(w.Copy, "a.txt"), "a2\n")
	os.Chmod(filepath.Join(w.Copy, "d"), 0o300)
	c := snapshot(t, w)
	got := filesByPath(c)
	if got["a.txt"].Status != Modified || got["a.txt"].NewMode != "100644" || got["d/c.txt"].Status != Added {
		t.Errorf("Files = %+v, want a.txt modified (mode 100644) and d/c.txt added", c.Files)
	}
}
