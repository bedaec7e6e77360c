package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// testEnv isolates every git the tests run (ours through userGit included)
// from the machine's configuration: a HOME with only an identity.
func testEnv(t testing.TB) {
	t.Helper()
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
}

// tgit runs git as a test (in the user's role), failing the test on error.
func tgit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeT(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readT(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// newRepo makes a user repository with one commit holding files.
func newRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tgit(t, dir, "init", "-q")
	for name, content := range files {
		writeT(t, filepath.Join(dir, name), content)
	}
	tgit(t, dir, "add", "-A")
	tgit(t, dir, "commit", "-q", "-m", "initial")
	return dir
}

func prepare(t testing.TB, src string, hidden ...string) *Workspace {
	t.Helper()
	w, err := Prepare(context.Background(), PrepareOptions{
		Source:  src,
		Dir:     filepath.Join(t.TempDir(), "sessions", "s1"),
		Session: "s1",
		Hidden:  hidden,
	})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return w
}

func snapshot(t testing.TB, w *Workspace) *Change {
	t.Helper()
	c, err := w.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return c
}

func filesByPath(c *Change) map[string]FileChange {
	m := map[string]FileChange{}
	for _, f := range c.Files {
		m[f.Path] = f
	}
	return m
}

// treeDigest hashes names, modes, link targets and contents of everything
// under dir (without following symlinks), to prove a tree did not change.
func treeDigest(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		io.WriteString(h, p+"\x00"+fi.Mode().String()+"\x00")
		h.Write([]byte{byte(st.Nlink)})
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			io.WriteString(h, target)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			io.Copy(h, f)
			f.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }
