//go:build linux

package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/enclavetest"
	"github.com/enclave-dev/enclave/internal/session"
)

// TestMain lets this test binary be enclave itself (see enclavetest.Main).
func TestMain(m *testing.M) { enclavetest.Main(m) }

// rcInside is where the harness's npm cache (under /tmp, which the sandbox
// builds itself) is mounted inside; testdata/rcmap.sh rewrites the agent's
// path to match.
const rcInside = "/rc"

// agent is one real client and how the harness runs it.
//
// Codex and OpenCode run with the harness's VIA_ENV=1: nothing but the
// standard variables of a user's shell (OPENAI_BASE_URL / OPENAI_API_KEY,
// ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY) names the model, so enclave takes
// the upstream from them and its own adapter points the agent at the
// gateway. (Without it the harness names the fake model only in a config
// file in a HOME the sandbox never shows, and there is nothing to test.)
type agent struct {
	name, script string
	vars         []string // extra harness variables
	// key is the fake "real" provider key the harness puts in enclave's
	// environment; it must never reach the sandbox or the audit log.
	key string
	// upPath is the path the fake upstream must see, which says which
	// API (and so which of enclave's variables) carried the call.
	upPath string
	// viaEnv is the standard variable that must carry the upstream on
	// the harness's command line (VIA_ENV=1), empty for the others.
	viaEnv string
}

var agents = []agent{
	{name: "claude", script: "run-claude.sh", key: "sk-ant-fake-not-a-real-key", upPath: "/v1/messages"},
	{name: "codex", script: "run-codex.sh", vars: []string{"VIA_ENV=1",
		// Codex's default model makes it send no tools; the user picks one.
		"CODEX_ARGS=-m fake-model"}, key: "sk-fake-not-a-real-key", upPath: "/v1/responses", viaEnv: "OPENAI_BASE_URL"},
	{name: "gemini", script: "run-gemini.sh", key: "", upPath: "/v1beta/models/fake-model:streamGenerateContent"},
	{name: "opencode", script: "run-opencode.sh", vars: []string{"VIA_ENV=1"}, key: "", upPath: "/v1/messages", viaEnv: "ANTHROPIC_BASE_URL"},
}

// opencodeOpenAI is OpenCode on its built-in openai provider, named only by
// OPENAI_BASE_URL and OPENAI_API_KEY (VIA_ENV=1).
var opencodeOpenAI = agent{name: "opencode-openai", script: "run-opencode.sh",
	vars: []string{"VIA_ENV=1", "OPENCODE_MODEL=openai/gpt-5-mini"}, upPath: "/v1/responses", viaEnv: "OPENAI_BASE_URL"}

type testEnv struct {
	harness, enclave, wrap string
}

type report struct {
	AgentExitCode     int      `json:"agent_exit_code"`
	AgentSeconds      float64  `json:"agent_seconds"`
	TurnsServed       int      `json:"turns_served"`
	ToolResults       []string `json:"tool_results"`
	SecretSentToModel bool     `json:"secret_sent_to_model"`
	ModelsRequested   []string `json:"models_requested"`
}

type run struct {
	dir, state string
	rep        report
	model      int
	harness    []byte
	agentErr   []byte
	requests   []byte // the fake model's requests.jsonl
	env        map[string]string
}

func setup(t *testing.T) *testEnv {
	t.Helper()
	harness := enclavetest.RealClients(t, "curl")
	bin := t.TempDir()
	enclave := enclavetest.InstallSelf(t, bin)
	src, _ := filepath.Abs(filepath.Join("testdata", "rcmap.sh"))
	wrap := filepath.Join(bin, "rcmap.sh")
	if err := enclavetest.CopyFile(src, wrap, 0o755); err != nil {
		t.Fatal(err)
	}
	return &testEnv{harness: harness, enclave: enclave, wrap: wrap}
}

// runHarness runs one scenario of one agent inside enclave run. files are
// planted in the harness's work directory (the user's checkout) first.
// enclaveArgs are extra `enclave run` flags (shell words, expanded by the
// harness, so $MODEL_PORT works).
func (e *testEnv) runHarness(t *testing.T, a agent, scenario string, files map[string]string, enclaveArgs string, vars ...string) *run {
	t.Helper()
	r := &run{dir: t.TempDir(), state: t.TempDir()}
	for name, content := range files {
		p := filepath.Join(r.dir, "work", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wrap := strings.Join([]string{
		enclavetest.ShellQuote(e.wrap), `"$RC_CACHE"`, rcInside, enclavetest.ShellQuote(e.enclave), "run",
		`--ro "$RC_CACHE:` + rcInside + `"`, enclaveArgs, "--",
	}, " ")
	env := append(os.Environ(), "CHECK=0", "KEEP=1", "RUN_DIR="+r.dir, "AGENT_TIMEOUT=150",
		"PASS_ENV=ENCLAVE_STATE_DIR", "ENCLAVE_STATE_DIR="+r.state, "WRAP="+wrap)
	env = append(env, a.vars...)
	env = append(env, vars...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(e.harness, a.script), scenario)
	cmd.Env = env
	cmd.Dir = e.harness
	out, err := cmd.CombinedOutput()
	r.harness = out
	r.agentErr, _ = os.ReadFile(filepath.Join(r.dir, "agent.stderr"))
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s %s: %v\n%s", a.script, scenario, err, out)
	}
	data, rerr := os.ReadFile(filepath.Join(r.dir, "report.json"))
	if rerr != nil {
		t.Fatalf("run %s %s: no report.json (%v):\n%s\nagent stderr:\n%s", a.script, scenario, rerr, out, r.agentErr)
	}
	if err := json.Unmarshal(data, &r.rep); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	var ports struct{ Model int }
	if data, err := os.ReadFile(filepath.Join(r.dir, "ports.json")); err == nil {
		_ = json.Unmarshal(data, &ports)
	}
	r.model = ports.Model
	r.requests, _ = os.ReadFile(filepath.Join(r.dir, "requests.jsonl"))
	r.env = commandEnv(filepath.Join(r.dir, "command.sh"))
	t.Logf("%s %s: exit %d, turns %d, %.2fs", a.name, scenario, r.rep.AgentExitCode, r.rep.TurnsServed, r.rep.AgentSeconds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness output:\n%s\nagent stderr:\n%s", r.harness, r.agentErr)
		}
	})
	return r
}

// commandEnv reads the NAME=value words the harness gave enclave (its
// command.sh: env -i NAME=value ... timeout ...), to learn the fake keys.
func commandEnv(path string) map[string]string {
	m := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	for _, w := range strings.Fields(string(data)) {
		if k, v, ok := strings.Cut(w, "="); ok && strings.HasSuffix(k, "_KEY") {
			m[k] = strings.Trim(v, "'")
		}
	}
	return m
}

func (e *testEnv) enclaveCmd(t *testing.T, r *run, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(e.enclave, args...)
	cmd.Env = append(os.Environ(), "ENCLAVE_STATE_DIR="+r.state)
	cmd.Dir = r.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("enclave %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

type logEvent struct {
	Kind     string          `json:"kind"`
	Decision string          `json:"decision"`
	Data     json.RawMessage `json:"data"`
}

func (e *testEnv) events(t *testing.T, r *run) ([]logEvent, []byte) {
	t.Helper()
	out := e.enclaveCmd(t, r, "log", "--json", "last")
	var evs []logEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var ev logEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("enclave log --json: %v", err)
		}
		evs = append(evs, ev)
	}
	return evs, out
}

type modelCall struct {
	Phase    string `json:"phase"`
	Allow    bool   `json:"allow"`
	Model    string `json:"model"`
	Upstream string `json:"upstream"`
	Reason   string `json:"reason"`
	Status   int    `json:"status"`
	Prompt   string `json:"prompt_sha256"`
	Redacts  []struct {
		Rule        string `json:"rule"`
		Placeholder string `json:"placeholder"`
	} `json:"redactions"`
}

func modelCalls(t *testing.T, evs []logEvent) []modelCall {
	t.Helper()
	var out []modelCall
	for _, ev := range evs {
		if ev.Kind != "model.call" {
			continue
		}
		var c modelCall
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Fatalf("model.call event: %v", err)
		}
		out = append(out, c)
	}
	return out
}

// checkThroughGateway: the agent finished, every model request the
// upstream saw came through the gateway (recorded, allowed, with the real
// key swapped in), and no egress flow went to the model port.
func checkThroughGateway(t *testing.T, e *testEnv, r *run) []logEvent {
	t.Helper()
	evs, _ := e.events(t, r)
	calls := modelCalls(t, evs)
	var allowed, results int
	for _, c := range calls {
		if c.Phase == "decision" && c.Allow {
			allowed++
		}
		if c.Phase == "result" && c.Status == 200 {
			results++
		}
	}
	if allowed == 0 || results == 0 {
		t.Errorf("model.call records: %d allowed decisions, %d results with status 200; want both > 0 (calls: %+v)", allowed, results, calls)
	}
	n := bytes.Count(r.requests, []byte("\n"))
	if n == 0 {
		t.Errorf("the fake upstream received no request")
	}
	for _, ev := range evs {
		if ev.Kind == "egress" && ev.Decision == "allow" {
			t.Errorf("allowed egress flow %s; with the gateway the agent needs none", ev.Data)
		}
	}
	if !bytes.Contains(r.agentErr, []byte("model gateway: ")) {
		t.Errorf("enclave did not say what the gateway sanctions; stderr:\n%s", r.agentErr)
	}
	return evs
}

// TestAgentsThroughGateway: each real agent completes the benign task with
// the gateway as its only model endpoint. Codex and OpenCode (also on its
// openai provider) are configured by the standard variables only
// (VIA_ENV=1): the harness's command line carries them, and the upstream
// sees the API they name.
func TestAgentsThroughGateway(t *testing.T) {
	e := setup(t)
	for _, a := range append(slices.Clone(agents), opencodeOpenAI) {
		t.Run(a.name, func(t *testing.T) {
			r := e.runHarness(t, a, "benign", nil, "")
			if r.rep.AgentExitCode != 0 || r.rep.TurnsServed != 2 {
				t.Fatalf("agent exit %d, turns served %d; want 0 and 2", r.rep.AgentExitCode, r.rep.TurnsServed)
			}
			if !slices.ContainsFunc(r.rep.ToolResults, func(s string) bool { return strings.Contains(s, "BENIGN-OK 26 bytes in /workspace") }) {
				t.Errorf("tool results = %q, want BENIGN-OK in /workspace", r.rep.ToolResults)
			}
			checkThroughGateway(t, e, r)
			if a.viaEnv != "" {
				cmd, _ := os.ReadFile(filepath.Join(r.dir, "command.sh"))
				if !bytes.Contains(cmd, []byte(a.viaEnv+"=http://")) {
					t.Errorf("the harness's command line lacks %s (VIA_ENV=1 not in effect):\n%s", a.viaEnv, cmd)
				}
			}
			for _, l := range bytes.Split(bytes.TrimSpace(r.requests), []byte("\n")) {
				var req struct{ Path, Listener string }
				if err := json.Unmarshal(l, &req); err != nil {
					t.Fatalf("requests.jsonl: %v", err)
				}
				if p, _, _ := strings.Cut(req.Path, "?"); req.Listener == "model" && p != a.upPath {
					t.Errorf("the upstream saw %s, want only %s", req.Path, a.upPath)
				}
			}
		})
	}
}

func randomAWSKey() (id, secret string) {
	const b32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	raw := make([]byte, 56)
	rand.Read(raw)
	var a, s strings.Builder
	a.WriteString("AKIA")
	for _, c := range raw[:16] {
		a.WriteByte(b32[int(c)%len(b32)])
	}
	for _, c := range raw[16:] {
		s.WriteByte(b64[int(c)%len(b64)])
	}
	return a.String(), s.String()
}

// TestSecretRedactedKeyNeverInside: a tool result carrying a fake AWS key
// reaches the upstream redacted; the provider key is nowhere inside the
// sandbox (environment and HOME, dumped by the agent into its workspace and
// read on the host) nor in the audit log; a direct call to the upstream
// through the egress proxy is refused although the command line allowed
// that host, and recorded.
func TestSecretRedactedKeyNeverInside(t *testing.T) {
	e := setup(t)
	scenario, _ := filepath.Abs(filepath.Join("testdata", "secret.json"))
	for _, a := range agents {
		t.Run(a.name, func(t *testing.T) {
			id, sec := randomAWSKey()
			notes := fmt.Sprintf("deploy with:\naws_access_key_id = %s\naws_secret_access_key = %s\n", id, sec)
			r := e.runHarness(t, a, scenario, map[string]string{"deploy-notes.txt": notes},
				`--allow-host "127.0.0.1:$MODEL_PORT"`)
			if r.rep.TurnsServed < 4 {
				t.Errorf("turns served = %d, want 4 (every step attempted)", r.rep.TurnsServed)
			}
			if !slices.ContainsFunc(r.rep.ToolResults, func(s string) bool { return strings.Contains(s, "NOTES-READ") }) {
				t.Fatalf("the notes were not read: tool results %q", r.rep.ToolResults)
			}
			for _, s := range []string{id, sec} {
				if bytes.Contains(r.requests, []byte(s)) {
					t.Errorf("the fake upstream received the planted secret %.8s...", s)
				}
			}
			if !bytes.Contains(r.requests, []byte("[REDACTED:aws-access-key-id:")) {
				t.Errorf("the upstream's requests lack the aws-access-key-id placeholder")
			}
			// The agent also printed the notes base64-encoded (wrapped at
			// 76 columns): no line of that reaches the upstream either.
			enc := base64.StdEncoding.EncodeToString([]byte(notes))
			for i := 0; i+76 <= len(enc); i += 76 {
				if bytes.Contains(r.requests, []byte(enc[i:i+76])) {
					t.Errorf("the upstream received line %d of the base64-encoded notes", i/76+1)
				}
			}
			if !bytes.Contains(r.requests, []byte("[REDACTED:aws-access-key-id/base64:")) {
				t.Errorf("the upstream's requests lack the placeholder of the base64-encoded key")
			}
			evs := checkThroughGateway(t, e, r)

			// The key inside: read what the agent dumped, on the host.
			sessDir := latestSession(t, r.state)
			inside := map[string][]byte{}
			for _, f := range []string{"agent-env.txt", "agent-home-list.txt", "agent-home-files.txt"} {
				data, err := os.ReadFile(filepath.Join(sessDir, "work", f))
				if err != nil {
					t.Fatalf("the agent's %s: %v", f, err)
				}
				inside[f] = data
			}
			if !bytes.Contains(inside["agent-env.txt"], []byte("=enclave-")) {
				t.Errorf("the agent's environment holds no session token:\n%s", inside["agent-env.txt"])
			}
			_, logText := e.events(t, r)
			keys := 0
			for name, key := range r.env {
				if len(key) < 8 {
					continue
				}
				keys++
				for f, data := range inside {
					if bytes.Contains(data, []byte(key)) {
						t.Errorf("the provider key %s (from enclave's environment) is inside the sandbox: %s", name, f)
					}
				}
				if bytes.Contains(logText, []byte(key)) {
					t.Errorf("the provider key %s is in the audit log", name)
				}
			}
			if keys == 0 {
				t.Errorf("found no provider key in the harness's command line; the check above is empty")
			}

			// Bypass: refused by the proxy and recorded.
			if !slices.ContainsFunc(r.rep.ToolResults, func(s string) bool { return strings.Contains(s, "BYPASS-403") }) {
				t.Errorf("the direct call to the upstream was not refused with 403: tool results %q", r.rep.ToolResults)
			}
			denied := false
			for _, ev := range evs {
				if ev.Kind == "egress" && ev.Decision == "deny" && bytes.Contains(ev.Data, []byte(fmt.Sprintf(`"port":%d`, r.model))) {
					denied = true
				}
			}
			if !denied {
				t.Errorf("no denied egress record to the model port %d", r.model)
			}

			// enclave data tells the same story from the audit log.
			var d session.DataFlow
			if err := json.Unmarshal(e.enclaveCmd(t, r, "data", "--json", "last"), &d); err != nil {
				t.Fatalf("enclave data --json last: %v", err)
			}
			if !d.Gateway || len(d.Models) == 0 || d.Models[0].Requests == 0 || d.Models[0].RequestBytes == 0 {
				t.Errorf("enclave data models = %+v, want requests and bytes through the gateway", d.Models)
			}
			if !slices.ContainsFunc(d.Redactions, func(x session.RedactionFlow) bool { return x.Rule == "aws-access-key-id" }) {
				t.Errorf("enclave data redactions = %+v, want aws-access-key-id", d.Redactions)
			}
			if !slices.ContainsFunc(d.Blocked, func(b session.BlockedFlow) bool {
				return b.Kind == "egress" && strings.Contains(b.What, fmt.Sprintf(":%d", r.model))
			}) {
				t.Errorf("enclave data blocked = %+v, want the direct call to the model port", d.Blocked)
			}
			if len(d.DroppedRules) != 1 {
				t.Errorf("enclave data dropped rules = %+v, want the --allow-host rule for the upstream", d.DroppedRules)
			}
			text := string(e.enclaveCmd(t, r, "data", "last"))
			for _, want := range []string{"models:", "aws-access-key-id", "blocked:"} {
				if !strings.Contains(text, want) {
					t.Errorf("enclave data last lacks %q:\n%s", want, text)
				}
			}
		})
	}
}

func latestSession(t *testing.T, state string) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(state, "sessions"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("no session directory under %s: %v", state, err)
	}
	return filepath.Join(state, "sessions", ents[len(ents)-1].Name())
}

// TestUnsanctionedModel: each agent asks for a model its provider's policy
// entry does not list (the entry sanctions only sanctioned-other-*, on the
// fake model's real port, so an allowed call would reach it). The request is
// refused with a message naming the model and what is allowed, recorded as
// a deny, and the upstream receives nothing.
func TestUnsanctionedModel(t *testing.T) {
	e := setup(t)
	cases := []struct {
		agent agent
		// api, base (with @MODEL_PORT@) and key of the policy's provider.
		api, base, keyEnv string
		// model the agent asks for; a trailing * is a prefix.
		model string
		vars  []string
	}{
		{agents[0], "anthropic", "http://127.0.0.1:@MODEL_PORT@", "ANTHROPIC_API_KEY", "claude-opus-9", []string{"CLAUDE_MODEL=claude-opus-9"}},
		{agents[1], "openai", "http://127.0.0.1:@MODEL_PORT@/v1", "OPENAI_API_KEY", "fake-model", nil},
		{agents[2], "gemini", "http://127.0.0.1:@MODEL_PORT@", "GEMINI_API_KEY", "fake-model", nil},
		// OpenCode (VIA_ENV=1) uses its built-in anthropic provider and
		// its default model, anthropic/claude-sonnet-4-5.
		{agents[3], "anthropic", "http://127.0.0.1:@MODEL_PORT@/v1", "ANTHROPIC_API_KEY", "claude-sonnet-4-5*", nil},
	}
	for _, tc := range cases {
		t.Run(tc.agent.name, func(t *testing.T) {
			tmpl := writeFile(t, "policy.yaml.in", fmt.Sprintf(`version: 1
providers:
  only-other:
    api: %s
    base_url: %s
    key_env: %s
    models: ["sanctioned-other-*"]
`, tc.api, tc.base, tc.keyEnv))
			r := e.runHarness(t, tc.agent, "benign", nil, policyArgs(tmpl), tc.vars...)
			if r.rep.TurnsServed != 0 || len(bytes.TrimSpace(r.requests)) != 0 {
				t.Errorf("the upstream served %d turns (%d bytes of requests); want none", r.rep.TurnsServed, len(r.requests))
			}
			if r.rep.AgentExitCode == 0 {
				t.Errorf("agent exit 0; want a failure after the refusal")
			}
			want := strings.TrimSuffix(tc.model, "*")
			matches := func(m string) bool {
				if strings.HasSuffix(tc.model, "*") {
					return strings.HasPrefix(m, want)
				}
				return m == want
			}
			if out := agentOutput(r); !bytes.Contains(out, []byte("sanctioned-other-*")) {
				t.Errorf("the agent did not print the gateway's refusal naming what is allowed; its output:\n%s", out)
			}
			evs, _ := e.events(t, r)
			refused := false
			seen := map[string]bool{} // prompt hashes of refused requests
			for _, ev := range evs {
				if ev.Kind != "model.call" {
					continue
				}
				var c modelCall
				if err := json.Unmarshal(ev.Data, &c); err != nil {
					t.Fatal(err)
				}
				if c.Phase == "decision" && !c.Allow && ev.Decision == "deny" && matches(c.Model) &&
					strings.Contains(c.Reason, c.Model) && strings.Contains(c.Reason, "sanctioned-other-*") {
					refused = true
				}
				if c.Allow {
					t.Errorf("allowed model call %+v", c)
				}
				// A refusal is final: the same request body refused twice
				// is the client retrying it.
				if c.Phase == "decision" && !c.Allow {
					if seen[c.Prompt] {
						t.Errorf("the same request (sha256 %.12s) was refused twice: the client retried a refusal", c.Prompt)
					}
					seen[c.Prompt] = true
				}
			}
			if !refused {
				t.Errorf("no denied model.call naming %s and the allowed sanctioned-other-*: %+v", tc.model, modelCalls(t, evs))
			}
			d := dataFlow(t, e, r)
			if !slices.ContainsFunc(d.Blocked, func(b session.BlockedFlow) bool {
				return b.Kind == "model" && strings.HasPrefix(b.What, want)
			}) {
				t.Errorf("enclave data blocked = %+v, want the refused %s", d.Blocked, tc.model)
			}
		})
	}
}
