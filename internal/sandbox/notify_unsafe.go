//go:build linux

package sandbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// installSeccomp loads the filter on the calling thread, which must be the
// locked thread that forks the agent (the filter is inherited by the fork
// and across execve; the init's other threads stay unfiltered and run only
// its own code). With notify it returns the user-notification
// listener, else -1. execAllow adds the rules that guard an exec allowlist.
func installSeccomp(notify, execAllow bool) (int, error) {
	prog, err := filterProgram(notify, execAllow)
	if err != nil {
		return -1, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return -1, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	flags := uintptr(0)
	if notify {
		flags |= unix.SECCOMP_FILTER_FLAG_NEW_LISTENER
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return -1, fmt.Errorf("install seccomp filter: %w", errno)
	}
	if !notify {
		return -1, nil
	}
	return int(r), nil
}

// seccompData and seccompNotif mirror struct seccomp_data and struct
// seccomp_notif; seccompResp mirrors struct seccomp_notif_resp.
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

type seccompResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// notifyLoop answers the sandbox's execve notifications until the last
// filtered process is gone.
func (s *Sandbox) notifyLoop(fd int) {
	defer s.notifWG.Done()
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			s.log.Error("poll seccomp listener", "err", err)
			return
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			return // POLLHUP: no filtered process left
		}
		var n seccompNotif
		if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&n)); err != nil {
			if err == unix.EINTR || err == unix.ENOENT {
				continue // interrupted, or the caller died before we read it
			}
			s.log.Error("receive seccomp notification", "err", err)
			return
		}
		resp := seccompResp{ID: n.ID}
		if err := s.handleExec(fd, &n); err != nil {
			resp.Error = -int32(unix.EPERM)
			s.log.Warn("exec refused", "pid", n.Pid, "err", err)
		} else {
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		}
		if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)); err != nil && err != unix.ENOENT {
			s.log.Error("answer seccomp notification", "err", err)
		}
	}
}

// handleExec reads the call's arguments from the caller's memory and asks
// OnExec. Any failure to read a complete record refuses the exec: an
// action that must be recorded is not performed unrecorded.
func (s *Sandbox) handleExec(fd int, n *seccompNotif) error {
	var pathPtr, argvPtr uint64
	switch n.Data.Nr {
	case unix.SYS_EXECVE:
		pathPtr, argvPtr = n.Data.Args[0], n.Data.Args[1]
	case unix.SYS_EXECVEAT:
		pathPtr, argvPtr = n.Data.Args[1], n.Data.Args[2]
	default:
		return fmt.Errorf("unexpected notification for syscall %d", n.Data.Nr)
	}
	mem, err := os.Open("/proc/" + strconv.Itoa(int(n.Pid)) + "/mem")
	if err != nil {
		return fmt.Errorf("open memory of pid %d: %w", n.Pid, err)
	}
	defer mem.Close()
	// The pid may have died and been reused between RECV and the open
	// above: the ID check after reading proves the file is the caller's.
	ev := ExecEvent{PID: int(n.Pid), Time: time.Now()}
	var trunc bool
	ev.Path, trunc, err = readCString(mem, pathPtr, MaxPathLen)
	if err != nil {
		return fmt.Errorf("read exec path: %w", err)
	}
	ev.Truncated = trunc
	budget := MaxArgBytes
	for i := 0; argvPtr != 0; i++ {
		if i == MaxArgs || budget <= 0 {
			ev.Truncated = true
			break
		}
		var p [8]byte
		if _, err := mem.ReadAt(p[:], int64(argvPtr)+int64(8*i)); err != nil {
			return fmt.Errorf("read argv[%d] pointer: %w", i, err)
		}
		ap := binary.LittleEndian.Uint64(p[:])
		if ap == 0 {
			break
		}
		arg, t, err := readCString(mem, ap, budget)
		if err != nil {
			return fmt.Errorf("read argv[%d]: %w", i, err)
		}
		budget -= len(arg) + 1
		ev.Truncated = ev.Truncated || t
		ev.Argv = append(ev.Argv, arg)
	}
	if n.Data.Nr == unix.SYS_EXECVEAT && len(ev.Path) > 0 && ev.Path[0] != '/' {
		if dir, err := os.Readlink("/proc/" + strconv.Itoa(int(n.Pid)) + "/fd/" + strconv.Itoa(int(int32(n.Data.Args[0])))); err == nil {
			ev.Path = dir + "/" + ev.Path
		}
	}
	ev.Cwd, _ = os.Readlink("/proc/" + strconv.Itoa(int(n.Pid)) + "/cwd")
	id := n.ID
	if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)); err != nil {
		return fmt.Errorf("notification no longer valid: %w", err)
	}
	if s.cfg.OnExec == nil {
		return nil
	}
	return s.cfg.OnExec(ev)
}

// readCString reads a NUL-terminated string of at most limit bytes at addr.
func readCString(mem *os.File, addr uint64, limit int) (string, bool, error) {
	var out []byte
	buf := make([]byte, 256)
	for len(out) < limit {
		// Read in small chunks: a string may end just before an unmapped
		// page, and one large read would fail there.
		chunk := buf[:min(len(buf), limit-len(out), pageRemain(addr+uint64(len(out))))]
		n, err := mem.ReadAt(chunk, int64(addr)+int64(len(out)))
		if n == 0 && err != nil {
			return "", false, err
		}
		if i := bytes.IndexByte(chunk[:n], 0); i >= 0 {
			return string(append(out, chunk[:i]...)), false, nil
		}
		out = append(out, chunk[:n]...)
	}
	return string(out), true, nil
}

func pageRemain(addr uint64) int {
	const page = 4096
	return int(page - addr%page)
}

func ioctlPtr(fd int, req uint, p unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p))
	if errno != 0 {
		return errno
	}
	return nil
}

var _ = errors.New
