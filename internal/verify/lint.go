package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Static analysis beyond Go: well-kept linters for other languages, each
// optional like gosec. When the program is on the gate's PATH, the static
// check runs it in the sandbox on the changed files of its language at the
// head and, when the head has findings, on their base versions, and
// reports the head's findings the base does not have (matched by rule and
// trimmed line text, each base finding used once) as static/<tool>-<rule>.
// The report's tools list says whether each ran.
//
//   - bandit (Python; Debian 12 ships 1.6.2): medium severity and up,
//     B322 left out (it is about Python 2's input()).
//   - shellcheck (shell scripts; Debian 12 ships 0.9.0): warnings and
//     errors, not style notes.
type fileLinter struct {
	name  string
	match func(p string) bool
	// argv is the command run in the tree; it writes its JSON report to
	// lintOut.
	argv func(bin string, files []string) []string
	// parse reads the report into issues with tree-relative paths.
	parse func(data []byte) ([]lintIssue, error)
	// okExit lists exit codes of a successful run (findings or not).
	okExit []int
}

type lintIssue struct {
	file, rule, msg string
	line            int
}

// lintOut is where a linter writes its report inside the tree; removed
// before (the tree comes from the agent) and after the run.
const lintOut = ".enclave-lint.json"

// lookLinter finds a linter's program; tests replace it.
var lookLinter = func(name string) (string, error) { return exec.LookPath(name) }

var fileLinters = []fileLinter{
	{
		name:  "bandit",
		match: func(p string) bool { return strings.HasSuffix(p, ".py") },
		argv: func(bin string, files []string) []string {
			return append([]string{bin, "-q", "-ll", "-s", "B322", "-f", "json", "-o", lintOut, "--"}, files...)
		},
		parse: func(data []byte) ([]lintIssue, error) {
			var rep struct {
				Errors  []json.RawMessage `json:"errors"`
				Results []struct {
					File string `json:"filename"`
					Line int    `json:"line_number"`
					Test string `json:"test_id"`
					Text string `json:"issue_text"`
					Sev  string `json:"issue_severity"`
				} `json:"results"`
			}
			if err := json.Unmarshal(data, &rep); err != nil {
				return nil, fmt.Errorf("bandit report: %w", err)
			}
			if len(rep.Errors) > 0 {
				return nil, fmt.Errorf("bandit could not analyse %d file(s)", len(rep.Errors))
			}
			var out []lintIssue
			for _, r := range rep.Results {
				out = append(out, lintIssue{file: r.File, rule: r.Test, line: r.Line, msg: fmt.Sprintf("bandit %s (severity %s): %s", r.Test, strings.ToLower(r.Sev), r.Text)})
			}
			return out, nil
		},
		okExit: []int{0, 1},
	},
	{
		name: "shellcheck",
		match: func(p string) bool {
			return strings.HasSuffix(p, ".sh") || strings.HasSuffix(p, ".bash")
		},
		argv: func(bin string, files []string) []string {
			// shellcheck reports on stdout only.
			return append([]string{"sh", "-c", `exec "$0" -S warning -f json1 -- "$@" > ` + lintOut, bin}, files...)
		},
		parse: func(data []byte) ([]lintIssue, error) {
			var rep struct {
				Comments []struct {
					File    string `json:"file"`
					Line    int    `json:"line"`
					Code    int    `json:"code"`
					Level   string `json:"level"`
					Message string `json:"message"`
				} `json:"comments"`
			}
			if err := json.Unmarshal(data, &rep); err != nil {
				return nil, fmt.Errorf("shellcheck report: %w", err)
			}
			var out []lintIssue
			for _, c := range rep.Comments {
				rule := "SC" + strconv.Itoa(c.Code)
				out = append(out, lintIssue{file: c.File, rule: rule, line: c.Line, msg: fmt.Sprintf("shellcheck %s (%s): %s", rule, c.Level, c.Message)})
			}
			return out, nil
		},
		okExit: []int{0, 1},
	},
}

// runLinters runs every installed linter whose language the change
// touched.
func runLinters(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) ([]Finding, []ToolRun) {
	var fs []Finding
	var trs []ToolRun
	for _, l := range fileLinters {
		f, tr := l.check(ctx, c, dir, cfg, run)
		fs = append(fs, f...)
		trs = append(trs, tr)
	}
	return fs, trs
}

func (l fileLinter) check(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) ([]Finding, ToolRun) {
	tr := ToolRun{Name: l.name}
	var files []string
	for _, f := range c.files {
		if l.match(f.Path) && f.Status != "deleted" && !f.Binary && !f.Huge && !f.isSymlink() && validTreePath(f.Path) {
			files = append(files, f.Path)
		}
	}
	if len(files) == 0 {
		tr.Status, tr.Detail = "not-needed", "no file it reads changed"
		return nil, tr
	}
	bin, err := lookLinter(l.name)
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		tr.Status, tr.Detail = "not-installed", l.name+" is not on the gate's PATH: install it to add its findings"
		return nil, tr
	}
	if run == nil {
		tr.Status = "failed"
		return []Finding{{Rule: "could-not-analyse", Message: "no sandbox runner: " + l.name + " not run"}}, tr
	}
	sort.Strings(files)
	issues, err := l.run(ctx, dir, files, bin, cfg, run)
	if err != nil {
		tr.Status = "failed"
		return []Finding{{Rule: "could-not-analyse", Message: scrubLine(clip(err.Error(), 400))}}, tr
	}
	tr.Status = "ran"
	changed := map[string]*fileChange{}
	for _, f := range c.files {
		changed[f.Path] = f
	}
	var head []lintIssue
	for _, is := range issues {
		is.file = path.Clean(strings.TrimPrefix(is.file, "./"))
		if changed[is.file] != nil {
			head = append(head, is)
		}
	}
	var baseKeys map[string]int
	if len(head) > 0 {
		baseKeys, err = l.base(ctx, c, cfg, bin, run)
		if err != nil {
			tr.Detail = scrubLine(clip("base not analysed, so only findings on added lines count: "+err.Error(), 300))
		}
	}
	headLines := newLineTexts(func(p string) []byte { return changed[p].New })
	var out []Finding
	for _, is := range head {
		text := headLines.at(is.file, is.line)
		if baseKeys == nil {
			if !addedLine(changed[is.file], is.line) {
				continue
			}
		} else if k := findingKey(is.rule, text); baseKeys[k] > 0 {
			baseKeys[k]--
			continue
		}
		rule := l.name + "-" + is.rule
		out = append(out, Finding{Rule: rule, File: is.file, Line: is.line, Message: scrubLine(clip(is.msg, 300)),
			Fingerprint: fingerprint(CheckStatic, rule, is.file, text)})
	}
	return out, tr
}

func addedLine(f *fileChange, n int) bool {
	for _, l := range f.Added {
		if l.N == n {
			return true
		}
	}
	return false
}

// base runs the linter on the base versions of the changed and deleted
// files of its language and returns "rule\x00line text" counts.
func (l fileLinter) base(ctx context.Context, c *changeSet, cfg Config, bin string, run Runner) (map[string]int, error) {
	keys := map[string]int{}
	var files []string
	for _, f := range c.files {
		old := f.OldPath
		if f.Status == "deleted" {
			old = f.Path
		}
		if old == "" || !l.match(old) || !validTreePath(old) {
			continue
		}
		if e, ok := c.base[old]; ok && isText(e.mode) {
			files = append(files, old)
		}
	}
	if len(files) == 0 {
		return keys, nil
	}
	sort.Strings(files)
	d, err := os.MkdirTemp("", "enclave-verify-base-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	dir := filepath.Join(d, "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	// Only the files analysed: these linters read one file at a time.
	sub := map[string]entry{}
	for _, p := range files {
		sub[p] = c.base[p]
	}
	if err := extractTree(c, sub, dir); err != nil {
		return nil, fmt.Errorf("extract base files: %w", err)
	}
	issues, err := l.run(ctx, dir, files, bin, cfg, run)
	if err != nil {
		return nil, err
	}
	lines := newLineTexts(c.baseText)
	for _, is := range issues {
		file := path.Clean(strings.TrimPrefix(is.file, "./"))
		keys[findingKey(is.rule, lines.at(file, is.line))]++
	}
	return keys, nil
}

// run runs the linter in the sandbox on files of the tree in dir.
func (l fileLinter) run(ctx context.Context, dir string, files []string, bin string, cfg Config, run Runner) ([]lintIssue, error) {
	out := filepath.Join(dir, lintOut)
	if err := os.RemoveAll(out); err != nil {
		return nil, fmt.Errorf("%s not run: remove %s: %v", l.name, lintOut, err)
	}
	defer os.Remove(out)
	spec := RunSpec{Dir: dir, Timeout: 5 * time.Minute, Memory: cfg.TestMemory}
	name := bin
	if !underSystem(bin) {
		// A program outside the system view is mounted read-only.
		spec.Tool, name = bin, filepath.Base(bin)
	}
	spec.Argv = l.argv(name, files)
	res, err := run.Run(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("%s could not run: %v", l.name, err)
	}
	data, rerr := readRegular(out, 64<<20)
	ok := false
	for _, c := range l.okExit {
		ok = ok || res.ExitCode == c
	}
	if !ok || rerr != nil {
		return nil, fmt.Errorf("%s failed (exit %d): %s", l.name, res.ExitCode, clip(tail(string(res.Output), 400), 400))
	}
	return l.parse(data)
}
