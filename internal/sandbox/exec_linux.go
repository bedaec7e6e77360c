//go:build linux

package sandbox

// This file is the exec stage: the last code of ours before the agent.
// It runs in the sandbox's view as AgentUID in a nested user namespace,
// holding only CAP_SETPCAP (ambient), and removes everything else the
// agent could use to leave, then executes the agent on the same thread.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func runExec() int {
	// Credentials (capabilities, the session keyring) are per thread; the
	// execve below must come from the thread that changed them.
	runtime.LockOSThread()
	logf := os.NewFile(fdLog, "log")
	log := slog.New(slog.NewJSONHandler(logf, nil)).With("stage", "exec")
	fail := func(layer string, err error) int {
		log.Error("setup failed", "err", err)
		sendCtl(fdCtl, ctlMsg{Kind: "error", Layer: layer, Msg: err.Error()})
		return 125
	}
	var cfg execConfig
	err := json.NewDecoder(io.LimitReader(os.NewFile(fdConfig, "config"), 16<<20)).Decode(&cfg)
	unix.Close(fdConfig)
	if err != nil {
		return fail("", fmt.Errorf("read exec config: %w", err))
	}
	// Every descriptor but stdio closes at the agent's execve: the control
	// socket and log pipe stay usable until then.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fail("", fmt.Errorf("mark descriptors close-on-exec: %w", err))
	}
	var st Status
	degraded := func(layer string) bool { return slices.Contains(cfg.Degrade, layer) }

	if err := unix.Chdir(cfg.Dir); err != nil {
		return fail("", fmt.Errorf("enter working directory %s: %w", cfg.Dir, err))
	}
	// A fresh session keyring: nothing of the host user's keyrings.
	if _, err := unix.KeyctlJoinSessionKeyring("enclave"); err != nil {
		return fail("", fmt.Errorf("join a new session keyring: %w", err))
	}
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
		abi, scoped, err = applyLandlock(&cfg)
	}
	switch {
	case err == nil:
		st.Landlock, st.LandlockScoped = abi, scoped
	case degraded(LayerLandlock):
		log.Warn("running without landlock", "err", err)
		st.Degraded = append(st.Degraded, LayerLandlock)
	default:
		return fail(LayerLandlock, err)
	}

	path, err := lookPath(cfg.Argv[0], cfg.Env)
	if err != nil {
		return fail("", err)
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
		log.Warn("running without seccomp", "err", err)
		st.Degraded = append(st.Degraded, LayerSeccomp)
	default:
		return fail(LayerSeccomp, err)
	}
	if err := sendCtl(fdCtl, ctlMsg{Kind: "started", Status: st}); err != nil {
		return fail("", err)
	}
	err = syscall.Exec(path, cfg.Argv, cfg.Env)
	log.Error("exec agent", "path", path, "err", err)
	sendCtl(fdCtl, ctlMsg{Kind: "error", Msg: fmt.Sprintf("exec %s: %v", path, err)})
	if errors.Is(err, unix.ENOENT) {
		return 127
	}
	return 126
}

// lookPath resolves name against the PATH of the agent's environment.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
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
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v}); err != nil {
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
		// Counted per uid in the nested user namespace: the agent's
		// processes only.
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
	last := 63
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		fmt.Sscan(strings.TrimSpace(string(b)), &last)
	}
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
