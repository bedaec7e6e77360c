//go:build linux && amd64

package sandbox

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestFilterGolden pins the assembled seccomp program so that any change
// to it shows up in review. Regenerate with:
//
//	go test ./internal/sandbox -run TestFilterGolden -update
func TestFilterGolden(t *testing.T) {
	for _, v := range []struct {
		name              string
		notify, execAllow bool
	}{
		{"testdata/seccomp_amd64.golden", true, false},
		{"testdata/seccomp_amd64_nonotify.golden", false, false},
		{"testdata/seccomp_amd64_execallow.golden", true, true},
	} {
		name, notify := v.name, v.notify
		prog, err := filterProgram(notify, v.execAllow)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := bpf.Assemble(prog)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if v.execAllow {
			fmt.Fprintf(&b, "# seccomp filter, notify=%v, execAllow=true, %d instructions\n", notify, len(prog))
		} else {
			fmt.Fprintf(&b, "# seccomp filter, notify=%v, %d instructions\n", notify, len(prog))
		}
		for i, ins := range prog {
			fmt.Fprintf(&b, "%3d  %-34s  {0x%02x, %d, %d, 0x%08x}\n", i, ins, raw[i].Op, raw[i].Jt, raw[i].Jf, raw[i].K)
		}
		got := b.String()
		if *update {
			if err := os.WriteFile(name, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("read golden (regenerate with -update): %v", err)
		}
		if got != string(want) {
			t.Errorf("filter program differs from %s; if intended, regenerate with -update\ngot:\n%s", name, got)
		}
	}
}

// seccompInput encodes struct seccomp_data for the x/net/bpf VM. The
// kernel loads 32-bit words in native (little-endian) order and the VM in
// network order, so each word is stored big-endian at the offset where the
// kernel finds it: an argument's low half at 16+8i, its high half after.
func seccompInput(arch uint32, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

func runFilter(t testing.TB, vm *bpf.VM, in []byte) uint32 {
	t.Helper()
	// The VM treats the input as a packet; seccomp_data is 64 bytes.
	v, err := vm.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

func TestFilterDecisions(t *testing.T) {
	prog, err := filterProgram(true, false)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	const x86 = auditArchX86_64
	for _, tt := range []struct {
		name string
		in   []byte
		want uint32
	}{
		{"read", seccompInput(x86, unix.SYS_READ), retAllow},
		{"execve", seccompInput(x86, unix.SYS_EXECVE), retNotify},
		{"execveat", seccompInput(x86, unix.SYS_EXECVEAT), retNotify},
		{"execveat empty path", seccompInput(x86, unix.SYS_EXECVEAT, 3, 0, 0, 0, unix.AT_EMPTY_PATH), retNotify},
		{"memfd_create", seccompInput(x86, unix.SYS_MEMFD_CREATE, 0, unix.MFD_CLOEXEC), retAllow},
		{"mount", seccompInput(x86, unix.SYS_MOUNT), retEPERM},
		{"ptrace", seccompInput(x86, unix.SYS_PTRACE), retEPERM},
		{"bpf", seccompInput(x86, unix.SYS_BPF), retEPERM},
		{"keyctl", seccompInput(x86, unix.SYS_KEYCTL), retEPERM},
		{"io_uring_setup", seccompInput(x86, unix.SYS_IO_URING_SETUP), retEPERM},
		{"clone3", seccompInput(x86, unix.SYS_CLONE3), retENOSYS},
		{"clone thread", seccompInput(x86, unix.SYS_CLONE, unix.CLONE_VM|unix.CLONE_THREAD), retAllow},
		{"clone newuser", seccompInput(x86, unix.SYS_CLONE, unix.CLONE_NEWUSER), retEPERM},
		{"clone newns", seccompInput(x86, unix.SYS_CLONE, unix.CLONE_NEWNS|unix.CLONE_VFORK), retEPERM},
		{"unshare files", seccompInput(x86, unix.SYS_UNSHARE, unix.CLONE_FILES), retAllow},
		{"unshare newuser", seccompInput(x86, unix.SYS_UNSHARE, unix.CLONE_NEWUSER), retEPERM},
		{"unshare newnet", seccompInput(x86, unix.SYS_UNSHARE, unix.CLONE_NEWNET), retEPERM},
		{"ioctl TCGETS", seccompInput(x86, unix.SYS_IOCTL, 0, unix.TCGETS), retAllow},
		{"ioctl TIOCSTI", seccompInput(x86, unix.SYS_IOCTL, 0, unix.TIOCSTI), retEPERM},
		{"ioctl TIOCSTI high bits", seccompInput(x86, unix.SYS_IOCTL, 0, 1<<32|unix.TIOCSTI), retEPERM},
		{"ioctl TIOCLINUX", seccompInput(x86, unix.SYS_IOCTL, 0, unix.TIOCLINUX), retEPERM},
		{"socket unix", seccompInput(x86, unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM), retAllow},
		{"socket tcp", seccompInput(x86, unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC), retAllow},
		{"socket udp6", seccompInput(x86, unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM), retAllow},
		{"socket raw", seccompInput(x86, unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK), retEPERM},
		{"socket raw6", seccompInput(x86, unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_RAW), retEPERM},
		{"socket packet", seccompInput(x86, unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_DGRAM), retNoAF},
		{"socket vsock", seccompInput(x86, unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM), retNoAF},
		{"socket netlink route", seccompInput(x86, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE), retAllow},
		{"socket netlink audit", seccompInput(x86, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT), retEPERM},
		{"personality query", seccompInput(x86, unix.SYS_PERSONALITY, 0xffffffff), retAllow},
		{"personality linux", seccompInput(x86, unix.SYS_PERSONALITY, 0), retAllow},
		{"personality no-aslr", seccompInput(x86, unix.SYS_PERSONALITY, 0x0040000), retEPERM},
		{"x32 getpid", seccompInput(x86, unix.SYS_GETPID|x32SyscallBit), retKill},
		{"i386 arch", seccompInput(0x40000003, 20), retKill},
		{"aarch64 arch", seccompInput(0xc00000b7, unix.SYS_READ), retKill},
	} {
		if got := runFilter(t, vm, tt.in); got != tt.want {
			t.Errorf("filter(%s) = %#x, want %#x", tt.name, got, tt.want)
		}
	}
	for _, d := range deniedSyscalls {
		if got := runFilter(t, vm, seccompInput(x86, d.nr)); got != retEPERM {
			t.Errorf("filter(%s) = %#x, want EPERM", d.name, got)
		}
	}
	quiet, _ := filterProgram(false, false)
	qvm, _ := bpf.NewVM(quiet)
	if got := runFilter(t, qvm, seccompInput(x86, unix.SYS_EXECVE)); got != retAllow {
		t.Errorf("filter without notify: execve = %#x, want allow", got)
	}
}

// TestFilterExecAllow checks the rules that guard an exec allowlist, with
// and without the exec record.
func TestFilterExecAllow(t *testing.T) {
	const x86 = auditArchX86_64
	for _, notify := range []bool{true, false} {
		prog, err := filterProgram(notify, true)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		execRet := uint32(retAllow)
		if notify {
			execRet = retNotify
		}
		for _, tt := range []struct {
			name string
			in   []byte
			want uint32
		}{
			{"execve", seccompInput(x86, unix.SYS_EXECVE), execRet},
			{"execveat path", seccompInput(x86, unix.SYS_EXECVEAT, unix.AT_FDCWD&0xffffffff, 0, 0, 0, 0), execRet},
			{"execveat nofollow", seccompInput(x86, unix.SYS_EXECVEAT, 3, 0, 0, 0, unix.AT_SYMLINK_NOFOLLOW), execRet},
			{"execveat empty path", seccompInput(x86, unix.SYS_EXECVEAT, 3, 0, 0, 0, unix.AT_EMPTY_PATH), retEPERM},
			{"execveat empty path nofollow", seccompInput(x86, unix.SYS_EXECVEAT, 3, 0, 0, 0, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW), retEPERM},
			{"execveat empty path high bits", seccompInput(x86, unix.SYS_EXECVEAT, 3, 0, 0, 0, 1<<40|unix.AT_EMPTY_PATH), retEPERM},
			{"memfd_create", seccompInput(x86, unix.SYS_MEMFD_CREATE, 0, 0), retENOSYS},
			{"memfd_create exec", seccompInput(x86, unix.SYS_MEMFD_CREATE, 0, unix.MFD_EXEC), retENOSYS},
			{"memfd_create noexec seal", seccompInput(x86, unix.SYS_MEMFD_CREATE, 0, unix.MFD_NOEXEC_SEAL), retENOSYS},
			{"memfd_secret", seccompInput(x86, unix.SYS_MEMFD_SECRET), retENOSYS},
			{"read", seccompInput(x86, unix.SYS_READ), retAllow},
			{"mmap", seccompInput(x86, unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC), retAllow},
			{"mount", seccompInput(x86, unix.SYS_MOUNT), retEPERM},
			{"clone newuser", seccompInput(x86, unix.SYS_CLONE, unix.CLONE_NEWUSER), retEPERM},
			{"x32 execveat", seccompInput(x86, unix.SYS_EXECVEAT|x32SyscallBit), retKill},
		} {
			if got := runFilter(t, vm, tt.in); got != tt.want {
				t.Errorf("filter(notify=%v, execAllow)(%s) = %#x, want %#x", notify, tt.name, got, tt.want)
			}
		}
		for _, d := range deniedSyscalls {
			if got := runFilter(t, vm, seccompInput(x86, d.nr)); got != retEPERM {
				t.Errorf("filter(notify=%v, execAllow)(%s) = %#x, want EPERM", notify, d.name, got)
			}
		}
	}
}

// FuzzFilter checks that no input reaches ALLOW for a denied call, a
// foreign architecture or the x32 ABI, whatever its arguments.
//
// It fuzzes the variant with the exec-allowlist rules, which only adds
// refusals to the default one.
func FuzzFilter(f *testing.F) {
	prog, err := filterProgram(true, true)
	if err != nil {
		f.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(auditArchX86_64), uint32(unix.SYS_MOUNT), uint64(0), uint64(0), uint64(0))
	f.Add(uint32(auditArchX86_64), uint32(unix.SYS_CLONE), uint64(unix.CLONE_NEWUSER), uint64(0), uint64(0))
	f.Add(uint32(auditArchX86_64), uint32(unix.SYS_SOCKET), uint64(unix.AF_INET), uint64(unix.SOCK_RAW), uint64(0))
	f.Fuzz(func(t *testing.T, arch, nr uint32, a0, a1, a2 uint64) {
		got := runFilter(t, vm, seccompInput(arch, nr, a0, a1, a2))
		if got != retAllow {
			return
		}
		if arch != auditArchX86_64 || nr&x32SyscallBit != 0 {
			t.Fatalf("allowed arch %#x nr %#x", arch, nr)
		}
		for _, d := range deniedSyscalls {
			if nr == d.nr {
				t.Fatalf("allowed denied call %s", d.name)
			}
		}
		switch nr {
		case unix.SYS_CLONE, unix.SYS_UNSHARE:
			if uint32(a0)&nsFlags != 0 {
				t.Fatalf("allowed namespace flags %#x", a0)
			}
		case unix.SYS_IOCTL:
			if r := uint32(a1); r == unix.TIOCSTI || r == unix.TIOCLINUX {
				t.Fatalf("allowed ioctl %#x", r)
			}
		case unix.SYS_SOCKET:
			// AF_UNIX treats SOCK_RAW as SOCK_DGRAM; raw IP is the concern.
			fam, typ := uint32(a0), uint32(a1)&0xf
			if (fam == unix.AF_INET || fam == unix.AF_INET6) && (typ == unix.SOCK_RAW || typ == unix.SOCK_PACKET) {
				t.Fatalf("allowed raw IP socket family %d type %d", fam, typ)
			}
			if fam != unix.AF_UNIX && fam != unix.AF_INET && fam != unix.AF_INET6 && fam != unix.AF_NETLINK {
				t.Fatalf("allowed socket family %d", fam)
			}
		case unix.SYS_CLONE3, unix.SYS_EXECVE, unix.SYS_EXECVEAT, unix.SYS_MEMFD_CREATE, unix.SYS_MEMFD_SECRET:
			t.Fatalf("allowed %d outright", nr)
		}
	})
}
