//go:build linux

package sandbox

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

var initChoice = sync.OnceValue(func() InitChoice {
	self, err := os.Executable()
	if err != nil {
		return InitChoice{Reason: "cannot locate this executable: " + err.Error()}
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	mine, ok := debug.ReadBuildInfo()
	if !ok {
		return InitChoice{Reason: "this binary carries no build information"}
	}
	return chooseInit(filepath.Join(filepath.Dir(self), InitName), mine)
})

// Init reports which binary runs as the sandbox's init when Config.Exe is
// empty (enclave doctor prints it).
func Init() InitChoice {
	c := initChoice()
	c.file = nil
	return c
}

// chooseInit opens the helper at path and accepts it only if it is
// provably the same build as mine. A stale helper would be an old init
// applying old restrictions, so anything short of proof falls back to
// this binary, which is always right, only slower to start.
func chooseInit(path string, mine *debug.BuildInfo) InitChoice {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if os.IsNotExist(err) {
			return InitChoice{Reason: InitName + " is not installed beside this binary"}
		}
		return InitChoice{Reason: fmt.Sprintf("%s: %v", path, err)}
	}
	reject := func(why string) InitChoice {
		f.Close()
		return InitChoice{Reason: path + ": " + why}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return reject(err.Error())
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return reject("not a regular file")
	case st.Mode&0o022 != 0:
		return reject("writable by group or others")
	case st.Uid != 0 && st.Uid != uint32(os.Geteuid()):
		return reject(fmt.Sprintf("owned by uid %d, neither root nor this user", st.Uid))
	case st.Mode&0o001 == 0 && os.Geteuid() == 0:
		// As root the init runs as an unprivileged uid.
		return reject("not executable by others (as root the init runs as an unprivileged uid)")
	}
	theirs, err := buildinfo.Read(f)
	if err != nil {
		return reject("not a Go binary with build information: " + err.Error())
	}
	if why := sameBuild(mine, theirs); why != "" {
		return reject(why)
	}
	return InitChoice{Path: path, file: f}
}

// sameBuild returns "" when theirs is provably built from the same source
// as mine, else why not. Proof is the same module version, or the same
// unmodified VCS revision, with the same toolchain and build settings.
func sameBuild(mine, theirs *debug.BuildInfo) string {
	if theirs.Path != mine.Main.Path+"/cmd/"+InitName {
		return fmt.Sprintf("is %s, not %s", theirs.Path, mine.Main.Path+"/cmd/"+InitName)
	}
	if theirs.GoVersion != mine.GoVersion {
		return fmt.Sprintf("built with %s, this binary with %s", theirs.GoVersion, mine.GoVersion)
	}
	if theirs.Main.Path != mine.Main.Path || theirs.Main.Version != mine.Main.Version || theirs.Main.Sum != mine.Main.Sum {
		return fmt.Sprintf("module %s %s, this binary %s %s", theirs.Main.Path, theirs.Main.Version, mine.Main.Path, mine.Main.Version)
	}
	ms, ts := settings(mine), settings(theirs)
	if len(ms) != len(ts) {
		return "built with other settings"
	}
	for k, v := range ms {
		if ts[k] != v {
			return fmt.Sprintf("built with %s=%q, this binary with %q", k, ts[k], v)
		}
	}
	released := mine.Main.Version != "" && mine.Main.Version != "(devel)"
	if !released {
		switch {
		case ms["vcs.revision"] == "":
			return "neither binary records a version or VCS revision to prove they match"
		case ms["vcs.modified"] != "false":
			return "built from a modified work tree, so the same revision does not prove the same source"
		}
	}
	// The helper's dependencies are a subset of mine, at the same versions.
	have := make(map[string]string, len(mine.Deps))
	for _, d := range mine.Deps {
		have[d.Path] = d.Version + " " + d.Sum
	}
	for _, d := range theirs.Deps {
		if have[d.Path] != d.Version+" "+d.Sum {
			return fmt.Sprintf("built with %s %s, which this binary does not use at that version", d.Path, d.Version)
		}
	}
	return ""
}

func settings(b *debug.BuildInfo) map[string]string {
	m := make(map[string]string, len(b.Settings))
	for _, s := range b.Settings {
		m[s.Key] = s.Value
	}
	return m
}

// initExe returns the path to exec as the sandbox's init when cfg.Exe is
// empty, with n descriptors passed to the child (stdio and ExtraFiles),
// and a function to call once the child has started. The helper is
// executed through a descriptor opened and checked once (/proc/self/fd/N):
// what runs is the file that was checked, and as root the unprivileged
// init needs no search right on the directories above it. N is placed
// above the descriptors os/exec shuffles while it sets the child's up
// (it moves sources up from n, at most n+1 of them).
func initExe(n int) (string, func()) {
	c := initChoice()
	if c.file == nil {
		return "/proc/self/exe", func() {}
	}
	fd, err := unix.FcntlInt(c.file.Fd(), unix.F_DUPFD_CLOEXEC, 2*n+4)
	if err != nil {
		return "/proc/self/exe", func() {}
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }
}
