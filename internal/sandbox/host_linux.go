//go:build linux

package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// forceMissing lets tests make the agent's start treat layers as missing.
var forceMissing []string

// ErrWallTime is returned by [Sandbox.Wait] when the sandbox was killed
// because Limits.WallTime passed.
var ErrWallTime = errors.New("sandbox killed: wall time limit exceeded")

// Sandbox is a running sandbox.
type Sandbox struct {
	cfg    *Config
	log    *slog.Logger
	cmd    *exec.Cmd
	status Status

	listeners []net.Listener
	packets   []net.PacketConn

	cg      *cgroup
	notifFD int
	notifWG sync.WaitGroup
	ioWG    sync.WaitGroup // log reader, pty output relay

	pty         *os.File // host side of the pty, nil without TTY
	restoreTerm func()
	stopWinch   func()

	mu         sync.Mutex
	killReason error // why the host killed the sandbox, if it did
	exited     chan struct{}
	stopCtx    func() bool

	waitOnce sync.Once
	code     int
	waitErr  error
}

// Start starts the sandbox and returns once the agent is about to execute
// (its first execve has been recorded if OnExec is set). Setup failures,
// including a missing required layer ([*LayerError]), are returned here.
// Cancelling ctx kills the sandbox.
func Start(ctx context.Context, cfg *Config) (*Sandbox, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	helper := cfg.Exe == "" && useHelper()
	s, err := start(ctx, cfg, helper)
	if helper && errors.Is(err, errInitMismatch) {
		// A stale enclave-init: never again in this process, and this
		// sandbox starts with this binary, which is always right.
		rejectHelper(initChoice().Path + ": " + err.Error())
		s, err = start(ctx, cfg, false)
	}
	return s, err
}

func start(ctx context.Context, cfg *Config, helper bool) (_ *Sandbox, err error) {
	s := &Sandbox{cfg: cfg, log: cfg.Logger, notifFD: -1, exited: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	root := os.Geteuid() == 0
	uid, gid := os.Getuid(), os.Getgid()
	if root {
		if uid, gid, err = HostIDs(); err != nil {
			return nil, err
		}
	}
	s.status.HostUID, s.status.HostGID = uid, gid
	// An init other than this very binary proves it runs this build's
	// sandbox code; the host's sourceID (once per process) is taken
	// while the init starts.
	proveSource := helper || cfg.Exe != ""
	srcID := make(chan [32]byte, 1)
	if proveSource {
		go func() { srcID <- hostSourceID() }()
	}

	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()

	specs, err := viewSpecs(cfg)
	if err != nil {
		return nil, err
	}
	var trees []*os.File
	if root {
		// The init runs as an unprivileged host uid and could not reach
		// sources below a 0700 directory, so root prepares detached mount
		// trees here and the init only moves them into place.
		for i := range specs {
			if specs[i].Symlink != "" {
				continue
			}
			fd, terr := openTree(specs[i])
			if terr != nil {
				closeFiles(trees)
				return nil, terr
			}
			specs[i].Tree = fdTrees + len(trees)
			trees = append(trees, os.NewFile(uintptr(fd), "tree:"+specs[i].Source))
		}
		cleanups = append(cleanups, func() { closeFiles(trees) })
	}

	exe := cfg.Exe
	switch {
	case helper:
		var release func()
		if exe, release, err = helperExe(fdTrees + len(trees)); err != nil {
			return nil, err
		}
		defer release()
	case exe == "":
		exe = selfExe
	}
	ic := initConfig{
		Mounts:    specs,
		Home:      cfg.home(),
		TmpSize:   cfg.Limits.tmpSize(),
		Hostname:  cfg.hostname(),
		Listeners: cfg.Listeners,
		NoExec:    len(cfg.ExecAllow) > 0,
		Exec: execConfig{
			Argv: cfg.Argv, Dir: cfg.Dir, Env: cfg.Env,
			ExecAllow:    cfg.ExecAllow,
			Limits:       cfg.Limits,
			Notify:       cfg.OnExec != nil,
			TTY:          cfg.TTY,
			Degrade:      cfg.Degrade,
			ForceMissing: forceMissing,
		},
	}
	if ic.Exec.Dir == "" {
		ic.Exec.Dir = ic.Home
	}
	ic.Exec.RO, ic.Exec.RW = landlockPaths(specs, ic.Home)

	// Limits: cgroup v1 memory and pids when root, otherwise rlimits.
	s.status.Limits = "rlimit"
	ic.Exec.Rlimits = true
	if root && (cfg.Limits.Memory > 0 || cfg.Limits.Processes > 0) {
		cg, cerr := newCgroup(cfg.Limits)
		switch {
		case cerr == nil:
			s.cg = cg
			s.status.Limits = "cgroup-v1"
			ic.Exec.Rlimits = false
			cleanups = append(cleanups, func() { cg.remove() })
		case cfg.degraded(LayerCgroups):
			s.status.Degraded = append(s.status.Degraded, LayerCgroups)
			s.log.Warn("cgroups unavailable, falling back to rlimits", "err", cerr)
		default:
			return nil, &LayerError{Layer: LayerCgroups, Reason: "cannot create memory and pids cgroups as root", Err: cerr}
		}
	}

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create config pipe: %w", err)
	}
	cleanups = append(cleanups, func() { cfgR.Close(); cfgW.Close() })
	logR, logW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create log pipe: %w", err)
	}
	cleanups = append(cleanups, func() { logR.Close(); logW.Close() })
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create control socket: %w", err)
	}
	ctlHost, ctlChild := pair[0], os.NewFile(uintptr(pair[1]), "ctl")
	cleanups = append(cleanups, func() { unix.Close(ctlHost); ctlChild.Close() })

	stdin, stdout, stderr := cfg.Stdin, cfg.Stdout, cfg.Stderr
	if cfg.TTY {
		// The init allocates the pty inside and sends the master back; it
		// never touches the caller's stdio itself.
		stdin, stdout, stderr = nil, nil, nil
		if cfg.Stdin != nil && term.IsTerminal(int(cfg.Stdin.Fd())) {
			if w, h, err := term.GetSize(int(cfg.Stdin.Fd())); err == nil && w > 0 && h > 0 && w <= 0xffff && h <= 0xffff {
				ic.Rows, ic.Cols = uint16(h), uint16(w)
			}
		}
	}

	cmd := &exec.Cmd{
		Path:   exe,
		Args:   []string{"enclave", argInit},
		Env:    []string{}, // PID 1's environ is readable in principle: keep it empty
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: stderr,
	}
	cmd.ExtraFiles = append([]*os.File{cfgR, ctlChild, logW}, trees...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWCGROUP,
		// One id is mapped, the agent's: the init runs as AgentUID too,
		// with the namespace's capabilities kept across its exec as
		// ambient ones, and the agent, forked from a thread that dropped
		// them, is the same uid without any. Nothing inside is uid 0.
		UidMappings: []syscall.SysProcIDMap{{ContainerID: AgentUID, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: AgentGID, HostID: gid, Size: 1}},
		// Switch to the mapped id so the init's host uid is the mapped one
		// (as root: the unprivileged HostIDs, not root).
		Credential:  &syscall.Credential{Uid: AgentUID, Gid: AgentGID, NoSetGroups: !root},
		AmbientCaps: allCaps(),
		// Root may keep setgroups allowed and so can clear root's
		// supplementary groups; an unprivileged mapper must deny it.
		GidMappingsEnableSetgroups: root,
		Pdeathsig:                  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EACCES) {
			return nil, &LayerError{Layer: LayerUserNS, Reason: "cannot create the sandbox namespaces (are unprivileged user namespaces enabled?)", Err: err}
		}
		return nil, fmt.Errorf("start sandbox init: %w", err)
	}
	s.cmd = cmd
	go func() {
		// The only place that reaps the init; everything else waits on
		// s.exited.
		cmd.Wait()
		close(s.exited)
	}()
	cleanups = append(cleanups, func() { cmd.Process.Kill(); <-s.exited })
	cfgR.Close()
	ctlChild.Close()
	logW.Close()
	closeFiles(trees)

	s.ioWG.Add(1)
	go s.relayLog(logR)

	ic.WaitCgroup = s.cg != nil
	if proveSource {
		ic.Source = <-srcID
	}
	if _, err := cfgW.Write(marshalInit(&ic)); err != nil {
		return nil, fmt.Errorf("send config to sandbox init: %w", err)
	}
	cfgW.Close()
	// Moving a task into a cgroup v1 waits for an RCU grace period
	// (about 5 ms here): it runs while the init builds the view, and the
	// init starts the agent only once told it has joined.
	var cgErr chan error
	if s.cg != nil {
		cgErr = make(chan error, 1)
		go func() {
			err := s.cg.add(cmd.Process.Pid)
			if err == nil {
				err = sendCtl(ctlHost, ctlMsg{Kind: "cgroup"})
			} else {
				s.kill(err) // the init never starts the agent
			}
			cgErr <- err
		}()
	}

	// Kill the sandbox if ctx ends, during Start and after.
	s.stopCtx = context.AfterFunc(ctx, func() { s.kill(ctx.Err()) })
	cleanups = append(cleanups, func() { s.stopCtx() })

	cleanups = append(cleanups, func() {
		if s.stopWinch != nil {
			s.stopWinch()
		}
		if s.restoreTerm != nil {
			s.restoreTerm()
		}
		if s.pty != nil {
			s.pty.Close()
		}
	})
	herr := s.handshake(ctlHost)
	if cgErr != nil {
		if err := <-cgErr; err != nil {
			return nil, &LayerError{Layer: LayerCgroups, Reason: "cannot move the sandbox into its cgroup", Err: err}
		}
	}
	if herr != nil {
		return nil, herr
	}
	unix.Close(ctlHost)

	if d := cfg.Limits.WallTime; d > 0 {
		t := time.AfterFunc(d, func() { s.kill(ErrWallTime) })
		go func() { <-s.exited; t.Stop() }()
	}
	return s, nil
}

// handshake reads control messages until the init has started the agent
// (the socket reaches EOF when the init, its last holder, closes it or
// exits).
func (s *Sandbox) handshake(ctl int) error {
	started := false
	for {
		m, fds, ok, err := recvCtl(ctl, max(len(s.cfg.Listeners), 1))
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch m.Kind {
		case "listeners":
			if err := s.adoptListeners(fds); err != nil {
				return err
			}
		case "pty":
			if err := s.adoptPTY(fds); err != nil {
				return err
			}
			// Relay, raw mode and resizing start before the agent runs:
			// nothing it reads or writes passes a cooked host terminal.
			s.startTTY()
		case "notify":
			if len(fds) != 1 {
				closeAll(fds)
				return fmt.Errorf("sandbox sent %d seccomp listeners, want 1", len(fds))
			}
			s.notifFD = fds[0]
			s.notifWG.Add(1)
			go s.notifyLoop(fds[0])
		case "started":
			closeAll(fds)
			started = true
			st := m.Status
			s.status.Landlock, s.status.LandlockScoped = st.Landlock, st.LandlockScoped
			s.status.Seccomp, s.status.ExecRecord = st.Seccomp, st.ExecRecord
			s.status.Degraded = append(s.status.Degraded, st.Degraded...)
		case "mismatch":
			closeAll(fds)
			return fmt.Errorf("%w: %s", errInitMismatch, m.Msg)
		case "error":
			closeAll(fds)
			if m.Layer != "" {
				return &LayerError{Layer: m.Layer, Reason: m.Msg}
			}
			return fmt.Errorf("sandbox setup: %s", m.Msg)
		default:
			closeAll(fds)
			return fmt.Errorf("sandbox sent unknown control message %q", m.Kind)
		}
	}
	if started && s.cfg.TTY && s.pty == nil {
		return fmt.Errorf("sandbox started the agent without sending its pty")
	}
	if !started {
		<-s.exited
		if r := s.reason(); r != nil {
			return fmt.Errorf("sandbox setup interrupted: %w", r)
		}
		return fmt.Errorf("sandbox init exited during setup (%v); see the log for its reason", s.cmd.ProcessState)
	}
	return nil
}

// adoptPTY takes the master of the pty the init allocated from the
// sandbox's devpts; it must be exactly one pty master, sent once, and only
// when a terminal was asked for.
func (s *Sandbox) adoptPTY(fds []int) error {
	if !s.cfg.TTY || s.pty != nil || len(fds) != 1 {
		closeAll(fds)
		return fmt.Errorf("sandbox sent an unexpected pty (%d descriptors, TTY %v, already have one %v)", len(fds), s.cfg.TTY, s.pty != nil)
	}
	// TIOCGPTN succeeds only on a pty master.
	if _, err := unix.IoctlGetUint32(fds[0], unix.TIOCGPTN); err != nil {
		closeAll(fds)
		return fmt.Errorf("sandbox sent a pty master that is not one: %w", err)
	}
	s.pty = os.NewFile(uintptr(fds[0]), "pty-master")
	return nil
}

func (s *Sandbox) adoptListeners(fds []int) error {
	if len(fds) != len(s.cfg.Listeners) {
		closeAll(fds)
		return fmt.Errorf("sandbox sent %d listeners, want %d", len(fds), len(s.cfg.Listeners))
	}
	s.listeners = make([]net.Listener, len(fds))
	s.packets = make([]net.PacketConn, len(fds))
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "sandbox-listener")
		var err error
		switch s.cfg.Listeners[i].Network {
		case "tcp":
			s.listeners[i], err = net.FileListener(f)
		case "udp":
			s.packets[i], err = net.FilePacketConn(f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("wrap sandbox listener %d (%s %s): %w", i, s.cfg.Listeners[i].Network, s.cfg.Listeners[i].Addr, err)
		}
	}
	return nil
}

// Listener returns the TCP listener for Config.Listeners[i], bound inside
// the sandbox's network namespace; nil if that entry is not TCP. Wait
// closes it.
func (s *Sandbox) Listener(i int) net.Listener {
	if i < 0 || i >= len(s.listeners) {
		return nil
	}
	return s.listeners[i]
}

// PacketConn returns the UDP socket for Config.Listeners[i]; nil if that
// entry is not UDP. Wait closes it.
func (s *Sandbox) PacketConn(i int) net.PacketConn {
	if i < 0 || i >= len(s.packets) {
		return nil
	}
	return s.packets[i]
}

// Status reports the protections in force.
func (s *Sandbox) Status() Status { return s.status }

// Pid returns the host pid of the sandbox init (PID 1 inside).
func (s *Sandbox) Pid() int { return s.cmd.Process.Pid }

// Signal sends sig to the agent (through the init, which forwards SIGINT,
// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH). SIGKILL kills
// the whole sandbox.
func (s *Sandbox) Signal(sig os.Signal) error {
	select {
	case <-s.exited:
		return os.ErrProcessDone
	default:
	}
	return s.cmd.Process.Signal(sig)
}

// kill ends the whole sandbox: SIGKILL to PID 1 of its pid namespace
// takes every process inside with it.
func (s *Sandbox) kill(reason error) {
	s.mu.Lock()
	if s.killReason == nil {
		s.killReason = reason
	}
	s.mu.Unlock()
	s.cmd.Process.Signal(syscall.SIGKILL)
}

func (s *Sandbox) reason() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killReason
}

// Wait waits for the agent to exit and returns its exit code (128+signal
// if a signal ended it). err is non-nil if the host ended the sandbox
// (ErrWallTime, the context's error) or the result is unknown. Wait
// closes the listeners and releases cgroups; it may be called more than
// once.
func (s *Sandbox) Wait() (exitCode int, err error) {
	s.waitOnce.Do(func() { s.code, s.waitErr = s.wait() })
	return s.code, s.waitErr
}

func (s *Sandbox) wait() (int, error) {
	<-s.exited
	s.stopCtx()
	st := s.cmd.ProcessState
	code := -1
	if ws, ok := st.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Exited():
			code = ws.ExitStatus()
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		}
	}
	// The seccomp listener reports POLLHUP once the last filtered task
	// is gone; the init is dead so that is now.
	s.notifWG.Wait()
	if s.notifFD >= 0 {
		unix.Close(s.notifFD)
	}
	if s.stopWinch != nil {
		s.stopWinch()
	}
	s.ioWG.Wait()
	if s.restoreTerm != nil {
		s.restoreTerm()
	}
	if s.pty != nil {
		s.pty.Close()
	}
	for _, l := range s.listeners {
		if l != nil {
			l.Close()
		}
	}
	for _, p := range s.packets {
		if p != nil {
			p.Close()
		}
	}
	var err error
	if s.cg != nil {
		if cerr := s.cg.remove(); cerr != nil {
			s.log.Warn("remove sandbox cgroup", "err", cerr)
		}
	}
	if r := s.reason(); r != nil {
		err = r
	} else if code < 0 {
		err = fmt.Errorf("sandbox init ended with unknown status %v", st)
	}
	return code, err
}

// relayLog copies the init's JSON log lines into the caller's logger.
func (s *Sandbox) relayLog(r *os.File) {
	defer s.ioWG.Done()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			s.log.Warn("sandbox init wrote a malformed log line", "len", len(sc.Bytes()))
			continue
		}
		msg, _ := rec["msg"].(string)
		var level slog.Level
		if lv, ok := rec["level"].(string); ok {
			level.UnmarshalText([]byte(lv))
		}
		attrs := []any{"component", "sandbox-init"}
		for k, v := range rec {
			if k != "msg" && k != "level" && k != "time" {
				attrs = append(attrs, k, v)
			}
		}
		s.log.Log(context.Background(), level, msg, attrs...)
	}
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// startTTY relays between the caller's stdio and the pty and forwards
// window size changes.
func (s *Sandbox) startTTY() {
	in, out := s.cfg.Stdin, s.cfg.Stdout
	if in != nil && term.IsTerminal(int(in.Fd())) {
		if st, err := term.MakeRaw(int(in.Fd())); err == nil {
			s.restoreTerm = func() { term.Restore(int(in.Fd()), st) }
		}
		resize := func() {
			if w, h, err := term.GetSize(int(in.Fd())); err == nil {
				unix.IoctlSetWinsize(int(s.pty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(h), Col: uint16(w)})
			}
		}
		resize()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGWINCH)
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-ch:
					resize()
				case <-done:
					return
				}
			}
		}()
		s.stopWinch = func() { signal.Stop(ch); close(done) }
	}
	if in != nil {
		// Not waited for: a read on the caller's stdin cannot be
		// interrupted portably; it ends at the next input or EOF.
		go io.Copy(s.pty, in)
	}
	if out != nil {
		s.ioWG.Add(1)
		go func() {
			defer s.ioWG.Done()
			io.Copy(out, s.pty) // ends with EIO when the last slave closes
		}()
	}
}

// viewSpecs lists the mounts of the sandbox's view in order: system
// directories, device nodes, then the caller's mounts.
func viewSpecs(cfg *Config) ([]mountSpec, error) {
	var specs []mountSpec
	for _, p := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"} {
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inspect system path %s: %w", p, err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return nil, fmt.Errorf("read system link %s: %w", p, err)
			}
			specs = append(specs, mountSpec{Target: p, Symlink: t, Tree: -1})
		case fi.IsDir():
			specs = append(specs, mountSpec{Source: p, Target: p, Tree: -1})
		}
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := "/dev/" + d
		if _, err := os.Stat(p); err != nil {
			if d == "tty" {
				continue
			}
			return nil, fmt.Errorf("inspect device %s: %w", p, err)
		}
		specs = append(specs, mountSpec{Source: p, Target: p, Writable: true, Dev: true, File: true, Tree: -1})
	}
	for i, m := range cfg.Mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil, fmt.Errorf("%w: Mounts[%d].Source: %w", ErrInvalidConfig, i, err)
		}
		specs = append(specs, mountSpec{
			Source: filepath.Clean(m.Source), Target: m.Target, Writable: m.Writable, File: !fi.IsDir(), Tree: -1,
			NoExec: m.Writable && len(cfg.ExecAllow) > 0,
		})
	}
	return specs, nil
}

// landlockPaths splits the view into read-only and read-write inside
// paths for the agent's Landlock rules.
func landlockPaths(specs []mountSpec, home string) (ro, rw []string) {
	for _, m := range specs {
		switch {
		case m.Symlink != "" || m.Dev:
		case m.Writable:
			rw = append(rw, m.Target)
		default:
			ro = append(ro, m.Target)
		}
	}
	rw = append(rw, home, "/tmp", "/dev/shm")
	return ro, rw
}

// allCaps lists every capability this kernel knows, for the init to keep
// as ambient capabilities (of its own user namespace only) across its
// exec as AgentUID.
func allCaps() []uintptr {
	caps := make([]uintptr, lastCap(40)+1) // 40: CAP_CHECKPOINT_RESTORE, Linux 5.9
	for i := range caps {
		caps[i] = uintptr(i)
	}
	return caps
}

// lastCap is the highest capability number this kernel knows, or fallback
// when /proc does not say.
func lastCap(fallback int) int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fallback
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > 63 {
		return fallback
	}
	return n
}
