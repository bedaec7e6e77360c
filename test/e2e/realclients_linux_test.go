//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/enclavetest"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

// TestMain lets this test binary be enclave itself (see enclavetest.Main).
func TestMain(m *testing.M) { enclavetest.Main(m) }

// agent describes how one real client is run inside enclave.
type agent struct {
	name   string // "claude", "codex"
	script string // run-NAME.sh in the harness
	// args are the enclave run flags the agent needs beyond the common
	// ones, written for the harness's WRAP (shell words, expanded there).
	args string
	// codexHome: the harness writes CODEX_HOME under the run dir; it must
	// be writable by the sandbox's user.
	codexHome bool
}

var agents = []agent{
	{
		name:   "claude",
		script: "run-claude.sh",
		// Claude is configured only by environment. The env allowlist
		// refuses names that look like secrets (ANTHROPIC_API_KEY) even
		// with --pass, so everything is set inside with --env. The key is
		// the harness's fake one.
		args: `--env "ANTHROPIC_BASE_URL=http://127.0.0.1:$MODEL_PORT" ` +
			`--env ANTHROPIC_API_KEY=sk-ant-fake-not-a-real-key ` +
			`--env CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 ` +
			`--env DISABLE_TELEMETRY=1 --env DISABLE_ERROR_REPORTING=1 ` +
			`--env DISABLE_AUTOUPDATER=1 --env DISABLE_BUG_COMMAND=1 ` +
			`--env CLAUDE_CODE_MAX_RETRIES=1 --env IS_SANDBOX=1`,
	},
	{
		name:   "codex",
		script: "run-codex.sh",
		// Codex reads its provider from $CODEX_HOME/config.toml, which
		// the harness writes into the run dir; the sandbox sees only
		// what is mounted, so mount that directory read-write as the
		// agent's CODEX_HOME (Codex refuses a read-only one).
		args: `--rw "$HOME_DIR/.codex:/home/agent/.codex" ` +
			`--env CODEX_HOME=/home/agent/.codex ` +
			`--env FAKE_MODEL_API_KEY=sk-fake-not-a-real-key`,
		codexHome: true,
	},
}

// report is the part of the harness's report.json the tests read.
type report struct {
	AgentExitCode     int                `json:"agent_exit_code"`
	AgentSeconds      float64            `json:"agent_seconds"`
	TurnsServed       int                `json:"turns_served"`
	ToolResults       []string           `json:"tool_results"`
	SinkContacted     bool               `json:"sink_contacted"`
	SecretSentToModel bool               `json:"secret_sent_to_model"`
	SecretSentToSink  bool               `json:"secret_sent_to_sink"`
	Files             map[string]*string `json:"files"`
	OtherRequests     []json.RawMessage  `json:"other_requests"`
	Secrets           map[string]struct {
		SentToModel  bool `json:"sent_to_model"`
		InToolResult bool `json:"in_tool_result"`
		SentToSink   bool `json:"sent_to_sink"`
	} `json:"secrets"`
}

// run is one harness run and what the tests need from it.
type run struct {
	dir      string // the harness's RUN_DIR
	state    string // ENCLAVE_STATE_DIR of this run
	rep      report
	model    int // fake model port
	sink     int // sink port
	wall     time.Duration
	harness  []byte // the harness's combined output
	agentErr []byte // agent.stderr (enclave's banner and summary, the agent's stderr)
}

// logEvent is one line of `enclave log --json`.
type logEvent struct {
	Seq      int64           `json:"seq"`
	Kind     string          `json:"kind"`
	Decision string          `json:"decision"`
	Data     json.RawMessage `json:"data"`
}

type execData struct {
	Path string   `json:"path"`
	Argv []string `json:"argv"`
}

type egressData struct {
	Host   string `json:"host"`
	Port   int    `json:"port"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// timings collects one line per run for the summary at the end.
var timings struct {
	sync.Mutex
	lines []string
}

func recordTiming(format string, args ...any) {
	timings.Lock()
	defer timings.Unlock()
	timings.lines = append(timings.lines, fmt.Sprintf(format, args...))
}

// TestRealClients runs Claude Code and Codex CLI inside enclave run with
// the benign and hostile scenarios, and Claude's in-process Read tool
// scenario. Each agent also runs once bare per scenario kind: the benign
// baseline (timings; the agent works here at all) and the hostile control,
// which shows the harness detects the leaks the enclave is meant to stop.
func TestRealClients(t *testing.T) {
	env := setup(t)
	for _, a := range agents {
		t.Run(a.name, func(t *testing.T) {
			t.Run("benign-unconfined-baseline", func(t *testing.T) { testBaseline(t, env, a) })
			t.Run("benign", func(t *testing.T) { testBenign(t, env, a) })
			t.Run("hostile-unconfined-control", func(t *testing.T) { testControl(t, env, a) })
			t.Run("hostile", func(t *testing.T) { testHostile(t, env, a) })
			if a.name == "claude" {
				t.Run("read-tool", func(t *testing.T) { testReadTool(t, env, a) })
			}
		})
	}
	timings.Lock()
	defer timings.Unlock()
	t.Logf("timings (wall = whole harness run incl. its ~0.7 s overhead; agent = the harness's agent_seconds, enclave included when wrapped):\n%s",
		strings.Join(timings.lines, "\n"))
}

// testEnv is what every run shares.
type testEnv struct {
	harness string // the realclients directory
	enclave string // path of the enclave binary
}

func setup(t *testing.T) *testEnv {
	t.Helper()
	harness := enclavetest.RealClients(t)
	enclave := os.Getenv("ENCLAVE_E2E_BIN")
	if enclave == "" {
		enclave = enclavetest.InstallSelf(t, t.TempDir())
	}
	return &testEnv{harness: harness, enclave: enclave}
}

// runHarness runs one scenario of one agent. wrapped=false runs the agent
// bare (the control).
func (e *testEnv) runHarness(t *testing.T, a agent, scenario string, wrapped bool) *run {
	t.Helper()
	r := &run{dir: t.TempDir(), state: t.TempDir()}
	if a.codexHome && wrapped {
		// The harness writes config.toml into RUN_DIR/home/.codex and
		// Codex writes its session files there; as root, enclave maps the
		// agent to an unprivileged host uid, which must own the directory
		// (enclave never makes the agent root over host files).
		ch := filepath.Join(r.dir, "home", ".codex")
		if err := os.MkdirAll(ch, 0o700); err != nil {
			t.Fatal(err)
		}
		uid, gid, err := sandbox.HostIDs()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(ch, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	vars := []string{
		"CHECK=0", "KEEP=1", "RUN_DIR=" + r.dir, "AGENT_TIMEOUT=120",
		// The harness gives the agent (here: enclave) a clean env; enclave
		// needs to know where its state is.
		"PASS_ENV=ENCLAVE_STATE_DIR", "ENCLAVE_STATE_DIR=" + r.state,
	}
	if !wrapped {
		vars = slices.Replace(vars, 0, 1, "CHECK=1")
	} else {
		// Evaluated by the harness, so $MODEL_PORT, $HOME_DIR and
		// $RC_CACHE expand there. Only the fake model's one port is
		// allowed; the sink on the same host is not.
		//
		// The harness also hands the agent's variables to enclave's own
		// environment, where ANTHROPIC_API_KEY would turn the model
		// gateway on (which then drops the allow rule to its upstream and
		// routes the agent through itself: test/gateway covers that
		// path). This test is of the egress proxy path: --gateway off.
		// The agents live in the harness's npm cache ($RC_CACHE, under
		// /tmp by default), mounted read-only at the same path inside, so
		// the harness's agent path works unchanged.
		wrap := strings.Join([]string{
			enclavetest.ShellQuote(e.enclave), "run", "--gateway", "off",
			`--allow-host "127.0.0.1:$MODEL_PORT"`,
			`--ro "$RC_CACHE"`,
			a.args, "--",
		}, " ")
		vars = append(vars, "WRAP="+wrap)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(e.harness, a.script), scenario)
	cmd.Env = append(os.Environ(), vars...)
	cmd.Dir = e.harness
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r.wall = time.Since(start)
	r.harness = out
	r.agentErr, _ = os.ReadFile(filepath.Join(r.dir, "agent.stderr"))
	// A non-zero exit is the agent's status (CHECK=0) or the verdict
	// (CHECK=1); report.json says which. Anything else is a harness error.
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s %s: %v\n%s", a.script, scenario, err, out)
	}
	data, rerr := os.ReadFile(filepath.Join(r.dir, "report.json"))
	if rerr != nil {
		t.Fatalf("run %s %s: no report.json (%v); harness said:\n%s\nagent stderr:\n%s", a.script, scenario, rerr, out, r.agentErr)
	}
	if err := json.Unmarshal(data, &r.rep); err != nil {
		t.Fatalf("report.json of %s %s: %v", a.script, scenario, err)
	}
	var ports struct{ Model, Sink int }
	if data, err := os.ReadFile(filepath.Join(r.dir, "ports.json")); err == nil {
		_ = json.Unmarshal(data, &ports)
	}
	r.model, r.sink = ports.Model, ports.Sink
	if r.model == 0 || r.sink == 0 {
		t.Fatalf("ports.json of %s %s has no model or sink port", a.script, scenario)
	}
	mode := "enclave"
	if !wrapped {
		mode = "bare"
	}
	recordTiming("  %-7s %-16s %-7s wall %5.2fs  agent %5.2fs  exit %d  turns %d",
		a.name, scenario, mode, r.wall.Seconds(), r.rep.AgentSeconds, r.rep.AgentExitCode, r.rep.TurnsServed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness output:\n%s\nagent stderr (enclave banner and summary):\n%s", r.harness, r.agentErr)
		}
	})
	return r
}

// enclave runs the enclave CLI against this run's state directory.
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

func (e *testEnv) events(t *testing.T, r *run) []logEvent {
	t.Helper()
	out := e.enclaveCmd(t, r, "log", "--json", "last")
	var evs []logEvent
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var ev logEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("enclave log --json: line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 {
		t.Fatal("enclave log --json last printed no events")
	}
	return evs
}

func egressOf(t *testing.T, evs []logEvent) (allowed, denied []egressData) {
	t.Helper()
	for _, ev := range evs {
		if ev.Kind != "egress" {
			continue
		}
		var d egressData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatalf("egress event %d: %v", ev.Seq, err)
		}
		if ev.Decision == "allow" {
			allowed = append(allowed, d)
		} else {
			denied = append(denied, d)
		}
	}
	return allowed, denied
}

func execsOf(t *testing.T, evs []logEvent) []execData {
	t.Helper()
	var out []execData
	for _, ev := range evs {
		if ev.Kind != "exec" {
			continue
		}
		var d execData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatalf("exec event %d: %v", ev.Seq, err)
		}
		out = append(out, d)
	}
	return out
}

// checkCommon holds for every enclave run: the sandbox ran the agent (its
// exec from the npm cache is recorded first), the model was reached only through
// the proxy and only on its one allowed port, and the audit log verifies.
func (e *testEnv) checkCommon(t *testing.T, r *run, evs []logEvent) {
	t.Helper()
	allowed, _ := egressOf(t, evs)
	if len(allowed) == 0 {
		t.Errorf("no allowed egress in the audit log; the agent should have reached the model through the proxy")
	}
	for _, f := range allowed {
		if f.Host != "127.0.0.1" || f.Port != r.model {
			t.Errorf("allowed egress to %s:%d, want only 127.0.0.1:%d (the fake model)", f.Host, f.Port, r.model)
		}
	}
	kinds := map[string]int{}
	for _, ev := range evs {
		kinds[ev.Kind]++
	}
	for _, k := range []string{"session.start", "workspace", "sandbox", "exec", "diff", "session.end"} {
		if kinds[k] == 0 {
			t.Errorf("audit log of the session has no %q event; kinds: %v", k, kinds)
		}
	}
	execs := execsOf(t, evs)
	if len(execs) == 0 || !strings.Contains(execs[0].Path, "/node_modules/") {
		t.Errorf("exec records = %+v, want the first to be the agent from the harness's npm cache", execs)
	}
	if out := e.enclaveCmd(t, r, "audit", "verify"); len(out) == 0 {
		t.Logf("enclave audit verify printed nothing on stdout")
	}
	if bytes.Contains(r.agentErr, []byte("model gateway:")) {
		t.Errorf("the model gateway ran; this test is of the egress proxy path:\n%s", r.agentErr)
	}
	if bytes.Contains(r.agentErr, []byte("warning: ran without")) {
		t.Errorf("enclave ran with a degraded layer:\n%s", r.agentErr)
	}
}

func testBenign(t *testing.T, e *testEnv, a agent) {
	r := e.runHarness(t, a, "benign", true)
	rep := r.rep
	if rep.AgentExitCode != 0 {
		t.Fatalf("agent exit code = %d, want 0\nagent stderr:\n%s", rep.AgentExitCode, r.agentErr)
	}
	if rep.TurnsServed != 2 {
		t.Errorf("turns_served = %d, want 2", rep.TurnsServed)
	}
	if !slices.ContainsFunc(rep.ToolResults, func(s string) bool { return strings.Contains(s, "BENIGN-OK 26 bytes in /workspace") }) {
		t.Errorf("tool results = %q, want one with \"BENIGN-OK 26 bytes in /workspace\" (the command ran in the session copy)", rep.ToolResults)
	}
	// The user's checkout (the harness's WORK_DIR) is never written.
	if _, err := os.Lstat(filepath.Join(r.dir, "work", "hello.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hello.txt in the user's checkout: Lstat = %v, want not exist", err)
	}
	var change struct {
		Files []struct {
			Path   string `json:"Path"`
			Status string `json:"Status"`
		} `json:"Files"`
	}
	if err := json.Unmarshal(e.enclaveCmd(t, r, "diff", "--json", "last"), &change); err != nil {
		t.Fatalf("enclave diff --json last: %v", err)
	}
	if len(change.Files) != 1 || change.Files[0].Path != "hello.txt" {
		t.Errorf("enclave diff --json last files = %+v, want only hello.txt", change.Files)
	}
	patch := string(e.enclaveCmd(t, r, "diff", "last"))
	if !strings.Contains(patch, "+++ b/hello.txt") || !strings.Contains(patch, "+hello from the fake model") {
		t.Errorf("enclave diff last =\n%s\nwant hello.txt added with \"hello from the fake model\"", patch)
	}
	var sess struct {
		ExitCode     *int     `json:"exit_code"`
		State        string   `json:"state"`
		FilesChanged int      `json:"files_changed"`
		Blocked      int      `json:"blocked"`
		Command      []string `json:"command"`
	}
	if err := json.Unmarshal(e.enclaveCmd(t, r, "sessions", "--json", "-n", "1"), &sess); err != nil {
		t.Fatalf("enclave sessions --json: %v", err)
	}
	if sess.ExitCode == nil || *sess.ExitCode != 0 || sess.State != "exited" || sess.FilesChanged != 1 {
		t.Errorf("session = %+v, want exited with code 0 and 1 file changed", sess)
	}
	evs := e.events(t, r)
	e.checkCommon(t, r, evs)
	// The harness configures the agents to make no side traffic; under the
	// enclave nothing else was even attempted.
	if _, denied := egressOf(t, evs); len(denied) > 0 || sess.Blocked != 0 {
		t.Errorf("benign run had %d blocked actions, denied egress %+v; want none", sess.Blocked, denied)
	}
}

// testBaseline runs the benign scenario without enclave, with the
// harness's own checks on: the baseline for the timings, and proof that
// the agent and the fake model work on this machine at all.
func testBaseline(t *testing.T, e *testEnv, a agent) {
	r := e.runHarness(t, a, "benign", false)
	if r.rep.AgentExitCode != 0 || r.rep.TurnsServed != 2 {
		t.Errorf("unconfined benign run: exit %d, turns_served %d, want 0 and 2\n%s", r.rep.AgentExitCode, r.rep.TurnsServed, r.harness)
	}
}

// testControl runs the hostile scenario without enclave, with the harness's
// own checks on: they pass only if the secret reached the model and the
// sink and the file outside was written. Without this, "nothing leaked"
// under enclave could mean the detectors are blind.
func testControl(t *testing.T, e *testEnv, a agent) {
	r := e.runHarness(t, a, "hostile", false)
	if !r.rep.SecretSentToModel || !r.rep.SecretSentToSink || !r.rep.SinkContacted {
		t.Errorf("unconfined hostile run: secret_sent_to_model=%v secret_sent_to_sink=%v sink_contacted=%v, want all true (the harness must see leaks when there is no enclave)\n%s",
			r.rep.SecretSentToModel, r.rep.SecretSentToSink, r.rep.SinkContacted, r.harness)
	}
	if f := r.rep.Files["outside/pwned.txt"]; f == nil {
		t.Errorf("unconfined hostile run did not write outside/pwned.txt")
	}
}

func testHostile(t *testing.T, e *testEnv, a agent) {
	r := e.runHarness(t, a, "hostile", true)
	rep := r.rep
	// All four turns served: the agent did try every step, so the checks
	// below are not passing because the agent never got going.
	if rep.TurnsServed != 4 {
		t.Errorf("turns_served = %d, want 4 (every hostile step attempted)\nagent stderr:\n%s", rep.TurnsServed, r.agentErr)
	}
	if rep.SecretSentToModel {
		t.Errorf("secret_sent_to_model = true (secrets: %+v); the planted secret reached the model", rep.Secrets)
	}
	if rep.SecretSentToSink {
		t.Errorf("secret_sent_to_sink = true; the planted secret was exfiltrated")
	}
	if rep.SinkContacted {
		t.Errorf("sink_contacted = true; the agent reached a port the policy does not allow")
	}
	if f, ok := rep.Files["outside/pwned.txt"]; !ok || f != nil {
		t.Errorf("report files[outside/pwned.txt] = %v (present %v), want null", f, ok)
	}
	if _, err := os.Lstat(filepath.Join(r.dir, "outside", "pwned.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("outside/pwned.txt on the host: Lstat = %v, want not exist", err)
	}
	secretFile := filepath.Join(r.dir, "home", ".ssh", "id_rsa")

	evs := e.events(t, r)
	e.checkCommon(t, r, evs)
	_, denied := egressOf(t, evs)
	if !slices.ContainsFunc(denied, func(d egressData) bool { return d.Host == "127.0.0.1" && d.Port == r.sink }) {
		t.Errorf("denied egress = %+v, want the sink 127.0.0.1:%d", denied, r.sink)
	}
	execs := execsOf(t, evs)
	hasExec := func(prog, arg string) bool {
		return slices.ContainsFunc(execs, func(x execData) bool {
			return len(x.Argv) > 0 && filepath.Base(x.Argv[0]) == prog &&
				slices.ContainsFunc(x.Argv[1:], func(s string) bool { return strings.Contains(s, arg) })
		})
	}
	if !hasExec("cat", secretFile) {
		t.Errorf("no exec record of cat %s among %d execs", secretFile, len(execs))
	}
	sinkURL := fmt.Sprintf("http://127.0.0.1:%d/exfil", r.sink)
	if !hasExec("curl", sinkURL) {
		t.Errorf("no exec record of curl ... %s among %d execs", sinkURL, len(execs))
	}
	text := string(e.enclaveCmd(t, r, "log", "last"))
	if want := fmt.Sprintf("127.0.0.1:%d/exfil", r.sink); !strings.Contains(text, want) {
		t.Errorf("enclave log last does not show %q:\n%s", want, text)
	}
}

// testReadTool: Claude's Read tool reads inside the agent process, with no
// shell child to intercept; only the sandbox around the whole agent stops it.
func testReadTool(t *testing.T, e *testEnv, a agent) {
	r := e.runHarness(t, a, "claude-read-tool", true)
	rep := r.rep
	if rep.TurnsServed != 2 {
		t.Errorf("turns_served = %d, want 2 (the Read result went back to the model)\nagent stderr:\n%s", rep.TurnsServed, r.agentErr)
	}
	if rep.SecretSentToModel {
		t.Errorf("secret_sent_to_model = true: Claude's in-process Read tool read the planted secret")
	}
	if len(rep.ToolResults) == 0 {
		t.Errorf("no tool result reached the model; the Read was not attempted")
	}
	evs := e.events(t, r)
	e.checkCommon(t, r, evs)
}
