package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/verify"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// Exit codes of enclave verify, beyond 0 (pass) and 2 (usage).
const (
	verifyExitFail        = 1
	verifyExitNeedsReview = 3
)

// verifyReportName is the report's file in the session directory.
const verifyReportName = "verify.json"

func (e *Env) verifyCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("verify", "verify [flags] SESSION", `Verify runs the verification gate on what a session changed: the project's
tests in a fresh sandbox without network, a secret scan of added lines,
dangerous files (hooks, CI, agent settings, install scripts), dependency
review (policy, a local OSV database, typosquats), quality metrics and
static analysis. It writes the report to the session directory as
verify.json, records its SHA-256 in the audit log, prints a summary, and
exits 0 on pass, 1 on fail, 3 on needs-review. Progress goes to stderr.
The gate's settings come from gates.verify in the policy the session ran
under; if that file changed since, verify stops unless --policy names the
file to use.`,
		"    enclave verify last\n    enclave verify --osv ~/osv-db --json last")
	jsonOut := fs.Bool("json", false, "print the report as JSON instead of the summary")
	osv := fs.String("osv", "", "directory or .zip of OSV JSON entries to check dependencies against (overrides gates.verify.osv)")
	timeout := fs.Duration("test-timeout", 0, "wall-time limit of the test run (overrides gates.verify.test_timeout; default 10m)")
	polPath := fs.String("policy", "", "verify against this policy `file` instead of the one the session ran under")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("verify takes one SESSION")
	}
	st, s, err := e.openSession(ctx, fs.Arg(0), true)
	if err != nil {
		return err
	}
	defer st.Close()
	// Who may verify is the Cedar policy's call, decided on the record.
	if err := e.authorizeVerify(ctx, st, s); err != nil {
		return err
	}
	dir := filepath.Join(st.dir, "sessions", s.ID)
	c, err := st.sessionChange(s)
	if err != nil {
		return err
	}
	pol, err := sessionPolicy(s, *polPath)
	if err != nil {
		return err
	}
	cfg := verifyConfig(pol.Gates.Verify)
	if p := pol.Gates.Verify.SecretRules; p != "" {
		if cfg.SecretRules, err = readSecretRules(p); err != nil {
			return err
		}
	}
	if *osv != "" {
		cfg.OSV = *osv
	}
	if *timeout != 0 {
		cfg.TestTimeout = *timeout
	}
	rep, err := verify.Run(ctx, verify.Options{
		Session:  s.ID,
		GitDir:   c.GitDir(),
		Base:     c.Base,
		Head:     c.Head,
		Config:   cfg,
		Progress: workspace.TerminalSafe(e.Stderr),
		Sandbox:  &verify.SandboxRunner{},
	})
	if err != nil {
		return fmt.Errorf("verify %s: %w", s.ID, err)
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	sum := sha256.Sum256(data)
	tmp := filepath.Join(dir, verifyReportName+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, verifyReportName)); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	evData, _ := json.Marshal(map[string]any{
		"report_sha256": hex.EncodeToString(sum[:]),
		"result":        rep.Result,
		"schema":        rep.Schema,
		"base":          rep.Base,
		"head":          rep.Head,
		"findings":      len(rep.Findings),
		"allowlisted":   len(rep.Allowlisted),
		"reasons":       rep.Reasons,
		"policy":        pol.Source,
		"policy_sha256": pol.Hash,
	})
	if _, err := st.log.Append(ctx, audit.Event{Session: s.ID, Kind: "verify", Actor: "enclave", Decision: string(rep.Result), Time: time.Now(), Data: evData}); err != nil {
		// The report must not count unless it is on the record.
		return fmt.Errorf("record verify report in the audit log: %w", err)
	}
	if err := st.checkpoint(ctx); err != nil {
		return err
	}
	if *jsonOut {
		if _, err := e.Stdout.Write(data); err != nil {
			return err
		}
	} else if err := rep.WriteSummary(e.Stdout); err != nil {
		return err
	}
	switch rep.Result {
	case verify.Fail:
		return &exitError{verifyExitFail}
	case verify.NeedsReview:
		return &exitError{verifyExitNeedsReview}
	}
	return nil
}

// sessionPolicy loads the policy a session is verified against: the file
// named by --policy if given, else the policy the session ran under, which
// must still hash to what the session recorded (an edited policy could
// otherwise allowlist the change it is judging without anyone noticing).
func sessionPolicy(s *store.Session, explicit string) (*policy.Policy, error) {
	if explicit != "" {
		p, err := policy.LoadFor(s.Dir, explicit)
		if err != nil {
			return nil, fmt.Errorf("load policy %q: %w", explicit, err)
		}
		return p, nil
	}
	if s.PolicySource == "" || s.PolicySource == policy.SourceBuiltin {
		// The built-in defaults are this binary's; an upgrade may change
		// their text (and hash) but never adds an allow rule.
		return policy.Default(), nil
	}
	src := s.PolicySource
	if !filepath.IsAbs(src) {
		src = filepath.Join(s.Dir, src)
	}
	p, err := policy.LoadFor(s.Dir, src)
	if err != nil {
		return nil, fmt.Errorf("load the policy of session %s: %w", s.ID, err)
	}
	if s.PolicyHash != "" && p.Hash != s.PolicyHash {
		return nil, fmt.Errorf("policy %s changed since session %s started (sha256 %.12s, recorded %.12s); verify with --policy %s to use the edited policy", p.Source, s.ID, p.Hash, s.PolicyHash, p.Source)
	}
	return p, nil
}

// verifyConfig maps the policy's gates.verify section onto the gate's
// configuration. The policy has already checked names and values; the
// gate checks them again when it runs.
func verifyConfig(g policy.VerifyGate) verify.Config {
	c := verify.Config{
		Scope:       g.Scope,
		OSV:         g.OSV,
		TestCommand: g.TestCommand,
		TestTimeout: g.TestTimeout,
		TestMemory:  g.TestMemory,
		TestNetwork: g.TestNetwork,
		ChurnWindow: g.ChurnWindow,
		Deps: verify.DepPolicy{
			Allow:         g.DepsAllow,
			Deny:          g.DepsDeny,
			NeedsApproval: g.DepsNeedsApproval,
		},
	}
	if len(g.Checks) > 0 {
		c.Checks = map[string]verify.Action{}
		for k, v := range g.Checks {
			c.Checks[k] = verify.Action(v)
		}
	}
	if len(g.Rules) > 0 {
		c.Rules = map[string]verify.Action{}
		for k, v := range g.Rules {
			c.Rules[k] = verify.Action(v)
		}
	}
	for _, a := range g.Allow {
		c.Allow = append(c.Allow, verify.AllowRule{Check: a.Check, Rule: a.Rule, Path: a.Path, Fingerprint: a.Fingerprint, Reason: a.Reason})
	}
	return c
}

// readSecretRules reads the policy's secret rule file (at most 8 MiB; a
// rule file is ~100 KiB).
func readSecretRules(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read gates.verify.secret_rules %q: %w", p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 8<<20+1))
	if err != nil {
		return nil, fmt.Errorf("read gates.verify.secret_rules %q: %w", p, err)
	}
	if len(data) > 8<<20 {
		return nil, fmt.Errorf("read gates.verify.secret_rules %q: larger than 8 MiB", p)
	}
	return data, nil
}
