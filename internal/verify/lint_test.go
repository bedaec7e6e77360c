//go:build linux

package verify

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// With bandit and shellcheck installed, the sandboxed runs report what the
// change added (an eval, an unguarded rm -rf $1/*) and not what the base
// already had (subprocess with shell=True), even moved to another file.
func TestLintersReal(t *testing.T) {
	requireSandbox(t)
	for _, n := range []string{"bandit", "shellcheck"} {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not on PATH", n)
		}
	}
	oldPy := "import subprocess\n\n\ndef run(c):\n    subprocess.call(c, shell=True)\n"
	newPy := "import subprocess\n\n\ndef helper():\n    return 1\n\n\ndef run(c):\n    subprocess.call(c, shell=True)\n\n\ndef calc(s):\n    return eval(s)\n"
	fx := newFixture(t, map[string]string{"tool/run.py": oldPy, "build.sh": "#!/bin/sh\necho ok\n"},
		map[string]string{"tool/run.py": "", "lib/run2.py": newPy, "build.sh": "#!/bin/sh\necho ok\nrm -rf $1/*\n"})
	cfg := Config{Checks: map[string]Action{CheckTests: "off"}}
	r, err := Run(t.Context(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range r.Findings {
		if f.Check == CheckStatic {
			got = append(got, fmt.Sprintf("%s@%s:%d", f.Rule, f.File, f.Line))
		}
	}
	if want := "shellcheck-SC2115@build.sh:3,bandit-B307@lib/run2.py:13"; strings.Join(got, ",") != want {
		t.Errorf("static findings = %v, want %s", got, want)
	}
	for _, n := range []string{"bandit", "shellcheck"} {
		if tr := tool(r, n); tr.Status != "ran" || tr.Detail != "" {
			t.Errorf("tool %s = %+v, want ran with no detail", n, tr)
		}
	}
}

// Not installed: the report says so and the result does not change.
func TestLintersNotInstalled(t *testing.T) {
	old := lookLinter
	lookLinter = func(string) (string, error) { return "", errors.New("not found") }
	t.Cleanup(func() { lookLinter = old })
	fx := newFixture(t, nil, map[string]string{"a.py": "print(1)\n", "b.sh": "echo ok\n"})
	r := runFixture(t, fx, offline())
	for _, n := range []string{"bandit", "shellcheck"} {
		if tr := tool(r, n); tr.Status != "not-installed" {
			t.Errorf("tool %s = %+v, want not-installed", n, tr)
		}
	}
	if r.Result != Pass {
		t.Errorf("result = %s, want pass; findings %+v", r.Result, r.Findings)
	}
	var b strings.Builder
	r.WriteSummary(&b)
	if !strings.Contains(b.String(), "tool bandit: not-installed") {
		t.Errorf("summary does not say bandit was not run:\n%s", b.String())
	}
}
