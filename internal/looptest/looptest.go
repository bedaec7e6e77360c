// Package looptest serves TCP on loopback for tests and benchmarks: a
// server that hands each connection to a function, and a bare relay that
// forwards every connection to one upstream byte for byte, with no request
// parsed and no policy, budget or record. The relay is the floor a
// proxy's cost is measured against (what one more hop costs in the kernel
// and the Go runtime). Only tests import it.
package looptest

import (
	"io"
	"net"
	"strconv"
	"testing"
)

// Serve accepts connections on a loopback port until the test ends, runs
// handle for each in a goroutine of its own, and returns the address.
// handle owns the connection and closes it.
func Serve(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return l.Addr().String()
}

// Relay serves a relay to upstream (host:port) until the test ends and
// returns its address. move copies one direction; nil means io.Copy,
// which Go implements with splice(2) between two TCP connections.
func Relay(tb testing.TB, upstream string, move func(dst, src *net.TCPConn)) string {
	tb.Helper()
	if move == nil {
		move = func(dst, src *net.TCPConn) { io.Copy(dst, src) }
	}
	return Serve(tb, func(c net.Conn) { relay(c.(*net.TCPConn), upstream, move) })
}

// relay forwards c to upstream both ways; each direction half-closes its
// destination when its source ends.
func relay(c *net.TCPConn, upstream string, move func(dst, src *net.TCPConn)) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{})
	one := func(dst, src *net.TCPConn) {
		move(dst, src)
		dst.CloseWrite()
		done <- struct{}{}
	}
	go one(u.(*net.TCPConn), c)
	go one(c, u.(*net.TCPConn))
	<-done
	<-done
}

// Port is the port of an address Serve or Relay returned.
func Port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
