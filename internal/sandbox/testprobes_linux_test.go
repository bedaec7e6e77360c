//go:build linux

package sandbox

// In-sandbox probes: the test binary is mounted at /probe/sandbox.test and
// run as "__sandbox-testprobe NAME". A probe leaves a marker file in /work
// only when an attack SUCCEEDED, so the test judges from the host by the
// files it finds, and where the attack has a side effect the host can see
// (a mount hiding a write) that effect is checked too.

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type syscallStat = syscall.Stat_t

func escaped(name string) { os.WriteFile("/work/escaped-"+name, []byte("1"), 0o644) }

var testProbes = map[string]func(args []string) error{
	"syscalls": func([]string) error {
		runtime.LockOSThread()
		os.Mkdir("/work/mnt", 0o755)
		if unix.Mount("none", "/work/mnt", "tmpfs", 0, "") == nil {
			escaped("mount")
		}
		// If the mount had worked, this write would land in the tmpfs and
		// never reach the host.
		os.WriteFile("/work/mnt/visible", []byte("1"), 0o644)
		if unix.Unmount("/work", unix.MNT_DETACH) == nil {
			escaped("umount")
		}
		if unix.Chroot("/work") == nil {
			escaped("chroot")
		}
		if _, err := unix.OpenTree(unix.AT_FDCWD, "/work", unix.OPEN_TREE_CLONE); err == nil {
			escaped("open_tree")
		}
		if _, err := unix.Fsopen("tmpfs", 0); err == nil {
			escaped("fsopen")
		}
		sleep := exec.Command("/usr/bin/sleep", "30")
		if err := sleep.Start(); err == nil {
			if unix.PtraceAttach(sleep.Process.Pid) == nil {
				escaped("ptrace")
			}
			local := []unix.Iovec{{Base: new(byte), Len: 1}}
			remote := []unix.RemoteIovec{{Base: 0x400000, Len: 1}}
			if _, err := unix.ProcessVMReadv(sleep.Process.Pid, local, remote, 0); err == nil || err != unix.EPERM {
				escaped("process_vm_readv")
			}
			sleep.Process.Kill()
		}
		if _, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false); err == nil {
			escaped("keyctl")
		}
		if _, err := unix.AddKey("user", "probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING); err == nil {
			escaped("add_key")
		}
		attr := [64]byte{0: 2, 4: 4, 8: 4, 12: 1} // BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
		if _, _, e := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), 64); e == 0 {
			escaped("bpf")
		}
		var params [120]byte
		if fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params)), 0); e == 0 && int(fd) >= 0 {
			escaped("io_uring")
		}
		pattr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
		if _, err := unix.PerfEventOpen(&pattr, 0, -1, -1, 0); err == nil {
			escaped("perf_event_open")
		}
		if _, _, e := unix.Syscall(unix.SYS_USERFAULTFD, 0, 0, 0); e == 0 {
			escaped("userfaultfd")
		}
		if fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err == nil {
			unix.Close(fd)
			escaped("af_packet")
		}
		if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP); err == nil {
			unix.Close(fd)
			escaped("sock_raw")
		}
		if fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0); err == nil {
			unix.Close(fd)
			escaped("vsock")
		}
		c := byte('x')
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&c))); e == 0 {
			escaped("tiocsti")
		}
		if _, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0x0040000 /* ADDR_NO_RANDOMIZE */, 0, 0); e == 0 {
			escaped("personality")
		}
		if _, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0); e != unix.ENOSYS {
			escaped("clone3")
		}
		// clone with CLONE_NEWUSER straight from this thread.
		if pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWUSER|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0); e == 0 {
			if pid == 0 {
				unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
			}
			escaped("clone_newuser")
		}
		if fd, err := unix.Open("/proc/self/ns/net", unix.O_RDONLY, 0); err == nil {
			if unix.Setns(fd, 0) == nil {
				escaped("setns")
			}
		}
		if unix.Sethostname([]byte("pwned")) == nil {
			escaped("sethostname")
		}
		return nil
	},
	"x32": func([]string) error {
		// getpid through the x32 ABI: the filter must kill the process.
		unix.Syscall(unix.SYS_GETPID|0x40000000, 0, 0, 0)
		escaped("x32")
		return nil
	},
	"forkbomb": func([]string) error {
		var started int
		for ; started < 500; started++ {
			if err := exec.Command("/usr/bin/sleep", "30").Start(); err != nil {
				break
			}
		}
		if started == 500 {
			escaped("forkbomb")
		}
		os.WriteFile("/work/ready", []byte(fmt.Sprint(started)), 0o644)
		time.Sleep(30 * time.Second)
		return nil
	},
	"hog": func([]string) error {
		var keep [][]byte
		for i := 0; i < 64; i++ { // 512 MiB in 8 MiB steps, every page touched
			b := make([]byte, 8<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		escaped(fmt.Sprintf("hog-%d", len(keep)))
		return nil
	},
}
