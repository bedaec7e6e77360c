// Package sandbox runs one command in a least-privilege Linux sandbox.
//
// A sandbox is the host side, an init (this binary re-executed through a
// hidden subcommand, see [MaybeRunInternal], or the smaller enclave-init
// from the same build, see [Init]) and the agent:
//
//   - the host side (the caller of [Start]) prepares inputs, writes limits
//     into cgroups when it can, relays a pty, enforces the wall-time limit
//     and records every execve of the agent through a seccomp user
//     notification listener;
//   - the init ("__sandbox-init", PID 1 of new user, mount, pid, net, ipc,
//     uts and cgroup namespaces) builds an allowlisted filesystem view on a
//     tmpfs, pivots into it, brings up loopback, creates the listeners the
//     caller asked for inside the network namespace and hands them out,
//     allocates the agent's pty from its own devpts instance when asked
//     (the master goes to the host over the control socket), starts the
//     agent, then reaps children and forwards signals. The init is
//     AgentUID (1000), the only uid mapped, holding the namespace's
//     capabilities as ambient ones;
//   - the agent is forked from an init thread that first joined a new
//     session keyring, set rlimits, dropped every capability, set
//     no_new_privs and applied Landlock and seccomp (all per-thread state,
//     inherited by the fork); it runs in a new session as the same uid
//     with no capability, and every descriptor but its stdio is closed.
//
// # Guarantees
//
// The agent sees only the system directories (/usr, /etc, /opt and the
// /bin, /lib, /sbin links) read-only, the caller's [Mount]s, a fresh HOME
// and /tmp (size-limited tmpfs), a new /proc and a minimal /dev; no host
// /sys, no host HOME. Its network namespace holds only loopback. Mounts
// cannot be undone because the agent has no capability in the user
// namespace that owns its mount namespace (nor anywhere else). When the host side runs as root
// the agent's files are owned by an unprivileged host uid ([HostUID]), never
// by host root.
//
// A layer the kernel lacks (Landlock, seccomp, cgroups when root) makes
// [Start] fail with a [*LayerError] unless [Config.Degrade] names it. User
// namespaces are never optional.
//
// # Limits of the guarantees
//
// The exec record is a record, not an enforcement point: the host reads the
// path and argv from the memory of a process that may have other threads,
// so a racing thread can make the recorded argv differ from what runs. Which
// programs may run is enforced by Landlock execute rights, noexec mounts of
// the writable places and seccomp ([Config.ExecAllow]).
// The sandbox shares the host kernel: a kernel bug reachable through the
// allowed system calls is out of scope.
package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Layer names, as used in [Config.Degrade], [LayerError] and [Report].
const (
	LayerUserNS   = "userns"
	LayerLandlock = "landlock"
	LayerSeccomp  = "seccomp"
	LayerCgroups  = "cgroups"
)

// MinLandlockABI is the lowest Landlock ABI the sandbox accepts without
// degradation: ABI 3 is the first that handles file truncation, so a
// read-only rule also stops O_TRUNC.
const MinLandlockABI = 3

// AgentUID and AgentGID are the agent's ids inside the sandbox.
const (
	AgentUID = 1000
	AgentGID = 1000
)

// ErrUnsupported is returned by [Start] where the sandbox cannot run at all
// (any OS but Linux).
var ErrUnsupported = errors.New("sandbox: not supported on this platform")

// ErrInvalidConfig is wrapped by every error [Start] returns for a bad
// [Config].
var ErrInvalidConfig = errors.New("invalid sandbox config")

// LayerError reports a protection layer that is required but unavailable.
type LayerError struct {
	Layer  string // one of the Layer constants
	Reason string // why it is unavailable, for a human
	Err    error  // the underlying error, if any
}

func (e *LayerError) Error() string {
	s := fmt.Sprintf("sandbox layer %s unavailable: %s", e.Layer, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Layer != LayerUserNS {
		s += fmt.Sprintf(" (allow running without it by degrading %q explicitly)", e.Layer)
	}
	return s
}

func (e *LayerError) Unwrap() error { return e.Err }

// Mount bind-mounts host Source at Target inside the sandbox.
type Mount struct {
	Source   string // absolute host path (file or directory)
	Target   string // absolute path inside the sandbox
	Writable bool   // read-write; otherwise read-only
}

// ListenSpec asks for a socket bound inside the sandbox's network namespace.
type ListenSpec struct {
	Network string // "tcp" or "udp"
	Addr    string // IP:port, e.g. "127.0.0.1:3128"
}

// Limits are resource limits; a zero field means no limit from the sandbox
// (the caller applies its own defaults).
type Limits struct {
	Memory    int64         // bytes (cgroup memory limit, else RLIMIT_DATA)
	Processes int           // tasks (cgroup pids.max, else RLIMIT_NPROC)
	CPUTime   time.Duration // RLIMIT_CPU, rounded up to whole seconds
	WallTime  time.Duration // the host kills the sandbox after this
	FileSize  int64         // RLIMIT_FSIZE, bytes
	OpenFiles int           // RLIMIT_NOFILE
	TmpSize   int64         // size of the /tmp and HOME tmpfs each; 0 means 1 GiB
}

// ExecEvent describes one execve or execveat inside the sandbox, read by
// the host before the call proceeds.
type ExecEvent struct {
	PID  int      // pid in the host's pid namespace
	Path string   // path argument as passed (relative to Cwd or a dir fd)
	Argv []string // argv, bounded (see [MaxArgs], [MaxArgBytes])
	Cwd  string   // working directory inside the sandbox
	// Truncated is true if Argv or Path was cut at a bound.
	Truncated bool
	Time      time.Time
}

// Bounds on what the exec record reads from a process's memory.
const (
	MaxArgs     = 1024    // argv entries
	MaxArgBytes = 1 << 16 // total bytes of argv strings
	MaxPathLen  = 4096    // bytes of the path argument
)

// Config describes one sandbox. Paths called "inside" are in the
// sandbox's view; Source paths are host paths.
type Config struct {
	Argv []string // the agent's command; Argv[0] is looked up in Env's PATH
	Dir  string   // inside working directory; "" means Home
	// Env is the complete environment of the agent, already allowlisted
	// by the caller. Nothing else of the host environment is passed.
	Env    []string
	Mounts []Mount // in addition to the system view
	// Home is the inside path of a fresh tmpfs HOME; "" means /home/agent.
	Home     string
	Hostname string // "" means "enclave"
	// Exe is the binary run as the sandbox's init. "" means enclave-init
	// beside this executable when it is provably the same build (see
	// Init), else this binary (/proc/self/exe). It must be built from
	// this package's source (its main calls MaybeRunInternal); tests and
	// benchmarks set it.
	Exe string
	// ExecAllow, when non-empty, lists the only inside paths beneath which
	// programs may be executed (Landlock execute right). The ELF
	// interpreter is added automatically. Scripts need both the script and
	// its interpreter to be allowed.
	//
	// Landlock checks execve only, so when ExecAllow is set the sandbox
	// also closes the routes around it: every writable place (/tmp, HOME,
	// /dev/shm, writable Mounts) is mounted noexec, so nothing written
	// there can run, not even through the dynamic loader, which maps a
	// program with mmap(PROT_EXEC) (a native library there, a Python
	// extension in a workspace venv or a node addon, cannot load either);
	// and seccomp refuses memfd_create and memfd_secret (ENOSYS) and
	// execveat with AT_EMPTY_PATH (EPERM), as a memfd is a file Landlock
	// does not check. An entry may therefore not lie in a writable place.
	// ExecAllow bounds which files run, not what code runs: an allowed
	// interpreter (python, node, sh) still runs whatever it is given.
	ExecAllow []string
	Limits    Limits
	Listeners []ListenSpec

	Stdin, Stdout, Stderr *os.File // nil means /dev/null
	// TTY gives the agent a pty as stdin, stdout, stderr and controlling
	// terminal. The pty comes from the sandbox's own devpts instance (so
	// its name, /dev/pts/N, resolves inside); the host relays Stdin and
	// Stdout through its master, puts Stdin in raw mode when it is a
	// terminal and forwards its window size, initially and on SIGWINCH.
	// Stderr is not used: the agent's stderr is the pty.
	TTY bool

	// Degrade lists layers allowed to be missing: LayerLandlock,
	// LayerSeccomp, LayerCgroups. Any other missing layer fails Start.
	Degrade []string
	// OnExec, if set, is called for every execve inside the sandbox before
	// the call proceeds. A non-nil error makes the execve fail with EPERM
	// (record, then run). It is called from one goroutine at a time.
	OnExec func(ExecEvent) error
	// Logger receives diagnostics of the host side and of the init; nil
	// discards them. It never receives the agent's output.
	Logger *slog.Logger
}

// Status says which protections a running sandbox actually has.
type Status struct {
	HostUID, HostGID int      // host ids owning the agent's files
	Landlock         int      // Landlock ABI enforced, 0 if degraded
	LandlockScoped   bool     // abstract unix sockets and signals scoped
	Seccomp          bool     // seccomp filter installed
	ExecRecord       bool     // execve user notification active
	Limits           string   // "cgroup-v1" or "rlimit"
	Degraded         []string // layers missing and allowed by Config.Degrade
}

var validDegrade = []string{LayerLandlock, LayerSeccomp, LayerCgroups}

// reservedTargets are inside paths the sandbox builds itself: a mount may
// not replace one. It may go beneath the system directories (a toolchain
// under /opt at its host path); there its mountpoint must already exist,
// as they are read-only. Nothing may be mounted beneath /proc, /dev or /sys.
var reservedTargets = []string{"/", "/proc", "/dev", "/sys", "/tmp", "/usr", "/etc", "/opt", "/bin", "/lib", "/lib64", "/sbin"}

var sealedTrees = []string{"/proc", "/dev", "/sys"}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return bad("Argv is empty: name the command to run")
	}
	for _, e := range c.Env {
		if !strings.Contains(e, "=") || strings.HasPrefix(e, "=") || strings.ContainsRune(e, 0) {
			return bad("Env entry %q is not NAME=value", e)
		}
	}
	insideAbs := func(field, p string) error {
		if !path.IsAbs(p) || path.Clean(p) != p || strings.ContainsRune(p, 0) {
			return bad("%s %q must be an absolute, clean inside path", field, p)
		}
		return nil
	}
	if c.Dir != "" {
		if err := insideAbs("Dir", c.Dir); err != nil {
			return err
		}
	}
	if c.Home != "" {
		if err := insideAbs("Home", c.Home); err != nil {
			return err
		}
		if c.Home == "/" || slices.ContainsFunc(reservedTargets[1:], func(r string) bool { return within(c.Home, r) }) {
			return bad("Home %q overlaps a system path", c.Home)
		}
	}
	for i, m := range c.Mounts {
		if !path.IsAbs(m.Source) || strings.ContainsRune(m.Source, 0) {
			return bad("Mounts[%d].Source %q must be an absolute host path", i, m.Source)
		}
		if err := insideAbs(fmt.Sprintf("Mounts[%d].Target", i), m.Target); err != nil {
			return err
		}
		if slices.Contains(reservedTargets, m.Target) || slices.ContainsFunc(sealedTrees, func(r string) bool { return within(m.Target, r) }) {
			return bad("Mounts[%d].Target %q replaces a path the sandbox builds (%s) or lies beneath /proc, /dev or /sys; mount elsewhere, e.g. /workspace", i, m.Target, strings.Join(reservedTargets, " "))
		}
		for j := range i {
			if c.Mounts[j].Target == m.Target {
				return bad("Mounts[%d].Target %q is also Mounts[%d].Target", i, m.Target, j)
			}
		}
	}
	for i, p := range c.ExecAllow {
		if err := insideAbs(fmt.Sprintf("ExecAllow[%d]", i), p); err != nil {
			return err
		}
		if w := c.writablePlace(p); w != "" {
			return bad("ExecAllow[%d] %q lies in the writable %s, which is mounted noexec when ExecAllow is set (the agent could write any program there); allow a read-only path", i, p, w)
		}
	}
	for i, l := range c.Listeners {
		if l.Network != "tcp" && l.Network != "udp" {
			return bad("Listeners[%d].Network %q must be \"tcp\" or \"udp\"", i, l.Network)
		}
		if _, err := netip.ParseAddrPort(l.Addr); err != nil {
			return bad("Listeners[%d].Addr %q must be IP:port: %v", i, l.Addr, err)
		}
	}
	for _, d := range c.Degrade {
		if !slices.Contains(validDegrade, d) {
			return bad("Degrade names %q; only %s may be degraded", d, strings.Join(validDegrade, ", "))
		}
	}
	if c.Hostname != "" && (len(c.Hostname) > 64 || strings.ContainsAny(c.Hostname, "/\x00 ")) {
		return bad("Hostname %q is not a valid host name", c.Hostname)
	}
	l := c.Limits
	if l.Memory < 0 || l.Processes < 0 || l.CPUTime < 0 || l.WallTime < 0 || l.FileSize < 0 || l.OpenFiles < 0 || l.TmpSize < 0 {
		return bad("Limits hold a negative value: %+v", l)
	}
	return nil
}

// writablePlace returns the writable place of the view (the /tmp, HOME
// and /dev/shm tmpfs, a writable Mount) whose mount holds the inside path
// p, or "" if p is on a read-only mount: the deepest mount wins, so a
// read-only Mount beneath /tmp is not writable.
func (c *Config) writablePlace(p string) string {
	best, writable := "/", false
	try := func(target string, w bool) {
		if within(p, target) && len(target) > len(best) {
			best, writable = target, w
		}
	}
	try(c.home(), true)
	try("/tmp", true)
	try("/dev/shm", true)
	for _, m := range c.Mounts {
		try(m.Target, m.Writable)
	}
	if !writable {
		return ""
	}
	return best
}

// within reports whether p is dir or beneath it.
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func (c *Config) degraded(layer string) bool { return slices.Contains(c.Degrade, layer) }

func (c *Config) home() string {
	if c.Home == "" {
		return "/home/agent"
	}
	return c.Home
}

func (c *Config) hostname() string {
	if c.Hostname == "" {
		return "enclave"
	}
	return c.Hostname
}

func (l Limits) tmpSize() int64 {
	if l.TmpSize == 0 {
		return 1 << 30
	}
	return l.TmpSize
}

// InitName is the file name of the small init binary (cmd/enclave-init)
// that enclave looks for beside its own executable. It holds only this
// package, so it starts in about 1.7 ms where the whole enclave binary,
// with every package of the CLI to initialise, takes 2.8 ms; every
// sandbox start pays that once.
const InitName = "enclave-init"

// InitChoice says which binary runs as the sandbox's init, and why.
type InitChoice struct {
	Path   string // the helper's path, or "" when this binary is used
	Reason string // why the helper is not used ("" when it is)
	file   *os.File
}
