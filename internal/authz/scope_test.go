package authz

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/enclave-dev/enclave/internal/policy"
)

func facts(tier string) SessionFacts {
	return SessionFacts{Session: "s-1", Tier: tier, Profile: "default", Agent: "claude", Launcher: "alice"}
}

const narrowing = `
@id("no-paste-for-sensitive")
forbid (principal, action == Action::"egress", resource is Host)
when { resource.name == "paste.example.com" && context.tier == "sensitive" };

@id("no-plain-post")
forbid (principal, action == Action::"egress", resource is Host)
when { context.scheme == "http" && context.method == "POST" && context.path like "/upload*" };

@id("sensitive-only-on-company-claude")
forbid (principal, action == Action::"model", resource is Model)
when { context.tier == "sensitive" && resource.provider != "company-claude" };

@id("nothing-restricted-to-mini")
forbid (principal, action == Action::"model", resource is Model)
when { resource.model like "*-mini" && context.classification_rank >= 2 };

@id("bob-sessions-no-gemini")
forbid (principal, action == Action::"model", resource is Model)
when { context.launcher == User::"bob" && resource.family == "gemini" };
`

func TestScopeEgress(t *testing.T) {
	base, err := New()
	if err != nil {
		t.Fatal(err)
	}
	user, err := New(Source{Name: "enclave.cedar", Data: []byte(narrowing)})
	if err != nil {
		t.Fatal(err)
	}
	q := func(host, method, path string) EgressQuery {
		scheme := "http"
		if method == "CONNECT" {
			scheme = "connect"
		}
		return EgressQuery{Host: host, Port: 443, Method: method, Path: path, Scheme: scheme, Rule: "network.allow[0]"}
	}
	for _, tt := range []struct {
		name     string
		e        *Engine
		tier     string
		q        EgressQuery
		allow    bool
		policies []string
	}{
		{"defaults keep what the yaml allowed", base, "sensitive", q("paste.example.com", "CONNECT", ""), true, []string{"egress-network-allowlist"}},
		{"forbidden host on sensitive", user, "sensitive", q("paste.example.com", "CONNECT", ""), false, []string{"no-paste-for-sensitive"}},
		{"same host on routine", user, "routine", q("paste.example.com", "CONNECT", ""), true, []string{"egress-network-allowlist"}},
		{"other host on sensitive", user, "sensitive", q("registry.example.com", "CONNECT", ""), true, []string{"egress-network-allowlist"}},
		{"method and path", user, "routine", q("registry.example.com", "POST", "/upload/x"), false, []string{"no-plain-post"}},
		{"get same path", user, "routine", q("registry.example.com", "GET", "/upload/x"), true, []string{"egress-network-allowlist"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.e.ForSession(facts(tt.tier)).Egress(tt.q)
			if d.Allow != tt.allow || !slices.Equal(d.Policies, tt.policies) {
				t.Fatalf("Egress(%+v) = %v by %v, want %v by %v (%s)", tt.q, d.Allow, d.Policies, tt.allow, tt.policies, d.Reason)
			}
			if !strings.Contains(d.Reason, `Host::"`+tt.q.Host+`:443"`) {
				t.Errorf("Reason = %q, want it to name the host", d.Reason)
			}
		})
	}
}

func TestScopeModel(t *testing.T) {
	base, _ := New()
	user, err := New(Source{Name: "enclave.cedar", Data: []byte(narrowing)})
	if err != nil {
		t.Fatal(err)
	}
	q := func(provider, model, family string, rank int) ModelQuery {
		cl := "none"
		if rank >= 0 {
			cl = []string{"public", "internal", "confidential", "restricted"}[rank]
		}
		return ModelQuery{Provider: provider, Model: model, Family: family, Endpoint: "messages", Clearance: "confidential", Classification: cl, Rank: rank}
	}
	bobs := facts("routine")
	bobs.Launcher = "bob"
	for _, tt := range []struct {
		name     string
		e        *Engine
		f        SessionFacts
		q        ModelQuery
		allow    bool
		policies []string
	}{
		{"defaults keep sanctioned", base, facts("sensitive"), q("openai", "gpt-5-mini", "openai", 2), true, []string{"models-sanctioned"}},
		{"provider forbidden for tier", user, facts("sensitive"), q("openai", "gpt-5", "openai", -1), false, []string{"sensitive-only-on-company-claude"}},
		{"same provider on routine", user, facts("routine"), q("openai", "gpt-5", "openai", -1), true, []string{"models-sanctioned"}},
		{"company provider on sensitive", user, facts("sensitive"), q("company-claude", "claude-sonnet-4-5", "anthropic", 1), true, []string{"models-sanctioned"}},
		{"classified content to a small model", user, facts("routine"), q("openai", "gpt-5-mini", "openai", 2), false, []string{"nothing-restricted-to-mini"}},
		{"internal content to a small model", user, facts("routine"), q("openai", "gpt-5-mini", "openai", 1), true, []string{"models-sanctioned"}},
		{"by launcher", user, bobs, q("google", "gemini-2.5-pro", "gemini", -1), false, []string{"bob-sessions-no-gemini"}},
		{"other launcher", user, facts("routine"), q("google", "gemini-2.5-pro", "gemini", -1), true, []string{"models-sanctioned"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.e.ForSession(tt.f).Model(tt.q)
			if d.Allow != tt.allow || !slices.Equal(d.Policies, tt.policies) {
				t.Fatalf("Model(%+v) = %v by %v, want %v by %v (%s)", tt.q, d.Allow, d.Policies, tt.allow, tt.policies, d.Reason)
			}
		})
	}
}

// A user policy that errors on egress requests (it reads a Session
// attribute a Host lacks) refuses every flow rather than being skipped.
func TestScopeErrorDenies(t *testing.T) {
	e, err := New(Source{Name: "enclave.cedar", Data: []byte(`@id("careless") forbid (principal, action, resource) when { resource.tier == "x" };`)})
	if err != nil {
		t.Fatal(err)
	}
	s := e.ForSession(facts("routine"))
	d := s.Egress(EgressQuery{Host: "registry.example.com", Port: 443, Method: "CONNECT", Scheme: "connect"})
	if d.Allow || len(d.Errors) == 0 || !strings.Contains(d.Reason, "careless") {
		t.Fatalf("Egress() with an erroring forbid = %+v, want deny naming careless", d)
	}
	m := s.Model(ModelQuery{Provider: "p", Model: "m", Classification: "none", Rank: -1})
	if m.Allow {
		t.Fatalf("Model() with an erroring forbid = %+v, want deny", m)
	}
	// Guarded with "resource is Session" it no longer applies.
	e, _ = New(Source{Name: "enclave.cedar", Data: []byte(`@id("careful") forbid (principal, action, resource is Session) when { resource.tier == "x" };`)})
	if d := e.ForSession(facts("routine")).Egress(EgressQuery{Host: "h", Port: 1}); !d.Allow {
		t.Fatalf("Egress() with a guarded forbid = %+v, want allow", d)
	}
}

// A user permit cannot open egress for a User principal or another
// action's resource: the scope only ever asks as the session's agent.
func TestScopeRequest(t *testing.T) {
	e, _ := New()
	s := e.ForSession(facts("routine"))
	r := s.EgressRequest(EgressQuery{Host: "h.example.com", Port: 8443, Method: "GET", Path: "/a", Scheme: "http", Rule: "network.allow[1]"})
	if r.Principal != (Principal{Agent, "s-1"}) || r.Action != ActionEgress || r.Target.String() != `Host::"h.example.com:8443"` {
		t.Fatalf("EgressRequest() = %+v", r)
	}
	for k, want := range map[string]any{"tier": "routine", "method": "GET", "path": "/a", "scheme": "http", "network_rule": "network.allow[1]", "launcher": Principal{User, "alice"}} {
		if r.Context[k] != want {
			t.Errorf("context[%s] = %v, want %v", k, r.Context[k], want)
		}
	}
	if d := e.Decide(Request{Principal: Principal{User, "alice"}, Action: ActionEgress, Target: r.Target, Context: r.Context}); d.Allow {
		t.Errorf("a User principal's egress = allowed, want no permit")
	}
	if d := e.Decide(Request{Principal: Principal{Agent, "s-1"}, Action: ActionEgress, Target: &Target{Type: "Bucket", ID: "b"}}); d.Allow || len(d.Errors) == 0 {
		t.Errorf("unknown target type = %+v, want an error deny", d)
	}
	// A policy test file writes the launcher in Cedar's __entity form; it
	// must match the entity the scope puts in the context.
	u, err := New(Source{Name: "enclave.cedar", Data: []byte(narrowing)})
	if err != nil {
		t.Fatal(err)
	}
	q := ModelQuery{Provider: "google", Model: "gemini-2.5-pro", Family: "gemini", Classification: "none", Rank: -1}
	ctx := map[string]any{"tier": "routine", "classification_rank": -1, "launcher": map[string]any{"__entity": map[string]any{"type": "User", "id": "bob"}}}
	if d := u.Decide(Request{Principal: Principal{Agent, "s-1"}, Action: ActionModel, Target: ModelTarget(q.Provider, q.Model, q.Family, ""), Context: ctx}); d.Allow || !slices.Equal(d.Policies, []string{"bob-sessions-no-gemini"}) {
		t.Errorf("__entity launcher: %+v, want deny by bob-sessions-no-gemini", d)
	}
	ctx["launcher"] = map[string]any{"__entity": map[string]any{"type": "User"}}
	if d := u.Decide(Request{Principal: Principal{Agent, "s-1"}, Action: ActionModel, Target: ModelTarget(q.Provider, q.Model, q.Family, ""), Context: ctx}); d.Allow || len(d.Errors) == 0 {
		t.Errorf("__entity without id = %+v, want an error deny", d)
	}
}

func TestScopeCache(t *testing.T) {
	e, _ := New(Source{Name: "enclave.cedar", Data: []byte(narrowing)})
	s := e.ForSession(facts("sensitive"))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				host := "paste.example.com"
				if j%2 == 1 {
					host = fmt.Sprintf("h%d.example.com", i)
				}
				d := s.Egress(EgressQuery{Host: host, Port: 443, Method: "CONNECT", Scheme: "connect"})
				if d.Allow != (j%2 == 1) {
					t.Errorf("%s: allow = %v", host, d.Allow)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(s.cache); n != 9 {
		t.Errorf("cache holds %d decisions, want 9", n)
	}
	for i := range maxCached + 10 {
		s.Egress(EgressQuery{Host: "registry.example.com", Port: 443, Method: "GET", Path: fmt.Sprintf("/p/%d", i), Scheme: "http"})
	}
	if n := len(s.cache); n > maxCached {
		t.Errorf("cache holds %d decisions, over the bound %d", n, maxCached)
	}
	// Keys are unambiguous whatever the parts hold.
	if join("a\x00", "b") == join("a", "\x00b") {
		t.Error("join is ambiguous")
	}
}

// The added cost on the hot path, against the peer it follows: the
// enclave.yaml network decision for the same flow.
func BenchmarkEgressDecision(b *testing.B) {
	netw := &policy.Network{Allow: []policy.HostRule{}}
	for i := range 50 {
		netw.Allow = append(netw.Allow, policy.HostRule{Host: fmt.Sprintf("h%d.example.com", i), Ports: []int{443}})
	}
	netw.Allow = append(netw.Allow, policy.HostRule{Host: "registry.example.com", Ports: []int{443}})
	req := policy.Request{Host: "registry.example.com", Port: 443, Method: "CONNECT"}
	if d := netw.Decide(req); !d.Allow {
		b.Fatalf("peer denies: %s", d.Reason)
	}
	e, err := New(Source{Name: "bench.cedar", Data: append(hundredRules(), narrowing...)})
	if err != nil {
		b.Fatal(err)
	}
	q := EgressQuery{Host: "registry.example.com", Port: 443, Method: "CONNECT", Scheme: "connect", Rule: "network.allow[50]"}
	b.Run("yaml-network-decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			netw.Decide(req)
		}
	})
	b.Run("cedar-uncached", func(b *testing.B) {
		s := e.ForSession(facts("sensitive"))
		r := s.EgressRequest(q)
		b.ReportAllocs()
		for b.Loop() {
			if d := e.Decide(r); !d.Allow {
				b.Fatal(d.Reason)
			}
		}
	})
	b.Run("cedar-cached", func(b *testing.B) {
		s := e.ForSession(facts("sensitive"))
		b.ReportAllocs()
		for b.Loop() {
			if d := s.Egress(q); !d.Allow {
				b.Fatal(d.Reason)
			}
		}
	})
}
