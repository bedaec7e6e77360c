//go:build linux

package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSubIDs(t *testing.T) {
	got, err := parseSubIDs(strings.NewReader("# comment\nalice:100000:65536\n\nroot:300000:65536\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []subIDRange{{"alice", 100000, 65536}, {"root", 300000, 65536}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("parseSubIDs = %v, want %v", got, want)
	}
	for _, bad := range []string{"alice:1", "alice:x:1", "alice:1:0", "alice:-5:10"} {
		if _, err := parseSubIDs(strings.NewReader(bad)); err == nil {
			t.Errorf("parseSubIDs(%q) = nil error, want an error", bad)
		}
	}
}

func TestHostIDsNeverRoot(t *testing.T) {
	uid, gid, err := HostIDs()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && (uid == 0 || gid == 0) {
		t.Errorf("HostIDs() = %d, %d as root, want unprivileged ids", uid, gid)
	}
	if os.Geteuid() != 0 && uid != os.Getuid() {
		t.Errorf("HostIDs() uid = %d, want own uid %d", uid, os.Getuid())
	}
}

func TestChownTreeDoesNotFollowSymlinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another uid needs root")
	}
	outside := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(outside, []byte("x"), 0o644)
	outsideDir := t.TempDir()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a/b"), 0o755)
	os.WriteFile(filepath.Join(root, "a/b/f"), []byte("x"), 0o644)
	os.Symlink(outside, filepath.Join(root, "a/link-file"))
	os.Symlink(outsideDir, filepath.Join(root, "a/link-dir"))
	if err := ChownTree(root, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{root, filepath.Join(root, "a/b/f"), filepath.Join(root, "a/link-file")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscallStat)
		if st.Uid != 4242 || st.Gid != 4343 {
			t.Errorf("owner of %s = %d:%d, want 4242:4343", p, st.Uid, st.Gid)
		}
	}
	for _, p := range []string{outside, outsideDir} {
		fi, _ := os.Stat(p)
		if st := fi.Sys().(*syscallStat); st.Uid != 0 {
			t.Errorf("ChownTree followed a symlink: %s now owned by %d", p, st.Uid)
		}
	}
	if err := ChownTree(filepath.Join(root, "a/link-dir"), 1, 1); err == nil {
		t.Error("ChownTree on a symlink root = nil error, want refusal")
	}
}
