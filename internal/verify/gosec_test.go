package verify

import (
	"context"
	"errors"
	"fmt"
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
{"severity":"LOW","confidence":"HIGH","rule_id":"G104","details":"unchanged file","file":"/work/old.go","line":"1-2"}]}`
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
		// A package gosec could not load was not analysed: not a pass.
		{"load errors", nil, `{"Golang errors":{"/work/cmd/x":[{"line":1,"column":1,"error":"no required module provides package example.com/dep"}]},"Issues":[]}`, 0, "could-not-analyse"},
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

// New findings only: the base is analysed too, and a head finding with
// the same rule on the same line text of the same file (moved lines, a
// renamed file) is the base's, not the agent's. A finding on an unchanged
// line that the change caused is new.
func TestGosecNewOnly(t *testing.T) {
	oldSrc := "package main\n\nimport \"os/exec\"\n\nfunc run(c string) { _ = exec.Command(c).Run() }\n"
	base := map[string]string{"go.mod": goMod, "a/run.go": oldSrc, "b/keep.go": "package b\n\nvar X = 1\n"}
	edits := map[string]string{
		// The old finding moves down two lines; a new one is added.
		"a/run.go": "package main\n\n// Run runs.\n//\nimport \"os/exec\"\n\nfunc run(c string) { _ = exec.Command(c).Run() }\n\nfunc run2(c string) { _ = exec.Command(\"sh\", \"-c\", c).Run() }\n",
		// Renamed with its old finding.
		"b/keep.go": "", "c/keep.go": "package b\n\nvar X = 1\n",
	}
	fx := newFixture(t, base, edits)
	withGosec(t, "/opt/fake/gosec", nil)
	issue := func(rule, file, line string) string {
		return `{"severity":"MEDIUM","confidence":"HIGH","rule_id":"` + rule + `","details":"d","file":"/work/` + file + `","line":"` + line + `"}`
	}
	var baseRuns int
	var basePkgs string
	runner := &fakeRunner{run: func(spec RunSpec) (RunResult, error) {
		if spec.Tool == "" {
			return RunResult{}, nil // go vet
		}
		var rep string
		if strings.Contains(spec.Dir, "enclave-verify-base-") {
			baseRuns++
			basePkgs = strings.Join(spec.Argv[5:], " ")
			if _, err := os.Stat(filepath.Join(spec.Dir, "b", "keep.go")); err != nil {
				t.Errorf("base tree lacks b/keep.go: %v", err)
			}
			rep = `{"Issues":[` + issue("G204", "a/run.go", "5") + `,` + issue("G999", "b/keep.go", "3") + `]}`
		} else {
			rep = `{"Issues":[` + issue("G204", "a/run.go", "7") + `,` + issue("G204", "a/run.go", "9") + `,` +
				issue("G999", "c/keep.go", "3") + `,` + issue("G307", "a/run.go", "1") + `]}`
		}
		os.WriteFile(filepath.Join(spec.Dir, gosecOut), []byte(rep), 0o644)
		return RunResult{}, nil
	}}
	r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: runner})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range r.Findings {
		if strings.HasPrefix(f.Rule, "gosec-") {
			got = append(got, fmt.Sprintf("%s@%s:%d", f.Rule, f.File, f.Line))
		}
	}
	if want := "gosec-G307@a/run.go:1,gosec-G204@a/run.go:9"; strings.Join(got, ",") != want {
		t.Errorf("gosec findings = %v, want %s", got, want)
	}
	if baseRuns != 1 || basePkgs != "./a ./b" {
		t.Errorf("base runs = %d on %q, want 1 on \"./a ./b\"", baseRuns, basePkgs)
	}
	if g := tool(r, "gosec"); g.Status != "ran" || g.Pinned != GosecVersion {
		t.Errorf("tools = %+v, want gosec ran", r.Tools)
	}
}

// Without gosec the report says so; the result is not affected.
func TestGosecNotInstalled(t *testing.T) {
	fx := newFixture(t, map[string]string{"go.mod": goMod}, map[string]string{"a.go": "package main\n\nfunc main() {}\n"})
	withGosec(t, "", errors.New("not found"))
	r := runFixture(t, fx, offline())
	if g := tool(r, "gosec"); g.Status != "not-installed" || !strings.Contains(g.Detail, GosecVersion) {
		t.Errorf("tools = %+v, want gosec not-installed naming %s", r.Tools, GosecVersion)
	}
	if r.Result != Pass {
		t.Errorf("result = %s, want pass", r.Result)
	}
	var b strings.Builder
	r.WriteSummary(&b)
	if !strings.Contains(b.String(), "tool gosec: not-installed") {
		t.Errorf("summary does not say gosec was not run:\n%s", b.String())
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
	// The base's finding, moved with its function into a new file of
	// another package (all its lines added), is not the agent's.
	moved := "package tool\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"os/exec\"\n)\n\n// Run runs the first argument.\nfunc Run() {\n\tfmt.Println(\"running\")\n\t_ = exec.Command(os.Args[1]).Run()\n\tfmt.Println(\"done\")\n}\n"
	fx = newFixture(t, map[string]string{"go.mod": goMod, "main.go": gosecSrc}, map[string]string{"main.go": "package main\n\nfunc main() {}\n", "tool/tool.go": moved})
	r, err = Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: &SandboxRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	if g := tool(r, "gosec"); r.Result != Pass || g.Status != "ran" || g.Version != GosecVersion {
		t.Errorf("moved base finding: result %s, tools %+v, findings %+v", r.Result, r.Tools, r.Findings)
	}
}

// When the base cannot be analysed (gosec could not load its packages),
// the head's findings count only on added lines, and the report says so.
func TestGosecBaseNotAnalysed(t *testing.T) {
	oldSrc := "package main\n\nimport \"os/exec\"\n\nfunc run(c string) { _ = exec.Command(c).Run() }\n"
	fx := newFixture(t, map[string]string{"go.mod": goMod, "run.go": oldSrc}, map[string]string{"run.go": oldSrc + "\nfunc run2(c string) { _ = exec.Command(c).Run() }\n"})
	withGosec(t, "/opt/fake/gosec", nil)
	issue := func(line string) string {
		return `{"severity":"MEDIUM","confidence":"HIGH","rule_id":"G204","details":"d","file":"/work/run.go","line":"` + line + `"}`
	}
	runner := &fakeRunner{run: func(spec RunSpec) (RunResult, error) {
		if spec.Tool == "" {
			return RunResult{}, nil
		}
		rep := `{"Issues":[` + issue("5") + `,` + issue("7") + `]}`
		if strings.Contains(spec.Dir, "enclave-verify-base-") {
			rep = `{"Golang errors":{"/work":[{"error":"missing module"}]},"Issues":[]}`
		}
		os.WriteFile(filepath.Join(spec.Dir, gosecOut), []byte(rep), 0o644)
		return RunResult{}, nil
	}}
	r, err := Run(context.Background(), Options{GitDir: fx.gitDir, Base: fx.base, Head: fx.head, Config: offline(), Sandbox: runner})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range r.Findings {
		if strings.HasPrefix(f.Rule, "gosec-") {
			got = append(got, fmt.Sprintf("%s:%d", f.File, f.Line))
		}
	}
	if strings.Join(got, ",") != "run.go:7" {
		t.Errorf("gosec findings at %v, want [run.go:7] (the added line only)", got)
	}
	if !strings.Contains(tool(r, "gosec").Detail, "base not analysed") {
		t.Errorf("tools = %+v, want a detail saying the base was not analysed", r.Tools)
	}
}

// tool returns the report's entry for the named tool (zero if absent).
func tool(r *Report, name string) ToolRun {
	for _, t := range r.Tools {
		if t.Name == name {
			return t
		}
	}
	return ToolRun{}
}
