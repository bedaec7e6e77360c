package workspace

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The copy's .git is written by enclave rather than by git clone: it must
// be what a shared clone gives the agent (origin, its branches and tags,
// history through alternates), and both repositories enclave writes must
// pass git's own consistency check.
func TestCopyRepositoryIsAClone(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "one\n"})
	tgit(t, repo, "tag", "-a", "-m", "release", "v1")
	tgit(t, repo, "branch", "feature")
	tgit(t, repo, "commit", "-q", "--allow-empty", "-m", "second")
	head := tgit(t, repo, "rev-parse", "HEAD")
	branch := tgit(t, repo, "symbolic-ref", "--short", "HEAD")
	w := prepare(t, repo)

	if got := tgit(t, w.Copy, "config", "remote.origin.url"); got != repo {
		t.Errorf("origin url = %q, want %q", got, repo)
	}
	refs := strings.Split(tgit(t, w.Copy, "for-each-ref", "--format=%(refname)"), "\n")
	for _, want := range []string{"refs/heads/enclave/s1", "refs/remotes/origin/" + branch, "refs/remotes/origin/feature", "refs/remotes/origin/HEAD", "refs/tags/v1"} {
		if !slices.Contains(refs, want) {
			t.Errorf("copy refs %q lack %s", refs, want)
		}
	}
	if got := tgit(t, w.Copy, "rev-parse", "origin/HEAD"); got != head {
		t.Errorf("origin/HEAD = %s, want %s", got, head)
	}
	if got := tgit(t, w.Copy, "rev-parse", "v1^{commit}"); got != tgit(t, repo, "rev-parse", "v1^{commit}") {
		t.Errorf("tag v1 in the copy = %s", got)
	}
	if got := tgit(t, w.Copy, "log", "--format=%s"); got != "second\ninitial" {
		t.Errorf("copy history = %q", got)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("copy status = %q, want clean", st)
	}
	// The agent works in its copy with plain git.
	writeT(t, filepath.Join(w.Copy, "b.txt"), "agent\n")
	tgit(t, w.Copy, "add", "b.txt")
	tgit(t, w.Copy, "commit", "-q", "-m", "agent work")
	tgit(t, w.Copy, "fsck", "--no-progress")

	c := snapshot(t, w)
	if f := filesByPath(c); len(f) != 1 || f["b.txt"].Status != Added {
		t.Errorf("snapshot files = %+v, want b.txt added", c.Files)
	}
	sh := w.shadow()
	if _, err := sh.git(context.Background(), "fsck", "--no-progress", "--strict", c.Head); err != nil {
		t.Errorf("git fsck of the shadow: %v", err)
	}
	msg := string(must(sh.git(context.Background(), "cat-file", "commit", c.Head)))
	for _, want := range []string{"tree ", "parent " + w.Base, "author enclave session s1 <enclave@localhost> ", "committer enclave <enclave@localhost> ", "\n\nenclave: session s1\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("snapshot commit lacks %q:\n%s", want, msg)
		}
	}
}

// A SHA-256 repository gets SHA-256 copy and shadow repositories.
func TestPrepareSHA256Repository(t *testing.T) {
	testEnv(t)
	dir := filepath.Join(t.TempDir(), "repo")
	tgit(t, t.TempDir(), "init", "-q", "--object-format=sha256", dir)
	writeT(t, filepath.Join(dir, "a.txt"), "one\n")
	tgit(t, dir, "add", "-A")
	tgit(t, dir, "commit", "-q", "-m", "initial")
	writeT(t, filepath.Join(dir, "dirty.txt"), "uncommitted\n")
	w := prepare(t, dir)
	if w.ObjectFormat != "sha256" || len(w.Base) != 64 || len(w.BaseTree) != 64 {
		t.Fatalf("ObjectFormat, Base, BaseTree = %q, %q, %q", w.ObjectFormat, w.Base, w.BaseTree)
	}
	if got := tgit(t, w.Copy, "rev-parse", "--show-object-format"); got != "sha256" {
		t.Errorf("copy object format = %q", got)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("copy status = %q, want clean", st)
	}
	writeT(t, filepath.Join(w.Copy, "a.txt"), "two\n")
	c := snapshot(t, w)
	if f := filesByPath(c); len(f) != 1 || f["a.txt"].Status != Modified {
		t.Errorf("snapshot files = %+v, want a.txt modified", c.Files)
	}
	if _, err := w.shadow().git(context.Background(), "fsck", "--no-progress", c.Head); err != nil {
		t.Errorf("git fsck of the sha256 shadow: %v", err)
	}
}

// What git add stages is checked against the base after the fact: an
// entry that slipped past the excludes (here planted in the shadow index,
// which is what a gap between the matcher and gitignore would cause) is
// not recorded. An uninitialised submodule is an empty directory, so git
// keeps a planted gitlink there.
func TestSnapshotFiltersWhatGitStaged(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "one\n"})
	w := prepare(t, repo, "secret.env")
	writeT(t, filepath.Join(w.Copy, "secret.env"), "TOKEN=x\n")
	if err := os.Mkdir(filepath.Join(w.Copy, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(w.Copy, "ok.txt"), "fine\n")
	sh := w.shadow()
	ctx := context.Background()
	c := sh.cmd("hash-object", "-w", "--no-filters", "--stdin")
	c.stdin = strings.NewReader("TOKEN=x\n")
	id := strings.TrimSpace(string(must(c.run(ctx))))
	if _, err := sh.git(ctx, "update-index", "--add", "--cacheinfo", "100644,"+id+",secret.env", "--cacheinfo", "160000,"+w.Base+",sub"); err != nil {
		t.Fatal(err)
	}
	ch := snapshot(t, w)
	files := filesByPath(ch)
	if len(files) != 1 || files["ok.txt"].Status != Added {
		t.Errorf("snapshot files = %+v, want only ok.txt", ch.Files)
	}
	ls := string(must(sh.git(ctx, "ls-tree", "-r", "--name-only", ch.Head)))
	if strings.Contains(ls, "secret.env") || strings.Contains(ls, "sub") {
		t.Errorf("recorded tree holds a planted entry:\n%s", ls)
	}
	if !slices.ContainsFunc(ch.Skipped, func(n Note) bool { return n.Path == "sub" }) {
		t.Errorf("skipped = %+v, want the gitlink sub reported", ch.Skipped)
	}
}

func TestParseStatus(t *testing.T) {
	in := "# branch.oid x\x00" +
		"1 .M N... 100644 100644 100644 aaaa bbbb has space.txt\x00" +
		"1 A. N... 000000 100644 100644 0000 cccc new.txt\x00" +
		"2 R. N... 100644 100644 100644 aaaa aaaa R100 to.txt\x00from.txt\x00" +
		"u UU N... 100644 100644 100644 100644 a b c conflict.txt\x00" +
		"? untracked dir/f\x00" +
		"? nested/\x00" +
		"! ignored.o\x00" +
		"1 .M N... 100644 100644 100644 aaaa bbbb has space.txt\x00"
	got, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"has space.txt", "new.txt", "to.txt", "from.txt", "conflict.txt", "untracked dir/f", "nested/"}
	if !slices.Equal(got, want) {
		t.Errorf("parseStatus = %q, want %q", got, want)
	}
	for _, bad := range []string{"1 .M N... short\x00", "x what\x00", "2 R. N... 1 2 3 a b R100 to\x00"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) = nil error", bad)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("1 .M N... 100644 100644 100644 aaaa bbbb a\x00? b\x00"))
	f.Add([]byte("2 R. N... 100644 100644 100644 aaaa aaaa R100 to\x00from\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		paths, err := parseStatus(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range paths {
			if p == "" || seen[p] || strings.Contains(p, "\x00") {
				t.Fatalf("parseStatus gave %q", paths)
			}
			seen[p] = true
		}
	})
}

// The shadow index is known to hold the last tree written from it until
// the file changes; a stage that finds it unchanged needs no write-tree.
func TestIndexTreeTracksTheIndexFile(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "one\n"})
	w := prepare(t, repo)
	if got := w.indexTree(); got != w.BaseTree {
		t.Fatalf("indexTree after Prepare = %q, want BaseTree %q", got, w.BaseTree)
	}
	ctx := context.Background()
	tree, _, err := w.stage(ctx, true)
	if err != nil || tree != w.BaseTree {
		t.Fatalf("stage of an unchanged copy = %q, %v; want BaseTree", tree, err)
	}
	writeT(t, filepath.Join(w.Copy, "a.txt"), "two\n")
	tree2, _, err := w.stage(ctx, false)
	if err != nil || tree2 == w.BaseTree {
		t.Fatalf("stage after an edit = %q, %v; want a new tree", tree2, err)
	}
	if got := w.indexTree(); got != tree2 {
		t.Errorf("indexTree = %q, want the staged %q", got, tree2)
	}
	// Anything else writing the index makes the recorded tree unknown.
	if _, err := w.shadow().git(ctx, "read-tree", w.BaseTree); err != nil {
		t.Fatal(err)
	}
	if got := w.indexTree(); got != "" {
		t.Errorf("indexTree after another write = %q, want unknown", got)
	}
	c := snapshot(t, w)
	if f := filesByPath(c); len(f) != 1 || f["a.txt"].Status != Modified {
		t.Errorf("snapshot = %+v, want a.txt modified", c.Files)
	}
}
