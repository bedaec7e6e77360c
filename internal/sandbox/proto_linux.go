//go:build linux

package sandbox

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Hidden subcommands: os.Args[1] of this binary re-executed as a stage.
const (
	argInit  = "__sandbox-init"
	argProbe = "__sandbox-probe"
)

// Descriptor numbers in the init (ExtraFiles start at 3).
const (
	fdConfig = 3 // pipe: JSON stage config, read once
	fdCtl    = 4 // SOCK_SEQPACKET to the host: ctlMsg plus SCM_RIGHTS
	fdLog    = 5 // pipe: JSON log lines to the host
	fdTrees  = 6 // root mode: detached mount trees, one per mountSpec.Tree
)

// mountSpec is one entry of the view, in mount order.
type mountSpec struct {
	Source   string // host path (resolved by the init when Tree < 0)
	Target   string // inside path
	Symlink  string // if set, create Target as a symlink with this text
	Writable bool
	NoExec   bool // noexec: nothing on it may run or be mapped executable
	Dev      bool // a device node: keep it usable (no nodev)
	File     bool // a non-directory: the mountpoint is a file
	Tree     int  // fd of a detached tree prepared by the host, or -1
}

// initConfig is what the host sends the init on fdConfig.
type initConfig struct {
	// Source is the identity of the host's sandbox code (sourceID), which
	// the init must share before it starts anything; all zero when the
	// init is the host's own binary re-executed.
	Source    [32]byte
	Mounts    []mountSpec
	Home      string
	TmpSize   int64
	Hostname  string
	Listeners []ListenSpec
	// NoExec mounts the writable tmpfs places (/tmp, HOME, /dev/shm)
	// noexec: set when ExecAllow is, see [Config.ExecAllow].
	NoExec bool
	// Rows and Cols are the initial window size of the pty the init
	// allocates when Exec.TTY is set (0 means unknown); set before the
	// agent starts, so its first look at the size is right.
	Rows, Cols uint16
	// WaitCgroup makes the init wait, before it starts the agent, for the
	// host's "cgroup" message saying the init has joined its cgroups
	// (which the agent then inherits).
	WaitCgroup bool
	Exec       execConfig
}

// execConfig is the agent's part of the init's configuration: what the
// thread that starts it applies (exec_linux.go).
type execConfig struct {
	Argv      []string
	Dir       string
	Env       []string
	ExecAllow []string
	RO, RW    []string // inside paths for Landlock, directories or files
	Limits    Limits
	Rlimits   bool // enforce Memory and Processes with rlimits (no cgroup)
	Notify    bool // install the execve user-notification listener
	TTY       bool
	Degrade   []string
	// ForceMissing makes these layers fail as if the kernel lacked them
	// (tests of the fail-closed path).
	ForceMissing []string
}

// ctlMsg travels on fdCtl, one per datagram.
type ctlMsg struct {
	Kind   string // "listeners", "pty", "notify", "started", "error"; to the init: "cgroup"
	Layer  string `json:",omitempty"` // for "error": a layer that is missing
	Msg    string `json:",omitempty"`
	Status Status `json:",omitempty"`
}

func sendCtl(fd int, m ctlMsg, fds ...int) error {
	b := marshalCtl(m)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, b, oob, nil, 0); err != nil {
		return fmt.Errorf("send %s to host: %w", m.Kind, err)
	}
	return nil
}

// recvCtl reads one message; io.EOF-like end is reported as ok=false.
func recvCtl(fd int, maxFDs int) (m ctlMsg, fds []int, ok bool, err error) {
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4*max(maxFDs, 1)))
	n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return m, nil, false, fmt.Errorf("read sandbox control socket: %w", err)
	}
	if oobn > 0 {
		cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return m, nil, false, fmt.Errorf("parse control message: %w", perr)
		}
		for _, c := range cmsgs {
			r, perr := unix.ParseUnixRights(&c)
			if perr == nil {
				fds = append(fds, r...)
			}
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll(fds)
		return m, nil, false, fmt.Errorf("sandbox control message truncated")
	}
	if n == 0 && oobn == 0 {
		return m, nil, false, nil
	}
	if m, err = unmarshalCtl(buf[:n]); err != nil {
		closeAll(fds)
		return m, nil, false, err
	}
	return m, fds, true, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
