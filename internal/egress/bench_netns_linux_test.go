//go:build linux

package egress

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/enclave-dev/enclave/internal/sandbox"
)

// sandboxNetns makes a network namespace holding only loopback, as the
// sandbox's init does, and returns a path to it and a listener bound to
// 127.0.0.1 inside it: the agent's side of the proxy, as in a session.
// With bigTCP, loopback there allows 512 KiB GSO and GRO packets (BIG
// TCP, IPv4 and IPv6), a setting the init could apply to the sandbox's own
// loopback. It needs root; the namespace lives until the test ends.
func sandboxNetns(t *testing.T, bigTCP bool) (path string, l net.Listener) {
	t.Helper()
	type result struct {
		path string
		l    net.Listener
		err  error
	}
	ch, done := make(chan result), make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		// The thread stays locked and ends with this goroutine: it is in
		// the new namespace and must never run other goroutines.
		runtime.LockOSThread()
		var r result
		r.err = func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare network namespace: %w", err)
			}
			if err := sandbox.LoopbackUp(); err != nil {
				return err
			}
			if bigTCP {
				if err := setLoopbackGSO(524280); err != nil { // the kernel's limit, 512 KiB - 8
					return err
				}
			}
			var err error
			r.l, err = net.Listen("tcp", "127.0.0.1:0")
			r.path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
			return err
		}()
		ch <- r
		<-done
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("sandbox-like network namespace: %v", r.err)
	}
	return r.path, r.l
}

// setLoopbackGSO sets the largest GSO and GRO packet on this namespace's
// loopback (ifindex 1), for IPv6 and, on kernels since 6.3, IPv4.
func setLoopbackGSO(size uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg, 64)
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_NEWLINK)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)                     // sequence
	binary.NativeEndian.PutUint32(msg[unix.SizeofNlMsghdr+4:], 1) // ifindex of lo
	for _, typ := range []uint16{unix.IFLA_GSO_MAX_SIZE, unix.IFLA_GRO_MAX_SIZE, unix.IFLA_GSO_IPV4_MAX_SIZE, unix.IFLA_GRO_IPV4_MAX_SIZE} {
		msg = binary.NativeEndian.AppendUint16(msg, 8)
		msg = binary.NativeEndian.AppendUint16(msg, typ)
		msg = binary.NativeEndian.AppendUint32(msg, size)
	}
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("set lo GSO size: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("set lo GSO size: %w", err)
	}
	if n >= unix.SizeofNlMsghdr+4 && binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if e := int32(binary.NativeEndian.Uint32(buf[unix.SizeofNlMsghdr:])); e != 0 {
			return fmt.Errorf("set lo GSO size: %w", unix.Errno(-e))
		}
	}
	return nil
}

// dialIn dials addr from inside the network namespace at path: the bench
// client's connection to a proxy listening in a sandbox-like namespace.
func dialIn(path, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the namespace
		var r result
		r.err = func() error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter network namespace: %w", err)
			}
			r.c, err = net.Dial("tcp", addr)
			return err
		}()
		ch <- r
	}()
	r := <-ch
	return r.c, r.err
}
