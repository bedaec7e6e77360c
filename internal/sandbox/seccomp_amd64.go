//go:build linux && amd64

package sandbox

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The seccomp filter: a short, linear BPF program, printed in full in
// testdata/seccomp_amd64.golden (regenerate: go test -run TestFilterGolden -update).
//
// It kills any call not made through the x86-64 ABI (i386 int 0x80 and the
// x32 ABI have other numbers for everything below), records execve and
// execveat through a user notification, and refuses what a coding agent
// never needs: mounting and namespaces (the view would move), ptrace and
// cross-process memory access, keyrings, bpf, module and kexec loading,
// perf, io_uring (it bypasses this filter), userfaultfd, clock and
// personality changes, terminal injection, raw and packet sockets. All
// other calls are allowed: Landlock and the namespaces are the walls, this
// filter shrinks the kernel surface behind them.
//
// With an exec allowlist ([Config.ExecAllow]) it also closes the routes to
// running a program that Landlock's execute right does not see:
//
//   - memfd_create and memfd_secret fail with ENOSYS. Landlock does not
//     check files of internal filesystems, so a memfd holding a program
//     runs by execveat(fd, "", AT_EMPTY_PATH) or execve("/proc/self/fd/N").
//     Refusing only MFD_EXEC is not enough: without flags a memfd is
//     executable unless vm.memfd_noexec is raised, and even a memfd
//     sealed non-executable (MFD_NOEXEC_SEAL) runs as "ld.so
//     /proc/self/fd/N", since mmap(PROT_EXEC) ignores mode bits and the
//     memfd mount is not noexec. (vm.memfd_noexec cannot be raised for
//     the sandbox either: the sysctl is per pid namespace, but writing it
//     takes host root's euid, which the init never has.) ENOSYS, the
//     answer of a kernel before 3.17, is the one callers fall back on
//     (to /dev/shm or O_TMPFILE, both noexec then). JIT runtimes (V8 in
//     node, JavaScriptCore in bun, the JVM, Go) map anonymous memory,
//     which is unaffected; .NET's double mapping of JIT code through a
//     memfd falls back to single mapping.
//   - execveat with AT_EMPTY_PATH fails with EPERM: running a descriptor
//     is how an internal-filesystem file would run without a path
//     (fexecve of an allowed program fails too; it is rare).
//
// Without an allowlist the agent may run any program it writes anyway,
// so neither is refused: nothing gained, and bun and Chromium use memfds.

const (
	auditArchX86_64 = 0xc000003e
	x32SyscallBit   = 0x40000000

	retAllow  = unix.SECCOMP_RET_ALLOW
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
	retNotify = unix.SECCOMP_RET_USER_NOTIF
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retNoAF   = unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)

	// Offsets in struct seccomp_data; argument loads read the low 32 bits
	// (little endian), which is all the kernel reads of an int argument.
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
	offArg2 = 32
	offArg4 = 48

	// nsFlags are the clone/unshare flags that create namespaces.
	nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
		unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME
)

// deniedSyscalls fail with EPERM.
var deniedSyscalls = []struct {
	nr   uint32
	name string
}{
	{unix.SYS_MOUNT, "mount"}, {unix.SYS_UMOUNT2, "umount2"}, {unix.SYS_PIVOT_ROOT, "pivot_root"},
	{unix.SYS_CHROOT, "chroot"}, {unix.SYS_MOVE_MOUNT, "move_mount"}, {unix.SYS_OPEN_TREE, "open_tree"},
	{unix.SYS_FSOPEN, "fsopen"}, {unix.SYS_FSMOUNT, "fsmount"}, {unix.SYS_FSCONFIG, "fsconfig"},
	{unix.SYS_FSPICK, "fspick"}, {unix.SYS_MOUNT_SETATTR, "mount_setattr"}, {unix.SYS_SETNS, "setns"},
	{unix.SYS_PTRACE, "ptrace"}, {unix.SYS_PROCESS_VM_READV, "process_vm_readv"},
	{unix.SYS_PROCESS_VM_WRITEV, "process_vm_writev"}, {unix.SYS_PIDFD_GETFD, "pidfd_getfd"},
	{unix.SYS_KCMP, "kcmp"}, {unix.SYS_BPF, "bpf"}, {unix.SYS_PERF_EVENT_OPEN, "perf_event_open"},
	{unix.SYS_KEYCTL, "keyctl"}, {unix.SYS_ADD_KEY, "add_key"}, {unix.SYS_REQUEST_KEY, "request_key"},
	{unix.SYS_KEXEC_LOAD, "kexec_load"}, {unix.SYS_KEXEC_FILE_LOAD, "kexec_file_load"},
	{unix.SYS_INIT_MODULE, "init_module"}, {unix.SYS_FINIT_MODULE, "finit_module"},
	{unix.SYS_DELETE_MODULE, "delete_module"}, {unix.SYS_IO_URING_SETUP, "io_uring_setup"},
	{unix.SYS_IO_URING_ENTER, "io_uring_enter"}, {unix.SYS_IO_URING_REGISTER, "io_uring_register"},
	{unix.SYS_USERFAULTFD, "userfaultfd"}, {unix.SYS_SWAPON, "swapon"}, {unix.SYS_SWAPOFF, "swapoff"},
	{unix.SYS_REBOOT, "reboot"}, {unix.SYS_ACCT, "acct"}, {unix.SYS_QUOTACTL, "quotactl"},
	{unix.SYS_QUOTACTL_FD, "quotactl_fd"}, {unix.SYS_SYSLOG, "syslog"},
	{unix.SYS_OPEN_BY_HANDLE_AT, "open_by_handle_at"}, {unix.SYS_NAME_TO_HANDLE_AT, "name_to_handle_at"},
	{unix.SYS_LOOKUP_DCOOKIE, "lookup_dcookie"}, {unix.SYS_VHANGUP, "vhangup"},
	{unix.SYS_SETTIMEOFDAY, "settimeofday"}, {unix.SYS_CLOCK_SETTIME, "clock_settime"},
	{unix.SYS_CLOCK_ADJTIME, "clock_adjtime"}, {unix.SYS_IOPL, "iopl"}, {unix.SYS_IOPERM, "ioperm"},
	{unix.SYS_MODIFY_LDT, "modify_ldt"}, {unix.SYS_USELIB, "uselib"}, {unix.SYS_USTAT, "ustat"},
	{unix.SYS_SYSFS, "sysfs"}, {unix.SYS__SYSCTL, "_sysctl"}, {unix.SYS_NFSSERVCTL, "nfsservctl"},
	{unix.SYS_FANOTIFY_INIT, "fanotify_init"},
}

// filterProgram returns the seccomp program; notify selects whether
// execve and execveat raise a user notification or are allowed outright,
// execAllow whether the routes around an exec allowlist are closed.
func filterProgram(notify, execAllow bool) ([]bpf.Instruction, error) {
	var a asm
	a.add(bpf.LoadAbsolute{Off: offArch, Size: 4})
	a.jump(bpf.JumpEqual, auditArchX86_64, "", "kill")
	a.add(bpf.LoadAbsolute{Off: offNr, Size: 4})
	a.jump(bpf.JumpGreaterOrEqual, x32SyscallBit, "kill", "")

	execRet := uint32(retAllow)
	if notify {
		execRet = retNotify
	}
	a.jump(bpf.JumpEqual, unix.SYS_EXECVE, "exec", "")
	if execAllow {
		a.jump(bpf.JumpEqual, unix.SYS_EXECVEAT, "execveat", "")
		a.jump(bpf.JumpEqual, unix.SYS_MEMFD_CREATE, "enosys", "")
		a.jump(bpf.JumpEqual, unix.SYS_MEMFD_SECRET, "enosys", "")
	} else {
		a.jump(bpf.JumpEqual, unix.SYS_EXECVEAT, "exec", "")
	}
	for _, d := range deniedSyscalls {
		a.jump(bpf.JumpEqual, d.nr, "eperm", "")
	}
	// clone3 passes its flags in memory the filter cannot read: ENOSYS
	// makes libc and Go fall back to clone, whose flags it can.
	a.jump(bpf.JumpEqual, unix.SYS_CLONE3, "enosys", "")
	a.jump(bpf.JumpEqual, unix.SYS_CLONE, "nsflags", "")
	a.jump(bpf.JumpEqual, unix.SYS_UNSHARE, "nsflags", "")
	a.jump(bpf.JumpEqual, unix.SYS_IOCTL, "ioctl", "")
	a.jump(bpf.JumpEqual, unix.SYS_SOCKET, "socket", "")
	a.jump(bpf.JumpEqual, unix.SYS_PERSONALITY, "personality", "")
	a.ret(retAllow)

	a.label("nsflags") // clone(flags, ...), unshare(flags)
	a.add(bpf.LoadAbsolute{Off: offArg0, Size: 4})
	a.jump(bpf.JumpBitsSet, nsFlags, "eperm", "allow")

	a.label("ioctl") // ioctl(fd, request, ...): request is an unsigned int
	a.add(bpf.LoadAbsolute{Off: offArg1, Size: 4})
	a.jump(bpf.JumpEqual, unix.TIOCSTI, "eperm", "")
	a.jump(bpf.JumpEqual, unix.TIOCLINUX, "eperm", "allow")

	// socket(family, type, protocol): unix, IPv4, IPv6 (loopback only in
	// this namespace) and route netlink (getifaddrs); no raw or packet
	// sockets, no other families (vsock would reach the hypervisor).
	a.label("socket")
	a.add(bpf.LoadAbsolute{Off: offArg0, Size: 4})
	a.jump(bpf.JumpEqual, unix.AF_UNIX, "allow", "")
	a.jump(bpf.JumpEqual, unix.AF_INET, "socktype", "")
	a.jump(bpf.JumpEqual, unix.AF_INET6, "socktype", "")
	a.jump(bpf.JumpEqual, unix.AF_NETLINK, "netlink", "")
	a.ret(retNoAF)
	a.label("socktype")
	a.add(bpf.LoadAbsolute{Off: offArg1, Size: 4})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf}) // SOCK_TYPE_MASK: drop NONBLOCK, CLOEXEC
	a.jump(bpf.JumpEqual, unix.SOCK_RAW, "eperm", "")
	a.jump(bpf.JumpEqual, unix.SOCK_PACKET, "eperm", "allow")
	a.label("netlink")
	a.add(bpf.LoadAbsolute{Off: offArg2, Size: 4})
	a.jump(bpf.JumpEqual, unix.NETLINK_ROUTE, "allow", "eperm")

	// personality(persona): only PER_LINUX and the 0xffffffff query; no
	// READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE.
	a.label("personality")
	a.add(bpf.LoadAbsolute{Off: offArg0, Size: 4})
	a.jump(bpf.JumpEqual, 0, "allow", "")
	a.jump(bpf.JumpEqual, 0xffffffff, "allow", "eperm")

	if execAllow {
		// execveat(dirfd, path, argv, envp, flags)
		a.label("execveat")
		a.add(bpf.LoadAbsolute{Off: offArg4, Size: 4})
		a.jump(bpf.JumpBitsSet, unix.AT_EMPTY_PATH, "eperm", "exec")
	}
	a.label("exec")
	a.ret(execRet)
	a.label("enosys")
	a.ret(retENOSYS)
	a.label("eperm")
	a.ret(retEPERM)
	a.label("allow")
	a.ret(retAllow)
	a.label("kill")
	a.ret(retKill)
	return a.assemble()
}
