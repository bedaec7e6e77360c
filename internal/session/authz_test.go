package session

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/gateway"
	"github.com/enclave-dev/enclave/internal/policy"
)

// userCedar narrows what the default enclave.yaml-derived decisions allow.
const userCedar = `
@id("no-loopback-for-sensitive")
forbid (principal, action == Action::"egress", resource is Host)
when { resource.name == "127.0.0.1" && context.tier == "sensitive" };

@id("no-claude-x-for-sensitive")
forbid (principal, action == Action::"model", resource is Model)
when { resource.model == "claude-x" && context.tier == "sensitive" };
`

func userEngine(t testing.TB, text string) *authz.Engine {
	t.Helper()
	e, err := authz.New(authz.Source{Name: "enclave.cedar", Data: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// proxyRig is the session's egress proxy (newProxy, the session recorder)
// on a loopback listener, allowlisting one loopback upstream.
type proxyRig struct {
	client *http.Client
	up     *httptest.Server
	hits   func() int
	log    *memLog
}

func startProxyRig(t testing.TB, e *authz.Engine, tier string) *proxyRig {
	t.Helper()
	n := 0
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-mu
		n++
		mu <- struct{}{}
		io.WriteString(w, "upstream body")
	}))
	t.Cleanup(up.Close)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	netw := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	log := &memLog{}
	rec := &recorder{log: log, session: "s-1"}
	pol := policy.Default()
	prof, _ := pol.Profile(pol.DefaultProfile)
	var scope *authz.Scope
	if e != nil {
		scope = authzScope(Options{Authz: e, Argv: []string{"/usr/bin/claude"}, Tier: tier, User: "alice", Profile: prof}, "s-1")
	}
	p, err := newProxy(netw, 0, rec, scope, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() { p.Close() })
	pu, _ := url.Parse("http://" + l.Addr().String())
	return &proxyRig{
		client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}},
		up:     up, log: log,
		hits: func() int { <-mu; defer func() { mu <- struct{}{} }(); return n },
	}
}

// A Cedar forbid on a host enclave.yaml allowlists makes the proxy refuse
// it, for the tier the policy names only; the refusal and the egress audit
// event name the deciding policy, and an allowed flow's event names the
// built-in permit.
func TestCedarNarrowsEgress(t *testing.T) {
	e := userEngine(t, userCedar)
	for _, tt := range []struct {
		tier     string
		status   int
		policies []string
	}{
		{"sensitive", 403, []string{"no-loopback-for-sensitive"}},
		{"routine", 200, []string{"egress-network-allowlist"}},
	} {
		t.Run(tt.tier, func(t *testing.T) {
			r := startProxyRig(t, e, tt.tier)
			resp, err := r.client.Get(r.up.URL + "/data")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if tt.status == 403 && (r.hits() != 0 || !strings.Contains(string(body), "no-loopback-for-sensitive") || resp.Header.Get("X-Enclave-Rule") != "egress.authz") {
				t.Errorf("refusal: upstream hits %d, rule %q, body %q; want 0 hits and the policy named", r.hits(), resp.Header.Get("X-Enclave-Rule"), body)
			}
			evs := r.log.kind("egress")
			if len(evs) != 1 {
				t.Fatalf("egress events = %d, want 1", len(evs))
			}
			var d struct {
				Rule     string   `json:"rule"`
				Policies []string `json:"policies"`
			}
			json.Unmarshal(evs[0].Data, &d)
			wantDecision := map[int]string{200: "allow", 403: "deny"}[tt.status]
			if evs[0].Decision != wantDecision || !slices.Equal(d.Policies, tt.policies) {
				t.Errorf("egress event = %s %s, want %s by %v", evs[0].Decision, evs[0].Data, wantDecision, tt.policies)
			}
		})
	}
}

// A Cedar policy that cannot be evaluated refuses the flow.
func TestCedarErrorDeniesEgress(t *testing.T) {
	e := userEngine(t, `@id("careless") forbid (principal, action, resource) when { resource.tier == "x" };`)
	r := startProxyRig(t, e, "routine")
	resp, err := r.client.Get(r.up.URL + "/data")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || r.hits() != 0 || !strings.Contains(string(body), "careless") {
		t.Fatalf("status %d, upstream hits %d, body %q; want 403 naming the failing policy", resp.StatusCode, r.hits(), body)
	}
	// A panic in the engine is an error, which denies.
	if _, err := decide(func() authz.Decision { panic("boom") }); err == nil {
		t.Error("decide(panic) = nil error, want one")
	}
	a := egressAuthorizer(nil)
	if a != nil {
		t.Error("egressAuthorizer(nil) is set; want no hook without an engine")
	}
}

// A Cedar forbid on a sanctioned model for a tier makes the gateway refuse
// the call; the model.call record names the policy.
func TestCedarNarrowsModels(t *testing.T) {
	up, _ := fakeUpstream(t)
	e := userEngine(t, userCedar)
	for _, tt := range []struct {
		tier     string
		status   int
		policies []string
	}{
		{"sensitive", 403, []string{"no-claude-x-for-sensitive"}},
		{"routine", 200, []string{"models-sanctioned"}},
	} {
		t.Run(tt.tier, func(t *testing.T) {
			o, log := testOptions(t, up.URL)
			o.Authz, o.Tier, o.User = e, tt.tier, "alice"
			g := startTestGatewayScoped(t, o, "s-"+tt.tier)
			if got := call(t, g.srv.(*gateway.Server).Handler, g.sess.Token()); got != tt.status {
				t.Fatalf("status = %d, want %d", got, tt.status)
			}
			var found bool
			for _, ev := range log.kind("model.call") {
				var c gateway.Call
				json.Unmarshal(ev.Data, &c)
				if c.Phase != gateway.PhaseDecision {
					continue
				}
				found = true
				if c.Allow != (tt.status == 200) || !slices.Equal(c.Policies, tt.policies) {
					t.Errorf("model.call decision = allow %v by %v (%s), want by %v", c.Allow, c.Policies, c.Reason, tt.policies)
				}
			}
			if !found {
				t.Error("no model.call decision recorded")
			}
		})
	}
}

func startTestGatewayScoped(t *testing.T, o Options, id string) *gatewayRun {
	t.Helper()
	dir := t.TempDir()
	rec := &recorder{log: o.Audit, session: id}
	g, err := startGateway(t.Context(), o, dir, t.TempDir(), id, rec, authzScope(o, id), discardLogger())
	if err != nil || g == nil {
		t.Fatalf("startGateway = %v, %v", g, err)
	}
	return g
}

// BenchmarkProxyAuthz is the cost Cedar adds to a flow through the proxy:
// the same plain HTTP request over a kept-alive connection through two
// proxies, one without the hook and one with it (100 user rules plus the
// built-in ones; decisions cached per session), alternated request by
// request so both see the same machine load. It reports the median of
// each and their ratio.
func BenchmarkProxyAuthz(b *testing.B) {
	var rules strings.Builder
	for i := range 100 {
		fmt.Fprintf(&rules, "@id(\"r%d\") forbid (principal, action == Action::\"egress\", resource is Host) when { resource.name == \"h%d.example.com\" && context.tier == \"sensitive\" };\n", i, i)
	}
	e := userEngine(b, rules.String())
	plain, cedar := startProxyRig(b, nil, "sensitive"), startProxyRig(b, e, "sensitive")
	get := func(r *proxyRig) time.Duration {
		start := time.Now()
		resp, err := r.client.Get(r.up.URL + "/data")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	pairedMedians(b, func() time.Duration { return get(plain) }, func() time.Duration { return get(cedar) })
}

// pairedMedians runs base and with alternately b.N times each (in
// alternating order) and reports their medians and ratio.
func pairedMedians(b *testing.B, base, with func() time.Duration) {
	base()
	with()
	var x, y []time.Duration
	for i := 0; b.Loop(); i++ {
		// Swap the order every other round: the second of a pair finds
		// caches warmer or colder.
		if i%2 == 0 {
			x = append(x, base())
			y = append(y, with())
		} else {
			y = append(y, with())
			x = append(x, base())
		}
	}
	slices.Sort(x)
	slices.Sort(y)
	mx, my := x[len(x)/2], y[len(y)/2]
	b.ReportMetric(float64(mx.Nanoseconds()), "base-median-ns")
	b.ReportMetric(float64(my.Nanoseconds()), "cedar-median-ns")
	b.ReportMetric(float64(my)/float64(mx), "ratio")
}

// BenchmarkGatewayAuthz is the cost Cedar adds to a model call through the
// gateway (fake upstream, in-process handler): two sessions, one without
// the hook and one with it (100 user rules; decisions cached per session),
// alternated call by call.
func BenchmarkGatewayAuthz(b *testing.B) {
	var rules strings.Builder
	for i := range 100 {
		fmt.Fprintf(&rules, "@id(\"m%d\") forbid (principal, action == Action::\"model\", resource is Model) when { resource.model == \"m%d\" && context.tier == \"sensitive\" };\n", i, i)
	}
	e := userEngine(b, rules.String())
	up, _ := fakeUpstream(b)
	handler := func(eng *authz.Engine, id string) func() time.Duration {
		o, _ := testOptions(b, up.URL)
		o.Authz, o.Tier, o.User = eng, "sensitive", "alice"
		rec := &recorder{log: o.Audit, session: id}
		g, err := startGateway(b.Context(), o, b.TempDir(), b.TempDir(), id, rec, authzScope(o, id), discardLogger())
		if err != nil || g == nil {
			b.Fatalf("startGateway = %v, %v", g, err)
		}
		h, tok := g.srv.(*gateway.Server).Handler, g.sess.Token()
		return func() time.Duration {
			start := time.Now()
			if got := call(b, h, tok); got != 200 {
				b.Fatalf("status %d", got)
			}
			return time.Since(start)
		}
	}
	pairedMedians(b, handler(nil, "s-plain"), handler(e, "s-cedar"))
}
