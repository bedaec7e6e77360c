package policy

// The gates section: settings of the checks an agent's change passes before
// review. The policy package only parses and validates them; internal/verify
// enforces them (the CLI maps [VerifyGate] onto verify.Config).

import (
	"fmt"
	"path"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Gates holds the settings of the gates a change passes before review.
type Gates struct {
	// Verify configures `enclave verify`. The zero value means the gate's
	// built-in defaults.
	Verify VerifyGate
}

// VerifyGate is the policy of the verification gate (gates.verify).
type VerifyGate struct {
	// Checks gives a check its action: fail, warn, needs-human or off.
	// Keys are the names in [VerifyChecks].
	Checks map[string]string
	// Rules gives single rules their action, keyed "check/rule".
	Rules map[string]string
	// Allow lists findings the policy accepts; each has a reason.
	Allow []GateAllow
	// Scope lists the repository globs the task may touch (* within a path
	// element, ** across elements); empty means everything.
	Scope []string
	// Deps lists dependency names per decision ("ecosystem:name" or a bare
	// name; a trailing * matches a prefix).
	DepsAllow, DepsDeny, DepsNeedsApproval []string
	// OSV is an absolute host path of a directory or .zip of OSV entries;
	// "" skips the vulnerability lookup.
	OSV string
	// SecretRules is an absolute host path of a gitleaks-format rule file
	// (for example gitleaks' own) that replaces the built-in secret rules;
	// "" keeps them.
	SecretRules string
	// TestCommand is the test command as argv; empty means detected.
	TestCommand []string
	// TestTimeout and TestMemory limit the test run; 0 means the gate's
	// defaults.
	TestTimeout time.Duration
	TestMemory  int64
	// TestNetwork is the network allowlist of the test run, in the form
	// of profiles.*.network.allow (host, ports, methods, paths): the
	// package registries the tests may reach through the gate's own egress
	// proxy. Empty means the tests have no network.
	TestNetwork []HostRule
	// ChurnWindow is how recent a base line must be for rewriting it to
	// count as churn; 0 means the gate's default (21 days).
	ChurnWindow time.Duration
}

// GateAllow accepts findings: every set field must match.
type GateAllow struct {
	Check, Rule, Path, Fingerprint string
	// Reason is required and recorded in the report.
	Reason string
	// Line is the line in the policy file.
	Line int
}

// VerifyChecks are the check names gates.verify.checks accepts.
var VerifyChecks = []string{"secrets", "dangerous-files", "dependencies", "quality", "static", "tests"}

// depEcosystems are the ecosystems a dependency name may be qualified with.
var depEcosystems = []string{"Go", "npm", "PyPI", "crates.io"}

func checkGateAction(s string, off bool) *problem {
	switch s {
	case "fail", "warn", "needs-human":
		return nil
	case "off":
		if off {
			return nil
		}
		return bad("write fail, warn or needs-human; turn the whole check off under checks:", "a single rule cannot be off")
	}
	if off {
		return bad("write fail, warn, needs-human or off", "%q is not an action", s)
	}
	return bad("write fail, warn or needs-human", "%q is not an action", s)
}

func checkGateCheck(s string) *problem {
	for _, c := range VerifyChecks {
		if s == c {
			return nil
		}
	}
	return bad("checks: "+strings.Join(VerifyChecks, ", "), "%q is not a check", s)
}

// checkRepoGlob accepts a glob over repository paths.
func checkRepoGlob(s string) *problem {
	const hint = `write a path relative to the repository root, e.g. "internal/**" or "*.go"`
	switch {
	case s == "":
		return bad(hint, "empty glob")
	case strings.HasPrefix(s, "/"):
		return bad(hint, "%q is absolute", s)
	case strings.ContainsAny(s, "\x00\n\\"):
		return bad(hint, "%q contains a NUL, newline or backslash", s)
	}
	for _, el := range strings.Split(s, "/") {
		if el == ".." || el == "." || el == "" {
			return bad(hint, "%q has an empty, . or .. element", s)
		}
	}
	if _, err := path.Match(strings.ReplaceAll(s, "**", "*"), ""); err != nil {
		return bad(hint, "%q is not a glob: %v", s, err)
	}
	return nil
}

func checkDepName(s string) *problem {
	const hint = `write a name ("left-pad"), or ecosystem:name ("npm:left-pad", "Go:example.com/mod"); a trailing * matches a prefix`
	if s == "" || strings.TrimSpace(s) != s || strings.ContainsAny(s, "\x00\n ") {
		return bad(hint, "%q is not a dependency name", s)
	}
	if i := strings.Index(s, ":"); i >= 0 {
		eco, name := s[:i], s[i+1:]
		ok := false
		for _, e := range depEcosystems {
			ok = ok || e == eco
		}
		if !ok {
			return bad("ecosystems: "+strings.Join(depEcosystems, ", "), "%q is not an ecosystem", eco)
		}
		if name == "" || name == "*" {
			return bad(hint, "%q names no package", s)
		}
	}
	if strings.Contains(strings.TrimSuffix(s, "*"), "*") {
		return bad(hint, "%q has a * that is not at the end", s)
	}
	return nil
}

func (d *decoder) gates(n *yaml.Node) Gates {
	var g Gates
	if n == nil {
		return g
	}
	m := d.fields(n, "gates", "gates")
	v, ok := m["verify"]
	if !ok {
		return g
	}
	const f = "gates.verify"
	vg := &g.Verify
	vm := d.fields(v, f, "gates.verify")
	if c, ok := vm["checks"]; ok {
		vg.Checks = map[string]string{}
		for _, kv := range d.pairs(c, f+".checks") {
			kf := f + ".checks." + kv[0].Value
			if p := checkGateCheck(kv[0].Value); p != nil {
				d.fail(kv[0], kf, p)
				continue
			}
			if s, ok := d.str(kv[1], kf); ok {
				if p := checkGateAction(s, true); p != nil {
					d.fail(kv[1], kf, p)
					continue
				}
				vg.Checks[kv[0].Value] = s
			}
		}
	}
	if r, ok := vm["rules"]; ok {
		vg.Rules = map[string]string{}
		for _, kv := range d.pairs(r, f+".rules") {
			k := kv[0].Value
			kf := f + ".rules." + k
			check, rule, found := strings.Cut(k, "/")
			if !found || rule == "" || strings.Contains(rule, "/") {
				d.failf(kv[0], kf, `write check/rule, e.g. "quality/duplication"`, "%q is not check/rule", k)
				continue
			}
			if p := checkGateCheck(check); p != nil {
				d.fail(kv[0], kf, p)
				continue
			}
			if s, ok := d.str(kv[1], kf); ok {
				if p := checkGateAction(s, false); p != nil {
					d.fail(kv[1], kf, p)
					continue
				}
				vg.Rules[k] = s
			}
		}
	}
	if a, ok := vm["allow"]; ok {
		elems, _ := d.seq(a, f+".allow")
		for i, e := range elems {
			af := fmt.Sprintf("%s.allow[%d]", f, i)
			am := d.fields(e, af, "gates.verify.allow[]")
			if e.Kind != yaml.MappingNode {
				if isNull(e) {
					d.failf(e, af, "write {rule: ..., path: ..., reason: ...}", "empty rule")
				}
				continue
			}
			ga := GateAllow{Line: e.Line}
			ok := true
			for _, s := range []struct {
				key string
				dst *string
				chk func(string) *problem
			}{
				{"check", &ga.Check, checkGateCheck},
				{"rule", &ga.Rule, func(s string) *problem {
					if s == "" || strings.ContainsAny(s, "/ \n") {
						return bad(`write a rule id such as "generic-password"`, "%q is not a rule id", s)
					}
					return nil
				}},
				{"path", &ga.Path, checkRepoGlob},
				{"fingerprint", &ga.Fingerprint, func(s string) *problem {
					if len(s) != 16 || strings.Trim(s, "0123456789abcdef") != "" {
						return bad("copy the 16 hex digits of a finding's fingerprint from a report", "%q is not a fingerprint", s)
					}
					return nil
				}},
				{"reason", &ga.Reason, func(s string) *problem {
					if strings.TrimSpace(s) == "" {
						return bad("say why this finding is acceptable; the reason goes into every report", "empty reason")
					}
					return nil
				}},
			} {
				vn, has := am[s.key]
				if !has {
					continue
				}
				str, good := d.str(vn, af+"."+s.key)
				if !good {
					ok = false
					continue
				}
				if p := s.chk(str); p != nil {
					d.fail(vn, af+"."+s.key, p)
					ok = false
					continue
				}
				*s.dst = str
			}
			if _, has := am["reason"]; !has {
				d.failf(e, af+".reason", "say why this finding is acceptable; the reason goes into every report", "missing")
				ok = false
			}
			if ga.Check == "" && ga.Rule == "" && ga.Path == "" && ga.Fingerprint == "" && ok {
				d.failf(e, af, "name a check, rule, path or fingerprint", "matches every finding")
				ok = false
			}
			if ok {
				vg.Allow = append(vg.Allow, ga)
			}
		}
	}
	if s, ok := vm["scope"]; ok {
		for _, it := range d.strList(s, f+".scope", func(s string) (string, *problem) { return s, checkRepoGlob(s) }).v {
			vg.Scope = append(vg.Scope, it.v)
		}
	}
	if dn, ok := vm["dependencies"]; ok {
		dm := d.fields(dn, f+".dependencies", "gates.verify.dependencies")
		for _, s := range []struct {
			key string
			dst *[]string
		}{{"allow", &vg.DepsAllow}, {"deny", &vg.DepsDeny}, {"needs_approval", &vg.DepsNeedsApproval}} {
			if ln, ok := dm[s.key]; ok {
				for _, it := range d.strList(ln, f+".dependencies."+s.key, func(s string) (string, *problem) { return s, checkDepName(s) }).v {
					*s.dst = append(*s.dst, it.v)
				}
			}
		}
	}
	if o, ok := vm["osv"]; ok {
		if s, ok := d.str(o, f+".osv"); ok {
			p, pr := hostPath(s, d.home, d.homeErr)
			if pr != nil {
				d.fail(o, f+".osv", pr)
			}
			vg.OSV = p
		}
	}
	if o, ok := vm["secret_rules"]; ok {
		if s, ok := d.str(o, f+".secret_rules"); ok {
			p, pr := hostPath(s, d.home, d.homeErr)
			if pr != nil {
				d.fail(o, f+".secret_rules", pr)
			}
			vg.SecretRules = p
		}
	}
	if t, ok := vm["test_command"]; ok {
		elems, good := d.seq(t, f+".test_command")
		for i, e := range elems {
			if s, ok := d.str(e, fmt.Sprintf("%s.test_command[%d]", f, i)); ok {
				if s == "" || strings.ContainsRune(s, 0) {
					d.failf(e, fmt.Sprintf("%s.test_command[%d]", f, i), "write the program and its arguments as a list, e.g. [go, test, ./...]", "empty or NUL argument")
				}
				vg.TestCommand = append(vg.TestCommand, s)
			}
		}
		if good && len(elems) == 0 {
			d.failf(t, f+".test_command", "remove test_command to detect the command, or list the program and its arguments", "empty command")
		}
	}
	if t, ok := vm["test_timeout"]; ok {
		if v, ok := d.duration(t, f+".test_timeout"); ok {
			if v <= 0 {
				d.failf(t, f+".test_timeout", "write a duration greater than zero, e.g. 10m", "not positive")
			}
			vg.TestTimeout = v
		}
	}
	if t, ok := vm["churn_window"]; ok {
		if v, ok := d.duration(t, f+".churn_window"); ok {
			if v <= 0 {
				d.failf(t, f+".churn_window", "write a duration greater than zero, e.g. 21d", "not positive")
			}
			vg.ChurnWindow = v
		}
	}
	if t, ok := vm["test_network"]; ok {
		for _, it := range d.hostRules(t, f+".test_network").v {
			vg.TestNetwork = append(vg.TestNetwork, it.v)
		}
	}
	if t, ok := vm["test_memory"]; ok {
		if v, ok := d.size(t, f+".test_memory"); ok {
			if v < 64<<20 {
				d.failf(t, f+".test_memory", "write at least 64MiB, e.g. 2GiB", "too small to run tests")
			}
			vg.TestMemory = v
		}
	}
	return g
}
