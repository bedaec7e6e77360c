package verify

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const gosecSrc = "package main\n\nimport (\n\t\"os\"\n\t\"os/exec\"\n)\n\nfunc main() {\n\t_ = exec.Command(os.Args[1]).Run()\n}\n"

// withGosec makes lookGosec find bin for the test.
func withGosec(t *testing.T, bin string, err error) {
	old := lookGosec
	lookGosec = func() (string, error) { return bin, err }
	t.Cleanup(func() { lookGosec = old })
}

func TestGosecFakeRunner(t *testing.T) {
	fx := newFixture(t, map[string]string{"go.mod": goMod, "old.go": "package main\n"}, map[string]string{"cmd/x/main.go": gosecSrc})
	report := `{"Issues":[
{"severity":"MEDIUM","confidence":"HIGH","rule_id":"G204","details":"Subprocess launched with a potential tainted input","file":"/work/cmd/x/main.go","line":"9"},
{"severity":"LOW","confidence":"HIGH","rule_id":"G104","details":"unchanged line","file":"/work/old.go","line":"1"},
{"severity":"LOW","confidence":"HIGH","rule_id":"G104","details":"not an added line","file":"/work/cmd/x/main.go","line":"12-13"}]}`
	var argv []string
	for _, c := range []struct {
		name   string
		look   error
		output string // written as the report; "" writes none
		exit   int
		want   string // rules found, comma-separated
	}{
		{"finding on an added line", nil, report, 0, "gosec-G204"},
		{"not installed", errors.New("not found"), report, 0, ""},
		{"no report", nil, "", 0, "could-not-analyse"},
		{"bad report", nil, "{not json", 0, "could-not-analyse"},
		{"gosec failed", nil, report, 2, "could-not-analyse"},
	} {
		t.Run(c.name, func(t *testing.T) {
			withGosec(t, "/opt/fake/gosec", c.look)
			cfg := offline()
			runner := &fakeRunner{run: func(spec RunSpec) (RunResult, error) {
				if spec.Tool == "" {
					return RunResult{}, nil // go vet
				}
				argv = spec.Argv
				if spec.Tool != "/opt/fake/gosec" {
					t.Errorf("RunSpec.Tool = %q, want the binary found", spec.Tool)
				}
				if _, err := os.Lstat(filepath.Join(spec.Dir, gosecOut)); err == nil {
					t.Errorf("%s present before the run", gosecOut)
				}
				if c.output != "" {
					os.WriteFile(filepath.Join(spec.Dir, gosecOut), []byte(c.output), 0o644)
				}
				return RunResult{ExitCode: c.exit}, nil
			}}
			r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: cfg, Sandbox: runner})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range r.Findings {
				if f.Check == CheckStatic && (strings.HasPrefix(f.Rule, "gosec") || f.Rule == "could-not-analyse") {
					got = append(got, f.Rule)
				}
			}
			if strings.Join(got, ",") != c.want {
				t.Errorf("static findings = %v, want %q", got, c.want)
			}
		})
	}
	if strings.Join(argv, " ") != "gosec -fmt=json -out="+gosecOut+" -no-fail -exclude-generated ./cmd/x" {
		t.Errorf("gosec argv = %q", argv)
	}
}

// A gosec report the agent committed into the tree is never read as the
// result: the file is removed before gosec runs.
func TestGosecPlantedReport(t *testing.T) {
	fx := newFixture(t, map[string]string{"go.mod": goMod}, map[string]string{"main.go": gosecSrc, gosecOut: `{"Issues":[]}`})
	withGosec(t, "/opt/fake/gosec", nil)
	runner := &fakeRunner{run: func(spec RunSpec) (RunResult, error) { return RunResult{}, nil }}
	r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: runner})
	if err != nil {
		t.Fatal(err)
	}
	if findRule(r, CheckStatic, "could-not-analyse") == nil {
		t.Errorf("planted report accepted: findings %+v", r.Findings)
	}
}

// With a real gosec installed, the sandboxed run finds exec.Command with
// user input. Skipped when gosec is not on PATH.
func TestGosecReal(t *testing.T) {
	bin, err := exec.LookPath("gosec")
	if err != nil {
		t.Skip("gosec not on PATH")
	}
	if testing.Short() {
		t.Skip("sandboxed gosec run")
	}
	fx := newFixture(t, map[string]string{"go.mod": goMod}, map[string]string{"main.go": gosecSrc})
	withGosec(t, bin, nil)
	r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	if f := findRule(r, CheckStatic, "gosec-G204"); f == nil || f.File != "main.go" || f.Line != 9 {
		t.Errorf("gosec-G204 = %+v; findings %+v", f, r.Findings)
	}
	// A clean change: gosec still writes a report (with -quiet it would
	// not, and the gate would say it could not analyse).
	fx = newFixture(t, map[string]string{"go.mod": goMod}, map[string]string{"a.go": "package main\n\nfunc main() {}\n"})
	r, err = Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != Pass {
		t.Errorf("clean change with gosec: result %s, findings %+v", r.Result, r.Findings)
	}
}
