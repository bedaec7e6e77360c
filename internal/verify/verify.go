// Package verify is the verification gate: it checks an agent's change
// (the Head commit of a session's shadow repository against its Base) the
// way a careful reviewer's tooling would check human code, and decides
// pass, fail or needs-review.
//
// # What it checks
//
// Run reads both trees straight from the enclave-owned shadow repository
// with a hardened git (no hooks, no filters, no config from the agent's
// tree; see git.go) and never touches the agent's copy or its .git. The
// checks, run concurrently, are:
//
//   - secrets: Enclave's rules and gitleaks' rule set (vendored data, see
//     gitleaks/README.md) over added lines only;
//   - dangerous-files: files that make something run later outside the
//     enclave (hooks, .gitattributes filters, CI, agent and IDE settings,
//     shell rc, build scripts, package install scripts, symlinks);
//   - dependencies: added or changed dependencies in go.mod, package.json,
//     package-lock.json, requirements.txt, pyproject.toml and Cargo.toml,
//     against policy lists, a local OSV database and a typosquat list;
//   - quality: line counts, renames paired by similarity and moved lines,
//     churn (session snapshots, git blame of the base), duplication, Go
//     complexity delta, scope, test ratio, deleted or skipped tests;
//   - static: built-in go/ast rules and go vet, and gosec, bandit and
//     shellcheck when installed; new findings only (the base is analysed
//     too, see gosec.go and lint.go);
//   - tests: the project's test command in a fresh sandbox without network,
//     or with only the registries the policy names, through the gate's own
//     egress proxy.
//
// Each check has an action in [Config] (fail, warn or needs-human); the
// report's result is fail if any fail-action finding remains, else
// needs-review if any needs-human finding remains, else pass. A check that
// cannot run is a needs-human finding, never a silent pass.
//
// # Report
//
// The report's JSON schema is documented in REPORT.md and versioned by
// [SchemaVersion].
//
// # Limits
//
// The gate sees the content of the change, not its intent: a secret no rule
// describes, a vulnerability no rule or OSV entry names, or a dependency
// pulled at run time is not found. Version matching for PyPI is a subset of
// PEP 440 (see osv.go).
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// SchemaVersion names the report format; it changes only when a field
// changes meaning or disappears (see REPORT.md).
const SchemaVersion = "enclave.verify/v1"

// Result is the gate's decision.
type Result string

// Results of a report.
const (
	Pass        Result = "pass"
	Fail        Result = "fail"
	NeedsReview Result = "needs-review"
)

// Action is what a finding does to the result.
type Action string

// Actions a check or rule can be given.
const (
	ActionFail       Action = "fail"
	ActionWarn       Action = "warn"
	ActionNeedsHuman Action = "needs-human"
)

// Check names.
const (
	CheckSecrets   = "secrets"
	CheckDangerous = "dangerous-files"
	CheckDeps      = "dependencies"
	CheckQuality   = "quality"
	CheckStatic    = "static"
	CheckTests     = "tests"
)

// AllChecks lists the checks in report order.
var AllChecks = []string{CheckSecrets, CheckDangerous, CheckDeps, CheckQuality, CheckStatic, CheckTests}

// ErrInvalidConfig is wrapped by every error about a bad [Config].
var ErrInvalidConfig = errors.New("invalid verify config")

// Finding is one thing a check found.
type Finding struct {
	Check string `json:"check"`
	// Rule is the check's rule id, e.g. "aws-access-key-id" or "sql-concat".
	Rule string `json:"rule"`
	// File is the path in the head tree (in the base for deleted files);
	// Line is 1-based, 0 when the finding is about the whole file.
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
	// Action is the action the policy gives this finding.
	Action Action `json:"action"`
	// Fingerprint identifies the finding across runs: check, rule, file and
	// a hash of the matched text; allowlists may name it.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Allowed is a finding the policy allowlisted, with the recorded reason.
type Allowed struct {
	Finding Finding `json:"finding"`
	Reason  string  `json:"reason"`
}

// CheckResult is how one check ran.
type CheckResult struct {
	Name string `json:"name"`
	// Status is "ok" (ran, no finding), "findings", "error" (could not
	// run; an error finding is added) or "skipped" (disabled by config).
	Status   string  `json:"status"`
	Action   Action  `json:"action"`
	Duration float64 `json:"duration_ms"`
	Findings int     `json:"findings"`
	Error    string  `json:"error,omitempty"`
}

// Report is the gate's output. Its JSON form is the stable schema of
// REPORT.md.
type Report struct {
	Schema       string        `json:"schema"`
	Session      string        `json:"session,omitempty"`
	Base         string        `json:"base"`
	Head         string        `json:"head"`
	Started      time.Time     `json:"started"`
	Duration     float64       `json:"duration_ms"`
	Result       Result        `json:"result"`
	Reasons      []string      `json:"reasons"`
	Checks       []CheckResult `json:"checks"`
	Findings     []Finding     `json:"findings"`
	Allowlisted  []Allowed     `json:"allowlisted"`
	Metrics      *Metrics      `json:"metrics,omitempty"`
	Dependencies []DepChange   `json:"dependencies"`
	Tests        *TestRun      `json:"tests,omitempty"`
	// Tools lists the optional external analysers and whether they ran.
	Tools []ToolRun `json:"tools"`
}

// Options are the inputs of [Run].
type Options struct {
	// Session is recorded in the report; it is not used otherwise.
	Session string
	// GitDir is the enclave-owned shadow repository holding Base and Head
	// (workspace.Change.GitDir). The agent's own .git is never used.
	GitDir string
	// Base and Head are commits in GitDir.
	Base, Head string
	// Workdir, if set, is an empty directory into which Run extracts the
	// head tree for the checks that need files (tests, go vet); otherwise
	// Run uses a temporary directory and removes it.
	Workdir string
	Config  Config
	// Progress, if set, receives one line per check start and end.
	Progress io.Writer
	// Sandbox runs commands for the tests and go vet; nil means those
	// checks report "could not run" (needs-human), never pass.
	Sandbox Runner
}

// Run verifies the change from opts.Base to opts.Head.
func Run(ctx context.Context, opts Options) (*Report, error) {
	start := time.Now()
	cfg, err := opts.Config.withDefaults()
	if err != nil {
		return nil, err
	}
	if opts.GitDir == "" || !isHex40(opts.Base) || !isHex40(opts.Head) {
		return nil, fmt.Errorf("verify: need a shadow git dir and 40-hex base and head commits")
	}
	repo, err := openRepo(ctx, opts.GitDir)
	if err != nil {
		return nil, err
	}
	defer repo.Close()
	ch, err := loadChange(ctx, repo, opts.Base, opts.Head, cfg)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	r := &Report{
		Schema:       SchemaVersion,
		Session:      opts.Session,
		Base:         opts.Base,
		Head:         opts.Head,
		Started:      start.UTC(),
		Reasons:      []string{},
		Findings:     []Finding{},
		Allowlisted:  []Allowed{},
		Dependencies: []DepChange{},
		Tools:        []ToolRun{},
	}
	prog := &progress{w: opts.Progress}

	// Extraction is only needed by the checks that run programs.
	var workdir string
	needTree := cfg.enabled(CheckTests) || cfg.enabled(CheckStatic)
	var extractErr error
	if needTree {
		workdir = opts.Workdir
		if workdir == "" {
			d, err := os.MkdirTemp("", "enclave-verify-")
			if err != nil {
				return nil, fmt.Errorf("verify: %w", err)
			}
			defer os.RemoveAll(d)
			workdir = d + "/tree"
			if err := os.Mkdir(workdir, 0o755); err != nil {
				return nil, fmt.Errorf("verify: %w", err)
			}
		}
		extractErr = extract(ch, workdir)
		if gc, err := os.MkdirTemp("", "enclave-verify-gocache-"); err == nil {
			defer os.RemoveAll(gc)
			ch.goCache = gc
		}
	}

	type out struct {
		findings []Finding
		err      error
		dur      time.Duration
	}
	results := make(map[string]*out)
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(name string, fn func() ([]Finding, error)) {
		if !cfg.enabled(name) {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			prog.start(name)
			t := time.Now()
			f, err := fn()
			d := time.Since(t)
			prog.done(name, len(f), err, d)
			mu.Lock()
			results[name] = &out{f, err, d}
			mu.Unlock()
		}()
	}
	run(CheckSecrets, func() ([]Finding, error) { return scanSecrets(ch, cfg) })
	run(CheckDangerous, func() ([]Finding, error) { return dangerousFiles(ch), nil })
	run(CheckDeps, func() ([]Finding, error) {
		f, deps, err := reviewDeps(ch, cfg)
		mu.Lock()
		r.Dependencies = deps
		mu.Unlock()
		return f, err
	})
	run(CheckQuality, func() ([]Finding, error) {
		f, m := quality(ch, cfg)
		churn(ctx, ch, cfg, m)
		mu.Lock()
		r.Metrics = m
		mu.Unlock()
		return f, nil
	})
	run(CheckStatic, func() ([]Finding, error) {
		f := astChecks(ch)
		if extractErr != nil {
			return f, fmt.Errorf("extract head tree: %w", extractErr)
		}
		vf, err := goVet(ctx, ch, workdir, cfg, opts.Sandbox)
		f = append(f, vf...)
		if err != nil {
			return f, err
		}
		gf, tr := goSec(ctx, ch, workdir, cfg, opts.Sandbox)
		lf, ltr := runLinters(ctx, ch, workdir, cfg, opts.Sandbox)
		mu.Lock()
		r.Tools = append(append(r.Tools, tr), ltr...)
		mu.Unlock()
		return append(append(f, gf...), lf...), nil
	})
	// Tests write into the tree; run them after go vet read it.
	wg.Wait()
	run(CheckTests, func() ([]Finding, error) {
		if extractErr != nil {
			return nil, fmt.Errorf("extract head tree: %w", extractErr)
		}
		f, tr, err := runTests(ctx, ch, workdir, cfg, opts.Sandbox)
		mu.Lock()
		r.Tests = tr
		mu.Unlock()
		return f, err
	})
	wg.Wait()

	for _, name := range AllChecks {
		act := cfg.Checks[name]
		cr := CheckResult{Name: name, Action: act}
		o := results[name]
		if o == nil {
			cr.Status = "skipped"
			r.Checks = append(r.Checks, cr)
			continue
		}
		cr.Duration = ms(o.dur)
		fs := o.findings
		if o.err != nil {
			cr.Status = "error"
			cr.Error = o.err.Error()
			// Fail closed: a check that could not run never passes.
			fs = append(fs, Finding{Rule: "check-error", Message: fmt.Sprintf("%s check could not run: %v", name, o.err), Action: ActionNeedsHuman})
		}
		for i := range fs {
			fs[i].Check = name
			if fs[i].Action == "" {
				fs[i].Action = cfg.action(name, fs[i].Rule)
			}
			if fs[i].Fingerprint == "" {
				fs[i].Fingerprint = fingerprint(fs[i].Check, fs[i].Rule, fs[i].File, fs[i].Message)
			}
		}
		kept := fs[:0:0]
		for _, f := range fs {
			if reason, ok := cfg.allowed(f); ok {
				r.Allowlisted = append(r.Allowlisted, Allowed{Finding: f, Reason: reason})
				continue
			}
			kept = append(kept, f)
		}
		cr.Findings = len(kept)
		if cr.Status == "" {
			cr.Status = "ok"
			if len(kept) > 0 {
				cr.Status = "findings"
			}
		}
		r.Findings = append(r.Findings, kept...)
		r.Checks = append(r.Checks, cr)
	}
	for _, f := range ch.notes {
		f.Action = cfg.action(f.Check, f.Rule)
		f.Fingerprint = fingerprint(f.Check, f.Rule, f.File, f.Message)
		r.Findings = append(r.Findings, f)
	}
	sort.SliceStable(r.Findings, func(i, j int) bool {
		a, b := r.Findings[i], r.Findings[j]
		if a.Check != b.Check {
			return slices.Index(AllChecks, a.Check) < slices.Index(AllChecks, b.Check)
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	r.decide()
	r.Duration = ms(time.Since(start))
	return r, nil
}

// decide sets Result and Reasons from the findings.
func (r *Report) decide() {
	counts := map[Action]map[string]int{ActionFail: {}, ActionNeedsHuman: {}, ActionWarn: {}}
	for _, f := range r.Findings {
		counts[f.Action][f.Check+"/"+f.Rule]++
	}
	reasons := func(a Action) []string {
		var out []string
		for k, n := range counts[a] {
			out = append(out, fmt.Sprintf("%s: %s (%d)", a, k, n))
		}
		sort.Strings(out)
		return out
	}
	switch {
	case len(counts[ActionFail]) > 0:
		r.Result = Fail
	case len(counts[ActionNeedsHuman]) > 0:
		r.Result = NeedsReview
	default:
		r.Result = Pass
	}
	r.Reasons = append(append(reasons(ActionFail), reasons(ActionNeedsHuman)...), reasons(ActionWarn)...)
	if r.Reasons == nil {
		r.Reasons = []string{}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// progress writes "check: running" and "check: done" lines.
type progress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *progress) start(name string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "verify: %-15s running\n", name)
}

func (p *progress) done(name string, n int, err error, d time.Duration) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		fmt.Fprintf(p.w, "verify: %-15s error after %v: %s\n", name, d.Round(time.Millisecond), scrubLine(err.Error()))
		return
	}
	fmt.Fprintf(p.w, "verify: %-15s done in %v, %d finding(s)\n", name, d.Round(time.Millisecond), n)
}

// WriteSummary writes a readable summary of r. Paths and messages come
// from the agent's change: control characters are replaced.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "verify %s..%s: %s\n", short(r.Base), short(r.Head), strings.ToUpper(string(r.Result)))
	for _, c := range r.Checks {
		line := fmt.Sprintf("  %-15s %-8s %3d finding(s)  %8.1f ms", c.Name, c.Status, c.Findings, c.Duration)
		if c.Error != "" {
			line += "  (" + clip(c.Error, 100) + ")"
		}
		b.WriteString(scrubLine(line) + "\n")
	}
	if len(r.Findings) > 0 {
		b.WriteString("findings:\n")
	}
	for _, f := range r.Findings {
		loc := f.File
		if f.Line > 0 {
			loc = fmt.Sprintf("%s:%d", f.File, f.Line)
		}
		if loc == "" {
			loc = "-"
		}
		b.WriteString(scrubLine(fmt.Sprintf("  [%s] %s/%s %s: %s", f.Action, f.Check, f.Rule, loc, clip(f.Message, 200))) + "\n")
	}
	for _, a := range r.Allowlisted {
		b.WriteString(scrubLine(fmt.Sprintf("  [allowlisted] %s/%s %s:%d: %s", a.Finding.Check, a.Finding.Rule, a.Finding.File, a.Finding.Line, a.Reason)) + "\n")
	}
	for _, t := range r.Tools {
		if t.Status == "not-needed" {
			continue
		}
		line := fmt.Sprintf("tool %s: %s", t.Name, t.Status)
		if t.Version != "" {
			line += " (" + t.Version + ")"
		}
		if t.Detail != "" {
			line += ": " + clip(t.Detail, 200)
		}
		b.WriteString(scrubLine(line) + "\n")
	}
	if r.Tests != nil {
		fmt.Fprintf(&b, "tests: %s (%s) in %.1f s\n", scrubLine(r.Tests.Command), r.Tests.Outcome, r.Tests.Duration/1000)
	}
	if len(r.Reasons) > 0 {
		b.WriteString("reasons:\n")
		for _, s := range r.Reasons {
			b.WriteString("  " + scrubLine(s) + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// scrubLine replaces control characters so that agent-chosen names cannot
// drive a terminal.
func scrubLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, s)
}

func isHex40(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
