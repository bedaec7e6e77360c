//go:build linux

package sandbox

// This file runs inside the sandbox as PID 1 (the "init" stage). It runs
// as AgentUID with every capability of the new user namespace (ambient,
// kept across its exec), and as an unprivileged host uid, so a mistake
// here is bounded by the namespaces, but it builds the walls the agent
// lives in: it fails closed on any error. The agent is its child, started
// from a thread that dropped all of that first (exec_linux.go).

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// newRoot is where the init assembles the view before pivot_root. Every
// source has already been captured as a detached mount tree, so shadowing
// the host's /tmp in this private mount namespace hides nothing needed.
const newRoot = "/tmp"

func runInit() int {
	// Subscribing to signals costs the Go runtime a thread of its own and
	// a round trip per signal: do it while the view is being built.
	sigs := make(chan os.Signal, 32)
	subscribed := make(chan struct{})
	go func() {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
			syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGCHLD)
		close(subscribed)
	}()
	logf := os.NewFile(fdLog, "log")
	log := slog.New(slog.NewJSONHandler(logf, nil)).With("stage", "init")
	fail := func(layer string, err error) int {
		log.Error("setup failed", "err", err)
		sendCtl(fdCtl, ctlMsg{Kind: "error", Layer: layer, Msg: err.Error()})
		return 125
	}
	raw, err := io.ReadAll(io.LimitReader(os.NewFile(fdConfig, "config"), 16<<20))
	unix.Close(fdConfig)
	if err != nil {
		return fail("", fmt.Errorf("read init config: %w", err))
	}
	pcfg, err := unmarshalInit(raw)
	if errors.Is(err, errWireVersion) {
		sendCtl(fdCtl, ctlMsg{Kind: "mismatch", Msg: "it speaks " + strings.TrimSpace(wireMagic) + ", another version of the host's protocol"})
		return 125
	}
	if err != nil {
		return fail("", fmt.Errorf("read init config: %w", err))
	}
	cfg := *pcfg
	// The host may require this binary's sandbox source to be its own
	// (a separately built enclave-init): hash it while the view is built,
	// and compare before anything is handed to the host or started.
	ownSource := make(chan [32]byte, 1)
	if cfg.Source != ([32]byte{}) {
		go func() { ownSource <- sourceID() }()
	}
	// Descriptors leaked by the host's process (anything it opened without
	// O_CLOEXEC) arrive here; none may reach the agent, nor stay open here.
	closeLeaked(fdTrees + countTrees(cfg.Mounts))
	if err := unix.CloseRange(fdConfig, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fail("", fmt.Errorf("mark inherited descriptors close-on-exec: %w", err))
	}
	// Not dumpable: /proc/1 stays closed to everything but this
	// namespace's root, whatever the agent's uid maps to.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)

	if err := buildView(&cfg); err != nil {
		return fail("", err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fail("", fmt.Errorf("set hostname: %w", err))
	}
	unix.Setdomainname([]byte("none"))
	if err := LoopbackUp(); err != nil {
		return fail("", err)
	}
	// Before anything is handed to the host, and long after the hash
	// started, so the wait is nil.
	if cfg.Source != ([32]byte{}) && cfg.Source != <-ownSource {
		sendCtl(fdCtl, ctlMsg{Kind: "mismatch", Msg: "its sandbox source differs from the host's"})
		return 125
	}
	fds, err := openListeners(cfg.Listeners)
	if err != nil {
		return fail("", err)
	}
	if len(cfg.Listeners) > 0 {
		if err := sendCtl(fdCtl, ctlMsg{Kind: "listeners"}, fds...); err != nil {
			return fail("", err)
		}
		closeAll(fds)
	}

	// Subscribed (above) before the child exists so no SIGCHLD is missed.
	<-subscribed

	// The agent's terminal comes from this sandbox's own devpts instance,
	// so its name (/dev/pts/N) resolves inside; the host gets the master.
	slave := -1
	if cfg.Exec.TTY {
		master, sl, err := openPTY(cfg.Rows, cfg.Cols)
		if err != nil {
			return fail("", err)
		}
		err = sendCtl(fdCtl, ctlMsg{Kind: "pty"}, master)
		unix.Close(master)
		if err != nil {
			unix.Close(sl)
			return fail("", err)
		}
		slave = sl
	}

	if cfg.WaitCgroup {
		// The agent inherits the init's cgroups: it may start only once
		// the host has put the init in them.
		m, fds, ok, err := recvCtl(fdCtl, 1)
		closeAll(fds)
		switch {
		case err != nil:
			return fail(LayerCgroups, err)
		case !ok || m.Kind != "cgroup":
			return fail(LayerCgroups, fmt.Errorf("the host did not confirm the sandbox's cgroups (got %q)", m.Kind))
		}
	}
	stdio := []uintptr{0, 1, 2}
	if slave >= 0 {
		stdio = []uintptr{uintptr(slave), uintptr(slave), uintptr(slave)}
	}
	res := startAgent(&cfg.Exec, stdio, slave >= 0, func(msg string, args ...any) { log.Warn(msg, args...) })
	if slave >= 0 {
		// Only the agent holds the slave now: the host's relay sees EIO
		// once the agent and its children have closed it.
		unix.Close(slave)
	}
	if res.err != nil {
		log.Error("start agent", "err", res.err)
		sendCtl(fdCtl, ctlMsg{Kind: "error", Layer: res.layer, Msg: res.err.Error()})
		return res.code
	}
	child := res.pid
	if err := sendCtl(fdCtl, ctlMsg{Kind: "started", Status: res.status}); err != nil {
		unix.Kill(child, unix.SIGKILL)
		return fail("", err)
	}
	// The host reads control messages until this, the last holder, closes.
	unix.Close(fdCtl)
	log.Debug("agent started", "pid", child)

	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			unix.Kill(child, sig.(syscall.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == child {
				// Returning exits PID 1; the kernel kills whatever the
				// agent left running in the pid namespace.
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
	}
	return 125
}

func countTrees(ms []mountSpec) int {
	n := 0
	for _, m := range ms {
		if m.Tree >= 0 {
			n++
		}
	}
	return n
}

// closeLeaked closes every descriptor from first up that the Go runtime
// did not open itself (its poller and wakeup descriptors are anonymous
// inodes; an inherited one of those kinds is harmless and also marked
// close-on-exec by the caller).
func closeLeaked(first int) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	var leaked []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < first || fd == self {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + n)
		if err != nil || strings.HasPrefix(link, "anon_inode:") {
			continue
		}
		leaked = append(leaked, fd)
	}
	d.Close()
	for _, fd := range leaked {
		unix.Close(fd)
	}
}

// buildView assembles the agent's filesystem on a tmpfs and pivots into it.
func buildView(cfg *initConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// Capture every source first (non-root mode: the host could not).
	for i := range cfg.Mounts {
		m := &cfg.Mounts[i]
		if m.Symlink != "" || m.Tree >= 0 {
			continue
		}
		fd, err := openTree(*m)
		if err != nil {
			return err
		}
		m.Tree = fd
	}
	const nosuidNodev = unix.MS_NOSUID | unix.MS_NODEV
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", nosuidNodev, "mode=0755,size=4m,nr_inodes=4096"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	rootfd, err := unix.Open(newRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open new root: %w", err)
	}
	defer unix.Close(rootfd)

	size := strconv.FormatInt(cfg.TmpSize, 10)
	// The agent's writable places: noexec when ExecAllow is set, so
	// neither execve nor the dynamic loader's mmap(PROT_EXEC) can run a
	// file the agent wrote (Landlock checks execve only).
	scratch := uintptr(nosuidNodev)
	if cfg.NoExec {
		scratch |= unix.MS_NOEXEC
	}
	for _, m := range []struct {
		target, fstype string
		flags          uintptr
		data           string
	}{
		{"/dev", "tmpfs", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64"},
		{"/tmp", "tmpfs", scratch, "mode=1777,size=" + size},
		{cfg.Home, "tmpfs", scratch, "mode=0700,size=" + size},
		{"/proc", "proc", nosuidNodev | unix.MS_NOEXEC, ""},
	} {
		if err := mountFS(newRoot, rootfd, m.target, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	for _, m := range cfg.Mounts {
		if m.Symlink != "" {
			if err := unix.Symlinkat(m.Symlink, rootfd, m.Target[1:]); err != nil {
				return fmt.Errorf("create link %s: %w", m.Target, err)
			}
			continue
		}
		err := mountTreeAt(rootfd, m.Tree, m.Target, m.File)
		unix.Close(m.Tree)
		if err != nil {
			return err
		}
	}
	if err := maskProc(rootfd); err != nil {
		return err
	}
	if err := mountFS(newRoot, rootfd, "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	if err := mountFS(newRoot, rootfd, "/dev/shm", "tmpfs", scratch, "mode=1777,size="+size); err != nil {
		return err
	}
	for name, target := range map[string]string{
		"dev/ptmx": "pts/ptmx", "dev/fd": "/proc/self/fd", "dev/stdin": "/proc/self/fd/0",
		"dev/stdout": "/proc/self/fd/1", "dev/stderr": "/proc/self/fd/2",
	} {
		if err := unix.Symlinkat(target, rootfd, name); err != nil {
			return fmt.Errorf("create /%s: %w", name, err)
		}
	}
	if err := writeEtc(rootfd, cfg); err != nil {
		return err
	}
	if err := unix.MountSetattr(rootfd, "dev", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("make /dev read-only: %w", err)
	}

	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("enter new root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root under the new one; the
	// detach then drops every host mount from this namespace.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}); err != nil {
		return fmt.Errorf("make new root read-only: %w", err)
	}
	return nil
}

// maskedProc are /proc files covered with /dev/null, as container runtimes
// do: /proc/keys would list the descriptions of keys owned by the same host
// uid (the unprivileged case), the rest expose kernel internals.
var maskedProc = []string{"keys", "key-users", "kcore", "timer_list", "sched_debug", "sysrq-trigger", "latency_stats"}

func maskProc(rootfd int) error {
	for _, f := range maskedProc {
		var st unix.Stat_t
		if unix.Fstatat(rootfd, "proc/"+f, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		tree, err := openTree(mountSpec{Source: newRoot + "/dev/null", Dev: true})
		if err != nil {
			return err
		}
		err = mountTreeAt(rootfd, tree, "/proc/"+f, true)
		unix.Close(tree)
		if err != nil {
			return fmt.Errorf("mask /proc/%s: %w", f, err)
		}
	}
	return nil
}

// writeEtc binds generated passwd, group, hostname, hosts and resolv.conf
// over the read-only /etc (only over regular files: a symlink there would
// point outside the view).
func writeEtc(rootfd int, cfg *initConfig) error {
	files := map[string]string{
		"passwd":      fmt.Sprintf("agent:x:%d:%d:agent:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", AgentUID, AgentGID, cfg.Home),
		"group":       fmt.Sprintf("agent:x:%d:\nnogroup:x:65534:\n", AgentGID),
		"hostname":    cfg.Hostname + "\n",
		"hosts":       "127.0.0.1\tlocalhost " + cfg.Hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"resolv.conf": "nameserver 127.0.0.1\n",
	}
	if err := unix.Mkdirat(rootfd, ".etc", 0o755); err != nil {
		return fmt.Errorf("create staging dir: %w", err)
	}
	etc, err := unix.Openat(rootfd, "etc", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /etc: %w", err)
	}
	defer unix.Close(etc)
	for name, content := range files {
		var st unix.Stat_t
		if err := unix.Fstatat(etc, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		src := newRoot + "/.etc/" + name
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", src, err)
		}
		tree, err := openTree(mountSpec{Source: src})
		if err != nil {
			return err
		}
		err = mountTreeAt(rootfd, tree, "/etc/"+name, true)
		unix.Close(tree)
		if err != nil {
			return err
		}
		os.Remove(src)
	}
	return unix.Unlinkat(rootfd, ".etc", unix.AT_REMOVEDIR)
}

// LoopbackUp brings up lo in the calling thread's network namespace (the
// init's new one; the egress benchmark's namespace too).
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("read lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}

// openListeners binds the requested sockets inside the network namespace.
// The init holds CAP_NET_BIND_SERVICE there, so ports below 1024 work.
func openListeners(specs []ListenSpec) ([]int, error) {
	var fds []int
	for i, l := range specs {
		ap, err := netip.ParseAddrPort(l.Addr)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("listener %d: %w", i, err)
		}
		family, sa := unix.AF_INET, unix.Sockaddr(nil)
		if ap.Addr().Is4() {
			sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		} else {
			family = unix.AF_INET6
			sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		}
		typ := unix.SOCK_STREAM
		if l.Network == "udp" {
			typ = unix.SOCK_DGRAM
		}
		fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("listener %d: socket: %w", i, err)
		}
		fds = append(fds, fd)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, sa); err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("listener %d: bind %s %s: %w", i, l.Network, l.Addr, err)
		}
		if typ == unix.SOCK_STREAM {
			if err := unix.Listen(fd, 512); err != nil {
				closeAll(fds)
				return nil, fmt.Errorf("listener %d: listen: %w", i, err)
			}
		}
	}
	return fds, nil
}

// openPTY allocates a pty from the sandbox's devpts instance (mounted with
// newinstance at /dev/pts; call it after the pivot so the slave's name is
// the one the agent sees) and sets its window size if rows and cols are
// known. The slave is opened through the master (TIOCGPTPEER), O_NOCTTY so
// the init does not adopt it; both descriptors are close-on-exec.
func openPTY(rows, cols uint16) (master, slave int, err error) {
	m, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("open /dev/pts/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return -1, -1, fmt.Errorf("unlock pty: %w", err)
	}
	if rows > 0 && cols > 0 {
		if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
			unix.Close(m)
			return -1, -1, fmt.Errorf("set pty window size: %w", err)
		}
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(m)
		return -1, -1, fmt.Errorf("open pty slave: %w", errno)
	}
	return m, int(s), nil
}
