//go:build linux

package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/enclavetest"
	"github.com/enclave-dev/enclave/internal/session"
)

// classPolicy labels secret/** restricted and names no provider, so the
// providers come from enclave's environment at the default clearance
// (internal): a restricted excerpt must never reach them.
const classPolicy = `version: 1
classification:
  levels: [public, internal, confidential, restricted]
  default: internal
  paths:
    - {path: "secret/**", level: restricted}
  action: block
`

// restrictedSource returns a Go file of 40 lines whose identifiers carry
// tag, so any line of it that reaches the upstream is recognisable.
func restrictedSource(tag string) string {
	lines := []string{
		"package ledger",
		"",
		"import (",
		"	\"errors\"",
		"	\"sort\"",
		")",
		"",
		"// settle%[1]s moves reserved balances between the treasury vaults.",
		"func settle%[1]s(vaults map[string]int64, from, to string, amount int64) error {",
		"	if amount <= 0 {",
		"		return errors.New(\"ledger%[1]s: non-positive transfer\")",
		"	}",
		"	if vaults[from] < amount+reserveFloor%[1]s {",
		"		return errInsufficient%[1]s",
		"	}",
		"	vaults[from] -= amount",
		"	vaults[to] += amount",
		"	auditTrail%[1]s = append(auditTrail%[1]s, transfer%[1]s{from, to, amount})",
		"	return nil",
		"}",
		"",
		"// rebalance%[1]s spreads the overflow of the largest vault to the rest.",
		"func rebalance%[1]s(vaults map[string]int64) []string {",
		"	names := make([]string, 0, len(vaults))",
		"	for name := range vaults {",
		"		names = append(names, name)",
		"	}",
		"	sort.Slice(names, func(i, j int) bool { return vaults[names[i]] > vaults[names[j]] })",
		"	overflow%[1]s := vaults[names[0]] - ceiling%[1]s",
		"	for _, name := range names[1:] {",
		"		share := overflow%[1]s / int64(len(names)-1)",
		"		vaults[name] += share",
		"		vaults[names[0]] -= share",
		"	}",
		"	return names",
		"}",
		"",
		"var errInsufficient%[1]s = errors.New(\"ledger%[1]s: insufficient reserve\")",
		"var reserveFloor%[1]s, ceiling%[1]s int64 = 125000, 9800000",
		"",
	}
	return fmt.Sprintf(strings.Join(lines, "\n"), tag)
}

func randomTag(t *testing.T) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "Zq" + hex.EncodeToString(b)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyArgs is the `enclave run` flag naming a policy made from the file
// tmpl with @MODEL_PORT@ replaced by the fake model's port, which the
// harness learns only after starting it (WRAP is expanded then).
func policyArgs(tmpl string) string {
	return `--policy "$(sed "s/@MODEL_PORT@/$MODEL_PORT/g" ` + enclavetest.ShellQuote(tmpl) + ` >"$RUN_DIR/policy.yaml" && echo "$RUN_DIR/policy.yaml")"`
}

// agentOutput is what the agent printed, stdout and stderr.
func agentOutput(r *run) []byte {
	out, _ := os.ReadFile(filepath.Join(r.dir, "agent.stdout"))
	return append(out, r.agentErr...)
}

func dataFlow(t *testing.T, e *testEnv, r *run) session.DataFlow {
	t.Helper()
	var d session.DataFlow
	out := e.enclaveCmd(t, r, "data", "--json", "last")
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("enclave data --json last: %v\n%s", err, out)
	}
	return d
}

type classHit struct {
	Path      string `json:"path"`
	Level     string `json:"level"`
	StartLine int    `json:"start_line"`
	EndLine   int    `json:"end_line"`
	Action    string `json:"action"`
}

type classCall struct {
	Phase          string     `json:"phase"`
	Allow          bool       `json:"allow"`
	Model          string     `json:"model"`
	Rule           string     `json:"rule"`
	Reason         string     `json:"reason"`
	Classification []classHit `json:"classification"`
}

func classCalls(t *testing.T, evs []logEvent) []classCall {
	t.Helper()
	var out []classCall
	for _, ev := range evs {
		if ev.Kind != "model.call" {
			continue
		}
		var c classCall
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatalf("model.call event: %v", err)
		}
		out = append(out, c)
	}
	return out
}

// TestRestrictedExcerptRefused: the agent cats 30 lines of a file the policy
// labels restricted, with the providers (from the environment) cleared only
// to internal. The request carrying the excerpt is refused: the upstream
// never sees a line of it, the agent gets the gateway's error, and the
// audit log and `enclave data` record the hit with the file and span.
//
// The claude-read-tool case reads with Claude Code's in-process Read tool,
// whose result prefixes every line with its number; the reformatted case
// strips indentation and joins lines; the base64 and gzip-base64 cases send
// the excerpt encoded (base64, gzip -c | base64, od -An -tx1), so no line
// of it appears in the tool result as it is.
func TestRestrictedExcerptRefused(t *testing.T) {
	e := setup(t)
	shell, _ := filepath.Abs(filepath.Join("testdata", "restricted.json"))
	readTool, _ := filepath.Abs(filepath.Join("testdata", "restricted-read-tool.json"))
	pol := writeFile(t, "policy.yaml", classPolicy)
	type tcase struct {
		name     string
		a        agent
		scenario string
	}
	var cases []tcase
	for _, a := range agents {
		cases = append(cases, tcase{a.name, a, shell})
	}
	reformatted, _ := filepath.Abs(filepath.Join("testdata", "restricted-reformatted.json"))
	b64, _ := filepath.Abs(filepath.Join("testdata", "restricted-base64.json"))
	gzb64, _ := filepath.Abs(filepath.Join("testdata", "restricted-gzip-base64.json"))
	od, _ := filepath.Abs(filepath.Join("testdata", "restricted-od.json"))
	cases = append(cases, tcase{"claude-read-tool", agents[0], readTool}, tcase{"claude-reformatted", agents[0], reformatted},
		tcase{"codex-base64", agents[1], b64}, tcase{"opencode-base64", agents[3], b64},
		tcase{"claude-gzip-base64", agents[0], gzb64}, tcase{"gemini-gzip-base64", agents[2], gzb64},
		tcase{"codex-hexdump", agents[1], od})
	for _, tc := range cases {
		a, scenario := tc.a, tc.scenario
		t.Run(tc.name, func(t *testing.T) {
			tag := randomTag(t)
			src := restrictedSource(tag)
			r := e.runHarness(t, a, scenario, map[string]string{"secret/ledger.go": src}, "--policy "+enclavetest.ShellQuote(pol))
			if r.rep.TurnsServed != 1 {
				t.Errorf("turns served = %d, want 1 (the read is served, the request carrying its result is not)", r.rep.TurnsServed)
			}
			if bytes.Contains(r.requests, []byte(tag)) {
				t.Errorf("the fake upstream received lines of the restricted file (tag %s)", tag)
			}
			if slices.ContainsFunc(r.rep.ToolResults, func(s string) bool { return strings.Contains(s, "RESTRICTED-READ") }) {
				t.Errorf("the tool result of the restricted read reached the upstream: %q", r.rep.ToolResults)
			}
			if out := agentOutput(r); !bytes.Contains(out, []byte("classified content above the clearance")) {
				t.Errorf("the agent did not print the gateway's refusal; its output:\n%s", out)
			}

			evs, _ := e.events(t, r)
			refused, n := false, 0
			for _, c := range classCalls(t, evs) {
				if c.Phase != "decision" || c.Allow || c.Rule != "classification" {
					continue
				}
				n++
				for _, h := range c.Classification {
					// The span is what was read, lines 1-30: it may start
					// a little late (lines 1-7 are too short to carry a
					// fingerprint) but never reaches past line 30, though
					// the file repeats phrases of the excerpt in lines
					// 38-39 (which once stretched it to 8-38).
					if h.Path == "secret/ledger.go" && h.Level == "restricted" && h.Action == "blocked" &&
						h.StartLine >= 1 && h.StartLine <= 9 && h.EndLine >= 28 && h.EndLine <= 30 {
						refused = true
					}
				}
				if !strings.Contains(c.Reason, "secret/ledger.go") {
					t.Errorf("refusal reason %q does not name the file", c.Reason)
				}
			}
			// A refusal is final for every client (the gateway picks a
			// status each one does not retry): the user's turn reaches the
			// gateway once.
			if n != 1 {
				t.Errorf("%s: %d requests refused for classified content, want 1 (the client retried a refusal)", a.name, n)
			}
			if !refused {
				t.Errorf("no refused model.call with a blocked restricted hit on secret/ledger.go spanning lines 1-30 (start by 9, end 28-30): %+v", classCalls(t, evs))
			}

			d := dataFlow(t, e, r)
			if !slices.ContainsFunc(d.Classified, func(h session.ClassifiedHit) bool {
				return h.Path == "secret/ledger.go" && h.Level == "restricted" && h.Action == "blocked"
			}) {
				t.Errorf("enclave data classified = %+v, want a blocked restricted hit on secret/ledger.go", d.Classified)
			}
			if !slices.ContainsFunc(d.Blocked, func(b session.BlockedFlow) bool {
				return b.Kind == "model" && strings.Contains(b.Reason, "secret/ledger.go")
			}) {
				t.Errorf("enclave data blocked = %+v, want the refused model call naming secret/ledger.go", d.Blocked)
			}
		})
	}
}

// stickyPolicy sanctions two models on the fake upstream: claude-cleared-*
// may receive confidential content, claude-weak-* only internal.
const stickyPolicy = `version: 1
providers:
  cleared:
    api: anthropic
    base_url: http://127.0.0.1:@MODEL_PORT@
    key_env: ANTHROPIC_API_KEY
    models: ["claude-cleared-*"]
    clearance: confidential
  weak:
    api: anthropic
    base_url: http://127.0.0.1:@MODEL_PORT@
    key_env: ANTHROPIC_API_KEY
    models: ["claude-weak-*"]
    clearance: internal
classification:
  levels: [public, internal, confidential, restricted]
  default: internal
  paths:
    - {path: "secret/**", level: confidential}
  action: block
`

// TestStickySensitivity: one session runs Claude Code twice (testdata/twice.sh).
// The first run, on a model cleared for confidential content, reads 30
// lines of a confidential file and sends them (allowed, recorded). The
// second run uses a model cleared only to internal; its first request is a
// fresh conversation holding none of the file, yet the session has sent confidential content, so the
// gateway refuses it (classification.sticky) and the upstream never sees
// it. The control run reads the same lines from an unclassified path, and
// the second run is served: the refusal comes from the session's history.
func TestStickySensitivity(t *testing.T) {
	e := setup(t)
	scenario, _ := filepath.Abs(filepath.Join("testdata", "sticky.json"))
	twice, err := os.ReadFile(filepath.Join("testdata", "twice.sh"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := writeFile(t, "policy.yaml.in", stickyPolicy)
	args := policyArgs(tmpl) + " -- /bin/sh /workspace/twice.sh"
	for _, tc := range []struct {
		name, dir string
		sticky    bool
	}{
		{"confidential", "secret", true},
		{"control", "open", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := randomTag(t)
			files := map[string]string{tc.dir + "/plan.go": restrictedSource(tag), "twice.sh": string(twice)}
			r := e.runHarness(t, agents[0], scenario, files, args)
			if !bytes.Contains(r.requests, []byte(tag)) {
				t.Fatalf("the first run's excerpt did not reach the cleared model; tool results %q", r.rep.ToolResults)
			}
			evs, _ := e.events(t, r)
			calls := classCalls(t, evs)
			var firstAllowed, weakAllowed, weakSticky bool
			for _, c := range calls {
				if c.Phase != "decision" {
					continue
				}
				switch {
				case c.Model == "claude-cleared-1" && c.Allow && slices.ContainsFunc(c.Classification, func(h classHit) bool {
					return h.Path == "secret/plan.go" && h.Level == "confidential" && h.Action == "allowed"
				}):
					firstAllowed = true
				case c.Model == "claude-weak-1" && c.Allow:
					weakAllowed = true
				case c.Model == "claude-weak-1" && !c.Allow && c.Rule == "classification.sticky" &&
					strings.Contains(c.Reason, "confidential") && strings.Contains(c.Reason, "secret/plan.go"):
					weakSticky = true
				}
			}
			if !bytes.Contains(r.agentErr, []byte("twice.sh: first run exit 0")) {
				t.Errorf("the first run did not finish cleanly; stderr:\n%s", r.agentErr)
			}
			if tc.sticky {
				if !firstAllowed {
					t.Errorf("no allowed call to claude-cleared-1 recording the confidential hit on secret/plan.go: %+v", calls)
				}
				if r.rep.TurnsServed != 2 {
					t.Errorf("turns served = %d, want 2 (the second run is refused before the upstream)", r.rep.TurnsServed)
				}
				if bytes.Contains(r.requests, []byte("claude-weak-1")) {
					t.Errorf("the upstream received a request for claude-weak-1")
				}
				if weakAllowed || !weakSticky {
					t.Errorf("claude-weak-1: allowed %v, refused as sticky %v; want refused only: %+v", weakAllowed, weakSticky, calls)
				}
				if out := agentOutput(r); !bytes.Contains(out, []byte("already sent confidential content")) {
					t.Errorf("the second run did not print the gateway's refusal; output:\n%s", out)
				}
				return
			}
			if r.rep.AgentExitCode != 0 || !bytes.Contains(r.requests, []byte("claude-weak-1")) || !weakAllowed || weakSticky {
				t.Errorf("control: exit %d, upstream got claude-weak-1 %v, allowed %v, refused as sticky %v; want 0, true, true, false",
					r.rep.AgentExitCode, bytes.Contains(r.requests, []byte("claude-weak-1")), weakAllowed, weakSticky)
			}
		})
	}
}

// TestRestrictedExcerptRedacted: with classification.action redact the
// request carrying the restricted excerpt goes on with the excerpt
// replaced by a placeholder: the agent finishes, the upstream sees the
// placeholder and no line of the file, and the record says "redacted".
func TestRestrictedExcerptRedacted(t *testing.T) {
	e := setup(t)
	scenario, _ := filepath.Abs(filepath.Join("testdata", "restricted.json"))
	pol := writeFile(t, "policy.yaml", strings.Replace(classPolicy, "action: block", "action: redact", 1))
	for _, a := range agents[:2] {
		t.Run(a.name, func(t *testing.T) {
			tag := randomTag(t)
			r := e.runHarness(t, a, scenario, map[string]string{"secret/ledger.go": restrictedSource(tag)}, "--policy "+enclavetest.ShellQuote(pol))
			if r.rep.AgentExitCode != 0 || r.rep.TurnsServed != 2 {
				t.Errorf("agent exit %d, turns served %d; want 0 and 2 (the redacted request goes on)", r.rep.AgentExitCode, r.rep.TurnsServed)
			}
			if bytes.Contains(r.requests, []byte(tag)) {
				for _, l := range strings.Split(restrictedSource(tag), "\n") {
					if strings.Contains(l, tag) && bytes.Contains(r.requests, []byte(strings.TrimSpace(l))) {
						t.Errorf("line of the restricted file reached the upstream: %q", l)
					}
				}
				t.Errorf("the fake upstream received the restricted file's tag %s", tag)
			}
			if !bytes.Contains(r.requests, []byte("[REDACTED:classified:restricted:secret/ledger.go]")) {
				t.Errorf("the upstream's requests lack the classified placeholder")
			}
			evs, _ := e.events(t, r)
			redacted := false
			for _, c := range classCalls(t, evs) {
				if c.Phase == "decision" && c.Allow && slices.ContainsFunc(c.Classification, func(h classHit) bool {
					return h.Path == "secret/ledger.go" && h.Level == "restricted" && h.Action == "redacted"
				}) {
					redacted = true
				}
			}
			if !redacted {
				t.Errorf("no allowed model.call recording the redacted restricted hit: %+v", classCalls(t, evs))
			}
			d := dataFlow(t, e, r)
			if !slices.ContainsFunc(d.Classified, func(h session.ClassifiedHit) bool {
				return h.Path == "secret/ledger.go" && h.Action == "redacted"
			}) {
				t.Errorf("enclave data classified = %+v, want a redacted hit on secret/ledger.go", d.Classified)
			}
		})
	}
}
