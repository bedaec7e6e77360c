//go:build linux

package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Probe tests which layers work on this machine, for `enclave doctor`. It
// starts one short-lived process in new namespaces (this binary with the
// hidden probe argument: the program must call [MaybeRunInternal]).
func Probe() Report {
	var r Report
	r.Layers = append(r.Layers, probeUserNS())

	ll0 := LayerReport{Layer: LayerLandlock}
	abi, err := ll.LandlockGetABIVersion()
	switch {
	case err != nil:
		ll0.Detail = fmt.Sprintf("not available (%v): kernel built without it, or \"landlock\" missing from the lsm= boot parameter", err)
	case abi < MinLandlockABI:
		ll0.Detail = fmt.Sprintf("ABI %d, need %d", abi, MinLandlockABI)
	default:
		r.LandlockABI = abi
		ll0.OK = true
		ll0.Detail = fmt.Sprintf("ABI %d", abi)
		if abi >= 6 {
			ll0.Detail += ", abstract unix sockets and signals scoped"
		} else {
			ll0.Detail += ", no IPC scoping (needs ABI 6)"
		}
	}
	r.Layers = append(r.Layers, ll0)

	sc := LayerReport{Layer: LayerSeccomp}
	action := uint32(unix.SECCOMP_RET_USER_NOTIF)
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action))); errno != 0 {
		sc.Detail = fmt.Sprintf("seccomp user notification unavailable: %v", errno)
	} else if _, err := filterProgram(true, true); err != nil {
		sc.Detail = err.Error()
	} else {
		sc.OK = true
		sc.Detail = "filter with execve user notification"
	}
	r.Layers = append(r.Layers, sc)

	cg := LayerReport{Layer: LayerCgroups}
	r.Limits = "rlimit"
	if os.Geteuid() != 0 {
		cg.OK = true
		cg.Detail = "not root: memory and process limits use RLIMIT_DATA and RLIMIT_NPROC"
	} else {
		var missing []string
		for _, ctrl := range []string{"memory", "pids"} {
			parent, err := ownCgroup(ctrl)
			if err != nil {
				missing = append(missing, err.Error())
				continue
			}
			if err := unix.Access(filepath.Join(cgroupRoot, ctrl, parent), unix.W_OK); err != nil {
				missing = append(missing, fmt.Sprintf("%s cgroup %s not writable: %v", ctrl, parent, err))
			}
		}
		if len(missing) == 0 {
			cg.OK = true
			r.Limits = "cgroup-v1"
			cg.Detail = "cgroup v1 memory and pids"
		} else {
			cg.Detail = strings.Join(missing, "; ")
		}
	}
	r.Layers = append(r.Layers, cg)
	return r
}

func probeUserNS() LayerReport {
	l := LayerReport{Layer: LayerUserNS}
	uid, gid, err := HostIDs()
	if err != nil {
		l.Detail = err.Error()
		return l
	}
	cmd := exec.Command("/proc/self/exe", argProbe)
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWCGROUP,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		l.Detail = fmt.Sprintf("cannot create user, mount, pid, net, ipc, uts and cgroup namespaces: %v", err)
		if b, rerr := os.ReadFile("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); rerr == nil && strings.TrimSpace(string(b)) == "1" {
			l.Detail += " (AppArmor restricts unprivileged user namespaces)"
		}
		return l
	}
	l.OK = true
	l.Detail = fmt.Sprintf("agent files owned by host uid %d gid %d", uid, gid)
	return l
}
