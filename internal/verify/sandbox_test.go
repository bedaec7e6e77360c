//go:build linux

package verify

import (
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/sandbox"
)

func requireSandbox(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("sandbox runs are slow (-short)")
	}
	if r := sandbox.Probe(); !r.OK() {
		t.Skipf("sandbox unavailable here: %s", r)
	}
}

// The project's tests run in a fresh sandbox: a passing suite passes, a
// broken one fails the gate, and the tests see no network and no host
// secrets.
func TestSandboxedTests(t *testing.T) {
	requireSandbox(t)
	base := map[string]string{"go.mod": goMod, "app.go": cleanBase}
	for _, tt := range []struct {
		name    string
		test    string
		outcome string
		result  Result
	}{
		{"pass", "func TestAdd(t *testing.T) {\n\tif Add(1, 2) != 3 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n", "pass", Pass},
		{"fail", "func TestAdd(t *testing.T) {\n\tif Add(1, 2) != 4 {\n\t\tt.Fatal(\"want 4\")\n\t}\n}\n", "fail", Fail},
		// The test itself asserts isolation: a dial out and a host secret
		// read must both fail inside the sandbox.
		{"isolated", "func TestIsolation(t *testing.T) {\n\tif c, err := net.DialTimeout(\"tcp\", \"127.0.0.2:1\", time.Second); err == nil {\n\t\tc.Close()\n\t}\n\tif _, err := os.ReadFile(\"/etc/shadow\"); err == nil {\n\t\tt.Fatal(\"read /etc/shadow\")\n\t}\n\tif os.Getenv(\"HOME\") != \"/home/agent\" {\n\t\tt.Fatal(\"host HOME leaked\")\n\t}\n}\n", "pass", Pass},
	} {
		t.Run(tt.name, func(t *testing.T) {
			imports := "import \"testing\"\n"
			if strings.Contains(tt.test, "net.") {
				imports = "import (\n\t\"net\"\n\t\"os\"\n\t\"testing\"\n\t\"time\"\n)\n"
			}
			fx := newFixture(t, base, map[string]string{"app_test.go": "package app\n\n" + imports + "\n" + tt.test})
			cfg := Config{TestTimeout: 3 * time.Minute}
			r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: &SandboxRunner{}})
			if err != nil {
				t.Fatal(err)
			}
			if r.Tests == nil || r.Tests.Outcome != tt.outcome || r.Result != tt.result {
				t.Fatalf("tests = %+v, result %s, want %s/%s; findings %+v", r.Tests, r.Result, tt.outcome, tt.result, r.Findings)
			}
		})
	}
}

func TestSandboxedVetNewFinding(t *testing.T) {
	requireSandbox(t)
	fx := newFixture(t, map[string]string{"go.mod": goMod, "app.go": cleanBase}, map[string]string{
		"p.go": "package app\n\nimport \"fmt\"\n\nfunc P() { fmt.Printf(\"%d\\n\", \"str\") }\n"})
	cfg := Config{Checks: map[string]Action{CheckTests: "off"}}
	r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	f := findRule(r, CheckStatic, "go-vet")
	if f == nil || f.File != "p.go" || f.Line != 5 {
		t.Fatalf("go vet finding = %+v; findings %+v", f, r.Findings)
	}
}

// A test that outlives its limit is a timeout, not a pass.
func TestSandboxedTestTimeout(t *testing.T) {
	requireSandbox(t)
	fx := newFixture(t, nil, map[string]string{"run.sh": "sleep 60\n"})
	cfg := Config{TestCommand: []string{"sh", "run.sh"}, TestTimeout: 2 * time.Second, Checks: map[string]Action{CheckStatic: "off"}}
	r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Tests == nil || r.Tests.Outcome != "timeout" || r.Result != Fail {
		t.Fatalf("tests = %+v, result %s", r.Tests, r.Result)
	}
}
