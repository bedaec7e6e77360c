package workspace

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestPrepareCleanRepo(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"README": "hello\n", "src/main.go": "package main\n"})
	head := tgit(t, repo, "rev-parse", "HEAD")
	w := prepare(t, repo)

	if got, want := w.Branch, "enclave/s1"; got != want {
		t.Errorf("Branch = %q, want %q", got, want)
	}
	if got := strings.TrimSpace(readT(t, filepath.Join(w.Copy, ".git", "HEAD"))); got != "ref: refs/heads/enclave/s1" {
		t.Errorf("copy HEAD = %q, want ref: refs/heads/enclave/s1", got)
	}
	if w.UserHead != head || w.Base != head {
		t.Errorf("UserHead, Base = %s, %s; want both %s (clean tree)", w.UserHead, w.Base, head)
	}
	if got := readT(t, filepath.Join(w.Copy, "src/main.go")); got != "package main\n" {
		t.Errorf("copy src/main.go = %q", got)
	}
	if got := tgit(t, w.Copy, "rev-parse", "HEAD"); got != head {
		t.Errorf("copy HEAD commit = %s, want %s", got, head)
	}
	wantRO := filepath.Join(repo, ".git", "objects")
	if len(w.ReadOnlyPaths) != 1 || w.ReadOnlyPaths[0] != wantRO {
		t.Errorf("ReadOnlyPaths = %q, want [%q]", w.ReadOnlyPaths, wantRO)
	}
	alt := strings.TrimSpace(readT(t, filepath.Join(w.Copy, ".git/objects/info/alternates")))
	if alt != wantRO {
		t.Errorf("copy alternates = %q, want %q", alt, wantRO)
	}
	// No object of the user's history was copied into the copy.
	var n int
	filepath.WalkDir(filepath.Join(w.Copy, ".git/objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.Contains(p, "/info/") {
			n++
		}
		return nil
	})
	if n != 0 {
		t.Errorf("copy has %d object files, want 0 (shared through alternates)", n)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("agent's git status in a fresh copy = %q, want clean", st)
	}
	c := snapshot(t, w)
	if len(c.Files) != 0 {
		t.Errorf("Snapshot of an untouched copy: Files = %+v, want none", c.Files)
	}
}

func TestPrepareUncommittedState(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{
		"keep.txt": "keep\n", "mod.txt": "old\n", "gone.txt": "bye\n", ".gitignore": "build/\n*.log\n",
	})
	head := tgit(t, repo, "rev-parse", "HEAD")
	writeT(t, filepath.Join(repo, "mod.txt"), "new\n")
	os.Remove(filepath.Join(repo, "gone.txt"))
	writeT(t, filepath.Join(repo, "staged.txt"), "staged\n")
	tgit(t, repo, "add", "staged.txt")
	writeT(t, filepath.Join(repo, "untracked/u.txt"), "untracked\n")
	writeT(t, filepath.Join(repo, "build/out.bin"), "ignored\n")
	writeT(t, filepath.Join(repo, "debug.log"), "ignored\n")

	w := prepare(t, repo)
	for name, want := range map[string]string{"keep.txt": "keep\n", "mod.txt": "new\n", "staged.txt": "staged\n", "untracked/u.txt": "untracked\n"} {
		if got := readT(t, filepath.Join(w.Copy, name)); got != want {
			t.Errorf("copy %s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"gone.txt", "build", "debug.log"} {
		if exists(filepath.Join(w.Copy, name)) {
			t.Errorf("copy has %s, want it absent (deleted or ignored in the user's tree)", name)
		}
	}
	if w.UserHead != head || w.Base == head {
		t.Fatalf("UserHead, Base = %s, %s; want %s and a synthetic base", w.UserHead, w.Base, head)
	}
	if got := tgit(t, w.Copy, "rev-parse", "HEAD^"); got != head {
		t.Errorf("base parent = %s, want the user's HEAD %s", got, head)
	}
	if got := tgit(t, w.Copy, "rev-parse", "HEAD"); got != w.Base {
		t.Errorf("copy branch = %s, want base %s", got, w.Base)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("agent's git status = %q, want clean (base includes uncommitted state)", st)
	}
	c := snapshot(t, w)
	if len(c.Files) != 0 {
		t.Errorf("diff with no agent work = %+v, want empty", c.Files)
	}
	// The user's repository is as it was: nothing staged or committed.
	if got := tgit(t, repo, "rev-parse", "HEAD"); got != head {
		t.Errorf("user HEAD moved to %s", got)
	}
	if got := tgit(t, repo, "status", "--porcelain"); got != "M mod.txt\n D gone.txt\nA  staged.txt\n?? untracked/" && !strings.Contains(got, "A  staged.txt") {
		t.Errorf("user status changed: %q", got)
	}
}

func TestPrepareUnbornHead(t *testing.T) {
	testEnv(t)
	repo := filepath.Join(t.TempDir(), "repo")
	os.Mkdir(repo, 0o755)
	tgit(t, repo, "init", "-q")
	writeT(t, filepath.Join(repo, "a.txt"), "a\n")
	w := prepare(t, repo)
	if w.UserHead != "" || w.Base == "" {
		t.Fatalf("UserHead, Base = %q, %q; want empty and a root commit", w.UserHead, w.Base)
	}
	if got := readT(t, filepath.Join(w.Copy, "a.txt")); got != "a\n" {
		t.Errorf("copy a.txt = %q", got)
	}
	writeT(t, filepath.Join(w.Copy, "b.txt"), "b\n")
	c := snapshot(t, w)
	if len(c.Files) != 1 || c.Files[0].Path != "b.txt" || c.Files[0].Status != Added {
		t.Errorf("Files = %+v, want b.txt added", c.Files)
	}
}

func TestPrepareHeadNamedLikeAFile(t *testing.T) {
	// A path spelled like the revision the one-call lookup asks for does
	// not change its answer.
	testEnv(t)
	repo := newRepo(t, map[string]string{"HEAD^{commit}": "x\n"})
	w := prepare(t, repo)
	if head := tgit(t, repo, "rev-parse", "HEAD"); w.UserHead != strings.TrimSpace(head) {
		t.Errorf("UserHead = %q, want %q", w.UserHead, head)
	}
}

func TestPrepareSubdirSource(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a/b/c.txt": "c\n", "top.txt": "t\n"})
	w := prepare(t, filepath.Join(repo, "a", "b"))
	if w.Source != repo {
		t.Errorf("Source = %q, want the top level %q", w.Source, repo)
	}
	if want := filepath.Join(w.Copy, "a", "b"); w.Workdir != want {
		t.Errorf("Workdir = %q, want %q", w.Workdir, want)
	}
	if !exists(filepath.Join(w.Copy, "top.txt")) {
		t.Error("copy lacks top.txt: whole repository should be copied")
	}
	// Started from an ignored directory: it is not copied, but the agent
	// still starts there.
	writeT(t, filepath.Join(repo, ".gitignore"), "out/\n")
	writeT(t, filepath.Join(repo, "out/deep/x.o"), "obj")
	w2 := prepare(t, filepath.Join(repo, "out", "deep"))
	if fi, err := os.Lstat(w2.Workdir); err != nil || !fi.IsDir() {
		t.Errorf("Workdir %s: %v, want an (empty) directory", w2.Workdir, err)
	}
	if exists(filepath.Join(w2.Workdir, "x.o")) {
		t.Error("ignored file copied")
	}
}

func TestPrepareErrors(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a": "a\n"})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		opts PrepareOptions
		want error
	}{
		{"bad session", PrepareOptions{Source: repo, Dir: t.TempDir() + "/x", Session: "../x"}, ErrBadSession},
		{"session with slash", PrepareOptions{Source: repo, Dir: t.TempDir() + "/x", Session: "a/b"}, ErrBadSession},
		{"session .lock", PrepareOptions{Source: repo, Dir: t.TempDir() + "/x", Session: "a.lock"}, ErrBadSession},
		{"dir inside source", PrepareOptions{Source: repo, Dir: filepath.Join(repo, "state", "s"), Session: "s"}, ErrOverlap},
		{"bad hidden", PrepareOptions{Source: repo, Dir: t.TempDir() + "/x", Session: "s", Hidden: []string{"a/[b]"}}, ErrBadPattern},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Prepare(ctx, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Errorf("Prepare(%+v) = %v, want %v", tt.opts, err, tt.want)
			}
		})
	}
	t.Run("non-empty dir", func(t *testing.T) {
		dir := t.TempDir()
		writeT(t, filepath.Join(dir, "x"), "x")
		_, err := Prepare(ctx, PrepareOptions{Source: repo, Dir: dir, Session: "s"})
		if !errors.Is(err, ErrExists) {
			t.Errorf("Prepare into non-empty dir = %v, want ErrExists", err)
		}
		if !exists(filepath.Join(dir, "x")) {
			t.Error("Prepare removed a directory it did not create")
		}
	})
	t.Run("overlap cleans up", func(t *testing.T) {
		if exists(filepath.Join(repo, "state")) {
			t.Errorf("failed Prepare left %s behind", filepath.Join(repo, "state"))
		}
	})
}

// The copy is isolated: whatever the agent does in it, including git
// operations that rewrite objects, the user's repository does not change.
func TestCopyIsolation(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "dir/b.txt": "b\n"})
	tgit(t, repo, "gc", "-q") // packs as well as loose objects
	writeT(t, filepath.Join(repo, "loose.txt"), "loose\n")
	tgit(t, repo, "add", "loose.txt")
	tgit(t, repo, "commit", "-q", "-m", "loose")
	before := treeDigest(t, repo)
	w := prepare(t, repo)

	// Object files of the user are not hard-linked into the copy.
	filepath.WalkDir(filepath.Join(repo, ".git", "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			if n := fi.Sys().(*syscall.Stat_t).Nlink; n != 1 {
				t.Errorf("%s has %d links, want 1", p, n)
			}
		}
		return nil
	})
	// The agent writes, commits, rewrites history, repacks, chmods.
	writeT(t, filepath.Join(w.Copy, "a.txt"), "agent\n")
	writeT(t, filepath.Join(w.Copy, "new.txt"), "new\n")
	tgit(t, w.Copy, "add", "-A")
	tgit(t, w.Copy, "commit", "-q", "-m", "agent work")
	tgit(t, w.Copy, "commit", "-q", "--amend", "-m", "amended")
	tgit(t, w.Copy, "repack", "-a", "-d", "-q")
	tgit(t, w.Copy, "prune")
	tgit(t, w.Copy, "branch", "-f", "main", "HEAD")
	filepath.WalkDir(filepath.Join(w.Copy, ".git"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Chmod(p, 0o777)
		}
		return nil
	})
	snapshot(t, w)
	if after := treeDigest(t, repo); after != before {
		t.Error("the user's repository changed while the agent worked in its copy")
	}
}

func TestSnapshotChanges(t *testing.T) {
	testEnv(t)
	big := strings.Repeat("line of a file that will be renamed\n", 40)
	repo := newRepo(t, map[string]string{
		"mod.txt": "one\ntwo\nthree\n", "del.txt": "x\n", "old/name.txt": big, "run.sh": "echo\n", "blob.bin": "\x00\x01\x02",
	})
	w := prepare(t, repo)
	writeT(t, filepath.Join(w.Copy, "mod.txt"), "one\n2\nthree\nfour\n")
	os.Remove(filepath.Join(w.Copy, "del.txt"))
	os.MkdirAll(filepath.Join(w.Copy, "new"), 0o755)
	os.Rename(filepath.Join(w.Copy, "old/name.txt"), filepath.Join(w.Copy, "new/name.txt"))
	writeT(t, filepath.Join(w.Copy, "added.txt"), "a\nb\n")
	writeT(t, filepath.Join(w.Copy, "blob.bin"), "\x00\x03\x04\x05")
	os.Chmod(filepath.Join(w.Copy, "run.sh"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(w.Copy, "link"))

	c := snapshot(t, w)
	got := filesByPath(c)
	for _, tt := range []struct {
		path             string
		status           Status
		added, deleted   int
		binary           bool
		oldPath, newMode string
	}{
		{"mod.txt", Modified, 2, 1, false, "", "100644"},
		{"del.txt", Deleted, 0, 1, false, "", ""},
		{"new/name.txt", Renamed, 0, 0, false, "old/name.txt", "100644"},
		{"added.txt", Added, 2, 0, false, "", "100644"},
		{"blob.bin", Modified, 0, 0, true, "", "100644"},
		{"run.sh", Modified, 0, 0, false, "", "100755"},
		{"link", Added, 1, 0, false, "", "120000"},
	} {
		f, ok := got[tt.path]
		if !ok {
			t.Errorf("change lacks %s; files = %+v", tt.path, c.Files)
			continue
		}
		if f.Status != tt.status || f.Added != tt.added || f.Deleted != tt.deleted || f.Binary != tt.binary || f.OldPath != tt.oldPath || f.NewMode != tt.newMode {
			t.Errorf("change[%s] = %+v, want status %s +%d -%d binary %v old %q mode %q", tt.path, f, tt.status, tt.added, tt.deleted, tt.binary, tt.oldPath, tt.newMode)
		}
	}
	if len(c.Files) != 7 {
		t.Errorf("len(Files) = %d, want 7: %+v", len(c.Files), c.Files)
	}
	if c.Insertions != 5 || c.Deletions != 2 {
		t.Errorf("totals = +%d -%d, want +5 -2", c.Insertions, c.Deletions)
	}
	var patch bytes.Buffer
	if err := c.Patch(context.Background(), &patch); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"+four", "-two", "rename from old/name.txt", "new file mode 120000", "+/etc/passwd", "Binary files", "new mode 100755"} {
		if !strings.Contains(patch.String(), want) {
			t.Errorf("Patch lacks %q:\n%s", want, patch.String())
		}
	}
	// The binary patch applies to the user's repository and yields the
	// agent's tree.
	var bin bytes.Buffer
	if err := c.BinaryPatch(context.Background(), &bin); err != nil {
		t.Fatal(err)
	}
	pf := filepath.Join(t.TempDir(), "p.diff")
	os.WriteFile(pf, bin.Bytes(), 0o644)
	tgit(t, repo, "apply", "--index", pf)
	if got := readT(t, filepath.Join(repo, "blob.bin")); got != "\x00\x03\x04\x05" {
		t.Errorf("after apply blob.bin = %q", got)
	}
	if tree, want := tgit(t, repo, "write-tree"), tgit(t, w.Copy, "rev-parse", "HEAD^{tree}"); tree == want {
		t.Log("(copy's own HEAD is the base, as expected)")
	}
	if tree, want := tgit(t, repo, "write-tree"), shadowRev(t, c, c.Head+"^{tree}"); tree != want {
		t.Errorf("user tree after applying BinaryPatch = %s, want head tree %s", tree, want)
	}
}

func shadowRev(t *testing.T, c *Change, rev string) string {
	t.Helper()
	out, err := shadow{gitDir: c.gitDir, home: c.home}.git(context.Background(), "rev-parse", rev)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestOpenAfterSession(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "a\n"})
	w := prepare(t, repo)
	writeT(t, filepath.Join(w.Copy, "a.txt"), "b\n")
	c := snapshot(t, w)
	if err := w.RemoveCopy(); err != nil {
		t.Fatal(err)
	}
	w2, err := Open(w.Dir, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c2, err := w2.LastChange()
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}
	if c2.Head != c.Head || c2.Base != c.Base || len(c2.Files) != 1 {
		t.Errorf("LastChange = %+v, want %+v", c2, c)
	}
	var p bytes.Buffer
	if err := c2.Patch(context.Background(), &p); err != nil || !strings.Contains(p.String(), "+b") {
		t.Errorf("Patch after RemoveCopy = %v, %q", err, p.String())
	}
	if _, err := w2.Snapshot(context.Background()); err == nil {
		t.Error("Snapshot after RemoveCopy succeeded, want an error")
	}
	if _, err := Open(t.TempDir(), nil); !errors.Is(err, ErrNotPrepared) {
		t.Errorf("Open(empty dir) = %v, want ErrNotPrepared", err)
	}
	w3 := prepare(t, repo)
	if _, err := w3.LastChange(); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("LastChange before Snapshot = %v, want ErrNoSnapshot", err)
	}
}

func TestPlainDirectory(t *testing.T) {
	testEnv(t)
	src := filepath.Join(t.TempDir(), "plain")
	writeT(t, filepath.Join(src, "a.txt"), "a\n")
	writeT(t, filepath.Join(src, "sub/b.txt"), "b\n")
	writeT(t, filepath.Join(src, "suid"), "#!/bin/sh\n")
	os.Chmod(filepath.Join(src, "suid"), 0o4755|os.ModeSetuid)
	syscall.Chmod(filepath.Join(src, "suid"), 0o6755)
	writeT(t, filepath.Join(src, "nested/.git/config"), "[core]\n\tfsmonitor = touch /tmp/x\n")
	writeT(t, filepath.Join(src, "nested/file"), "n\n")
	os.Symlink("/etc/passwd", filepath.Join(src, "passwd"))
	os.Symlink("../..", filepath.Join(src, "sub/up"))
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := prepare(t, src)
	if w.Git || w.UserHead != "" || w.Base == "" {
		t.Fatalf("Git, UserHead, Base = %v, %q, %q; want false, \"\", a commit", w.Git, w.UserHead, w.Base)
	}
	if got := readT(t, filepath.Join(w.Copy, "sub/b.txt")); got != "b\n" {
		t.Errorf("copy sub/b.txt = %q", got)
	}
	fi, err := os.Lstat(filepath.Join(w.Copy, "suid"))
	if err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("copy suid mode = %v (%v), want 0755 without setuid/setgid", fi.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(w.Copy, "passwd")); err != nil || target != "/etc/passwd" {
		t.Errorf("copy passwd = %q, %v; want a symlink to /etc/passwd", target, err)
	}
	if exists(filepath.Join(w.Copy, "fifo")) || exists(filepath.Join(w.Copy, "nested/.git")) {
		t.Error("copy has the fifo or the nested .git")
	}
	notes := map[string]string{}
	for _, n := range w.Notes {
		notes[n.Path] = n.Reason
	}
	if !strings.Contains(notes["fifo"], "named pipe") || !strings.Contains(notes["nested/.git"], "nested git") {
		t.Errorf("Notes = %+v, want the fifo and nested/.git", w.Notes)
	}
	if st := tgit(t, w.Copy, "status", "--porcelain"); st != "" {
		t.Errorf("agent git status = %q, want clean", st)
	}
	if got := tgit(t, w.Copy, "branch", "--show-current"); got != "enclave/s1" {
		t.Errorf("branch = %q", got)
	}
	writeT(t, filepath.Join(w.Copy, "a.txt"), "changed\n")
	c := snapshot(t, w)
	if len(c.Files) != 1 || c.Files[0].Path != "a.txt" || c.Files[0].Status != Modified {
		t.Errorf("Files = %+v, want a.txt modified", c.Files)
	}
}

// A symlink in the user's HEAD where the work tree now has a directory:
// the overlay must replace the link, not write through it.
func TestOverlayDoesNotFollowSymlinks(t *testing.T) {
	testEnv(t)
	outside := t.TempDir()
	repo := newRepo(t, map[string]string{"f": "f\n"})
	os.Symlink(outside, filepath.Join(repo, "a"))
	tgit(t, repo, "add", "a")
	tgit(t, repo, "commit", "-q", "-m", "link")
	os.Remove(filepath.Join(repo, "a"))
	writeT(t, filepath.Join(repo, "a/x"), "x\n")
	w := prepare(t, repo)
	if exists(filepath.Join(outside, "x")) {
		t.Fatal("overlay wrote through the symlink into the outside directory")
	}
	fi, err := os.Lstat(filepath.Join(w.Copy, "a"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("copy a = %v, %v; want a directory", fi, err)
	}
	if got := readT(t, filepath.Join(w.Copy, "a/x")); got != "x\n" {
		t.Errorf("copy a/x = %q", got)
	}
}

func TestRemove(t *testing.T) {
	testEnv(t)
	outside := t.TempDir()
	writeT(t, filepath.Join(outside, "keep"), "keep\n")
	repo := newRepo(t, map[string]string{"a.txt": "a\n"})
	w := prepare(t, repo)
	os.Symlink(outside, filepath.Join(w.Copy, "out"))
	locked := filepath.Join(w.Copy, "locked")
	writeT(t, filepath.Join(locked, "deep/f"), "f")
	os.Chmod(filepath.Join(locked, "deep"), 0)
	os.Chmod(locked, 0)
	if err := w.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if exists(w.Dir) {
		t.Error("session directory still exists")
	}
	if got := readT(t, filepath.Join(outside, "keep")); got != "keep\n" {
		t.Error("Remove followed a symlink out of the copy")
	}
	if treeDigest(t, repo) == "" {
		t.Fatal("unreachable")
	}
}

func TestChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another uid needs root")
	}
	testEnv(t)
	victim := filepath.Join(t.TempDir(), "victim")
	writeT(t, victim, "root's\n")
	repo := newRepo(t, map[string]string{"a.txt": "a\n", "d/b.txt": "b\n"})
	os.Symlink(victim, filepath.Join(repo, "link"))
	tgit(t, repo, "add", "link")
	tgit(t, repo, "commit", "-q", "-m", "link")
	w := prepare(t, repo)
	const uid, gid = 1001, 1001
	if err := w.Chown(context.Background(), uid, gid); err != nil {
		t.Fatalf("Chown: %v", err)
	}
	filepath.WalkDir(w.Copy, func(p string, d os.DirEntry, err error) error {
		fi, _ := d.Info()
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		return nil
	})
	var st syscall.Stat_t
	syscall.Stat(victim, &st)
	if st.Uid != 0 {
		t.Errorf("Chown followed the symlink: victim owned by %d", st.Uid)
	}
	c := snapshot(t, w)
	if len(c.Files) != 0 {
		t.Errorf("Snapshot after Chown = %+v, want no change", c.Files)
	}
}

// As root: prepare, hand the copy to an unprivileged uid, let that uid
// work in it with git (objects through alternates), snapshot as root.
func TestRootAgentAsOtherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u, err := user.Lookup("enclavetest")
	if err != nil {
		t.Skip("no enclavetest user")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	testEnv(t)
	base, err := os.MkdirTemp("", "enclave-ws-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	repo := filepath.Join(base, "repo")
	os.Mkdir(repo, 0o755)
	tgit(t, repo, "init", "-q")
	writeT(t, filepath.Join(repo, "a.txt"), "a\n")
	tgit(t, repo, "add", "-A")
	tgit(t, repo, "commit", "-q", "-m", "one")
	w, err := Prepare(context.Background(), PrepareOptions{Source: repo, Dir: filepath.Join(t.TempDir(), "s"), Session: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Chown(context.Background(), uid, gid); err != nil {
		t.Fatal(err)
	}
	if len(w.Warnings) != 0 {
		t.Errorf("Warnings = %q, want none (objects are world-readable)", w.Warnings)
	}
	// Chown needs the session dir traversable for this test's su only; in
	// enclave the sandbox mounts the copy directly.
	for d := w.Copy; d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o001)
		}
	}
	script := "cd " + w.Copy + " && export HOME=" + w.Copy + " GIT_CONFIG_NOSYSTEM=1 && git status --porcelain && echo agent > b.txt && git add -A && git -c user.name=a -c user.email=a@example.com commit -q -m agent && git log --oneline | wc -l"
	out, err := exec.Command("su", "enclavetest", "-s", "/bin/sh", "-c", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "2" {
		t.Fatalf("agent git as uid %d: %v\n%s", uid, err, out)
	}
	c := snapshot(t, w)
	if len(c.Files) != 1 || c.Files[0].Path != "b.txt" {
		t.Errorf("Files = %+v, want b.txt", c.Files)
	}
	// The user's objects are still root's and unchanged in count.
	fi, _ := os.Stat(filepath.Join(repo, ".git", "objects"))
	if fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Error("the user's objects directory changed owner")
	}
	// A repository only root can read gets a warning.
	os.Chmod(base, 0o700)
	w2, err := Prepare(context.Background(), PrepareOptions{Source: repo, Dir: filepath.Join(t.TempDir(), "s"), Session: "root2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Chown(context.Background(), uid, gid); err != nil {
		t.Fatal(err)
	}
	if len(w2.Warnings) != 1 || !strings.Contains(w2.Warnings[0], "cannot enter "+base) {
		t.Errorf("Warnings = %q, want one naming %s", w2.Warnings, base)
	}
}

// Checkpoints chain from Base, skip an unchanged tree, and leave the
// branch and the final snapshot alone.
func TestCheckpointChain(t *testing.T) {
	testEnv(t)
	repo := newRepo(t, map[string]string{"a.txt": "one\n"})
	w := prepare(t, repo)
	c1, err := w.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c1 != w.Base {
		t.Fatalf("first checkpoint of an unchanged copy = %s, want Base %s", c1, w.Base)
	}
	os.WriteFile(filepath.Join(w.Copy, "a.txt"), []byte("two\n"), 0o644)
	c2, err := w.Checkpoint(context.Background())
	if err != nil || c2 == w.Base {
		t.Fatalf("Checkpoint after a change = %s, %v", c2, err)
	}
	os.WriteFile(filepath.Join(w.Copy, "a.txt"), []byte("three\n"), 0o644)
	c3, err := w.Checkpoint(context.Background())
	if err != nil || c3 == c2 {
		t.Fatalf("Checkpoint after a second change = %s, %v", c3, err)
	}
	sh := w.shadow()
	if p := strings.TrimSpace(string(must(sh.git(context.Background(), "rev-parse", c3+"^")))); p != c2 {
		t.Errorf("parent of the third checkpoint = %s, want the second %s", p, c2)
	}
	ch, err := w.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p := strings.TrimSpace(string(must(sh.git(context.Background(), "rev-parse", ch.Head+"^")))); p != w.Base {
		t.Errorf("the final snapshot's parent = %s, want Base", p)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
