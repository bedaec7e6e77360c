package verify

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// Runner runs one command on an extracted tree, isolated from the host and
// without network. The verify package defines it (consumer-defined); the
// sandbox-backed implementation is [SandboxRunner]. Implementations must
// return an error, never a zero RunResult, when the command could not be
// started.
type Runner interface {
	Run(ctx context.Context, spec RunSpec) (RunResult, error)
}

// RunSpec is one command run.
type RunSpec struct {
	Argv []string
	// Dir is the host directory of the extracted tree; it is the working
	// directory, writable.
	Dir     string
	Timeout time.Duration
	Memory  int64
	// Go asks for the Go toolchain environment: GOROOT's tools, the
	// module cache read-only, a private GOCACHE, GOPROXY=off,
	// GOTOOLCHAIN=local.
	Go bool
	// GoCache, if set, is a host directory mounted writable as GOCACHE;
	// Run shares one fresh directory between go vet and the tests of one
	// verification so the standard library is compiled once. It is never
	// shared between verifications: a cache the agent's code wrote to
	// could otherwise poison a later run.
	GoCache string
	// Tool, if set, is the host path of an extra program (gosec) whose
	// directory is mounted read-only at /enclave-tools and put first on
	// PATH; Argv[0] names it by its base name.
	Tool string
	// Network, if non-empty, is the allowlist of the only hosts the run
	// may reach (the policy's gates.verify.test_network), through an
	// egress proxy of the runner's own whose every flow is returned in
	// RunResult.Flows. Empty means no network at all.
	Network []policy.HostRule
}

// RunResult is how it went.
type RunResult struct {
	ExitCode int
	TimedOut bool
	Duration time.Duration
	// Output is the tail of stdout and stderr combined (at most
	// OutputTail bytes).
	Output []byte
	// Flows are the network flows the run attempted, allowed or not
	// (only with RunSpec.Network), at most maxFlows; FlowsOmitted counts
	// the rest.
	Flows        []Flow
	FlowsOmitted int
}

// Flow is one network flow of a test run, as the report records it.
type Flow struct {
	Host     string  `json:"host"`
	Port     int     `json:"port"`
	Method   string  `json:"method,omitempty"`
	Path     string  `json:"path,omitempty"`
	Allowed  bool    `json:"allowed"`
	Reason   string  `json:"reason"`
	BytesUp  int64   `json:"bytes_up"`
	BytesDn  int64   `json:"bytes_down"`
	Error    string  `json:"error,omitempty"`
	Duration float64 `json:"duration_ms"`
}

// OutputTail is how much output a run keeps.
const OutputTail = 16 << 10

// TestRun is the report's record of the test run.
type TestRun struct {
	Command  string  `json:"command"`
	Detected bool    `json:"detected"`
	Outcome  string  `json:"outcome"` // "pass", "fail", "timeout", "not-run"
	ExitCode int     `json:"exit_code"`
	Duration float64 `json:"duration_ms"`
	// OutputTail is the last bytes of the output, control characters
	// replaced.
	OutputTail string `json:"output_tail"`
	// Network lists the hosts the policy let the run reach ("host" or
	// "host:port,port"); absent means none. Flows records every flow the
	// run attempted through the gate's proxy.
	Network      []string `json:"network,omitempty"`
	Flows        []Flow   `json:"flows,omitempty"`
	FlowsOmitted int      `json:"flows_omitted,omitempty"`
}

// detectTests picks the project's test command from the files at the
// head tree's root, in order: go.mod, package.json with a test script,
// Cargo.toml, pytest markers, a Makefile with a test target.
func detectTests(c *changeSet) ([]string, bool) {
	has := func(p string) bool { _, ok := c.head[p]; return ok }
	switch {
	case has("go.mod"):
		return []string{"go", "test", "./..."}, true
	case has("package.json") && strings.Contains(string(c.headText("package.json")), `"test"`):
		return []string{"npm", "test"}, true
	case has("Cargo.toml"):
		return []string{"cargo", "test", "--offline"}, true
	case has("pytest.ini") || has("conftest.py") || has("pyproject.toml") && strings.Contains(string(c.headText("pyproject.toml")), "pytest") || has("setup.cfg") || hasPyTests(c):
		return []string{"python3", "-m", "pytest", "-q"}, true
	case has("Makefile") && strings.Contains(string(c.headText("Makefile")), "\ntest:"):
		return []string{"make", "test"}, true
	}
	return nil, false
}

func hasPyTests(c *changeSet) bool {
	for p := range c.head {
		b := path.Base(p)
		if strings.HasPrefix(b, "test_") && strings.HasSuffix(b, ".py") {
			return true
		}
	}
	return false
}

func runTests(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) ([]Finding, *TestRun, error) {
	argv, detected := cfg.TestCommand, false
	if len(argv) == 0 {
		argv, detected = detectTests(c)
	}
	tr := &TestRun{Command: strings.Join(argv, " "), Detected: detected, Outcome: "not-run"}
	if len(argv) == 0 {
		return []Finding{{Rule: "could-not-run", Message: "no test command configured or detected: the change is untested"}}, tr, nil
	}
	if run == nil {
		return []Finding{{Rule: "could-not-run", Message: "no sandbox runner: tests not run"}}, tr, nil
	}
	for _, h := range cfg.TestNetwork {
		n := h.Host
		if len(h.Ports) > 0 {
			var ps []string
			for _, p := range h.Ports {
				ps = append(ps, strconv.Itoa(p))
			}
			n += ":" + strings.Join(ps, ",")
		}
		tr.Network = append(tr.Network, n)
	}
	res, err := run.Run(ctx, RunSpec{Argv: argv, Dir: dir, Timeout: cfg.TestTimeout, Memory: cfg.TestMemory, Go: argv[0] == "go", GoCache: c.goCache, Network: cfg.TestNetwork})
	tr.Flows, tr.FlowsOmitted = res.Flows, res.FlowsOmitted
	if err != nil {
		return []Finding{{Rule: "could-not-run", Message: scrubLine(fmt.Sprintf("tests could not run: %v", err))}}, tr, nil
	}
	tr.ExitCode = res.ExitCode
	tr.Duration = ms(res.Duration)
	tr.OutputTail = scrubOutput(string(res.Output))
	switch {
	case res.TimedOut:
		tr.Outcome = "timeout"
		return []Finding{{Rule: "timeout", Message: fmt.Sprintf("%s did not finish within %v", tr.Command, cfg.TestTimeout)}}, tr, nil
	case res.ExitCode != 0:
		tr.Outcome = "fail"
		return []Finding{{Rule: "failed", Message: fmt.Sprintf("%s exited with status %d", tr.Command, res.ExitCode)}}, tr, nil
	}
	tr.Outcome = "pass"
	return nil, tr, nil
}

// scrubOutput keeps newlines and tabs, replaces other control characters.
func scrubOutput(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, s)
}
