// Package relaytest serves a bare TCP relay for benchmarks: every
// connection is forwarded to one upstream byte for byte, with no request
// parsed, no policy, budget or record. It is the floor a proxy's cost is
// measured against (what one more hop costs in the kernel and the Go
// runtime). Only tests import it.
package relaytest

import (
	"io"
	"net"
	"testing"
)

// Start serves a relay to upstream (host:port) on a loopback port until the
// test ends and returns its address. move copies one direction; nil means
// io.Copy, which Go implements with splice(2) between two TCP connections.
func Start(tb testing.TB, upstream string, move func(dst, src *net.TCPConn)) string {
	if move == nil {
		move = func(dst, src *net.TCPConn) { io.Copy(dst, src) }
	}
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
			go relay(c.(*net.TCPConn), upstream, move)
		}
	}()
	return l.Addr().String()
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
