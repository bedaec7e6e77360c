package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseGates(t *testing.T) {
	t.Setenv("HOME", testHome)
	src := `version: 1
gates:
  verify:
    checks: {quality: needs-human, static: "off"}
    rules: {quality/duplication: fail}
    allow:
      - {check: secrets, path: "testdata/**", reason: fake keys}
      - {fingerprint: 0123456789abcdef, reason: reviewed}
    scope: ["internal/**"]
    dependencies:
      allow: ["Go:golang.org/x/*"]
      deny: [npm:event-stream]
      needs_approval: ["*"]
    osv: ~/osv
    secret_rules: /etc/enclave/rules.toml
    test_command: [make, check]
    test_timeout: 90s
    test_memory: 1GiB
    test_network:
      - {host: registry.example.com, methods: [GET, HEAD], allow_connect: true}
      - {host: "*.pkg.example.com", ports: [8443]}
    churn_window: 14d
`
	p, err := Parse("enclave.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := VerifyGate{
		Checks: map[string]string{"quality": "needs-human", "static": "off"},
		Rules:  map[string]string{"quality/duplication": "fail"},
		Allow: []GateAllow{
			{Check: "secrets", Path: "testdata/**", Reason: "fake keys", Line: 7},
			{Fingerprint: "0123456789abcdef", Reason: "reviewed", Line: 8},
		},
		Scope:             []string{"internal/**"},
		DepsAllow:         []string{"Go:golang.org/x/*"},
		DepsDeny:          []string{"npm:event-stream"},
		DepsNeedsApproval: []string{"*"},
		OSV:               testHome + "/osv",
		SecretRules:       "/etc/enclave/rules.toml",
		TestCommand:       []string{"make", "check"},
		TestTimeout:       90 * time.Second,
		TestMemory:        1 << 30,
		TestNetwork: []HostRule{
			{Host: "registry.example.com", Methods: []string{"GET", "HEAD"}, AllowConnect: true, Line: 20},
			{Host: "*.pkg.example.com", Ports: []int{8443}, Line: 21},
		},
		ChurnWindow: 14 * 24 * time.Hour,
	}
	if got := p.Gates.Verify; !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(gates).Gates.Verify = %+v, want %+v", got, want)
	}
	if got := Default().Gates; !reflect.DeepEqual(got, Gates{}) {
		t.Errorf("Default().Gates = %+v, want zero (the gate's defaults)", got)
	}
}

// A bare "off" is YAML 1.1's false in some readers; yaml.v3 reads it as
// text, and the gate must either accept it as the action or say why not.
func TestGatesOffUnquoted(t *testing.T) {
	p, err := Parse("enclave.yaml", []byte("version: 1\ngates: {verify: {checks: {tests: off}}}\n"))
	if err != nil {
		if !strings.Contains(err.Error(), "gates.verify.checks.tests") {
			t.Fatalf("Parse(tests: off) error does not name the setting: %v", err)
		}
		return
	}
	if got := p.Gates.Verify.Checks["tests"]; got != "off" {
		t.Errorf("Parse(tests: off).Checks[tests] = %q, want off", got)
	}
}
