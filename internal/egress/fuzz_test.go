package egress

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// scriptConn is an agent connection that reads a fixed input, then EOF,
// and keeps what the proxy writes. Deadlines are accepted and ignored: the
// input never blocks.
type scriptConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (c *scriptConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(b)
}
func (c *scriptConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3128}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// cannedUpstream is what the fuzz harness's Dial returns: once it has been
// sent something (or half-closed), it answers one fixed HTTP response, then
// EOF. Answering before being asked would look like an unsolicited
// response to the transport.
type cannedUpstream struct {
	scriptConn
	addr  string
	once  sync.Once
	asked chan struct{}
}

func newCanned(addr, answer string) *cannedUpstream {
	return &cannedUpstream{scriptConn: scriptConn{r: bytes.NewReader([]byte(answer))}, addr: addr, asked: make(chan struct{})}
}

func (c *cannedUpstream) Read(b []byte) (int, error) {
	<-c.asked
	return c.scriptConn.Read(b)
}

func (c *cannedUpstream) Write(b []byte) (int, error) {
	n, err := c.scriptConn.Write(b)
	c.once.Do(func() { close(c.asked) })
	return n, err
}

func (c *cannedUpstream) CloseWrite() error {
	c.once.Do(func() { close(c.asked) })
	return nil
}

func (c *cannedUpstream) Close() error {
	c.once.Do(func() { close(c.asked) })
	return c.scriptConn.Close()
}

func (c *cannedUpstream) RemoteAddr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(c.addr))
}

// FuzzProxyRequest feeds raw bytes to the proxy as one agent connection.
// Properties: it never panics; it answers or closes (serveConn returns);
// whatever it writes starts as an HTTP/1.1 response; it never dials an
// address the policy does not allow, and dials only for flows recorded as
// allowed.
func FuzzProxyRequest(f *testing.F) {
	for _, s := range []string{
		"GET http://allowed.test/ok/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
		"GET http://allowed.test/no HTTP/1.1\r\n\r\n",
		"GET http://denied.test/ok/x HTTP/1.1\r\n\r\n",
		"GET http://private.test/ HTTP/1.1\r\n\r\n",
		"GET http://127.0.0.1/ HTTP/1.1\r\n\r\nGET http://127.0.0.1/ HTTP/1.1\r\n\r\n",
		"POST http://127.0.0.1/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
		"POST http://127.0.0.1/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST http://127.0.0.1/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
		"CONNECT denied.test:443 HTTP/1.1\r\n\r\nGET http://127.0.0.1/ HTTP/1.1\r\n\r\n",
		"CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
		"GET http://allowed.test/ok/%2e%2e/x HTTP/1.1\r\n\r\n",
		"GET http://127.1/ HTTP/1.1\r\n\r\n",
		"\r\n\r\nGET http://127.0.0.1/ HTTP/1.0\r\n\r\n",
		"PUT http://127.0.0.1/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
	} {
		f.Add([]byte(s))
	}
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "allowed.test", Ports: []int{80, 443}, Methods: []string{"GET"}, Paths: []string{"/ok/**"}, AllowConnect: true},
		{Host: "private.test"},
		{Host: "127.0.0.1", Ports: []int{80}},
	}}
	allowedHosts := map[string]bool{"allowed.test": true, "127.0.0.1": true}
	allowedDials := map[string]bool{"127.0.0.1:80": true, "127.0.0.1:443": true}
	rec := &FakeRecorder{}
	res := &FakeResolver{Names: map[string][]netip.Addr{
		"allowed.test": addrs("127.0.0.1"),
		"denied.test":  addrs("127.0.0.1"),
		"private.test": addrs("10.0.0.1"),
	}}
	var mu sync.Mutex
	var dials []string
	p, err := New(Config{
		Network: n, Recorder: rec, Resolver: res,
		IdleTimeout: 200 * time.Millisecond, HeaderTimeout: 200 * time.Millisecond,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dials = append(dials, addr)
			mu.Unlock()
			return newCanned(addr, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), nil
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		mu.Lock()
		dials = dials[:0]
		mu.Unlock()
		startsBefore := len(rec.Starts())
		c := &scriptConn{r: bytes.NewReader(in)}
		done := make(chan struct{})
		go func() {
			p.serveConn(c)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("serveConn did not return for %q", in)
		}
		c.mu.Lock()
		out := c.out.String()
		c.mu.Unlock()
		if out != "" && !strings.HasPrefix(out, "HTTP/1.1 ") {
			t.Fatalf("output does not start with a status line: %q", truncate(out, 100))
		}
		allowedFlows := 0
		for _, s := range rec.Starts()[startsBefore:] {
			if s.Decision.Allow {
				allowedFlows++
				if !allowedHosts[s.Host] {
					t.Fatalf("flow to %q recorded as allowed", s.Host)
				}
				if d := n.Decide(policy.Request{Host: s.Host, Port: s.Port, Method: s.Method, Path: s.Path}); !d.Allow {
					t.Fatalf("flow %+v allowed, but the policy says %s", s, d.Reason)
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, d := range dials {
			if !allowedDials[d] {
				t.Fatalf("dialled %q", d)
			}
		}
		if len(dials) > 0 && allowedFlows == 0 {
			t.Fatalf("dialled %v with no flow recorded as allowed", dials)
		}
	})
}

// TestFuzzHarnessCanFail runs the harness's checks against inputs known to
// dial, to show the dial property observes real dials.
func TestFuzzHarnessCanFail(t *testing.T) {
	var dialled []string
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{80}}}}
	p, err := New(Config{Network: n, Recorder: &FakeRecorder{}, Resolver: &FakeResolver{},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled = append(dialled, addr)
			return newCanned(addr, "HTTP/1.1 204 No Content\r\n\r\n"), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := &scriptConn{r: bytes.NewReader([]byte("GET http://127.0.0.1/ HTTP/1.1\r\n\r\n"))}
	p.serveConn(c)
	if fmt.Sprint(dialled) != "[127.0.0.1:80]" || !strings.HasPrefix(c.out.String(), "HTTP/1.1 204") {
		t.Errorf("dialled %v, answered %q", dialled, c.out.String())
	}
}
