//go:build linux

package sandbox

import (
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// helperBinary is a real enclave-init of this source: $ENCLAVE_TEST_INIT
// (.ci/run builds one for the run as an ordinary user, who has no Go
// toolchain), else built here.
func helperBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ENCLAVE_TEST_INIT"); p != "" {
		return p
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build enclave-init, and ENCLAVE_TEST_INIT is not set")
	}
	dir := t.TempDir() // 0700: as root the init reaches it only through the descriptor
	out := filepath.Join(dir, InitName)
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/enclave-init")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build enclave-init: %v\n%s", err, b)
	}
	return out
}

// useTestHelper makes path this process's init binary, as if this test
// binary were the enclave binary of the same build.
func useTestHelper(t *testing.T, path string) {
	t.Helper()
	theirs, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mine := *theirs
	mine.Path = mine.Main.Path + "/cmd/enclave"
	c := chooseInit(path, &mine)
	if c.file == nil {
		t.Fatalf("chooseInit(%s) refused a helper of the same build: %s", path, c.Reason)
	}
	old := initChoice
	initChoice = func() InitChoice { return c }
	t.Cleanup(func() {
		initChoice = old
		helperRejected.Store(nil)
		c.file.Close()
	})
}

// initExePath is what the sandbox's init runs, read from outside.
func initExePath(t *testing.T, s *Sandbox) string {
	t.Helper()
	p, err := os.Readlink("/proc/" + strconv.Itoa(s.Pid()) + "/exe")
	if err != nil {
		t.Fatalf("read the init's executable: %v", err)
	}
	return p
}

func TestHelperInitRunsTheSandbox(t *testing.T) {
	requireSandbox(t)
	helper := helperBinary(t)
	useTestHelper(t, helper)
	e := newEnv(t, `read line; echo "$line" > /work/out; touch /etc/owned 2>/dev/null; exit 0`)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e.cfg.Stdin = r
	s, err := e.start()
	if err != nil {
		t.Fatalf("start with %s: %v\nlog:\n%s", helper, err, e.logs)
	}
	if got := initExePath(t, s); got != helper {
		t.Errorf("the init runs %s, want the helper %s", got, helper)
	}
	st := s.Status()
	if st.Landlock == 0 || !st.Seccomp {
		t.Errorf("status with the helper: landlock %v seccomp %v, want both", st.Landlock, st.Seccomp)
	}
	w.Write([]byte("hello\n"))
	w.Close()
	if code, err := s.Wait(); err != nil || code != 0 {
		t.Fatalf("agent: code %d, err %v\nlog:\n%s", code, err, e.logs)
	}
	if got := e.read("out"); got != "hello\n" {
		t.Errorf("agent wrote %q, want hello", got)
	}
	if _, err := os.Stat("/etc/owned"); err == nil {
		os.Remove("/etc/owned")
		t.Error("the agent wrote /etc under the helper init")
	}
	if c := Init(); c.Path != helper || c.Reason != "" {
		t.Errorf("Init() = %+v, want the helper with no reason", c)
	}
}

func TestStaleHelperInitFallsBack(t *testing.T) {
	requireSandbox(t)
	helper := helperBinary(t)
	useTestHelper(t, helper)
	// The host's sandbox code differs from the helper's: as if
	// enclave were rebuilt and an old enclave-init left beside it.
	old := hostSourceID
	hostSourceID = func() [32]byte { return [32]byte{1, 2, 3} }
	t.Cleanup(func() { hostSourceID = old })

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		e := newEnv(t, `sleep 0.2; echo ran > /work/out`)
		s, err := e.start()
		if err != nil {
			t.Fatalf("start %d: %v\nlog:\n%s", i, err, e.logs)
		}
		if got := initExePath(t, s); got != self {
			t.Errorf("start %d: the init runs %s, want this binary %s", i, got, self)
		}
		if code, err := s.Wait(); err != nil || code != 0 || e.read("out") != "ran\n" {
			t.Fatalf("start %d: code %d, err %v, out %q", i, code, err, e.read("out"))
		}
	}
	c := Init()
	if c.Path != "" || !strings.Contains(c.Reason, "sandbox source differs") || !strings.HasPrefix(c.Reason, helper+": ") {
		t.Errorf("Init() = %+v, want no helper and the source mismatch as the reason", c)
	}
}

func TestChooseInitRefuses(t *testing.T) {
	helper := helperBinary(t)
	info, err := buildinfo.ReadFile(helper)
	if err != nil {
		t.Fatal(err)
	}
	mine := *info
	mine.Path = mine.Main.Path + "/cmd/enclave"
	dir := t.TempDir()
	copyTo := func(name string, mode os.FileMode) string {
		b, err := os.ReadFile(helper)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	self, _ := os.Executable()
	link := filepath.Join(dir, "link")
	os.Symlink(helper, link)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "absent"), "not installed"},
		{"directory", dir, "not a regular file"},
		{"fifo", fifo, "not a regular file"},
		{"symlink", link, "symbolic link"},
		{"group writable", copyTo("gw", 0o775), "writable by group or others"},
		{"another program", self, "is github.com/enclave-dev/enclave/internal/sandbox.test"},
		{"not Go", "/bin/true", "not a Go binary"},
	}
	if os.Geteuid() == 0 {
		// Root trusts only its own files: one another user could have
		// written is refused, though its mode is right.
		other := copyTo("other", 0o755)
		if err := os.Chown(other, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ name, path, want string }{"another owner", other, "owned by uid 1000"},
			struct{ name, path, want string }{"not executable by others", copyTo("private", 0o700), "not executable by others"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := chooseInit(tc.path, &mine)
			if c.file != nil {
				c.file.Close()
				t.Fatalf("chooseInit(%s) accepted it", tc.path)
			}
			if !strings.Contains(c.Reason, tc.want) {
				t.Errorf("reason %q, want it to mention %q", c.Reason, tc.want)
			}
		})
	}
}

func TestSameBuild(t *testing.T) {
	base := func() (*debug.BuildInfo, *debug.BuildInfo) {
		mk := func(path string) *debug.BuildInfo {
			return &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Path:      path,
				Main:      debug.Module{Path: "example.com/enclave", Version: "(devel)"},
				Deps:      []*debug.Module{{Path: "golang.org/x/sys", Version: "v0.30.0", Sum: "h1:x"}},
				Settings: []debug.BuildSetting{{Key: "CGO_ENABLED", Value: "0"}, {Key: "vcs.revision", Value: "abc"},
					{Key: "vcs.modified", Value: "false"}},
			}
		}
		mine := mk("example.com/enclave/cmd/enclave")
		mine.Deps = append(mine.Deps, &debug.Module{Path: "modernc.org/sqlite", Version: "v1.0.0"})
		return mine, mk("example.com/enclave/cmd/enclave-init")
	}
	for _, tc := range []struct {
		name   string
		change func(mine, theirs *debug.BuildInfo)
		want   string
	}{
		{"same", func(m, t *debug.BuildInfo) {}, ""},
		{"no vcs, devel", func(m, t *debug.BuildInfo) { m.Settings, t.Settings = nil, nil }, ""},
		{"released, no vcs", func(m, t *debug.BuildInfo) {
			m.Settings, t.Settings, m.Main.Version, t.Main.Version = nil, nil, "v1.2.3", "v1.2.3"
		}, ""},
		{"other program", func(m, t *debug.BuildInfo) { t.Path = "example.com/other" }, "not example.com/enclave/cmd/enclave-init"},
		{"toolchain", func(m, t *debug.BuildInfo) { t.GoVersion = "go1.26.7" }, "built with go1.26.7"},
		{"version", func(m, t *debug.BuildInfo) { m.Main.Version, t.Main.Version = "v1.2.4", "v1.2.3" }, "module example.com/enclave v1.2.3"},
		{"setting", func(m, t *debug.BuildInfo) { t.Settings[0].Value = "1" }, `CGO_ENABLED="1"`},
		// The sandbox source itself is proven by the init (sourceID).
		{"revision", func(m, t *debug.BuildInfo) { t.Settings[1].Value = "def" }, ""},
		{"dependency", func(m, t *debug.BuildInfo) { t.Deps[0].Version = "v0.29.0" }, "golang.org/x/sys v0.29.0"},
		{"extra dependency", func(m, t *debug.BuildInfo) {
			t.Deps = append(t.Deps, &debug.Module{Path: "example.com/evil", Version: "v1"})
		}, "example.com/evil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mine, theirs := base()
			tc.change(mine, theirs)
			got := sameBuild(mine, theirs)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("sameBuild = %q, want %q", got, tc.want)
			}
		})
	}
}
