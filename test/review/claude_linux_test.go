//go:build linux

package review_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/enclavetest"
	"github.com/enclave-dev/enclave/internal/review"
)

// TestReviewClaudeCode is the review loop with a real agent: Claude Code
// (the real CLI from ../shared/realclients, its model a scripted fake
// behind enclave's model gateway) writes docs/usage.md inside enclave run;
// verification runs; the launcher may not approve (separation of duties)
// nor may the agent's session; a different person approves and merges; the
// merged commit's attestation names Claude, the model it used and the
// approver, verifies with `enclave attest verify`, and fails after any byte
// of the commit, statement or signature changes. Skipped only when the
// harness is absent (or -short); CI has it.
func TestReviewClaudeCode(t *testing.T) {
	harness := enclavetest.RealClients(t)
	f, runDir := claudeFixture(t)
	rep, out, agentErr := runClaude(t, harness, f, runDir, "routine")
	if rep.AgentExitCode != 0 || rep.TurnsServed != 3 {
		t.Fatalf("Claude Code under enclave: report %+v\nharness:\n%s\nagent stderr:\n%s", rep, out, agentErr)
	}
	// The user's checkout is untouched: the change is on the session branch.
	if _, err := os.Stat(filepath.Join(f.repo, "docs", "usage.md")); err == nil {
		t.Fatal("docs/usage.md appeared in the user's checkout before any review")
	}

	var s struct {
		ID string `json:"id"`
	}
	sessions := f.must("", "sessions", "--json", "-n", "1")
	if err := json.Unmarshal([]byte(strings.SplitN(sessions, "\n", 2)[0]), &s); err != nil || s.ID == "" {
		t.Fatalf("sessions --json: %v: %q", err, sessions)
	}
	id := s.ID
	if _, err := os.Stat(filepath.Join(f.state, "sessions", id, "verify.json")); err != nil {
		if r := f.enclave("", nil, "verify", id); r.code != 0 && r.code != 3 && r.code != 1 {
			t.Fatalf("verify: %d %s", r.code, r.stderr)
		}
	}
	var facts struct {
		State, Tier, Verify, VerifyNote string
		Paths                           []string
		Command                         []string
		Data                            struct {
			Models []struct{ Model string }
		}
	}
	raw := f.must("bob", "review", "--json", id)
	if err := json.Unmarshal([]byte(raw), &facts); err != nil {
		t.Fatal(err)
	}
	if facts.Tier != "routine" || facts.State != "needs-review" || strings.Join(facts.Paths, ",") != "docs/usage.md" ||
		len(facts.Command) == 0 || !strings.Contains(facts.Command[0], "claude") || len(facts.Data.Models) == 0 {
		t.Fatalf("review facts = %s", raw)
	}
	if facts.Verify != "pass" && facts.Verify != "needs-review" {
		t.Skipf("verification is %s on this machine (%s)", facts.Verify, facts.VerifyNote)
	}
	// Every model call Claude made went through the same Cedar decision
	// point, and its record names the policy that allowed it.
	var calls int
	for _, line := range strings.Split(strings.TrimSpace(f.must("", "log", "--json", "--kind", "model.call", id)), "\n") {
		var ev struct {
			Data struct {
				Phase    string   `json:"phase"`
				Allow    bool     `json:"allow"`
				Policies []string `json:"policies"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Data.Phase == "decision" && ev.Data.Allow {
			calls++
			if strings.Join(ev.Data.Policies, ",") != "models-sanctioned" {
				t.Errorf("model.call decision policies = %v, want [models-sanctioned]", ev.Data.Policies)
			}
		}
	}
	if calls < 3 {
		t.Errorf("allowed model calls on the record = %d, want at least the 3 scripted turns", calls)
	}

	f.refused("", nil, "separation-of-duties", "approve", id)
	f.lastDecision(id, "approve", "deny", "separation-of-duties")
	f.refused("bob", []string{"ENCLAVE_SESSION=" + id}, "agents cannot act as a human", "approve", id)
	f.must("bob", "approve", "-m", "docs only", id)
	if out := f.must("bob", "merge", id); !strings.Contains(out, "merged") {
		t.Fatalf("merge output %q", out)
	}
	head := f.git(f.repo, "rev-parse", "refs/heads/enclave/"+id)
	if got := f.git(f.repo, "show", head+":docs/usage.md"); got != "# Usage\n\nRun the demo with `make demo`." {
		t.Fatalf("merged docs/usage.md = %q", got)
	}
	if out := f.must("", "attest", "verify", "enclave/"+id); !strings.Contains(out, "ok: "+head) || !strings.Contains(out, "bob") ||
		!strings.Contains(out, "claude") || !strings.Contains(out, "calls)") || !strings.Contains(out, "approval allowed by humans-act-on-sessions") {
		t.Fatalf("attest verify = %q", out)
	}
	vs := f.tamperChecks(head, id, 1)
	if len(vs) != 1 {
		t.Fatalf("attestations = %d, want 1", len(vs))
	}
	p := vs[0].Statement.Predicate
	if p.Approver.Name != "bob" || p.Session.ID != id || p.Session.Tier != "routine" || len(p.Agent.Command) == 0 ||
		!strings.Contains(p.Agent.Command[0], "claude") || len(p.Models) == 0 || p.Models[0].Requests < 3 || p.Verification.ReportSHA256 == "" {
		t.Fatalf("predicate = %+v", p)
	}
	t.Logf("session %s: Claude Code made %d model calls through the gateway; merged %.12s approved by %s; %d-byte note checked byte by byte",
		id, calls, head, p.Approver.Name, len(f.git(f.repo, "notes", "--ref=refs/notes/enclave", "show", head)))
}

type claudeReport struct {
	AgentExitCode int `json:"agent_exit_code"`
	TurnsServed   int `json:"turns_served"`
}

// claudeFixture is a fixture whose checkout is the harness's RUN_DIR/work
// (the harness runs the agent there), with a committed review config.
func claudeFixture(t *testing.T) (*fixture, string) {
	f := newFixture(t)
	runDir := filepath.Join(f.root, "run")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(runDir, "work")
	if err := os.Rename(f.repo, work); err != nil {
		t.Fatal(err)
	}
	f.repo = work
	write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  routine: {approvals: 1, gate: no-fail, separation_of_duties: true}\n")
	f.git(f.repo, "add", review.ConfigFile)
	f.git(f.repo, "commit", "-q", "-m", "review config")
	return f, runDir
}

// runClaude runs Claude Code with the claude-change scenario inside
// enclave run at tier, and returns the harness's report and output.
func runClaude(t *testing.T, harness string, f *fixture, runDir, tier string) (claudeReport, []byte, []byte) {
	t.Helper()
	scenario, err := filepath.Abs(filepath.Join("testdata", "claude-change.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The harness hands Claude's variables (ANTHROPIC_BASE_URL at the fake
	// model, a fake key) to enclave, whose model gateway takes them as its
	// upstream and gives Claude a session token instead.
	wrap := strings.Join([]string{
		"env", cliEnv + "=1", enclavetest.ShellQuote(f.bin), "run", "--trust-policy", "--gateway", "on", "--tty", "never",
		`--ro "$RC_CACHE"`, "--tier", tier, "--task", enclavetest.ShellQuote("document the demo"), "--",
	}, " ")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(harness, "run-claude.sh"), scenario)
	cmd.Dir = harness
	cmd.Env = append(os.Environ(), "CHECK=0", "KEEP=1", "RUN_DIR="+runDir, "AGENT_TIMEOUT=150",
		"PASS_ENV=ENCLAVE_STATE_DIR", "ENCLAVE_STATE_DIR="+f.state, "WRAP="+wrap)
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatalf("run-claude.sh: %v\n%s", err, out)
	}
	agentErr, _ := os.ReadFile(filepath.Join(runDir, "agent.stderr"))
	var rep claudeReport
	data, err := os.ReadFile(filepath.Join(runDir, "report.json"))
	if err != nil || json.Unmarshal(data, &rep) != nil {
		t.Fatalf("run-claude.sh: no report (%v)\nharness:\n%s\nagent stderr:\n%s", err, out, agentErr)
	}
	return rep, out, agentErr
}

// An enclave.cedar forbid on a model for a tier: Claude Code's calls at
// that tier are refused by the gateway before any reaches the model, and
// each refusal on the record names the policy.
func TestClaudeModelForbiddenForTier(t *testing.T) {
	harness := enclavetest.RealClients(t)
	f, runDir := claudeFixture(t)
	write(t, filepath.Join(f.repo, authz.FileName), `
@id("no-anthropic-for-sensitive")
forbid (principal, action == Action::"model", resource is Model)
when { resource.family == "anthropic" && context.tier == "sensitive" };
`)
	f.git(f.repo, "add", authz.FileName)
	f.git(f.repo, "commit", "-q", "-m", "cedar policy")
	rep, out, agentErr := runClaude(t, harness, f, runDir, "sensitive")
	if rep.AgentExitCode == 0 || rep.TurnsServed != 0 {
		t.Fatalf("Claude Code with its model forbidden: report %+v, want a failed run and no turn served\nharness:\n%s\nagent stderr:\n%s", rep, out, agentErr)
	}
	var s struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(strings.SplitN(f.must("", "sessions", "--json", "-n", "1"), "\n", 2)[0]), &s)
	var refused int
	for _, line := range strings.Split(strings.TrimSpace(f.must("", "log", "--json", "--kind", "model.call", s.ID)), "\n") {
		var ev struct {
			Decision string `json:"decision"`
			Data     struct {
				Phase    string   `json:"phase"`
				Rule     string   `json:"rule"`
				Policies []string `json:"policies"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Data.Phase != "decision" {
			t.Errorf("a call got past the decision: %s", line)
			continue
		}
		if ev.Decision != "deny" || ev.Data.Rule != "model.authz" || strings.Join(ev.Data.Policies, ",") != "no-anthropic-for-sensitive" {
			t.Errorf("model.call decision = %s rule %s by %v, want deny by no-anthropic-for-sensitive", ev.Decision, ev.Data.Rule, ev.Data.Policies)
		}
		refused++
	}
	if refused == 0 {
		t.Fatal("no model.call refusal on the record")
	}
	t.Logf("session %s: %d calls refused by no-anthropic-for-sensitive; Claude exit %d", s.ID, refused, rep.AgentExitCode)
}
