package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// Config is the gate's policy. The zero value is the default policy; the
// policy file's `gates.verify` section maps onto it (see REPORT.md).
type Config struct {
	// Checks gives each check's action; a check absent from the map gets
	// its default (see DefaultActions). "off" disables a check.
	Checks map[string]Action `json:"checks,omitempty"`
	// Rules overrides the action of single rules, keyed "check/rule"
	// (e.g. "quality/duplication": "needs-human").
	Rules map[string]Action `json:"rules,omitempty"`
	// Allow lists findings the policy accepts, each with a reason that is
	// recorded in the report.
	Allow []AllowRule `json:"allow,omitempty"`

	// Scope lists globs (with ** for any depth) the task may touch; empty
	// means everything is in scope.
	Scope []string `json:"scope,omitempty"`

	// Deps is the dependency policy.
	Deps DepPolicy `json:"deps,omitempty"`
	// OSV is a directory or .zip of OSV JSON entries; "" skips the
	// vulnerability lookup (recorded as a note).
	OSV string `json:"osv,omitempty"`

	// TestCommand is the test command (argv); empty means detected.
	TestCommand []string `json:"test_command,omitempty"`
	// TestTimeout and TestMemory limit the test run; 0 means 10 minutes
	// and 2 GiB.
	TestTimeout time.Duration `json:"test_timeout,omitempty"`
	TestMemory  int64         `json:"test_memory,omitempty"`
	// TestNetwork lets the test run reach these hosts (package
	// registries) through the gate's own egress proxy; empty means no
	// network. Rules are the policy's network.allow rules.
	TestNetwork []policy.HostRule `json:"test_network,omitempty"`

	// MaxFileSize is the largest blob the content checks read; larger
	// ones get a "huge-file" finding. 0 means 4 MiB.
	MaxFileSize int64 `json:"max_file_size,omitempty"`
	// DuplicationLines is the number of duplicated added lines that makes
	// a "duplication" finding; 0 means 30.
	DuplicationLines int `json:"duplication_lines,omitempty"`
	// ComplexityLimit is the cyclomatic complexity above which a grown Go
	// function gets a finding; 0 means 15.
	ComplexityLimit int `json:"complexity_limit,omitempty"`
	// ChurnWindow is how recent a base line must be for rewriting it to
	// count as churn; 0 means 21 days, negative turns the blame off.
	ChurnWindow time.Duration `json:"churn_window,omitempty"`
	// SecretRules replaces the built-in secret rules (gitleaks TOML).
	SecretRules []byte `json:"-"`
}

// AllowRule accepts findings. Every set field must match; Reason is
// required.
type AllowRule struct {
	Check string `json:"check,omitempty"`
	Rule  string `json:"rule,omitempty"`
	// Path is a glob over the finding's file (** for any depth).
	Path string `json:"path,omitempty"`
	// Fingerprint is a finding's fingerprint from an earlier report.
	Fingerprint string `json:"fingerprint,omitempty"`
	Reason      string `json:"reason"`
}

// DepPolicy lists dependency names per decision. Names are
// "ecosystem:name" (ecosystem one of Go, npm, PyPI, crates.io) or a bare
// name for every ecosystem; a trailing * matches a prefix.
type DepPolicy struct {
	Allow         []string `json:"allow,omitempty"`
	Deny          []string `json:"deny,omitempty"`
	NeedsApproval []string `json:"needs_approval,omitempty"`
}

// DefaultActions are the actions of checks the policy does not name.
var DefaultActions = map[string]Action{
	CheckSecrets:   ActionFail,
	CheckDangerous: ActionNeedsHuman,
	CheckDeps:      ActionNeedsHuman,
	CheckQuality:   ActionWarn,
	CheckStatic:    ActionNeedsHuman,
	CheckTests:     ActionFail,
}

// defaultRuleActions refine DefaultActions for single rules.
var defaultRuleActions = map[string]Action{
	"dependencies/denied":         ActionFail,
	"dependencies/vulnerable":     ActionFail,
	"quality/deleted-test":        ActionNeedsHuman,
	"quality/skipped-test":        ActionNeedsHuman,
	"quality/out-of-scope":        ActionNeedsHuman,
	"tests/could-not-run":         ActionNeedsHuman,
	"static/could-not-analyse":    ActionNeedsHuman,
	"dependencies/malformed":      ActionNeedsHuman,
	"dependencies/no-osv":         ActionWarn,
	"dependencies/changed":        ActionWarn,
	"dependencies/added":          ActionWarn,
	"dependencies/unpinned":       ActionWarn,
	"dependencies/allowed":        ActionWarn,
	"dependencies/lockfile-only":  ActionWarn,
	"dependencies/needs-approval": ActionNeedsHuman,
}

func (c Config) withDefaults() (Config, error) {
	checks := map[string]Action{}
	for k, v := range DefaultActions {
		checks[k] = v
	}
	for k, v := range c.Checks {
		if _, ok := DefaultActions[k]; !ok {
			return c, fmt.Errorf("%w: checks: unknown check %q", ErrInvalidConfig, k)
		}
		if v != "off" && !validAction(v) {
			return c, fmt.Errorf("%w: checks.%s: action %q is not fail, warn, needs-human or off", ErrInvalidConfig, k, v)
		}
		checks[k] = v
	}
	c.Checks = checks
	for k, v := range c.Rules {
		if !validAction(v) {
			return c, fmt.Errorf("%w: rules.%s: action %q is not fail, warn or needs-human", ErrInvalidConfig, k, v)
		}
		if i := strings.IndexByte(k, '/'); i < 0 || DefaultActions[k[:i]] == "" {
			return c, fmt.Errorf("%w: rules: key %q is not check/rule", ErrInvalidConfig, k)
		}
	}
	for i, a := range c.Allow {
		if strings.TrimSpace(a.Reason) == "" {
			return c, fmt.Errorf("%w: allow[%d]: a reason is required", ErrInvalidConfig, i)
		}
		if a.Check == "" && a.Rule == "" && a.Path == "" && a.Fingerprint == "" {
			return c, fmt.Errorf("%w: allow[%d]: matches every finding; name a check, rule, path or fingerprint", ErrInvalidConfig, i)
		}
		if a.Path != "" {
			if _, err := globRegexp(a.Path); err != nil {
				return c, fmt.Errorf("%w: allow[%d].path: %v", ErrInvalidConfig, i, err)
			}
		}
	}
	for i, g := range c.Scope {
		if _, err := globRegexp(g); err != nil {
			return c, fmt.Errorf("%w: scope[%d]: %v", ErrInvalidConfig, i, err)
		}
	}
	for i, h := range c.TestNetwork {
		if h.Host == "" || strings.ContainsAny(h.Host, "/:@ \t") {
			return c, fmt.Errorf("%w: test_network[%d]: host %q is not a host name", ErrInvalidConfig, i, h.Host)
		}
	}
	if c.TestTimeout == 0 {
		c.TestTimeout = 10 * time.Minute
	}
	if c.TestMemory == 0 {
		c.TestMemory = 2 << 30
	}
	if c.MaxFileSize == 0 {
		c.MaxFileSize = 4 << 20
	}
	if c.DuplicationLines == 0 {
		c.DuplicationLines = 30
	}
	if c.ComplexityLimit == 0 {
		c.ComplexityLimit = 15
	}
	if c.ChurnWindow == 0 {
		c.ChurnWindow = 21 * 24 * time.Hour
	}
	return c, nil
}

func validAction(a Action) bool {
	return a == ActionFail || a == ActionWarn || a == ActionNeedsHuman
}

func (c Config) enabled(check string) bool { return c.Checks[check] != "off" }

// action is the action of a finding: the policy's rule override, else the
// policy's check action if the policy named the check, else the built-in
// rule default, else the check default.
func (c Config) action(check, rule string) Action {
	if a, ok := c.Rules[check+"/"+rule]; ok {
		return a
	}
	if rule == "check-error" {
		return ActionNeedsHuman
	}
	if a, ok := defaultRuleActions[check+"/"+rule]; ok && c.Checks[check] == DefaultActions[check] {
		return a
	}
	if a := c.Checks[check]; a != "" && a != "off" {
		return a
	}
	return ActionNeedsHuman
}

func (c Config) allowed(f Finding) (string, bool) {
	for _, a := range c.Allow {
		if a.Check != "" && a.Check != f.Check || a.Rule != "" && a.Rule != f.Rule || a.Fingerprint != "" && a.Fingerprint != f.Fingerprint {
			continue
		}
		if a.Path != "" && !globMatch(a.Path, f.File) {
			continue
		}
		// A check that could not run is never allowlisted away by a
		// path or rule pattern meant for findings.
		if f.Rule == "check-error" && a.Rule != "check-error" {
			continue
		}
		return a.Reason, true
	}
	return "", false
}

func fingerprint(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:8])
}

// globRegexp turns a glob into a regexp: * matches within a path
// element, ** any number of elements, ? one character.
func globRegexp(g string) (*regexp.Regexp, error) {
	if g == "" {
		return nil, fmt.Errorf("empty glob")
	}
	if _, err := path.Match(strings.ReplaceAll(g, "**", "*"), ""); err != nil {
		return nil, fmt.Errorf("glob %q: %v", g, err)
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			if i+1 < len(g) && g[i+1] == '*' {
				i++
				if i+1 < len(g) && g[i+1] == '/' {
					i++
					b.WriteString("(?:.*/)?")
				} else {
					b.WriteString(".*")
				}
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	// A directory glob covers everything beneath it.
	b.WriteString("(?:/.*)?$")
	return regexp.Compile(b.String())
}

func globMatch(g, name string) bool {
	re, err := globRegexp(g)
	return err == nil && re.MatchString(name)
}
