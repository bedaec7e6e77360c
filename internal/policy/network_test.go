package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func mustNetwork(t testing.TB, yaml string) *Network {
	t.Helper()
	p, err := Parse("test.yaml", []byte("version: 1\nprofiles:\n  default:\n    network:\n      allow:\n"+yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &p.Profiles["default"].Network
}

func TestDecideHosts(t *testing.T) {
	n := mustNetwork(t, `
        - host: "*.example.com"
        - host: api.example.org
        - host: Registry.Example.NET.
          ports: [8443]
        - host: 127.0.0.1
          ports: [8080]
        - host: "[::1]"
          ports: [9000]
`)
	for _, tt := range []struct {
		host  string
		port  int
		allow bool
		rule  string
	}{
		{"a.example.com", 443, true, "network.allow[0]"},
		{"a.b.example.com", 443, true, "network.allow[0]"},
		{"A.EXAMPLE.COM", 80, true, "network.allow[0]"},
		{"a.example.com.", 443, true, "network.allow[0]"},
		{"example.com", 443, false, "default-deny"},
		{"evil-example.com", 443, false, "default-deny"},
		{"aexample.com", 443, false, "default-deny"},
		{"example.com.evil.net", 443, false, "default-deny"},
		{".example.com", 443, false, "default-deny"},
		{"a..example.com", 443, false, "default-deny"},
		{"a.example.com..", 443, false, "default-deny"},
		{"*.example.com", 443, false, "default-deny"},
		{"a.example.com\x00.evil.net", 443, false, "default-deny"},
		{"a b.example.com", 443, false, "default-deny"},
		{"a.example.com", 8443, false, "default-deny"},
		{"api.example.org", 443, true, "network.allow[1]"},
		{"x.api.example.org", 443, false, "default-deny"},
		{"api.example.org.evil", 443, false, "default-deny"},
		{"registry.example.net", 8443, true, "network.allow[2]"},
		{"registry.example.net", 443, false, "default-deny"},
		{"127.0.0.1", 8080, true, "network.allow[3]"},
		{"127.0.0.1", 80, false, "default-deny"},
		{"::ffff:127.0.0.1", 8080, true, "network.allow[3]"},
		{"127.0.0.2", 8080, false, "default-deny"},
		{"127.1", 8080, false, "default-deny"},
		{"[::1]", 9000, true, "network.allow[4]"},
		{"::1", 9000, true, "network.allow[4]"},
		{"localhost", 8080, false, "default-deny"},
		{"", 443, false, "default-deny"},
	} {
		d := n.Decide(Request{Host: tt.host, Port: tt.port, Method: "CONNECT"})
		if d.Allow != tt.allow || d.Rule != tt.rule {
			t.Errorf("Decide(%q:%d) = %v %s (%s), want %v %s", tt.host, tt.port, d.Allow, d.Rule, d.Reason, tt.allow, tt.rule)
		}
		if d.Reason == "" {
			t.Errorf("Decide(%q:%d) has no reason", tt.host, tt.port)
		}
	}
}

func TestDecideMethodsPaths(t *testing.T) {
	n := mustNetwork(t, `
        - host: pypi.example.com
          ports: [80]
          methods: [get, HEAD]
          paths: ["/simple/**", "/packages/*/*.whl"]
        - host: tunnel.example.com
          methods: [GET]
          allow_connect: true
        - host: plain.example.com
`)
	for _, tt := range []struct {
		host, method, path string
		port               int
		allow              bool
	}{
		{"pypi.example.com", "GET", "/simple/", 80, true},
		{"pypi.example.com", "GET", "/simple", 80, true},
		{"pypi.example.com", "GET", "/simple/requests/", 80, true},
		{"pypi.example.com", "HEAD", "/simple/a/b/c", 80, true},
		{"pypi.example.com", "get", "/simple/x", 80, true},
		{"pypi.example.com", "POST", "/simple/x", 80, false},
		{"pypi.example.com", "PUT", "/packages/a/x.whl", 80, false},
		{"pypi.example.com", "GET", "/packages/a/x.whl", 80, true},
		{"pypi.example.com", "GET", "/packages/a/b/x.whl", 80, false},
		{"pypi.example.com", "GET", "/packages/a/x.whl?x=1", 80, true},
		{"pypi.example.com", "GET", "/upload", 80, false},
		{"pypi.example.com", "GET", "/simplex", 80, false},
		{"pypi.example.com", "GET", "/simple/../upload", 80, false},
		{"pypi.example.com", "GET", "/simple/%2e%2e/upload", 80, false},
		{"pypi.example.com", "GET", "/simple/%2E%2E/upload", 80, false},
		{"pypi.example.com", "GET", "/simple/..;/upload", 80, false},
		{"pypi.example.com", "GET", "/simple/x;v=1", 80, true},
		{"pypi.example.com", "GET", "/simple%2fx", 80, false},
		{"pypi.example.com", "GET", "/simple/..%2fupload", 80, false},
		{"pypi.example.com", "GET", "/simple/..%5cupload", 80, false},
		{"pypi.example.com", "GET", `/simple/..\upload`, 80, false},
		{"pypi.example.com", "GET", "/simple/%252e%252e/upload", 80, false},
		{"pypi.example.com", "GET", "/simple/%zz", 80, false},
		{"pypi.example.com", "GET", "/simple/%00", 80, false},
		{"pypi.example.com", "GET", "/simple/%61", 80, true},
		{"pypi.example.com", "GET", "//simple/x", 80, true},
		{"pypi.example.com", "GET", "simple/x", 80, false},
		{"pypi.example.com", "CONNECT", "", 80, false},
		{"tunnel.example.com", "CONNECT", "", 443, true},
		{"tunnel.example.com", "GET", "/x", 80, true},
		{"tunnel.example.com", "POST", "/x", 80, false},
		{"plain.example.com", "DELETE", "/anything", 80, true},
		{"plain.example.com", "CONNECT", "", 443, true},
	} {
		d := n.Decide(Request{Host: tt.host, Port: tt.port, Method: tt.method, Path: tt.path})
		if d.Allow != tt.allow {
			t.Errorf("Decide(%s %s:%d%s) = %v (%s: %s), want %v", tt.method, tt.host, tt.port, tt.path, d.Allow, d.Rule, d.Reason, tt.allow)
		}
	}
}

func TestMatchPath(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{"/**", "/", true},
		{"/**", "/a/b", true},
		{"/*", "/", true},
		{"/*", "/a", true},
		{"/*", "/a/b", false},
		{"/a/**/z", "/a/z", true},
		{"/a/**/z", "/a/b/c/z", true},
		{"/a/**/z", "/a/b/c/y", false},
		{"/v1/*/info", "/v1/pkg/info", true},
		{"/v1/*/info", "/v1/pkg/sub/info", false},
		{"/v1/*.json", "/v1/a.json", true},
		{"/v1/*.json", "/v1/a.json/x", false},
		{"/a/b", "/a/b/", true}, // cleaned
		{"/a/b", "/a/./b", true},
		{"/b/*", "/a/../b/c", true},
		{"/a/*", "/a/../b/c", false},
		{"/a/**", "/a/../../etc/passwd", false},
		{"/a/**", "", false},
		{"/**", "", true},
	} {
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestMatchPathHostilePatterns(t *testing.T) {
	// A backtracking matcher takes seconds to minutes on these.
	start := time.Now()
	for _, tt := range []struct{ pattern, path string }{
		{strings.Repeat("/**", 12) + "/z", strings.Repeat("/a", 200)},
		{"/" + strings.Repeat("*a", 30) + "b", "/" + strings.Repeat("a", 500)},
		{"/x/\xff*", "/x/\xff"},
	} {
		if MatchPath(tt.pattern, tt.path) {
			t.Errorf("MatchPath(%q, ...) = true", tt.pattern)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("hostile patterns took %v", d)
	}
}

func TestAllowsNameAndIP(t *testing.T) {
	n := mustNetwork(t, `
        - host: "*.example.com"
        - host: 10.0.0.7
          ports: [5432]
        - host: "fd00::1"
          ports: [80]
`)
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"a.example.com", true}, {"A.Example.Com.", true}, {"example.com", false},
		{"evil-example.com", false}, {"other.net", false},
	} {
		if got := n.AllowsName(tt.name); got != tt.want {
			t.Errorf("AllowsName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	for _, tt := range []struct {
		addr string
		port int
		want bool
	}{
		{"10.0.0.7", 5432, true}, {"::ffff:10.0.0.7", 5432, true}, {"10.0.0.7", 443, false},
		{"10.0.0.8", 5432, false}, {"fd00::1", 80, true}, {"fd00::2", 80, false},
		{"169.254.169.254", 80, false}, {"127.0.0.1", 443, false},
	} {
		if got := n.AllowsIP(netip.MustParseAddr(tt.addr), tt.port); got != tt.want {
			t.Errorf("AllowsIP(%s, %d) = %v, want %v", tt.addr, tt.port, got, tt.want)
		}
	}
}

func TestDefaultNetworkDeniesAll(t *testing.T) {
	pr, err := Default().Profile("")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"registry.example.com", "127.0.0.1", "169.254.169.254", "localhost"} {
		if d := pr.Network.Decide(Request{Host: h, Port: 443, Method: "CONNECT"}); d.Allow {
			t.Errorf("default Decide(%s) = allow (%s)", h, d.Reason)
		}
		if pr.Network.AllowsName(h) {
			t.Errorf("default AllowsName(%s) = true", h)
		}
	}
	if pr.Network.AllowsIP(netip.MustParseAddr("127.0.0.1"), 443) {
		t.Error("default AllowsIP(127.0.0.1) = true")
	}
}

func BenchmarkDecide(b *testing.B) {
	n := mustNetwork(b, `
        - host: registry.example.com
        - host: "*.cdn.example.com"
        - host: pypi.example.com
          ports: [80]
          methods: [GET, HEAD]
          paths: ["/simple/**", "/packages/**"]
        - host: api.example.org
        - host: "*.example.net"
        - host: 127.0.0.1
          ports: [8080]
`)
	for _, bc := range []struct {
		name string
		r    Request
	}{
		{"connect-first", Request{Host: "registry.example.com", Port: 443, Method: "CONNECT"}},
		{"get-path", Request{Host: "pypi.example.com", Port: 80, Method: "GET", Path: "/simple/requests/"}},
		{"deny", Request{Host: "evil.example.biz", Port: 443, Method: "CONNECT"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n.Decide(bc.r)
			}
		})
	}
}
