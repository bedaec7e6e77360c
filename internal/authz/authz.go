// Package authz is Enclave's policy decision point for who may do what to a
// session: run it, verify it, review it, set its tier, approve, reject and
// merge it. Decisions are made by Cedar (github.com/cedar-policy/cedar-go)
// over a policy set made of the built-in policies ([Defaults]) plus the
// user's enclave.cedar beside enclave.yaml.
//
// # Model
//
// Principals are User::"<os user>" for humans and Agent::"<session id>" for
// the agent of a session; the two types never mix, so an agent can never
// satisfy a rule written for a User. Actions are Action::"run", "verify",
// "review", "tier", "approve", "reject", "merge", "egress" and "model".
// The resource is the Session::"<id>" entity, whose attributes ([Resource]) carry the tier and
// its settings, the launcher (a User entity, so policies can compare it with
// principal), the agent's program name, command line and sandbox profile,
// the paths the change touches and the protected ones among them. For
// Action::"run" the session does not exist yet: the resource is
// Session::"new" with the tier, task, agent, command and profile asked for.
// Action::"egress" and "model" are asked by a running session's agent about
// a Host::"name:port" or a Model::"provider/model" ([Scope]). The context
// carries facts computed by the caller for one request
// (the verification result, whether the branch is still at the head that was
// reviewed, how many valid approvals exist).
//
// # Guarantees
//
// Decide is pure and safe for concurrent use. Every [Decision] names the
// policies that decided it (their @id annotation, else "<file>#<n>"), so the
// caller can put it on the audit record. Anything unexpected fails closed:
// a policy that errors while evaluating is reported in Decision.Errors and
// never turns a deny into an allow (Cedar skips erroring policies, so an
// erroring forbid could otherwise let a request through; Decide denies when
// any policy errored). Policy ids must be unique across the built-in and user
// files.
//
// # Not covered
//
// Egress and model decisions ([Scope]) are asked only after enclave.yaml
// allowed them, so Cedar narrows them and never widens them.
//
// There is no schema validation of user policies yet (cedar-go's validator is experimental): a policy naming
// an attribute that does not exist errors at evaluation, which Decide treats
// as deny.
package authz

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// FileName is the user's policy file, beside enclave.yaml.
const FileName = "enclave.cedar"

// Principal types.
const (
	User  = "User"
	Agent = "Agent"
)

// Actions.
const (
	ActionRun     = "run"
	ActionVerify  = "verify"
	ActionReview  = "review"
	ActionTier    = "tier"
	ActionApprove = "approve"
	ActionReject  = "reject"
	ActionMerge   = "merge"
	// ActionEgress is one flow through the egress proxy (resource a
	// Host), ActionModel one model call through the gateway (resource a
	// Model); see [Scope].
	ActionEgress = "egress"
	ActionModel  = "model"
)

// Actions lists every action the built-in policies know.
var Actions = []string{ActionRun, ActionVerify, ActionReview, ActionTier, ActionApprove, ActionReject, ActionMerge, ActionEgress, ActionModel}

// Resource types other than Session.
const (
	Host  = "Host"
	Model = "Model"
)

// ErrInvalid is wrapped by every error about a policy file or request.
var ErrInvalid = errors.New("invalid authorisation policy")

//go:embed default.cedar
var defaults []byte

// Defaults returns the text of the built-in policies.
func Defaults() []byte { return bytes.Clone(defaults) }

// Principal is who asks.
type Principal struct {
	Type string // User or Agent
	ID   string
}

func (p Principal) String() string { return p.Type + "::" + fmt.Sprintf("%q", p.ID) }

// Resource is the session a request is about.
type Resource struct {
	Session string
	Task    string
	Tier    string
	// Launcher is the user who started the session.
	Launcher string
	// Paths the change touches; ProtectedPaths the ones among them that a
	// CODEOWNERS-style rule protects.
	Paths          []string
	ProtectedPaths []string
	// Tier settings.
	ApprovalsRequired  int
	Gate               string // "pass", "no-fail" or "none"
	SeparationOfDuties bool
	// Agent is the program name of the agent command (the base name of
	// its first word, e.g. "codex"); Command the whole command line,
	// words joined by spaces; Profile the enclave.yaml sandbox profile.
	Agent   string
	Command string
	Profile string
}

// Request is one question.
type Request struct {
	Principal Principal
	Action    string
	Resource  Resource
	// Target, when set, is the resource instead of the session: a Host
	// for egress, a Model for model calls (see [HostTarget],
	// [ModelTarget]). Resource is then ignored.
	Target *Target
	// Context values may be string, bool, int, int64, []string,
	// [Principal] (an entity reference) or map[string]any of those.
	Context map[string]any
}

// Target is a resource that is not a session.
type Target struct {
	Type, ID string
	// Attrs holds values of the types Request.Context allows.
	Attrs map[string]any
}

func (t *Target) String() string { return t.Type + "::" + fmt.Sprintf("%q", t.ID) }

// resourceName is how a decision's reason names its resource.
func (r *Request) resourceName() string {
	if r.Target != nil {
		return r.Target.String()
	}
	return r.Resource.Session
}

// Decision is the answer.
type Decision struct {
	Allow bool `json:"allow"`
	// Policies are the ids of the policies that decided: the permits that
	// allowed, or the forbids that denied. Empty for a deny because no
	// policy permits.
	Policies []string `json:"policies"`
	// Errors are policies that failed to evaluate ("id: message").
	Errors []string `json:"errors,omitempty"`
	// Reason is one sentence for people.
	Reason string `json:"reason"`
}

// Source is one policy file.
type Source struct {
	Name string
	Data []byte
}

// Engine holds a parsed policy set.
type Engine struct {
	ps *cedar.PolicySet
	// byAction holds, per action, only the policies whose action scope
	// can match it; other is for actions no policy names. Evaluating a
	// policy whose scope cannot match always yields "not applicable", so
	// this index changes no decision, only the time taken.
	byAction map[string]*cedar.PolicySet
	other    *cedar.PolicySet
	// Hash is the hex SHA-256 over the sources, each as name, NUL, data,
	// NUL, in order: what an attestation records as the policy hash.
	Hash string
	// Files names the sources, built-in first.
	Files []string
	// ids lists policy ids in load order, for Policies.
	ids []string
}

// New parses the built-in policies followed by extra sources.
func New(extra ...Source) (*Engine, error) {
	srcs := append([]Source{{Name: "built-in", Data: defaults}}, extra...)
	e := &Engine{ps: cedar.NewPolicySet()}
	h := sha256.New()
	for _, s := range srcs {
		h.Write([]byte(s.Name))
		h.Write([]byte{0})
		h.Write(s.Data)
		h.Write([]byte{0})
		e.Files = append(e.Files, s.Name)
		list, err := cedar.NewPolicyListFromBytes(s.Name, s.Data)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w: %v", s.Name, ErrInvalid, err)
		}
		for i, p := range list {
			id := fmt.Sprintf("%s#%d", s.Name, i+1)
			if v, ok := p.Annotations()["id"]; ok {
				id = string(v)
				if id == "" || strings.ContainsAny(id, "\n\r\t") {
					return nil, fmt.Errorf("%s:%d: policy @id %q: %w: ids are non-empty single-line text", s.Name, p.Position().Line, id, ErrInvalid)
				}
			}
			if !e.ps.Add(types.PolicyID(id), p) {
				return nil, fmt.Errorf("%s:%d: policy id %q is used twice (the built-in policies use: %s): %w",
					s.Name, p.Position().Line, id, strings.Join(e.builtinIDs(), ", "), ErrInvalid)
			}
			e.ids = append(e.ids, id)
		}
	}
	e.Hash = hex.EncodeToString(h.Sum(nil))
	e.index()
	return e, nil
}

// index fills byAction. Action entities have no parents here (the entity
// store holds only the session), so "action in X" matches X alone.
func (e *Engine) index() {
	e.byAction = map[string]*cedar.PolicySet{}
	e.other = cedar.NewPolicySet()
	set := func(a string) *cedar.PolicySet {
		if e.byAction[a] == nil {
			e.byAction[a] = cedar.NewPolicySet()
		}
		return e.byAction[a]
	}
	var all []types.PolicyID
	for _, id := range e.ids {
		pid := types.PolicyID(id)
		p := e.ps.Get(pid)
		switch sc := (*xast.Policy)(p.AST()).Action.(type) {
		case xast.ScopeTypeEq:
			if sc.Entity.Type == "Action" {
				set(string(sc.Entity.ID)).Add(pid, p)
			}
		case xast.ScopeTypeIn:
			if sc.Entity.Type == "Action" {
				set(string(sc.Entity.ID)).Add(pid, p)
			}
		case xast.ScopeTypeInSet:
			for _, en := range sc.Entities {
				if en.Type == "Action" {
					set(string(en.ID)).Add(pid, p)
				}
			}
		default: // ScopeTypeAll, or a scope this code does not know
			all = append(all, pid)
		}
	}
	for _, pid := range all {
		p := e.ps.Get(pid)
		e.other.Add(pid, p)
		for _, s := range e.byAction {
			s.Add(pid, p)
		}
	}
}

func (e *Engine) builtinIDs() []string {
	var out []string
	for _, id := range e.ids {
		if !strings.Contains(id, "#") {
			out = append(out, id)
		}
	}
	return out
}

// Policies returns the policy ids in load order.
func (e *Engine) Policies() []string { return slices.Clone(e.ids) }

// Load returns the engine for a repository top level: the built-in policies
// plus dir/enclave.cedar if it exists. Only a regular file of at most 1 MiB
// is read; any other failure to read it is an error, never a silent
// fallback to the defaults.
func Load(dir string) (*Engine, error) {
	path := filepath.Join(dir, FileName)
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return New()
	}
	if err != nil {
		return nil, err
	}
	return New(Source{Name: path, Data: data})
}

const maxFile = 1 << 20

func readFile(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open %q: %s is not a regular file: %w", path, fi.Mode().Type(), ErrInvalid)
	}
	if fi.Size() > maxFile {
		return nil, fmt.Errorf("open %q: larger than %d bytes: %w", path, maxFile, ErrInvalid)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	return data, nil
}

// Decide answers one request.
func (e *Engine) Decide(req Request) Decision {
	creq, ents, err := e.build(req)
	if err != nil {
		return Decision{Reason: "request could not be evaluated: " + err.Error(), Errors: []string{err.Error()}}
	}
	ps := e.byAction[req.Action]
	if ps == nil {
		ps = e.other
	}
	dec, diag := ps.IsAuthorized(ents, creq)
	d := Decision{Allow: dec == cedar.Allow}
	for _, r := range diag.Reasons {
		d.Policies = append(d.Policies, string(r.PolicyID))
	}
	for _, er := range diag.Errors {
		d.Errors = append(d.Errors, string(er.PolicyID)+": "+er.Message)
	}
	if len(d.Errors) > 0 && d.Allow {
		// An erroring forbid is skipped by Cedar; an allow that might only
		// exist because a forbid failed is not an allow.
		d.Allow = false
		d.Reason = fmt.Sprintf("%s may not %s %s: policies failed to evaluate (%s)", req.Principal, req.Action, req.resourceName(), strings.Join(d.Errors, "; "))
		return d
	}
	switch {
	case d.Allow:
		d.Reason = fmt.Sprintf("%s may %s %s (permitted by %s)", req.Principal, req.Action, req.resourceName(), strings.Join(d.Policies, ", "))
	case len(d.Policies) > 0:
		d.Reason = fmt.Sprintf("%s may not %s %s (forbidden by %s)", req.Principal, req.Action, req.resourceName(), strings.Join(d.Policies, ", "))
	default:
		d.Reason = fmt.Sprintf("%s may not %s %s (no policy permits it)", req.Principal, req.Action, req.resourceName())
	}
	return d
}

func (e *Engine) build(req Request) (cedar.Request, entityPair, error) {
	var zero cedar.Request
	if req.Principal.Type != User && req.Principal.Type != Agent {
		return zero, entityPair{}, fmt.Errorf("principal type %q is not User or Agent: %w", req.Principal.Type, ErrInvalid)
	}
	if req.Principal.ID == "" || req.Action == "" {
		return zero, entityPair{}, fmt.Errorf("principal and action must be set: %w", ErrInvalid)
	}
	ctx, err := record(req.Context)
	if err != nil {
		return zero, entityPair{}, fmt.Errorf("context: %w", err)
	}
	principal := cedar.NewEntityUID(cedar.EntityType(req.Principal.Type), cedar.String(req.Principal.ID))
	if t := req.Target; t != nil {
		if (t.Type != Host && t.Type != Model) || t.ID == "" {
			return zero, entityPair{}, fmt.Errorf("resource %s is not a Host or Model with an id: %w", t, ErrInvalid)
		}
		attrs, err := record(t.Attrs)
		if err != nil {
			return zero, entityPair{}, fmt.Errorf("resource attributes: %w", err)
		}
		res := cedar.NewEntityUID(cedar.EntityType(t.Type), cedar.String(t.ID))
		return cedar.Request{
			Principal: principal,
			Action:    cedar.NewEntityUID("Action", cedar.String(req.Action)),
			Resource:  res,
			Context:   ctx,
		}, entityPair{res: cedar.Entity{UID: res, Attributes: attrs}}, nil
	}
	if req.Resource.Session == "" {
		return zero, entityPair{}, fmt.Errorf("principal, action and session must be set: %w", ErrInvalid)
	}
	r := req.Resource
	res := cedar.NewEntityUID("Session", cedar.String(r.Session))
	attrs := cedar.RecordMap{
		"tier":                 cedar.String(r.Tier),
		"task":                 cedar.String(r.Task),
		"launcher":             cedar.NewEntityUID(User, cedar.String(r.Launcher)),
		"paths":                stringSet(r.Paths),
		"protected_paths":      stringSet(r.ProtectedPaths),
		"approvals_required":   cedar.Long(r.ApprovalsRequired),
		"gate":                 cedar.String(r.Gate),
		"separation_of_duties": cedar.Boolean(r.SeparationOfDuties),
		"agent":                cedar.String(r.Agent),
		"command":              cedar.String(r.Command),
		"profile":              cedar.String(r.Profile),
	}
	return cedar.Request{
			Principal: principal,
			Action:    cedar.NewEntityUID("Action", cedar.String(req.Action)),
			Resource:  res,
			Context:   ctx,
		}, entityPair{
			res: cedar.Entity{UID: res, Attributes: cedar.NewRecord(attrs)},
		}, nil
}

// entityPair is the request's entity store: the session only (principals
// carry no attributes yet; group membership would come from a directory).
// A map would allocate on every request.
type entityPair struct{ res cedar.Entity }

func (p entityPair) Get(uid types.EntityUID) (types.Entity, bool) {
	if uid == p.res.UID {
		return p.res, true
	}
	return types.Entity{}, false
}

func stringSet(list []string) cedar.Set {
	vs := make([]cedar.Value, len(list))
	for i, s := range list {
		vs[i] = cedar.String(s)
	}
	return cedar.NewSet(vs...)
}

func record(m map[string]any) (cedar.Record, error) {
	rm := make(cedar.RecordMap, len(m))
	for k, v := range m {
		cv, err := value(v)
		if err != nil {
			return cedar.Record{}, fmt.Errorf("%s: %w", k, err)
		}
		rm[cedar.String(k)] = cv
	}
	return cedar.NewRecord(rm), nil
}

func value(v any) (cedar.Value, error) {
	switch v := v.(type) {
	case string:
		return cedar.String(v), nil
	case bool:
		return cedar.Boolean(v), nil
	case int:
		return cedar.Long(v), nil
	case int64:
		return cedar.Long(v), nil
	case float64: // from JSON/YAML test files
		if v != float64(int64(v)) {
			return nil, fmt.Errorf("%v is not a whole number: %w", v, ErrInvalid)
		}
		return cedar.Long(int64(v)), nil
	case []string:
		return stringSet(v), nil
	case Principal:
		if v.Type != User && v.Type != Agent {
			return nil, fmt.Errorf("principal type %q is not User or Agent: %w", v.Type, ErrInvalid)
		}
		return cedar.NewEntityUID(cedar.EntityType(v.Type), cedar.String(v.ID)), nil
	case []any:
		vs := make([]cedar.Value, len(v))
		for i, x := range v {
			cv, err := value(x)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			vs[i] = cv
		}
		return cedar.NewSet(vs...), nil
	case map[string]any:
		if e, ok := v["__entity"]; ok && len(v) == 1 {
			// Cedar's JSON form of an entity reference, so policy test
			// files can write context.launcher:
			// {__entity: {type: User, id: alice}}.
			m, _ := e.(map[string]any)
			typ, _ := m["type"].(string)
			id, _ := m["id"].(string)
			if len(m) != 2 || typ == "" || id == "" {
				return nil, fmt.Errorf("__entity must be {type: T, id: I}: %w", ErrInvalid)
			}
			return cedar.NewEntityUID(cedar.EntityType(typ), cedar.String(id)), nil
		}
		return record(v)
	}
	return nil, fmt.Errorf("unsupported value type %T: %w", v, ErrInvalid)
}
