//go:build linux

package sandbox

import (
	"crypto/sha256"
	"debug/buildinfo"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// sources is this package's Go source, so that the host can prove a
// separately built init runs the same sandbox code.
//
//go:embed *.go
var sources embed.FS

// sourceID is a SHA-256 over this package's Go files but its tests, names
// and contents in name order (about 0.1 ms). Two binaries share it only if
// built from the same sandbox source; dependencies and the toolchain are
// compared from the helper's build information (sameBuild).
func sourceID() [32]byte {
	h := sha256.New()
	files, _ := sources.ReadDir(".")
	for _, f := range files {
		if strings.HasSuffix(f.Name(), "_test.go") {
			continue // embedded (no pattern leaves them out) but not the init's code
		}
		b, _ := sources.ReadFile(f.Name())
		h.Write(binary.AppendUvarint(nil, uint64(len(f.Name()))))
		h.Write([]byte(f.Name()))
		h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}

var hostSourceID = sync.OnceValue(sourceID)

// errInitMismatch is an init that is not from this build: its sandbox
// source differs, or it speaks another version of the protocol.
var errInitMismatch = errors.New("the sandbox init is from another build")

// rejectHelper stops using the helper for the rest of this process.
func rejectHelper(why string) {
	helperRejected.Store(&why)
}

var helperRejected atomic.Pointer[string]

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
	if why := helperRejected.Load(); why != nil && c.Path != "" {
		return InitChoice{Reason: *why}
	}
	return c
}

// chooseInit opens the helper at path and accepts it only if its build
// information matches mine (sameBuild). A stale helper would be an old
// init applying old restrictions, so anything short of a match falls
// back to this binary, which is always right, only slower to start.
func chooseInit(path string, mine *debug.BuildInfo) InitChoice {
	// O_NONBLOCK: a FIFO planted there must not hang enclave.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
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

// sameBuild returns "" when theirs can be the init of mine, else why
// not: the same toolchain, module version and build settings, and no
// dependency mine does not have at the same version. The sandbox source
// itself (which VCS stamps do not prove: a work tree may be modified, and
// many builds have no stamps) is proven by the init at each start, which
// compares its own sourceID with the host's before it does anything.
func sameBuild(mine, theirs *debug.BuildInfo) string {
	if want := mine.Main.Path + "/cmd/" + InitName; theirs.Path != want {
		return fmt.Sprintf("is %s, not %s", theirs.Path, want)
	}
	if theirs.GoVersion != mine.GoVersion {
		return fmt.Sprintf("built with %s, this binary with %s", theirs.GoVersion, mine.GoVersion)
	}
	if theirs.Main.Path != mine.Main.Path || theirs.Main.Version != mine.Main.Version || theirs.Main.Sum != mine.Main.Sum {
		return fmt.Sprintf("module %s %s, this binary %s %s", theirs.Main.Path, theirs.Main.Version, mine.Main.Path, mine.Main.Version)
	}
	ms, ts := settings(mine), settings(theirs)
	for k, v := range ms {
		if ts[k] != v {
			return fmt.Sprintf("built with %s=%q, this binary with %q", k, ts[k], v)
		}
	}
	for k, v := range ts {
		if _, ok := ms[k]; !ok {
			return fmt.Sprintf("built with %s=%q, this binary without it", k, v)
		}
	}
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

// settings are b's build settings but its VCS stamps.
func settings(b *debug.BuildInfo) map[string]string {
	m := make(map[string]string, len(b.Settings))
	for _, s := range b.Settings {
		if s.Key != "vcs" && !strings.HasPrefix(s.Key, "vcs.") {
			m[s.Key] = s.Value
		}
	}
	return m
}

const selfExe = "/proc/self/exe"

// useHelper reports whether sandboxes start with enclave-init.
func useHelper() bool {
	return initChoice().file != nil && helperRejected.Load() == nil
}

// helperExe returns the path to exec enclave-init by, for a child given n
// descriptors (stdio and ExtraFiles), and a function to call once the
// child has started. The helper is executed through the descriptor that
// was opened and checked once (/proc/self/fd/N): what runs is the file
// that was checked, and as root the unprivileged init needs no search
// right on the directories above it. N is placed above the descriptors
// os/exec shuffles while it sets the child's up (it moves sources up from
// n, at most n+1 of them).
func helperExe(n int) (string, func(), error) {
	fd, err := unix.FcntlInt(initChoice().file.Fd(), unix.F_DUPFD_CLOEXEC, 2*n+4)
	if err != nil {
		return "", nil, fmt.Errorf("duplicate the %s descriptor: %w", InitName, err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { unix.Close(fd) }, nil
}
