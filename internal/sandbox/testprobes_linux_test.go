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
	"strings"
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
	// execroutes: run a copy of /usr/bin/touch by every route around an
	// exec allowlist. A copy that runs creates /work/ran-ROUTE; the probe
	// records in /work/errno-ROUTE how each step failed ("ok" if it did
	// not), for the test's diagnostics and errno checks.
	"execroutes": func([]string) error {
		prog, err := os.ReadFile("/usr/bin/touch")
		if err != nil {
			return err
		}
		ran := func(route string) string { return "/work/ran-" + route }
		note := func(route string, err error) {
			s := "ok"
			if err != nil {
				s = err.Error()
				if errno, ok := err.(syscall.Errno); ok {
					s = unix.ErrnoName(errno)
				}
			}
			os.WriteFile("/work/errno-"+route, []byte(s), 0o644)
		}
		note("allowed", exec.Command("/usr/bin/touch", ran("allowed")).Run())
		const ldso = "/lib64/ld-linux-x86-64.so.2"
		for _, dir := range []string{"/tmp", "/work", "/home/agent", "/dev/shm"} {
			route := strings.Trim(strings.ReplaceAll(dir, "/", "-"), "-")
			cp := dir + "/touch-copy"
			if err := os.WriteFile(cp, prog, 0o755); err != nil {
				note("write-"+route, err)
				continue
			}
			note("copy-"+route, exec.Command(cp, ran("copy-"+route)).Run())
			note("ldso-"+route, exec.Command(ldso, cp, ran("ldso-"+route)).Run())
			// What the loader does: map the file executable.
			if f, err := os.Open(cp); err == nil {
				m, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
				if err == nil {
					unix.Munmap(m)
				}
				note("mmap-"+route, err)
				f.Close()
			}
		}
		for _, m := range []struct {
			name  string
			flags int
		}{{"memfd", unix.MFD_CLOEXEC}, {"memfd-exec", unix.MFD_CLOEXEC | unix.MFD_EXEC}, {"memfd-sealed", unix.MFD_CLOEXEC | unix.MFD_NOEXEC_SEAL}} {
			fd, err := unix.MemfdCreate("probe", m.flags)
			note("create-"+m.name, err)
			if err != nil {
				continue
			}
			f := os.NewFile(uintptr(fd), m.name)
			if _, err := f.Write(prog); err != nil {
				f.Close()
				return err
			}
			run := func(route, path string, args ...string) {
				cmd := exec.Command(path, args...)
				cmd.ExtraFiles = []*os.File{f} // fd 3 in the child
				note(route, cmd.Run())
			}
			run(m.name+"-execveat", "/probe/sandbox.test", "__sandbox-testprobe", "execfd", m.name+"-execveat-call", ran(m.name+"-execveat"))
			run(m.name+"-procfd", "/proc/self/fd/3", ran(m.name+"-procfd"))
			run(m.name+"-ldso", ldso, "/proc/self/fd/3", ran(m.name+"-ldso"))
			f.Close()
		}
		// execveat(fd, "", AT_EMPTY_PATH) of an allowed program.
		if fd, err := unix.Open("/usr/bin/touch", unix.O_PATH, 0); err == nil {
			cmd := exec.Command("/probe/sandbox.test", "__sandbox-testprobe", "execfd", "opath-execveat-call", ran("opath-execveat"))
			cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "touch")}
			note("opath-execveat", cmd.Run())
		}
		return nil
	},
	// execfd ROUTE ARG: execveat(3, "", AT_EMPTY_PATH) with argv touch ARG;
	// the errno of a failure goes to /work/errno-ROUTE.
	"execfd": func(args []string) error {
		argv, _ := syscall.SlicePtrFromStrings([]string{"touch", args[1]})
		envp, _ := syscall.SlicePtrFromStrings([]string{})
		empty := []byte{0}
		_, _, e := unix.Syscall6(unix.SYS_EXECVEAT, 3, uintptr(unsafe.Pointer(&empty[0])),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
		os.WriteFile("/work/errno-"+args[0], []byte(unix.ErrnoName(e)), 0o644)
		return e
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
