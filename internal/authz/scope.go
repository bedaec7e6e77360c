package authz

import (
	"strconv"
	"strings"
	"sync"
)

// SessionFacts describe the running session whose egress and model
// decisions a [Scope] makes. They go into every request's context, so a
// policy can narrow by tier, sandbox profile, agent or launcher.
type SessionFacts struct {
	Session string `json:"session"`
	Tier    string `json:"tier"`
	Profile string `json:"profile"`
	// Agent is the program name of the agent command ("claude").
	Agent string `json:"agent"`
	// Launcher is the user who started the session.
	Launcher string `json:"launcher"`
}

// Scope is one session's view of the decision point for the two hot
// paths: egress flows ([Scope.Egress]) and model calls ([Scope.Model]).
// The principal is Agent::"<session>".
//
// It is only asked after enclave.yaml allowed the flow or the call (the
// network allowlist, the sanctioned models and classification clearance
// decide first), so it can narrow those decisions and never widen them:
// the built-in policies "egress-network-allowlist" and
// "models-sanctioned" permit whatever reaches it, and a forbid in
// enclave.cedar takes it away.
//
// Decisions are cached per distinct request for the life of the Scope
// (one session; the policy set does not change under a running session),
// bounded by maxCached entries. A Scope is safe for concurrent use.
type Scope struct {
	e     *Engine
	facts SessionFacts
	who   Principal

	mu    sync.RWMutex
	cache map[string]Decision
}

// maxCached bounds a Scope's cache; when full it starts again empty. Plain
// HTTP paths are part of the key, so an agent walking a site could
// otherwise grow it without end.
const maxCached = 4096

// ForSession returns the Scope of one running session.
func (e *Engine) ForSession(f SessionFacts) *Scope {
	return &Scope{e: e, facts: f, who: Principal{Type: Agent, ID: f.Session}, cache: map[string]Decision{}}
}

// Facts returns the session facts the scope was made with.
func (s *Scope) Facts() SessionFacts { return s.facts }

// EgressQuery is one flow the network policy allowed.
type EgressQuery struct {
	// Host is the normalised host name or IP the agent asked for.
	Host string
	Port int
	// Method is the HTTP method, CONNECT for a tunnel; Path the raw path
	// and query of a plain HTTP request ("" for a tunnel); Scheme "http"
	// or "connect". A DNS lookup of the name is Method and Scheme "dns"
	// with Port 0.
	Method, Path, Scheme string
	// Rule is the network rule that allowed it, e.g. "network.allow[2]".
	Rule string
}

// HostTarget is the resource of an egress decision: Host::"name:port" with
// attributes name (String) and port (Long).
func HostTarget(host string, port int) *Target {
	return &Target{Type: Host, ID: host + ":" + strconv.Itoa(port), Attrs: map[string]any{"name": host, "port": port}}
}

// ModelQuery is one model call the gateway's own checks allowed.
type ModelQuery struct {
	// Provider is the provider's name in enclave.yaml (or the family's
	// name for a provider configured from the environment); Model the
	// model id asked for; Family the API ("anthropic", "openai",
	// "gemini"); Endpoint the kind of call ("messages", "responses", ...).
	Provider, Model, Family, Endpoint string
	// Clearance is the provider's clearance level.
	Clearance string
	// Classification is the most sensitive classification level of
	// workspace content found in the prompt, "none" when none was found;
	// Rank its position in the policy's levels (0 the least sensitive),
	// -1 for none.
	Classification string
	Rank           int
}

// ModelTarget is the resource of a model decision:
// Model::"<provider>/<model>" with attributes provider, model, family and
// clearance (all String).
func ModelTarget(provider, model, family, clearance string) *Target {
	return &Target{Type: Model, ID: provider + "/" + model, Attrs: map[string]any{
		"provider": provider, "model": model, "family": family, "clearance": clearance,
	}}
}

func (s *Scope) baseContext() map[string]any {
	f := s.facts
	return map[string]any{
		"session": f.Session, "tier": f.Tier, "profile": f.Profile, "agent": f.Agent,
		"launcher": Principal{Type: User, ID: f.Launcher},
	}
}

// EgressRequest is the request [Scope.Egress] puts to the engine; policy
// tests and the audit record can rebuild it.
func (s *Scope) EgressRequest(q EgressQuery) Request {
	ctx := s.baseContext()
	ctx["method"], ctx["path"], ctx["scheme"], ctx["network_rule"] = q.Method, q.Path, q.Scheme, q.Rule
	return Request{Principal: s.who, Action: ActionEgress, Target: HostTarget(q.Host, q.Port), Context: ctx}
}

// ModelRequest is the request [Scope.Model] puts to the engine.
func (s *Scope) ModelRequest(q ModelQuery) Request {
	ctx := s.baseContext()
	ctx["endpoint"], ctx["classification"], ctx["classification_rank"] = q.Endpoint, q.Classification, q.Rank
	return Request{Principal: s.who, Action: ActionModel, Target: ModelTarget(q.Provider, q.Model, q.Family, q.Clearance), Context: ctx}
}

// Egress decides one flow the network policy allowed. The Decision's
// slices are shared with the cache: read them, never modify them.
func (s *Scope) Egress(q EgressQuery) Decision {
	key := join("e", q.Host, strconv.Itoa(q.Port), q.Method, q.Path, q.Scheme, q.Rule)
	return s.cached(key, func() Request { return s.EgressRequest(q) })
}

// Model decides one model call the gateway's own checks allowed.
func (s *Scope) Model(q ModelQuery) Decision {
	key := join("m", q.Provider, q.Model, q.Family, q.Endpoint, q.Clearance, q.Classification, strconv.Itoa(q.Rank))
	return s.cached(key, func() Request { return s.ModelRequest(q) })
}

func (s *Scope) cached(key string, req func() Request) Decision {
	s.mu.RLock()
	d, ok := s.cache[key]
	s.mu.RUnlock()
	if ok {
		return d
	}
	d = s.e.Decide(req())
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		clear(s.cache)
	}
	s.cache[key] = d
	s.mu.Unlock()
	return d
}

// join builds a cache key: each part length-prefixed, so two different
// queries never share a key whatever bytes their parts hold.
func join(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}
