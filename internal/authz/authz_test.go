package authz

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sensitive() Resource {
	return Resource{Session: "s-1", Tier: "sensitive", Launcher: "alice", Paths: []string{"auth/login.go"},
		ApprovalsRequired: 2, Gate: "pass", SeparationOfDuties: true}
}

func approveCtx() map[string]any {
	return map[string]any{"verify": "pass", "head_current": true, "owns_protected": false}
}

func TestDefaults(t *testing.T) {
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	bob := Principal{User, "bob"}
	alice := Principal{User, "alice"}
	agent := Principal{Agent, "s-1"}
	withProtected := sensitive()
	withProtected.ProtectedPaths = []string{"auth/login.go"}
	routine := Resource{Session: "s-2", Tier: "routine", Launcher: "alice", ApprovalsRequired: 1, Gate: "no-fail"}
	ctx := func(kv ...any) map[string]any {
		m := approveCtx()
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	mergeCtx := func(approvals int, rejected bool, unapproved []string, current bool) map[string]any {
		return map[string]any{"approvals": approvals, "rejected": rejected, "unapproved_protected_paths": unapproved, "head_current": current}
	}
	for _, tt := range []struct {
		name     string
		p        Principal
		action   string
		res      Resource
		ctx      map[string]any
		allow    bool
		policies []string
	}{
		{"reviewer approves", bob, ActionApprove, sensitive(), ctx(), true, []string{"humans-act-on-sessions"}},
		{"launcher approves own sensitive", alice, ActionApprove, sensitive(), ctx(), false, []string{"separation-of-duties"}},
		{"launcher approves own routine", alice, ActionApprove, routine, ctx(), true, []string{"humans-act-on-sessions"}},
		{"agent approves", agent, ActionApprove, routine, ctx(), false, []string{"agents-never-decide"}},
		{"agent merges", agent, ActionMerge, routine, mergeCtx(1, false, []string{}, true), false, []string{"agents-never-decide"}},
		{"agent rejects", agent, ActionReject, routine, nil, false, []string{"agents-never-decide"}},
		{"agent sets tier", agent, ActionTier, routine, nil, false, []string{"agents-never-decide"}},
		{"agent reviews: nothing permits", agent, ActionReview, routine, nil, false, nil},
		{"non-owner approves protected", bob, ActionApprove, withProtected, ctx(), false, []string{"protected-paths-need-owner"}},
		{"owner approves protected", bob, ActionApprove, withProtected, ctx("owns_protected", true), true, []string{"humans-act-on-sessions"}},
		{"approve after branch moved", bob, ActionApprove, sensitive(), ctx("head_current", false), false, []string{"approval-on-current-head"}},
		{"sensitive needs pass", bob, ActionApprove, sensitive(), ctx("verify", "needs-review"), false, []string{"verification-gate"}},
		{"routine needs verify run", bob, ActionApprove, routine, ctx("verify", "none"), false, []string{"verification-gate"}},
		{"routine accepts needs-review", bob, ActionApprove, routine, ctx("verify", "needs-review"), true, nil},
		{"routine refuses fail", bob, ActionApprove, routine, ctx("verify", "fail"), false, []string{"verification-gate"}},
		{"several forbids", alice, ActionApprove, withProtected, ctx("head_current", false), false,
			[]string{"separation-of-duties", "protected-paths-need-owner", "approval-on-current-head"}},
		{"merge with approvals", alice, ActionMerge, sensitive(), mergeCtx(2, false, []string{}, true), true, nil},
		{"merge short of approvals", alice, ActionMerge, sensitive(), mergeCtx(1, false, []string{}, true), false, []string{"merge-needs-approvals"}},
		{"merge after reject", alice, ActionMerge, sensitive(), mergeCtx(2, true, []string{}, true), false, []string{"merge-needs-approvals"}},
		{"merge protected unapproved", alice, ActionMerge, sensitive(), mergeCtx(2, false, []string{"auth/login.go"}, true), false, []string{"merge-needs-approvals"}},
		{"merge after branch moved", alice, ActionMerge, sensitive(), mergeCtx(2, false, []string{}, false), false, []string{"approval-on-current-head"}},
		{"missing context fails closed", bob, ActionApprove, sensitive(), map[string]any{"verify": "pass"}, false, nil},
		{"unknown action", bob, "delete", sensitive(), nil, false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(Request{Principal: tt.p, Action: tt.action, Resource: tt.res, Context: tt.ctx})
			if d.Allow != tt.allow {
				t.Fatalf("Decide().Allow = %v, want %v (%s)", d.Allow, tt.allow, d.Reason)
			}
			if tt.policies != nil && !sameSet(d.Policies, tt.policies) {
				t.Errorf("Decide().Policies = %v, want %v", d.Policies, tt.policies)
			}
			if d.Reason == "" {
				t.Error("Decide().Reason is empty")
			}
		})
	}
}

// A forbid that errors (names a context key the caller did not set) must
// not let the request through, though Cedar skips erroring policies.
func TestErroringForbidDenies(t *testing.T) {
	e, err := New(Source{Name: "user.cedar", Data: []byte(`@id("needs-ticket") forbid (principal, action == Action::"approve", resource) unless { context.ticket != "" };`)})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(Request{Principal: Principal{User, "bob"}, Action: ActionApprove, Resource: sensitive(), Context: approveCtx()})
	if d.Allow || len(d.Errors) == 0 {
		t.Fatalf("Decide() = %+v, want deny with errors", d)
	}
	ctx := approveCtx()
	ctx["ticket"] = "SEC-1"
	if d := e.Decide(Request{Principal: Principal{User, "bob"}, Action: ActionApprove, Resource: sensitive(), Context: ctx}); !d.Allow {
		t.Fatalf("with ticket: Decide() = %+v, want allow", d)
	}
}

// User policies add to the defaults; a permit cannot lift a built-in forbid.
func TestUserPolicies(t *testing.T) {
	e, err := New(Source{Name: "enclave.cedar", Data: []byte(`
@id("let-agents-approve") permit (principal is Agent, action, resource);
@id("only-leads-merge") forbid (principal, action == Action::"merge", resource) unless { principal in [User::"lead"] };
`)})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Request{Principal: Principal{Agent, "s-1"}, Action: ActionApprove, Resource: sensitive(), Context: approveCtx()}); d.Allow {
		t.Errorf("agent approve with a user permit: allowed (%s)", d.Reason)
	}
	mc := map[string]any{"approvals": 2, "rejected": false, "unapproved_protected_paths": []string{}, "head_current": true}
	if d := e.Decide(Request{Principal: Principal{User, "bob"}, Action: ActionMerge, Resource: sensitive(), Context: mc}); d.Allow || !slices.Contains(d.Policies, "only-leads-merge") {
		t.Errorf("bob merge = %+v, want deny by only-leads-merge", d)
	}
	if d := e.Decide(Request{Principal: Principal{User, "lead"}, Action: ActionMerge, Resource: sensitive(), Context: mc}); !d.Allow {
		t.Errorf("lead merge = %+v, want allow", d)
	}
	if len(e.Files) != 2 || e.Hash == "" {
		t.Errorf("Files = %v, Hash = %q", e.Files, e.Hash)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tt := range []struct{ name, text, want string }{
		{"syntax", `permit (principal, action, resource`, "parse user.cedar"},
		{"duplicate builtin id", `@id("separation-of-duties") permit (principal, action, resource);`, `"separation-of-duties" is used twice`},
		{"duplicate own id", "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") permit (principal, action, resource);", `user.cedar:2: policy id "a" is used twice`},
		{"empty id", `@id("") permit (principal, action, resource);`, "ids are non-empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Source{Name: "user.cedar", Data: []byte(tt.text)})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	e, err := Load(dir)
	if err != nil || len(e.Files) != 1 {
		t.Fatalf("Load(no file) = %v, %v; want built-in only", e, err)
	}
	if err := os.Mkdir(filepath.Join(dir, FileName), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Load(directory) error = %v, want not a regular file", err)
	}
	os.Remove(filepath.Join(dir, FileName))
	os.WriteFile(filepath.Join(dir, FileName), []byte(`@id("x") forbid (principal, action == Action::"run", resource);`), 0o644)
	e, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Request{Principal: Principal{User, "a"}, Action: ActionRun, Resource: Resource{Session: "s"}}); d.Allow {
		t.Errorf("run allowed despite user forbid")
	}
}

func TestPolicyTests(t *testing.T) {
	data, err := os.ReadFile("testdata/defaults_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tf, err := ParseTests("defaults_test.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New()
	res := e.Run(tf)
	for _, r := range res {
		if !r.Pass {
			t.Errorf("%s (line %d): %s", r.Name, r.Line, r.Problem)
		}
	}
	// The same file against a policy set with an extra forbid must fail
	// the case it changes: the runner can report failures.
	e2, _ := New(Source{Name: "x.cedar", Data: []byte(`@id("no-bob") forbid (principal == User::"bob", action, resource);`)})
	var problems []string
	for _, r := range e2.Run(tf) {
		if !r.Pass {
			problems = append(problems, r.Problem)
		}
	}
	// bob's allow becomes a deny; bob's denies gain a deciding policy.
	all := strings.Join(problems, "\n")
	if len(problems) != 3 || !strings.Contains(all, "decision = deny, want allow") || !strings.Contains(all, "no-bob") {
		t.Errorf("problems under a policy that forbids bob = %q, want 3 naming the change", problems)
	}
}

func TestParseTestsErrors(t *testing.T) {
	for _, tt := range []struct{ name, text, want string }{
		{"empty", "", "file is empty"},
		{"no tests", "tests: []\n", "no tests"},
		{"unknown key", "tests:\n  - principal: User:a\n    action: approve\n    resource: {session: s}\n    expect: allow\n    bogus: 1\n", "field bogus not found"},
		{"bad principal", "tests:\n  - principal: Robot:a\n    action: approve\n    resource: {session: s}\n    expect: allow\n", ":2: test 1: principal"},
		{"bad action", "tests:\n  - principal: User:a\n    action: fly\n    resource: {session: s}\n    expect: allow\n", `action "fly"`},
		{"bad expect", "tests:\n  - principal: User:a\n    action: run\n    resource: {session: s}\n    expect: yes\n", "expect must be allow or deny"},
		{"no session", "tests:\n  - name: x\n    principal: User:a\n    action: run\n    expect: allow\n", "test 1 (x): resource.session is missing"},
		{"alias", "a: &x 1\ntests: *x\n", "aliases"},
		{"bad host", "tests:\n  - principal: Agent:s\n    action: egress\n    resource: {host: registry.example.com}\n    expect: allow\n", `resource.host "registry.example.com" is not name:port`},
		{"bad model", "tests:\n  - principal: Agent:s\n    action: model\n    resource: {model: gpt}\n    expect: allow\n", `resource.model "gpt" is not provider/model`},
		{"two resources", "tests:\n  - principal: Agent:s\n    action: egress\n    resource: {session: s, host: \"h:1\"}\n    expect: allow\n", "more than one of session, host and model"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTests("t.yaml", []byte(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseTests() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func FuzzParseTests(f *testing.F) {
	data, _ := os.ReadFile("testdata/defaults_test.yaml")
	f.Add(data)
	f.Add([]byte("tests:\n  - principal: User:a\n    action: run\n    resource: {session: s}\n    context: {a: [1, x, {b: c}]}\n    expect: allow\n"))
	e, _ := New()
	f.Fuzz(func(t *testing.T, b []byte) {
		tf, err := ParseTests("fuzz.yaml", b)
		if err != nil {
			return
		}
		e.Run(tf)
	})
}

func FuzzNew(f *testing.F) {
	f.Add(Defaults())
	f.Add([]byte(`permit (principal, action, resource) when { context.a like "*x" };`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := New(Source{Name: "f.cedar", Data: b})
		if err != nil {
			return
		}
		e.Decide(Request{Principal: Principal{User, "u"}, Action: ActionApprove, Resource: sensitive(), Context: approveCtx()})
		sc := e.ForSession(SessionFacts{Session: "s", Tier: "routine", Launcher: "u"})
		sc.Egress(EgressQuery{Host: "h.example.com", Port: 443, Method: "GET", Path: "/x", Scheme: "http"})
		sc.Model(ModelQuery{Provider: "p", Model: "m", Classification: "none", Rank: -1})
	})
}

// The per-action index must give the same decisions and reasons as
// evaluating the whole set.
func TestIndexMatchesFullSet(t *testing.T) {
	e, err := New(Source{Name: "bench.cedar", Data: append(hundredRules(), []byte(`
@id("any-action") forbid (principal == User::"mallory", action, resource);
@id("in-set") permit (principal, action in [Action::"review", Action::"odd"], resource);
`)...)})
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range append(Actions, "odd", "unknown") {
		for _, who := range []Principal{{User, "bob"}, {User, "user0"}, {User, "mallory"}, {Agent, "s-1"}} {
			req := benchRequest()
			req.Principal, req.Action = who, action
			creq, ents, err := e.build(req)
			if err != nil {
				t.Fatal(err)
			}
			want, wdiag := e.ps.IsAuthorized(ents, creq)
			got := e.Decide(req)
			var wantIDs []string
			for _, r := range wdiag.Reasons {
				wantIDs = append(wantIDs, string(r.PolicyID))
			}
			if got.Allow != (want == true && len(wdiag.Errors) == 0) || !sameSet(got.Policies, wantIDs) || len(got.Errors) != len(wdiag.Errors) {
				t.Errorf("%v %s: indexed = %v %v, full set = %v %v", who, action, got.Allow, got.Policies, want, wantIDs)
			}
		}
	}
}

func TestTierPolicy(t *testing.T) {
	e, _ := New()
	for _, tt := range []struct {
		who    Principal
		lowers bool
		allow  bool
	}{
		{Principal{User, "alice"}, false, true},
		{Principal{User, "alice"}, true, false}, // the launcher lowering their own tier
		{Principal{User, "bob"}, true, true},
		{Principal{Agent, "s-1"}, false, false},
	} {
		d := e.Decide(Request{Principal: tt.who, Action: ActionTier, Resource: sensitive(), Context: map[string]any{"lowers": tt.lowers}})
		if d.Allow != tt.allow {
			t.Errorf("tier by %v lowers=%v: allow = %v, want %v (%s)", tt.who, tt.lowers, d.Allow, tt.allow, d.Reason)
		}
	}
}

// Run: humans may run any tier by default; a user forbid on tier and agent
// narrows it, and names itself in the decision.
func TestRunPolicy(t *testing.T) {
	base, _ := New()
	forbid, err := New(Source{Name: "enclave.cedar", Data: []byte(`
@id("no-codex-on-sensitive")
forbid (principal, action == Action::"run", resource is Session)
when { resource.tier == "sensitive" && resource.agent == "codex" };
`)})
	if err != nil {
		t.Fatal(err)
	}
	res := func(tier, agent string) Resource {
		return Resource{Session: "new", Tier: tier, Task: "t", Launcher: "alice", Agent: agent, Command: agent + " exec fix", Profile: "default"}
	}
	for _, tt := range []struct {
		e            *Engine
		who          Principal
		tier, agent  string
		allow        bool
		wantPolicies []string
	}{
		{base, Principal{User, "alice"}, "sensitive", "codex", true, []string{"humans-act-on-sessions"}},
		{base, Principal{User, "alice"}, "docs-tests", "claude", true, []string{"humans-act-on-sessions"}},
		{base, Principal{Agent, "s-1"}, "routine", "claude", false, nil},
		{forbid, Principal{User, "alice"}, "sensitive", "codex", false, []string{"no-codex-on-sensitive"}},
		{forbid, Principal{User, "alice"}, "sensitive", "claude", true, []string{"humans-act-on-sessions"}},
		{forbid, Principal{User, "alice"}, "routine", "codex", true, []string{"humans-act-on-sessions"}},
	} {
		d := tt.e.Decide(Request{Principal: tt.who, Action: ActionRun, Resource: res(tt.tier, tt.agent)})
		if d.Allow != tt.allow || !slices.Equal(d.Policies, tt.wantPolicies) {
			t.Errorf("run %s by %v at %s (%d files) = %v by %v, want %v by %v (%s)", tt.agent, tt.who, tt.tier, len(tt.e.Files), d.Allow, d.Policies, tt.allow, tt.wantPolicies, d.Reason)
		}
	}
}
