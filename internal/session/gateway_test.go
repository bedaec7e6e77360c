package session

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/gateway"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// memLog is an AuditLog in memory; fail makes every append fail.
type memLog struct {
	mu   sync.Mutex
	evs  []audit.Event
	fail bool
}

var _ AuditLog = (*memLog)(nil)

func (m *memLog) Append(_ context.Context, ev audit.Event) (audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return audit.Entry{}, errors.New("disk full")
	}
	m.evs = append(m.evs, ev)
	return audit.Entry{}, nil
}

func (m *memLog) kind(k string) []audit.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Event
	for _, ev := range m.evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

const realKey = "sk-ant-api03-REALKEYREALKEYREALKEYREALKEYREALKEYREALKEY-xyz"

// fakeUpstream answers Anthropic Messages calls and remembers the keys it
// was sent.
func fakeUpstream(t testing.TB) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("x-api-key"))
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"id":"m1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":1}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(keys) }
}

func testOptions(t testing.TB, upstream string, extraEnv ...string) (Options, *memLog) {
	t.Helper()
	pol := policy.Default()
	prof, err := pol.Profile(pol.DefaultProfile)
	if err != nil {
		t.Fatal(err)
	}
	log := &memLog{}
	env := append([]string{"ANTHROPIC_API_KEY=" + realKey, "ANTHROPIC_BASE_URL=" + upstream, "TERM=xterm"}, extraEnv...)
	return Options{Argv: []string{"claude", "-p", "x"}, Policy: pol, Profile: prof, Environ: env, Audit: log}, log
}

func call(t testing.TB, h http.Handler, token string) int {
	t.Helper()
	req := httptest.NewRequest("POST", "/anthropic/v1/messages", strings.NewReader(`{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("x-api-key", token)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr.Code
}

func startTestGateway(t *testing.T, o Options, id string) (*gatewayRun, *recorder) {
	t.Helper()
	dir := t.TempDir()
	copyDir := filepath.Join(dir, "work")
	os.MkdirAll(copyDir, 0o755)
	rec := &recorder{log: o.Audit, session: id}
	g, err := startGateway(context.Background(), o, dir, copyDir, id, rec, nil, discardLogger())
	if err != nil {
		t.Fatalf("startGateway: %v", err)
	}
	if g == nil {
		t.Fatal("startGateway = nil, want a gateway from the environment's key")
	}
	return g, rec
}

// TestTokenScopedToSession: the token works on its own session only, is
// refused by another session's gateway, and is refused once the session
// has ended; the upstream only ever sees the real key.
func TestTokenScopedToSession(t *testing.T) {
	up, keys := fakeUpstream(t)
	o, log := testOptions(t, up.URL)
	g1, _ := startTestGateway(t, o, "s-1")
	g2, _ := startTestGateway(t, o, "s-2")
	h1, h2 := g1.srv.(*gateway.Server).Handler, g2.srv.(*gateway.Server).Handler
	tok := g1.sess.Token()
	if got := call(t, h1, tok); got != 200 {
		t.Fatalf("own session: status %d, want 200", got)
	}
	if got := call(t, h2, tok); got != http.StatusUnauthorized && got != http.StatusForbidden {
		t.Errorf("another session's gateway with s-1's token: status %d, want 401/403", got)
	}
	g1.sess.End()
	if got := call(t, h1, tok); got == 200 {
		t.Errorf("after End: status %d, want a refusal", got)
	}
	for _, k := range keys() {
		if k != realKey {
			t.Errorf("upstream got key %q, want the real key", k)
		}
	}
	if n := len(keys()); n != 1 {
		t.Errorf("upstream saw %d calls, want 1", n)
	}
	calls := log.kind("model.call")
	if len(calls) < 2 {
		t.Fatalf("model.call events = %d, want a decision and a result", len(calls))
	}
	for _, ev := range log.evs {
		if strings.Contains(string(ev.Data), realKey) || strings.Contains(string(ev.Data), tok) {
			t.Errorf("%s event holds the real key or the token: %s", ev.Kind, ev.Data)
		}
	}
}

// TestGatewayRecordFailsClosed: when the audit log cannot record the
// decision, the call is refused and nothing reaches the upstream.
func TestGatewayRecordFailsClosed(t *testing.T) {
	up, keys := fakeUpstream(t)
	o, log := testOptions(t, up.URL)
	g, _ := startTestGateway(t, o, "s-1")
	log.mu.Lock()
	log.fail = true
	log.mu.Unlock()
	if got := call(t, g.srv.(*gateway.Server).Handler, g.sess.Token()); got == 200 {
		t.Errorf("status %d with a failing audit log, want a refusal", got)
	}
	if n := len(keys()); n != 0 {
		t.Errorf("upstream saw %d calls with a failing audit log, want 0", n)
	}
}

// TestSandboxEnvHoldsTokenNotKey: inside, the provider variables point at
// the gateway and carry the token; the launcher's real key and upstream are
// not passed, even when the profile tries to pass them.
func TestSandboxEnvHoldsTokenNotKey(t *testing.T) {
	o, _ := testOptions(t, "http://127.0.0.1:9")
	o.Profile.Env.Allow = append(o.Profile.Env.Allow, "ANTHROPIC_*", "OPENAI_*")
	g, rec := startTestGateway(t, o, "s-1")
	ws := &workspace.Workspace{Copy: t.TempDir(), Session: "s-1"}
	ws.Workdir = ws.Copy
	cfg, err := sandboxConfig(o, ws, rec, discardLogger(), g)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; dup {
			t.Errorf("env sets %s twice", k)
		}
		env[k] = v
		if strings.Contains(v, realKey) || strings.Contains(v, "127.0.0.1:9") {
			t.Errorf("sandbox env %s = %q carries the launcher's key or upstream", k, v)
		}
	}
	for k, want := range map[string]string{
		"ANTHROPIC_API_KEY":  g.sess.Token(),
		"ANTHROPIC_BASE_URL": "http://" + GatewayAddr + "/anthropic",
		"OPENAI_BASE_URL":    "http://" + GatewayAddr + "/openai/v1",
		// Only the gateway bypasses the proxy: a policy rule for a
		// loopback test server must still go through it.
		"NO_PROXY": "127.0.0.2",
		"no_proxy": "127.0.0.2",
	} {
		if env[k] != want {
			t.Errorf("sandbox env %s = %q, want %q", k, env[k], want)
		}
	}
	if len(cfg.Listeners) != lnGateway+1 || cfg.Listeners[lnGateway].Addr != GatewayAddr {
		t.Errorf("listeners = %+v, want the gateway at index %d on %s", cfg.Listeners, lnGateway, GatewayAddr)
	}
}

func TestRouteOnlyThroughGateway(t *testing.T) {
	n := &policy.Network{Allow: []policy.HostRule{
		{Host: "registry.example.com"},
		{Host: "api.anthropic.com"},
		{Host: "*.googleapis.com", Ports: []int{443}},
		{Host: "127.0.0.1", Ports: []int{8080}},
		{Host: "127.0.0.1", Ports: []int{9999}},
	}}
	eps := []providerEndpoint{
		{Provider: "anthropic", Host: "api.anthropic.com", Port: 443},
		{Provider: "gemini", Host: "generativelanguage.googleapis.com", Port: 443},
		{Provider: "local", Host: "127.0.0.1", Port: 8080},
	}
	out, dropped := routeOnlyThroughGateway(n, eps)
	var kept []string
	for _, r := range out.Allow {
		kept = append(kept, r.Host)
	}
	if want := []string{"registry.example.com", "127.0.0.1"}; !slices.Equal(kept, want) {
		t.Errorf("kept rules = %v, want %v", kept, want)
	}
	if len(dropped) != 3 {
		t.Fatalf("dropped = %+v, want 3 rules", dropped)
	}
	for _, req := range []policy.Request{
		{Host: "api.anthropic.com", Port: 443, Method: "CONNECT"},
		{Host: "generativelanguage.googleapis.com", Port: 443, Method: "CONNECT"},
		{Host: "127.0.0.1", Port: 8080, Method: "POST", Path: "/v1/messages"},
	} {
		if d := out.Decide(req); d.Allow {
			t.Errorf("Decide(%+v) = allow, want deny (a provider bypassing the gateway)", req)
		}
	}
	if d := out.Decide(policy.Request{Host: "registry.example.com", Port: 443, Method: "CONNECT"}); !d.Allow {
		t.Errorf("unrelated host refused: %+v", d)
	}
	if len(n.Allow) != 5 {
		t.Errorf("the profile's own rules were changed: %d left", len(n.Allow))
	}
}

func TestClassifiedFiles(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/readme.md", "public text")
	write("src/main.go", "package main")
	write("keys/server.pem", "-----BEGIN-----")
	write(".git/config", "[core]")
	outside := filepath.Join(t.TempDir(), "host-secret.pem")
	os.WriteFile(outside, []byte("host secret"), 0o600)
	if err := os.Symlink(outside, filepath.Join(root, "link.pem")); err != nil {
		t.Fatal(err)
	}
	cl := &policy.Classification{
		Levels:  []string{"public", "internal", "restricted"},
		Default: "internal",
		Paths:   []policy.ClassPath{{Path: "docs/**", Level: "public"}, {Path: "*.pem", Level: "restricted"}},
	}
	files, truncated, err := classifiedFiles(root, cl)
	if err != nil || truncated {
		t.Fatalf("classifiedFiles = %v, truncated %v", err, truncated)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Path] = f.Level + ":" + string(f.Content)
	}
	want := map[string]string{"src/main.go": "internal:package main", "keys/server.pem": "restricted:-----BEGIN-----"}
	if len(got) != len(want) {
		t.Errorf("classifiedFiles = %v, want %v (no public file, no .git, no symlink target)", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("classifiedFiles[%s] = %q, want %q", k, got[k], v)
		}
	}
}

func TestGatewayConfigFromPolicy(t *testing.T) {
	pol, err := policy.Parse("p.yaml", []byte(`version: 1
providers:
  corp:
    api: anthropic
    base_url: https://llm.example.com
    key_env: CORP_KEY
    models: ["claude-haiku-*"]
    terms: {training: false, retention: none, region: eu}
    clearance: confidential
  gem:
    api: gemini
    base_url: https://gemini.example.com
    models: ["*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, ok, err := gatewayConfig(pol, []string{"ANTHROPIC_API_KEY=x"})
	if err != nil || !ok {
		t.Fatalf("gatewayConfig = %v, %v", ok, err)
	}
	if cfg.FromEnvironment || len(cfg.Providers) != 2 {
		t.Fatalf("providers = %+v, want the policy's two", cfg.Providers)
	}
	p := cfg.Providers[0]
	if p.KeyEnv != "CORP_KEY" || p.Clearance != "confidential" || p.Terms.Retention != "none" || p.Terms.Region != "eu" || p.Terms.TrainsOnInputs {
		t.Errorf("corp = %+v", p)
	}
	if cfg.Providers[1].KeyEnv != "GEMINI_API_KEY" {
		t.Errorf("gem key env = %q, want GEMINI_API_KEY (the API's usual variable)", cfg.Providers[1].KeyEnv)
	}
	if _, ok, _ := gatewayConfig(policy.Default(), []string{"PATH=/bin"}); ok {
		t.Errorf("no providers and no keys: gateway on, want off")
	}
	eps, err := providerEndpoints(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if eps[0].Host != "llm.example.com" || eps[0].Port != 443 || eps[1].Host != "gemini.example.com" {
		t.Errorf("endpoints = %+v", eps)
	}
}

func TestDataFromEvents(t *testing.T) {
	ev := func(kind, decision string, data any) audit.Event {
		b, _ := json.Marshal(data)
		return audit.Event{Session: "s", Kind: kind, Decision: decision, Data: b}
	}
	evs := []audit.Event{
		ev("gateway", "", map[string]any{"enabled": true}),
		ev("model.call", "allow", map[string]any{"phase": "decision", "allow": true, "provider": "anthropic", "model": "m1", "upstream": "u:1",
			"redactions": []map[string]any{{"rule": "aws-access-key-id", "hash": "h", "placeholder": "[REDACTED:aws-access-key-id:abc]", "count": 2}}}),
		ev("model.call", "", map[string]any{"phase": "result", "provider": "anthropic", "model": "m1", "request_bytes": 100, "response_bytes": 50, "input_tokens": 7, "output_tokens": 3}),
		ev("model.call", "deny", map[string]any{"phase": "decision", "allow": false, "provider": "", "model": "m2", "path": "/v1/messages", "reason": "model \"m2\" is not sanctioned"}),
		ev("egress", "deny", map[string]any{"flow": 1, "host": "h.example.com", "port": 443, "method": "CONNECT", "reason": "not on the list"}),
		ev("egress.end", "", map[string]any{"flow": 1, "host": "h.example.com", "port": 443, "bytes_up": 0}),
		ev("egress", "allow", map[string]any{"flow": 2, "host": "ok.example.com", "port": 443, "method": "CONNECT"}),
		ev("egress.end", "", map[string]any{"flow": 2, "host": "ok.example.com", "port": 443, "bytes_up": 10, "bytes_down": 20}),
	}
	d, err := Data("s", evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Models) != 2 {
		t.Fatalf("models = %+v, want 2", d.Models)
	}
	m := d.Models[1]
	if m.Model != "m1" || m.Requests != 1 || m.RequestBytes != 100 || m.ResponseBytes != 50 || m.InputTokens != 7 || m.OutputTokens != 3 || m.Redactions != 2 {
		t.Errorf("m1 = %+v", m)
	}
	if d.Models[0].Refused != 1 {
		t.Errorf("m2 = %+v, want 1 refused", d.Models[0])
	}
	if len(d.Hosts) != 2 || d.Hosts[1].BytesDown != 20 || d.Hosts[0].Denied != 1 {
		t.Errorf("hosts = %+v", d.Hosts)
	}
	if len(d.Blocked) != 2 || len(d.Redactions) != 1 || d.Redactions[0].Count != 2 {
		t.Errorf("blocked = %+v, redactions = %+v", d.Blocked, d.Redactions)
	}
	if _, err := Data("s", []audit.Event{{Session: "s", Kind: "model.call", Data: []byte(`{"phase":1}`)}}); err == nil || !strings.Contains(err.Error(), "model.call event 1") {
		t.Errorf("Data(bad event) = %v, want an error naming the event", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
