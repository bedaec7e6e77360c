package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// FakeRecorder keeps every event in memory. Its func fields, when set,
// decide the error each method returns.
type FakeRecorder struct {
	mu     sync.Mutex
	starts []Flow
	ends   []Flow
	dns    []DNSQuery

	StartErr func(*Flow) error
	DNSErr   func(DNSQuery) error
}

var _ Recorder = (*FakeRecorder)(nil)

func (r *FakeRecorder) FlowStart(ctx context.Context, f *Flow) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, *f)
	if r.StartErr != nil {
		return r.StartErr(f)
	}
	return nil
}

func (r *FakeRecorder) FlowEnd(ctx context.Context, f *Flow) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, *f)
	return nil
}

func (r *FakeRecorder) DNSQuery(ctx context.Context, q DNSQuery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dns = append(r.dns, q)
	if r.DNSErr != nil {
		return r.DNSErr(q)
	}
	return nil
}

func (r *FakeRecorder) Ends() []Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ends)
}

func (r *FakeRecorder) Starts() []Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.starts)
}

func (r *FakeRecorder) Queries() []DNSQuery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.dns)
}

// waitEnds waits until at least n flows have ended and returns them.
func (r *FakeRecorder) waitEnds(t testing.TB, n int) []Flow {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ends := r.Ends()
		if len(ends) >= n {
			return ends
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d flow ends, got %d: %+v", n, len(ends), ends)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FakeResolver answers from a map and remembers every name it was asked.
type FakeResolver struct {
	mu     sync.Mutex
	Names  map[string][]netip.Addr
	Lookup func(host string) ([]netip.Addr, error) // overrides Names when set
	asked  []string
}

var _ Resolver = (*FakeResolver)(nil)

func (r *FakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.asked = append(r.asked, host)
	r.mu.Unlock()
	if r.Lookup != nil {
		return r.Lookup(host)
	}
	addrs, ok := r.Names[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if network == "ip4" {
		addrs = slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return !a.Unmap().Is4() })
	}
	return addrs, nil
}

func (r *FakeResolver) Asked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// dialLog wraps a real dialer and records every address dialled.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *dialLog) Addrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs)
}

type testProxy struct {
	p    *Proxy
	addr string
	rec  *FakeRecorder
	res  *FakeResolver
	dial *dialLog
}

// startProxy serves a proxy with n on a loopback listener.
func startProxy(t testing.TB, n *policy.Network, names map[string][]netip.Addr, tweak func(*Config)) *testProxy {
	t.Helper()
	tp := &testProxy{rec: &FakeRecorder{}, res: &FakeResolver{Names: names}, dial: &dialLog{}}
	cfg := Config{Network: n, Recorder: tp.rec, Resolver: tp.res, Dial: tp.dial.Dial}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(l) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve() = %v, want ErrClosed", err)
		}
	})
	tp.p, tp.addr = p, l.Addr().String()
	return tp
}

// rawRequest sends raw bytes to the proxy and reads one response.
func (tp *testProxy) rawRequest(t testing.TB, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", truncate(raw, 80), err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// upstream is a loopback HTTP server that remembers what it was sent.
type upstream struct {
	mu   sync.Mutex
	reqs []*http.Request
	srv  *http.Server
	addr netip.AddrPort
}

func startUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = netip.MustParseAddrPort(l.Addr().String())
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		u.mu.Lock()
		u.reqs = append(u.reqs, r)
		u.mu.Unlock()
		if n := r.URL.Query().Get("size"); n != "" {
			size, _ := strconv.Atoi(n)
			w.Header().Set("Content-Length", n)
			w.Write(make([]byte, size))
			return
		}
		fmt.Fprintf(w, "hello %s %s %d", r.Method, r.URL.Path, len(body))
	})}
	go u.srv.Serve(l)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) Requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs)
}

func (u *upstream) Port() int { return int(u.addr.Port()) }
