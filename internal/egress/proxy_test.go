package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/looptest"
	"github.com/enclave-dev/enclave/internal/policy"
)

// decisionPolicy is the policy the decision table runs against. The
// upstream test server listens on 127.0.0.1:port; names resolve through a
// fake resolver, and only the rule naming 127.0.0.1 lets the proxy reach
// loopback.
func decisionPolicy(port int) (*policy.Network, map[string][]netip.Addr) {
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "api.test", Ports: []int{port}, Methods: []string{"GET"}, Paths: []string{"/v1/**"}},
		{Host: "*.wild.test", Ports: []int{port}},
		{Host: "127.0.0.1", Ports: []int{port}},
		{Host: "private.test", Ports: []int{port}},
		{Host: "meta.test", Ports: []int{port}},
		{Host: "rebind.test", Ports: []int{port}},
		{Host: "mapped.test", Ports: []int{port}},
		{Host: "cgnat.test", Ports: []int{port}},
		{Host: "v6loop.test", Ports: []int{port}},
		{Host: "loop.test", Ports: []int{port}},
	}}
	names := map[string][]netip.Addr{
		"api.test":      addrs("127.0.0.1"),
		"x.wild.test":   addrs("127.0.0.1"),
		"wild.test":     addrs("127.0.0.1"),
		"private.test":  addrs("10.1.2.3"),
		"meta.test":     addrs("169.254.169.254"),
		"rebind.test":   addrs("127.0.0.1", "10.0.0.1"),
		"mapped.test":   addrs("::ffff:169.254.169.254"),
		"cgnat.test":    addrs("100.100.100.200"),
		"v6loop.test":   addrs("::1"),
		"loop.test":     addrs("127.0.0.1"),
		"unknown.test":  addrs("127.0.0.1"),
		"other.test":    addrs("127.0.0.1"),
		"decoy.example": addrs("127.0.0.1"),
	}
	return n, names
}

func TestDecisionsEndToEnd(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n, names := decisionPolicy(port)
	tp := startProxy(t, n, names, nil)
	P := fmt.Sprint(port)

	for _, tt := range []struct {
		name     string
		raw      string
		status   int
		rule     string // expected X-Enclave-Rule on refusals; "" when allowed
		reason   string // substring of the reason
		upstream bool   // the upstream must see the request
	}{
		{"allowed path", "GET http://api.test:" + P + "/v1/models HTTP/1.1\r\nHost: api.test\r\n\r\n", 200, "", "", true},
		{"method denied", "POST http://api.test:" + P + "/v1/models HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 403, "network.allow[0]", "method POST", false},
		{"path denied", "GET http://api.test:" + P + "/v2/models HTTP/1.1\r\n\r\n", 403, "network.allow[0]", "path /v2/models", false},
		{"encoded path allowed", "GET http://api.test:" + P + "/v%31/x HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"encoded slash never matches a path rule", "GET http://api.test:" + P + "/v1/a%2Fb HTTP/1.1\r\n\r\n", 403, "network.allow[0]", "path", false},
		{"encoded slash escaping dir", "GET http://api.test:" + P + "/v1%2F..%2Fadmin HTTP/1.1\r\n\r\n", 400, RuleMalformed, "dot segment", false},
		{"dot-dot", "GET http://api.test:" + P + "/v1/../admin HTTP/1.1\r\n\r\n", 400, RuleMalformed, "dot segment", false},
		{"encoded dot-dot", "GET http://api.test:" + P + "/v1/%2e%2E/admin HTTP/1.1\r\n\r\n", 400, RuleMalformed, "dot segment", false},
		{"dot-dot-semicolon", "GET http://api.test:" + P + "/v1/..;/admin HTTP/1.1\r\n\r\n", 400, RuleMalformed, "dot segment", false},
		{"encoded backslash", "GET http://api.test:" + P + "/v1%5C..%5Cadmin HTTP/1.1\r\n\r\n", 400, RuleMalformed, "dot segment", false},
		{"encoded slash prefix trick", "GET http://api.test:" + P + "/v2%2Fv1/x HTTP/1.1\r\n\r\n", 403, "network.allow[0]", "path", false},
		{"encoded NUL", "GET http://api.test:" + P + "/v1/%00 HTTP/1.1\r\n\r\n", 400, RuleMalformed, "control byte", false},
		{"bad escape", "GET http://api.test:" + P + "/v1/%zz HTTP/1.1\r\n\r\n", 400, RuleMalformed, "escape", false},
		{"wildcard", "GET http://x.wild.test:" + P + "/ HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"wildcard does not match apex", "GET http://wild.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, "default-deny", "not on the policy", false},
		{"wrong port", "GET http://x.wild.test:1/ HTTP/1.1\r\n\r\n", 403, "default-deny", "port 1", false},
		{"default port 80 not allowed", "GET http://x.wild.test/ HTTP/1.1\r\n\r\n", 403, "default-deny", "port 80", false},
		{"named loopback IP", "GET http://127.0.0.1:" + P + "/ HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"other loopback IP", "GET http://127.0.0.2:" + P + "/ HTTP/1.1\r\n\r\n", 403, "default-deny", "127.0.0.2", false},
		{"IPv6 loopback literal", "GET http://[::1]:" + P + "/ HTTP/1.1\r\n\r\n", 403, "default-deny", "::1", false},
		// The policy matches IP literals by value: this is the named IP.
		{"mapped IPv6 literal of the named IP", "GET http://[::ffff:127.0.0.1]:" + P + "/ HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"mapped IPv6 literal of another IP", "GET http://[::ffff:127.0.0.2]:" + P + "/ HTTP/1.1\r\n\r\n", 403, "default-deny", "", false},
		{"decimal IP", "GET http://2130706433:" + P + "/ HTTP/1.1\r\n\r\n", 400, RuleMalformed, "numeric host", false},
		{"short IP", "GET http://127.1:" + P + "/ HTTP/1.1\r\n\r\n", 400, RuleMalformed, "numeric host", false},
		{"hex IP", "GET http://0x7f.0.0.1:" + P + "/ HTTP/1.1\r\n\r\n", 400, RuleMalformed, "numeric host", false},
		{"octal IP", "GET http://0177.0.0.1:" + P + "/ HTTP/1.1\r\n\r\n", 400, RuleMalformed, "numeric host", false},
		{"IPv6 without brackets", "CONNECT ::1:" + P + " HTTP/1.1\r\n\r\n", 400, RuleMalformed, "", false},
		{"private resolution", "GET http://private.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "10.1.2.3 (private)", false},
		{"metadata resolution", "GET http://meta.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "cloud metadata", false},
		{"metadata via mapped IPv6", "GET http://mapped.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "cloud metadata", false},
		{"alibaba metadata", "GET http://cgnat.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "cloud metadata", false},
		{"IPv6 loopback resolution", "GET http://v6loop.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "loopback", false},
		{"rebinding mix", "GET http://rebind.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, RuleAddress, "10.0.0.1", false},
		{"unknown host", "GET http://unknown.test:" + P + "/ HTTP/1.1\r\n\r\n", 403, "default-deny", "unknown.test is not on", false},
		{"https absolute form", "GET https://api.test:" + P + "/v1/x HTTP/1.1\r\n\r\n", 400, RuleMalformed, "CONNECT", false},
		{"origin form", "GET /v1/x HTTP/1.1\r\nHost: api.test:" + P + "\r\n\r\n", 400, RuleMalformed, "absolute", false},
		{"credentials in URL", "GET http://user:pw@api.test:" + P + "/v1/x HTTP/1.1\r\n\r\n", 400, RuleMalformed, "credentials", false},
		{"trailing dot host", "GET http://api.test.:" + P + "/v1/x HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"upper-case host", "GET http://API.TEST:" + P + "/v1/x HTTP/1.1\r\n\r\n", 200, "", "", true},
		{"underscore junk host", "GET http://api.test%00.evil:" + P + "/v1/x HTTP/1.1\r\n\r\n", 400, RuleMalformed, "", false},
		{"CONNECT to method-restricted host", "CONNECT api.test:" + P + " HTTP/1.1\r\n\r\n", 403, "network.allow[0]", "CONNECT", false},
		{"CONNECT to unknown host", "CONNECT unknown.test:443 HTTP/1.1\r\n\r\n", 403, "default-deny", "not on", false},
		{"CONNECT to metadata", "CONNECT meta.test:" + P + " HTTP/1.1\r\n\r\n", 403, RuleAddress, "cloud metadata", false},
		{"CONNECT with path", "CONNECT 127.0.0.1:" + P + "/x HTTP/1.1\r\n\r\n", 400, RuleMalformed, "port", false},
		{"CONNECT without port", "CONNECT x.wild.test HTTP/1.1\r\n\r\n", 400, RuleMalformed, "no port", false},
		{"CONNECT absolute URL", "CONNECT http://x.wild.test:" + P + "/ HTTP/1.1\r\n\r\n", 400, RuleMalformed, "", false},
		{"CONNECT with body", "CONNECT 127.0.0.1:" + P + " HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd", 400, RuleMalformed, "body", false},
		{"CONNECT chunked", "CONNECT 127.0.0.1:" + P + " HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, RuleMalformed, "body", false},
		{"CONNECT port zero", "CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400, RuleMalformed, "out of range", false},
		{"CONNECT signed port", "CONNECT 127.0.0.1:+" + P + " HTTP/1.1\r\n\r\n", 400, RuleMalformed, "port", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.Requests())
			resp, body := tp.rawRequest(t, tt.raw)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			gotRule := resp.Header.Get("X-Enclave-Rule")
			if gotRule != tt.rule {
				t.Errorf("X-Enclave-Rule = %q, want %q", gotRule, tt.rule)
			}
			if denied := resp.Header.Get("X-Enclave-Denied"); !strings.Contains(denied, tt.reason) || tt.rule != "" && denied == "" {
				t.Errorf("X-Enclave-Denied = %q, want it to contain %q", denied, tt.reason)
			}
			if tt.rule != "" && !strings.Contains(body, "egress refused") {
				t.Errorf("body = %q, want a plain-text refusal", body)
			}
			reached := len(up.Requests()) > before
			if reached != tt.upstream {
				t.Errorf("upstream reached = %v, want %v", reached, tt.upstream)
			}
		})
	}
	// Every dial went to a vetted IP, never to a name.
	for _, a := range tp.dial.Addrs() {
		if a != "127.0.0.1:"+P {
			t.Errorf("dialled %q, want only 127.0.0.1:%s", a, P)
		}
	}
	// A denied name is never looked up: the resolver must not carry it out.
	for _, name := range tp.res.Asked() {
		if name == "unknown.test" || name == "wild.test" {
			t.Errorf("resolver asked about denied name %q", name)
		}
	}
}

func TestLoopbackRefusedWithoutIPRule(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "loop.test", Ports: []int{port}}}}
	tp := startProxy(t, n, map[string][]netip.Addr{"loop.test": addrs("127.0.0.1")}, nil)
	for _, raw := range []string{
		fmt.Sprintf("GET http://loop.test:%d/ HTTP/1.1\r\n\r\n", port),
		fmt.Sprintf("CONNECT loop.test:%d HTTP/1.1\r\n\r\n", port),
		fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", port),
	} {
		resp, _ := tp.rawRequest(t, raw)
		if resp.StatusCode != 403 {
			t.Errorf("%q: status = %d, want 403", raw, resp.StatusCode)
		}
	}
	if got := len(up.Requests()); got != 0 {
		t.Errorf("upstream saw %d requests, want 0", got)
	}
	if got := tp.dial.Addrs(); len(got) != 0 {
		t.Errorf("dialled %v, want nothing", got)
	}
}

func TestForwardedHeaders(t *testing.T) {
	up := startUpstream(t)
	n, names := decisionPolicy(up.Port())
	tp := startProxy(t, n, names, nil)
	raw := fmt.Sprintf("GET http://api.test:%d/v1/h?q=1 HTTP/1.1\r\n"+
		"Host: decoy.example\r\n"+
		"Proxy-Authorization: Basic c2VjcmV0\r\n"+
		"Proxy-Foo: bar\r\n"+
		"Connection: keep-alive, X-Hop\r\n"+
		"X-Hop: secret\r\n"+
		"X-Keep: yes\r\n"+
		"Accept-Encoding: identity\r\n\r\n", up.Port())
	resp, _ := tp.rawRequest(t, raw)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	reqs := up.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if want := fmt.Sprintf("api.test:%d", up.Port()); r.Host != want {
		t.Errorf("upstream Host = %q, want %q (the URI's host, not the Host header)", r.Host, want)
	}
	for _, h := range []string{"Proxy-Authorization", "Proxy-Foo", "X-Hop", "Connection"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("upstream got %s: %q, want it stripped", h, v)
		}
	}
	if r.Header.Get("X-Keep") != "yes" || r.Header.Get("Accept-Encoding") != "identity" {
		t.Errorf("end-to-end headers lost: %v", r.Header)
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		t.Errorf("User-Agent = %q, want none added", ua)
	}
	if r.URL.RawQuery != "q=1" {
		t.Errorf("query = %q, want q=1", r.URL.RawQuery)
	}
	ends := tp.rec.waitEnds(t, 1)
	f := ends[len(ends)-1]
	if f.Host != "api.test" || f.Method != "GET" || f.Path != "/v1/h?q=1" || !f.Decision.Allow ||
		f.Addr != fmt.Sprintf("127.0.0.1:%d", up.Port()) || f.BytesUp == 0 || f.BytesDown == 0 || f.Partial {
		t.Errorf("flow record = %+v", f)
	}
}

// TestKeepAliveAndBodies sends several requests on one connection, with a
// Content-Length body, a chunked body and Expect: 100-continue.
func TestKeepAliveAndBodies(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, nil)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i, tt := range []struct{ raw, want string }{
		{"POST " + base + "/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "hello POST /a 5"},
		{"POST " + base + "/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "hello POST /b 5"},
		{"GET " + base + "/c HTTP/1.1\r\n\r\n", "hello GET /c 0"},
		{"GET " + base + "/big?size=300000 HTTP/1.1\r\n\r\n", ""},
	} {
		if _, err := io.WriteString(c, tt.raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("request %d body: %v", i, err)
		}
		if tt.want != "" && string(body) != tt.want {
			t.Errorf("request %d: body = %q, want %q", i, body, tt.want)
		}
		if tt.want == "" && len(body) != 300000 {
			t.Errorf("request %d: body length = %d, want 300000", i, len(body))
		}
	}
	// Expect: 100-continue gets its 100 from the proxy, then the answer.
	io.WriteString(c, "PUT "+base+"/e HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("got %q, want a 100 Continue", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "xyz")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello PUT /e 3" {
		t.Errorf("body = %q", body)
	}
}

// TestSmuggling sends request shapes that two HTTP parsers could read two
// ways. Each must be refused, nothing must reach the upstream, and the
// connection must close after the refusal so trailing bytes are never
// read as a request.
func TestSmuggling(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, nil)
	target := fmt.Sprintf("http://127.0.0.1:%d/", port)
	inner := "GET " + target + "smuggled HTTP/1.1\r\n\r\n"
	for _, tt := range []struct {
		name, raw string
		status    int
	}{
		{"CL and TE", "POST " + target + " HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner, 400},
		{"TE and CL", "POST " + target + " HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" + inner, 400},
		{"two CL", "POST " + target + " HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n" + inner, 400},
		{"two equal CL", "POST " + target + " HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" + inner, 400},
		{"CL list", "POST " + target + " HTTP/1.1\r\nContent-Length: 0, 44\r\n\r\n" + inner, 400},
		{"CL sign", "POST " + target + " HTTP/1.1\r\nContent-Length: +0\r\n\r\n" + inner, 400},
		{"TE gzip", "POST " + target + " HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + inner, 501},
		{"TE with space in name", "POST " + target + " HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + inner, 400},
		{"TE obs-fold", "POST " + target + " HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + inner, 400},
		{"TE on 1.0", "POST " + target + " HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + inner, 400},
		{"bare LF", "GET " + target + " HTTP/1.1\nX: y\n\n" + inner, 400},
		{"bare CR", "GET " + target + " HTTP/1.1\r\nX: a\rb\r\n\r\n" + inner, 400},
		{"double space", "GET  " + target + " HTTP/1.1\r\n\r\n" + inner, 400},
		{"extra token", "GET " + target + " HTTP/1.1 x\r\n\r\n" + inner, 400},
		{"tab separator", "GET\t" + target + " HTTP/1.1\r\n\r\n" + inner, 400},
		{"HTTP/2", "GET " + target + " HTTP/2.0\r\n\r\n" + inner, 505},
		{"HTTP/0.9", "GET " + target + "\r\n\r\n" + inner, 400},
		{"NUL in value", "GET " + target + " HTTP/1.1\r\nX: a\x00b\r\n\r\n" + inner, 400},
		{"two Host", "GET " + target + " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + inner, 400},
		{"non-ASCII target", "GET " + target + "\xff HTTP/1.1\r\n\r\n" + inner, 400},
		{"fragment", "GET " + target + "#x HTTP/1.1\r\n\r\n" + inner, 400},
		{"bad method", "G(T " + target + " HTTP/1.1\r\n\r\n" + inner, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.Requests())
			c, err := net.Dial("tcp", tp.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tt.raw)
			all, err := io.ReadAll(c) // the proxy must close after answering
			if err != nil {
				t.Fatalf("read: %v (the proxy did not close)", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
			if err != nil {
				t.Fatalf("parse %q: %v", all, err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			if n := strings.Count(string(all), "X-Enclave-Rule:"); n != 1 {
				t.Errorf("got %d responses, want exactly 1: %q", n, all)
			}
			if got := len(up.Requests()) - before; got != 0 {
				t.Errorf("upstream saw %d requests, want 0", got)
			}
		})
	}
}

// TestConnectTunnel tunnels plain HTTP to the upstream through CONNECT,
// with the first request sent before the proxy's 200 (early data).
func TestConnectTunnel(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, nil)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// One write: the CONNECT and, right behind it, a request meant for the
	// tunnel. The proxy must not read it as a proxy request (it is in
	// origin form and would be refused); it must reach the upstream.
	io.WriteString(c, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\nGET /inside HTTP/1.1\r\nHost: x\r\n\r\n", port))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT answer = %v, %v; want 200", resp, err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello GET /inside 0" {
		t.Errorf("tunnelled body = %q", body)
	}
	io.WriteString(c, "GET /second?size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	nb, _ := io.Copy(io.Discard, resp.Body)
	if nb != 1000000 {
		t.Errorf("second body = %d bytes, want 1000000", nb)
	}
	c.Close()
	ends := tp.rec.waitEnds(t, 1)
	f := ends[0]
	if len(ends) != 1 || f.Method != "CONNECT" || f.Scheme != "connect" || f.Path != "" || !f.Decision.Allow ||
		f.BytesDown < 1000000 || f.BytesUp < 50 || f.Addr != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Errorf("flows = %+v, want one CONNECT flow with the bytes counted", ends)
	}
	if len(tp.rec.Starts()) != 1 {
		t.Errorf("FlowStart calls = %d, want 1 (the early request is not a flow of its own)", len(tp.rec.Starts()))
	}
}

// TestConnectDeniedTrailingBytes pipelines an allowed request behind a
// denied CONNECT: only the refusal comes back and nothing is dialled.
func TestConnectDeniedTrailingBytes(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, map[string][]netip.Addr{"denied.test": addrs("127.0.0.1")}, nil)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, fmt.Sprintf("CONNECT denied.test:443 HTTP/1.1\r\n\r\nGET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", port))
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(all), "HTTP/1.1 403") || strings.Count(string(all), "HTTP/1.1") != 1 {
		t.Errorf("answer = %q, want exactly one 403", all)
	}
	if len(up.Requests()) != 0 || len(tp.dial.Addrs()) != 0 {
		t.Errorf("upstream requests %d, dials %v; want none", len(up.Requests()), tp.dial.Addrs())
	}
}

func TestHugeHeaders(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{up.Port()}}}}
	tp := startProxy(t, n, nil, func(c *Config) { c.MaxHeaderBytes = 8 << 10 })
	target := fmt.Sprintf("http://127.0.0.1:%d/", up.Port())
	for _, tt := range []struct {
		name, raw string
	}{
		{"one huge header", "GET " + target + " HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 9<<10) + "\r\n\r\n"},
		{"huge request line", "GET " + target + strings.Repeat("a", 9<<10) + " HTTP/1.1\r\n\r\n"},
		{"many headers", "GET " + target + " HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 150) + "\r\n"},
		{"never-ending header", "GET " + target + " HTTP/1.1\r\nX: " + strings.Repeat("a", 64<<10)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := tp.rawRequest(t, tt.raw)
			if resp.StatusCode != 431 {
				t.Errorf("status = %d, want 431", resp.StatusCode)
			}
		})
	}
	if len(up.Requests()) != 0 {
		t.Errorf("upstream saw %d requests", len(up.Requests()))
	}
	// Just under the limit is fine.
	resp, _ := tp.rawRequest(t, "GET "+target+" HTTP/1.1\r\nX-Big: "+strings.Repeat("a", 7<<10)+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("7 KiB header: status = %d, want 200", resp.StatusCode)
	}
}

func TestSlowClient(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{up.Port()}}}}
	tp := startProxy(t, n, nil, func(c *Config) { c.HeaderTimeout = 300 * time.Millisecond })
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	// A slowloris: one header byte at a time, never finishing.
	go func() {
		io.WriteString(c, fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n", up.Port()))
		for range 40 {
			if _, err := io.WriteString(c, "X"); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	all, _ := io.ReadAll(c)
	took := time.Since(start)
	if !strings.HasPrefix(string(all), "HTTP/1.1 408") {
		t.Errorf("answer = %q, want 408", all)
	}
	if took > 2*time.Second {
		t.Errorf("connection closed after %s, want about 300ms", took)
	}
}

// TestIdleTunnel checks that a silent tunnel is closed after IdleTimeout
// while one trickling a byte at a time stays up.
func TestIdleTunnel(t *testing.T) {
	echo := startEcho(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{echo.Port()}}}}
	tp := startProxy(t, n, nil, func(c *Config) { c.IdleTimeout = 400 * time.Millisecond })

	t.Run("silent", func(t *testing.T) {
		c, br := connectTunnel(t, tp, echo.Port())
		defer c.Close()
		start := time.Now()
		_, err := br.ReadByte()
		if err == nil || time.Since(start) < 300*time.Millisecond || time.Since(start) > 3*time.Second {
			t.Errorf("read after %s: %v; want the tunnel closed after about 400ms", time.Since(start), err)
		}
	})
	t.Run("trickle", func(t *testing.T) {
		c, br := connectTunnel(t, tp, echo.Port())
		defer c.Close()
		for i := range 12 { // 1.2s, three times the idle timeout
			if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			b, err := br.ReadByte()
			if err != nil || b != byte('a'+i) {
				c.Close()
				time.Sleep(100 * time.Millisecond)
				t.Fatalf("echo %d = %q, %v; flows %+v", i, b, err, tp.rec.Ends())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	ends := tp.rec.waitEnds(t, 1)
	if !ends[0].Partial || !strings.Contains(ends[0].Err, "idle") {
		t.Errorf("silent flow = %+v, want partial with an idle error", ends[0])
	}
}

func TestByteBudget(t *testing.T) {
	echo := startEcho(t)
	up := startUpstream(t)
	const budget = 256 << 10
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "127.0.0.1", Ports: []int{echo.Port(), up.Port()}},
	}}
	tp := startProxy(t, n, nil, func(c *Config) { c.ByteBudget = budget })

	// Through a tunnel the echo server doubles the traffic: 128 KiB sent
	// comes back as 128 KiB, so 200 KiB sent must be cut.
	c, br := connectTunnel(t, tp, echo.Port())
	defer c.Close()
	go func() {
		buf := make([]byte, 4096)
		for range 50 {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	got, _ := io.Copy(io.Discard, br)
	if got >= 200<<10 {
		t.Errorf("echoed %d bytes, want the tunnel cut before 200 KiB", got)
	}
	bUp, bDown, _, _ := tp.p.Stats()
	if bUp+bDown > budget {
		t.Errorf("stats: %d up + %d down > budget %d", bUp, bDown, budget)
	}
	ends := tp.rec.waitEnds(t, 1)
	if f := ends[0]; !f.Partial || !strings.Contains(f.Err, "budget") || f.BytesUp+f.BytesDown > budget {
		t.Errorf("flow = %+v, want partial, cut by the budget", f)
	}
	// Later flows are refused outright.
	resp, _ := tp.rawRequest(t, fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", up.Port()))
	if resp.StatusCode != 403 || resp.Header.Get("X-Enclave-Rule") != RuleBudget {
		t.Errorf("after the budget: status %d rule %q, want 403 %s", resp.StatusCode, resp.Header.Get("X-Enclave-Rule"), RuleBudget)
	}
}

func TestByteBudgetPlainHTTP(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{up.Port()}}}}
	tp := startProxy(t, n, nil, func(c *Config) { c.ByteBudget = 100 << 10 })
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET http://127.0.0.1:%d/?size=500000 HTTP/1.1\r\n\r\n", up.Port())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if err == nil || got >= 100<<10 {
		t.Errorf("body = %d bytes, err %v; want a cut short of 100 KiB", got, err)
	}
	ends := tp.rec.waitEnds(t, 1)
	if f := ends[0]; !f.Partial || !strings.Contains(f.Err, "budget") {
		t.Errorf("flow = %+v, want partial, cut by the budget", f)
	}
	// Upload side: a declared body larger than what is left is refused
	// before anything is sent.
	tp2 := startProxy(t, n, nil, func(c *Config) { c.ByteBudget = 50 << 10 })
	body := strings.Repeat("x", 80<<10)
	resp2, _ := tp2.rawRequest(t, fmt.Sprintf("POST http://127.0.0.1:%d/up HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", up.Port(), len(body), body))
	if resp2.StatusCode != 403 || resp2.Header.Get("X-Enclave-Rule") != RuleBudget {
		t.Errorf("upload over budget: status %d rule %q", resp2.StatusCode, resp2.Header.Get("X-Enclave-Rule"))
	}
	// A chunked body is cut mid-stream: the upstream never gets all of it.
	tp3 := startProxy(t, n, nil, func(c *Config) { c.ByteBudget = 50 << 10 })
	chunk := strings.Repeat("y", 8<<10)
	chunked := strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 10) + "0\r\n\r\n"
	resp3, _ := tp3.rawRequest(t, fmt.Sprintf("POST http://127.0.0.1:%d/chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s", up.Port(), chunked))
	if resp3.StatusCode != 403 || resp3.Header.Get("X-Enclave-Rule") != RuleBudget {
		t.Errorf("chunked upload over budget: status %d rule %q", resp3.StatusCode, resp3.Header.Get("X-Enclave-Rule"))
	}
	for _, r := range up.Requests() {
		switch r.URL.Path {
		case "/up":
			t.Errorf("upstream got an upload whose declared length was over budget")
		case "/chunked":
			if b, _ := io.ReadAll(r.Body); len(b) >= 80<<10 {
				t.Errorf("upstream got the whole chunked upload (%d bytes) past the budget", len(b))
			}
		}
	}
}

func TestRecorderFailureDenies(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{up.Port()}}}}
	tp := startProxy(t, n, nil, nil)
	tp.rec.mu.Lock()
	tp.rec.StartErr = func(*Flow) error { return fmt.Errorf("disk full") }
	tp.rec.mu.Unlock()
	for _, raw := range []string{
		fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", up.Port()),
		fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", up.Port()),
	} {
		resp, _ := tp.rawRequest(t, raw)
		if resp.StatusCode != 503 || resp.Header.Get("X-Enclave-Rule") != RuleAudit {
			t.Errorf("%q: status %d rule %q, want 503 %s", raw, resp.StatusCode, resp.Header.Get("X-Enclave-Rule"), RuleAudit)
		}
	}
	if len(tp.dial.Addrs()) != 0 || len(up.Requests()) != 0 {
		t.Errorf("dialled %v, upstream saw %d: want nothing without a record", tp.dial.Addrs(), len(up.Requests()))
	}
	_, _, allowed, denied := tp.p.Stats()
	if allowed != 0 || denied != 2 {
		t.Errorf("stats allowed=%d denied=%d, want 0, 2", allowed, denied)
	}
}

// TestResolvedOnceDialledByIP checks the DNS-rebinding defence: the name is
// resolved once per flow, and the proxy dials the address it vetted even
// when the resolver would answer differently the next time.
func TestResolvedOnceDialledByIP(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "flip.test", Ports: []int{up.Port()}},
		{Host: "127.0.0.1", Ports: []int{up.Port()}},
	}}
	tp := startProxy(t, n, nil, nil)
	calls := 0
	tp.res.Lookup = func(host string) ([]netip.Addr, error) {
		calls++
		if calls%2 == 1 {
			return addrs("127.0.0.1"), nil
		}
		return addrs("169.254.169.254"), nil
	}
	for i := range 3 {
		resp, _ := tp.rawRequest(t, fmt.Sprintf("GET http://flip.test:%d/ HTTP/1.1\r\n\r\n", up.Port()))
		want := 200
		if i%2 == 1 {
			want = 403
		}
		if resp.StatusCode != want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if calls != 3 {
		t.Errorf("resolver calls = %d, want one per flow (3)", calls)
	}
	for _, a := range tp.dial.Addrs() {
		if _, err := netip.ParseAddrPort(a); err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("dialled %q, want the vetted IP", a)
		}
	}
}

func TestCloseStopsTunnels(t *testing.T) {
	echo := startEcho(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{echo.Port()}}}}
	tp := startProxy(t, n, nil, nil)
	c, br := connectTunnel(t, tp, echo.Port())
	defer c.Close()
	done := make(chan struct{})
	go func() { tp.p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a tunnel open")
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("tunnel still open after Close")
	}
	if ends := tp.rec.Ends(); len(ends) != 1 || !ends[0].Partial {
		t.Errorf("flow ends = %+v, want 1, partial", ends)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no network", Config{Recorder: &FakeRecorder{}}},
		{"no recorder", Config{Network: &policy.Network{}}},
		{"negative budget", Config{Network: &policy.Network{}, Recorder: &FakeRecorder{}, ByteBudget: -1}},
	} {
		if _, err := New(tt.cfg); err == nil {
			t.Errorf("New(%s) = nil error, want one", tt.name)
		}
	}
}

// echoServer is a raw TCP echo server on loopback.
type echoServer struct{ addr string }

func startEcho(t testing.TB) *echoServer {
	t.Helper()
	return &echoServer{looptest.Serve(t, func(c net.Conn) { io.Copy(c, c); c.Close() })}
}

func (e *echoServer) Port() int { return looptest.Port(e.addr) }

func connectTunnel(t testing.TB, tp *testProxy, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT = %v, %v", resp, err)
	}
	return c, br
}

// TestUpstreamFailures checks that allowed flows failing upstream get a
// 502 that says so (not a denial) and are recorded with their error.
func TestUpstreamFailures(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens here now
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "127.0.0.1", Ports: []int{closedPort}},
		{Host: "nxdomain.test", Ports: []int{closedPort}},
	}}
	tp := startProxy(t, n, nil, nil)
	for i, raw := range []string{
		fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n", closedPort),
		fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", closedPort),
		fmt.Sprintf("GET http://nxdomain.test:%d/ HTTP/1.1\r\n\r\n", closedPort),
	} {
		resp, body := tp.rawRequest(t, raw)
		if resp.StatusCode != 502 || resp.Header.Get("X-Enclave-Error") == "" || resp.Header.Get("X-Enclave-Denied") != "" {
			t.Errorf("%q: status %d headers %v body %q, want 502 with X-Enclave-Error", raw, resp.StatusCode, resp.Header, body)
		}
		ends := tp.rec.waitEnds(t, i+1)
		if f := ends[i]; !f.Decision.Allow || f.Err == "" {
			t.Errorf("%q: flow = %+v, want allowed with an error", raw, f)
		}
	}
	if got := tp.res.Asked(); !slices.Equal(got, []string{"nxdomain.test"}) {
		t.Errorf("resolver asked %v", got)
	}
}

// TestServeUnixListener serves the proxy on a unix socket, the way the
// sandbox's init may bridge the agent's loopback port, and tunnels through.
func TestServeUnixListener(t *testing.T) {
	up := startUpstream(t)
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{up.Port()}}}}
	p, err := New(Config{Network: n, Recorder: &FakeRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	sock := t.TempDir() + "/proxy.sock"
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	defer p.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", up.Port())
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT = %v, %v", resp, err)
	}
	fmt.Fprintf(c, "GET /u?size=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if nb, _ := io.Copy(io.Discard, resp.Body); nb != 2000000 {
		t.Errorf("body = %d bytes, want 2000000", nb)
	}
}

// TestUpstreamSwitchingProtocols: an upstream that answers 101 to a plain
// request (Upgrade is never forwarded) must not get a raw channel.
func TestUpstreamSwitchingProtocols(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if req.Header.Get("Upgrade") != "" {
					io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\nRAW BYTES")
				time.Sleep(500 * time.Millisecond)
			}()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	tp := startProxy(t, n, nil, nil)
	resp, body := tp.rawRequest(t, fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n", port))
	if resp.StatusCode != 502 || strings.Contains(body, "RAW") {
		t.Errorf("status %d body %q, want 502 without the upstream's raw bytes", resp.StatusCode, body)
	}
}
