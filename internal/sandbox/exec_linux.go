//go:build linux

package sandbox

// This file starts the agent. The init does it from one OS thread that
// first takes on everything the agent must live with (no capabilities,
// no_new_privs, a fresh session keyring, Landlock, seccomp: all of them
// per-thread state) and then forks the agent, which inherits exactly that
// thread's credentials and filters. The init's other threads keep their
// capabilities, and the thread itself ends when its goroutine returns, so
// nothing of the init runs restricted for long, and no third process (and
// no second Go runtime start-up) stands between the init and the agent.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// agentStart is what startAgent reports back to the init's main thread.
type agentStart struct {
	pid    int
	status Status
	layer  string // a missing layer, with err
	err    error
	code   int // the init's exit code when err is set
}

// startAgent starts the agent on a fresh, locked OS thread (see the file
// comment) and returns its pid. stdio are the descriptors the agent gets
// as 0, 1 and 2; with tty set, stdio[0] is a pty slave that becomes its
// controlling terminal. It sends the "notify" control message itself,
// before the fork, so the host serves the agent's first execve.
func startAgent(cfg *execConfig, stdio []uintptr, tty bool, log func(string, ...any)) agentStart {
	ch := make(chan agentStart, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends
		// the thread and the agent's credentials with it.
		runtime.LockOSThread()
		ch <- agentThread(cfg, stdio, tty, log)
	}()
	return <-ch
}

func agentThread(cfg *execConfig, stdio []uintptr, tty bool, log func(string, ...any)) agentStart {
	fail := func(layer string, err error) agentStart {
		return agentStart{layer: layer, err: err, code: 125}
	}
	var st Status
	degraded := func(layer string) bool { return slices.Contains(cfg.Degrade, layer) }

	// A fresh session keyring: nothing of the host user's keyrings.
	if _, err := unix.KeyctlJoinSessionKeyring("enclave"); err != nil {
		return fail("", fmt.Errorf("join a new session keyring: %w", err))
	}
	// Resource limits belong to the process, not the thread: the init
	// takes them on too, which it can afford (it only reaps after this).
	if err := setRlimits(cfg.Limits, cfg.Rlimits); err != nil {
		return fail("", err)
	}
	if err := dropCapabilities(); err != nil {
		return fail("", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("", fmt.Errorf("set no_new_privs: %w", err))
	}
	abi, scoped, err := 0, false, errors.New("forced missing by the caller")
	if !slices.Contains(cfg.ForceMissing, LayerLandlock) {
		abi, scoped, err = applyLandlock(cfg)
	}
	switch {
	case err == nil:
		st.Landlock, st.LandlockScoped = abi, scoped
	case degraded(LayerLandlock):
		log("running without landlock", "err", err)
		st.Degraded = append(st.Degraded, LayerLandlock)
	default:
		return fail(LayerLandlock, err)
	}

	// Looked up with the agent's credentials and Landlock domain, in its
	// working directory.
	path, err := lookPath(cfg.Argv[0], cfg.Env, cfg.Dir)
	if err != nil {
		return agentStart{err: err, code: 127}
	}

	listener, err := -1, errors.New("forced missing by the caller")
	if !slices.Contains(cfg.ForceMissing, LayerSeccomp) {
		listener, err = installSeccomp(cfg.Notify, len(cfg.ExecAllow) > 0)
	}
	switch {
	case err == nil:
		st.Seccomp = true
		if listener >= 0 {
			st.ExecRecord = true
			err := sendCtl(fdCtl, ctlMsg{Kind: "notify"}, listener)
			unix.Close(listener)
			if err != nil {
				return fail("", err)
			}
		}
	case degraded(LayerSeccomp):
		log("running without seccomp", "err", err)
		st.Degraded = append(st.Degraded, LayerSeccomp)
	default:
		return fail(LayerSeccomp, err)
	}

	// syscall.ForkExec, not os/exec: os/exec forks a throwaway child once
	// per process to probe pidfd support. No Pdeathsig: it would fire when
	// this thread ends; the agent dies with the init anyway, as every
	// process of a pid namespace does with its PID 1.
	if st.ExecRecord {
		// The host reads the agent's first execve arguments from the
		// memory of the child it traps in, which is the init's until the
		// exec (a vfork). The init is not dumpable, so that memory would
		// be closed to an unprivileged host: open it for the fork only.
		// Nothing else is in the sandbox to look yet.
		unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
		defer unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	}
	pid, err := syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: stdio,
		Sys: &syscall.SysProcAttr{
			Setsid:  true, // a new session: no TIOCSTI into the caller's terminal
			Setctty: tty,
			Ctty:    0,
		},
	})
	if err != nil {
		code := 126
		if errors.Is(err, unix.ENOENT) {
			code = 127
		}
		return agentStart{err: fmt.Errorf("exec %s: %w", path, err), code: code}
	}
	return agentStart{pid: pid, status: st}
}

// lookPath resolves name against the PATH of the agent's environment; a
// name with a slash is taken as it is (relative to dir, where the agent
// starts).
func lookPath(name string, env []string, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return name, nil
	}
	pathEnv := "/usr/local/bin:/usr/bin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // a relative PATH entry would depend on the cwd
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH %s inside the sandbox", name, pathEnv)
}

func setRlimits(l Limits, memProcs bool) error {
	set := func(name string, res int, v uint64) error {
		// syscall.Setrlimit, so that ForkExec does not restore the
		// RLIMIT_NOFILE the Go runtime found at start-up in the agent.
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("set %s to %d: %w", name, v, err)
		}
		return nil
	}
	if l.CPUTime > 0 {
		secs := uint64((l.CPUTime + 999_999_999) / 1e9)
		if err := set("RLIMIT_CPU", unix.RLIMIT_CPU, secs); err != nil {
			return err
		}
	}
	if l.FileSize > 0 {
		if err := set("RLIMIT_FSIZE", unix.RLIMIT_FSIZE, uint64(l.FileSize)); err != nil {
			return err
		}
	}
	if l.OpenFiles > 0 {
		if err := set("RLIMIT_NOFILE", unix.RLIMIT_NOFILE, uint64(l.OpenFiles)); err != nil {
			return err
		}
	}
	// Not cgroups: RLIMIT_DATA, not RLIMIT_AS, because JavaScript runtimes
	// reserve far more address space than they use.
	if memProcs && l.Memory > 0 {
		if err := set("RLIMIT_DATA", unix.RLIMIT_DATA, uint64(l.Memory)); err != nil {
			return err
		}
	}
	if memProcs && l.Processes > 0 {
		// Counted per uid in the sandbox's user namespace: the agent's
		// processes and the init's few threads.
		if err := set("RLIMIT_NPROC", unix.RLIMIT_NPROC, uint64(l.Processes)); err != nil {
			return err
		}
	}
	// No core dumps: they would write the agent's memory into its cwd.
	return set("RLIMIT_CORE", unix.RLIMIT_CORE, 0)
}

// dropCapabilities empties the bounding, ambient, inheritable, permitted
// and effective sets of this thread (the one that will exec).
func dropCapabilities() error {
	// Unknown numbers fail with EINVAL: with no answer from /proc, try all.
	last := lastCap(63)
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear capabilities: %w", err)
	}
	return nil
}
