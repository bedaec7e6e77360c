package authz

// Policy unit tests: a YAML (or JSON, which is YAML) file of requests and
// the decision each must get, run by `enclave policy test FILE`.
//
//	tests:
//	  - name: launcher cannot approve their own sensitive session
//	    principal: User:alice          # or Agent:<session>
//	    action: approve
//	    resource:
//	      session: s-1
//	      tier: sensitive
//	      launcher: alice
//	      paths: [auth/login.go]
//	      protected_paths: []
//	      approvals_required: 2
//	      gate: pass
//	      separation_of_duties: true
//	    context: {verify: pass, head_current: true, owns_protected: false}
//	    expect: deny
//	    policies: [separation-of-duties]   # optional: exactly these decided
//
// An entity reference in a context is written in Cedar's JSON form:
// launcher: {__entity: {type: User, id: alice}}. Egress and model tests
// name a resource host: "name:port" or model: provider/model instead of a
// session.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// TestFile is a parsed policy test file.
type TestFile struct {
	Tests []TestCase `yaml:"tests"`
}

// TestCase is one request and its expected decision.
type TestCase struct {
	Name      string         `yaml:"name"`
	Principal string         `yaml:"principal"`
	Action    string         `yaml:"action"`
	Resource  TestResource   `yaml:"resource"`
	Context   map[string]any `yaml:"context"`
	Expect    string         `yaml:"expect"`
	Policies  []string       `yaml:"policies"`
	line      int
}

// TestResource is the session of a test request.
type TestResource struct {
	Session            string   `yaml:"session"`
	Task               string   `yaml:"task"`
	Tier               string   `yaml:"tier"`
	Launcher           string   `yaml:"launcher"`
	Paths              []string `yaml:"paths"`
	ProtectedPaths     []string `yaml:"protected_paths"`
	ApprovalsRequired  int      `yaml:"approvals_required"`
	Gate               string   `yaml:"gate"`
	SeparationOfDuties bool     `yaml:"separation_of_duties"`
	Agent              string   `yaml:"agent"`
	Command            string   `yaml:"command"`
	Profile            string   `yaml:"profile"`
	// Host ("name:port") makes the resource a Host, for egress tests;
	// Model ("provider/model", with Family and Clearance) a Model, for
	// model tests. Exactly one of Session, Host and Model is set.
	Host      string `yaml:"host"`
	Model     string `yaml:"model"`
	Family    string `yaml:"family"`
	Clearance string `yaml:"clearance"`
}

// target is the Host or Model resource of a test, nil for a session.
func (r *TestResource) target() (*Target, error) {
	switch {
	case r.Host != "":
		name, port, ok := strings.Cut(r.Host, ":")
		n, err := strconv.Atoi(port)
		if !ok || name == "" || err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("resource.host %q is not name:port: %w", r.Host, ErrInvalid)
		}
		return HostTarget(name, n), nil
	case r.Model != "":
		provider, model, ok := strings.Cut(r.Model, "/")
		if !ok || provider == "" || model == "" {
			return nil, fmt.Errorf("resource.model %q is not provider/model: %w", r.Model, ErrInvalid)
		}
		return ModelTarget(provider, model, r.Family, r.Clearance), nil
	}
	return nil, nil
}

// TestResult is the outcome of one case.
type TestResult struct {
	Name     string
	Line     int
	Pass     bool
	Decision Decision
	// Problem says what differed when Pass is false.
	Problem string
}

// ParseTests parses a policy test file. name is used in errors.
func ParseTests(name string, data []byte) (*TestFile, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", name, maxFile, ErrInvalid)
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := decodeSafe(dec, &root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: file is empty; it needs a tests: list: %w", name, ErrInvalid)
		}
		return nil, fmt.Errorf("%s: %w: %v", name, ErrInvalid, err)
	}
	if hasAlias(&root) {
		return nil, fmt.Errorf("%s: YAML anchors and aliases are not supported: %w", name, ErrInvalid)
	}
	var tf TestFile
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := decodeSafe(dec, &tf); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", name, ErrInvalid, err)
	}
	if len(tf.Tests) == 0 {
		return nil, fmt.Errorf("%s: no tests: write a tests: list: %w", name, ErrInvalid)
	}
	lines := testLines(&root)
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		if i < len(lines) {
			tc.line = lines[i]
		}
		where := fmt.Sprintf("%s:%d: test %d", name, tc.line, i+1)
		if tc.Name != "" {
			where += fmt.Sprintf(" (%s)", tc.Name)
		}
		if _, err := parsePrincipal(tc.Principal); err != nil {
			return nil, fmt.Errorf("%s: principal: %w", where, err)
		}
		if !slices.Contains(Actions, tc.Action) {
			return nil, fmt.Errorf("%s: action %q is not one of %s: %w", where, tc.Action, strings.Join(Actions, ", "), ErrInvalid)
		}
		set := 0
		for _, v := range []string{tc.Resource.Session, tc.Resource.Host, tc.Resource.Model} {
			if v != "" {
				set++
			}
		}
		if set == 0 {
			return nil, fmt.Errorf("%s: resource.session is missing (or resource.host, resource.model): %w", where, ErrInvalid)
		}
		if set > 1 {
			return nil, fmt.Errorf("%s: resource has more than one of session, host and model: %w", where, ErrInvalid)
		}
		if _, err := tc.Resource.target(); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if tc.Expect != "allow" && tc.Expect != "deny" {
			return nil, fmt.Errorf("%s: expect must be allow or deny, not %q: %w", where, tc.Expect, ErrInvalid)
		}
	}
	return &tf, nil
}

func decodeSafe(dec *yaml.Decoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml parser failed: %v", r)
		}
	}()
	return dec.Decode(v)
}

func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

// testLines returns the line of each element of the tests list.
func testLines(root *yaml.Node) []int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "tests" && n.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, c := range n.Content[i+1].Content {
				out = append(out, c.Line)
			}
			return out
		}
	}
	return nil
}

func parsePrincipal(s string) (Principal, error) {
	typ, id, ok := strings.Cut(s, ":")
	if !ok || id == "" || (typ != User && typ != Agent) {
		return Principal{}, fmt.Errorf("%q is not User:<name> or Agent:<session>: %w", s, ErrInvalid)
	}
	return Principal{Type: typ, ID: id}, nil
}

// Run runs every test case against the engine.
func (e *Engine) Run(tf *TestFile) []TestResult {
	out := make([]TestResult, 0, len(tf.Tests))
	for _, tc := range tf.Tests {
		p, _ := parsePrincipal(tc.Principal)
		r := tc.Resource
		target, _ := r.target()
		d := e.Decide(Request{
			Target:    target,
			Principal: p,
			Action:    tc.Action,
			Resource: Resource{
				Session: r.Session, Task: r.Task, Tier: r.Tier, Launcher: r.Launcher,
				Paths: r.Paths, ProtectedPaths: r.ProtectedPaths, ApprovalsRequired: r.ApprovalsRequired,
				Gate: r.Gate, SeparationOfDuties: r.SeparationOfDuties,
				Agent: r.Agent, Command: r.Command, Profile: r.Profile,
			},
			Context: tc.Context,
		})
		res := TestResult{Name: tc.Name, Line: tc.line, Decision: d, Pass: true}
		got := "deny"
		if d.Allow {
			got = "allow"
		}
		switch {
		case got != tc.Expect:
			res.Pass, res.Problem = false, fmt.Sprintf("decision = %s, want %s (%s)", got, tc.Expect, d.Reason)
		case tc.Policies != nil && !sameSet(d.Policies, tc.Policies):
			res.Pass, res.Problem = false, fmt.Sprintf("decided by [%s], want [%s]", strings.Join(d.Policies, ", "), strings.Join(tc.Policies, ", "))
		}
		out = append(out, res)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
