package verify

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
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

// GosecVersion is the gosec release the gate is pinned to, documented
// and measured with. gosec is optional: when a gosec binary is on the
// PATH of the process running the gate, the static check also runs it (in
// the sandbox, on the changed packages of the head and, if the head has
// findings, of the base) and reports the head's findings the base does not
// have as static/gosec-<rule> (e.g. static/gosec-G204). The report's
// tools list says whether gosec ran, which version (read from the
// binary's Go build information, never by running it on the host), and
// whether that is the pinned one; another version is run as well, but its
// rules may differ.
const GosecVersion = "v2.22.4"

// lookGosec finds the gosec binary; tests replace it.
var lookGosec = func() (string, error) { return exec.LookPath("gosec") }

// gosecOut is where gosec writes its report inside the tree; it is
// removed before the run (the tree comes from the agent) and after.
const gosecOut = ".enclave-gosec.json"

type gosecIssue struct {
	Severity   string `json:"severity"`
	Confidence string `json:"confidence"`
	RuleID     string `json:"rule_id"`
	Details    string `json:"details"`
	File       string `json:"file"`
	Line       string `json:"line"`
}

type gosecReport struct {
	Issues []gosecIssue `json:"Issues"`
	// Errors are packages gosec could not load or type-check (a module
	// missing from the read-only cache, a build error): their files were
	// not analysed, so an empty Issues list proves nothing about them.
	Errors map[string]json.RawMessage `json:"Golang errors"`
}

// ToolRun records how an external analyser went, so that a report
// without its findings says why.
type ToolRun struct {
	Name string `json:"name"`
	// Status is "ran", "not-installed", "failed" or "not-needed" (no
	// file it analyses changed).
	Status string `json:"status"`
	// Version is the analyser's version where known; Pinned the version
	// the gate is documented with.
	Version string `json:"version,omitempty"`
	Pinned  string `json:"pinned,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// gosecVersion reads the module version gosec was built from, from the
// binary's build information (no execution).
func gosecVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown"
	}
	if bi.Main.Path == "github.com/securego/gosec/v2" && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// goSec runs gosec when it is installed. New findings only: a head
// finding counts unless the base, in the packages the change touched, has
// the same rule on the same line text (so code moved to another file or
// package is not blamed on the agent), each base finding used once; if
// the base could not be analysed, a finding counts when its line is one
// the change added, and the tools entry says so.
func goSec(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) ([]Finding, ToolRun) {
	tr := ToolRun{Name: "gosec", Pinned: GosecVersion}
	var headPkgs []string
	seen := map[string]bool{}
	added := map[string]map[int]bool{}
	for _, f := range c.files {
		if strings.HasSuffix(f.Path, ".go") && f.Status != "deleted" {
			if d := pkgArg(f.Path); !seen[d] {
				seen[d] = true
				headPkgs = append(headPkgs, d)
			}
			m := map[int]bool{}
			for _, l := range f.Added {
				m[l.N] = true
			}
			added[f.Path] = m
		}
	}
	if len(headPkgs) == 0 {
		tr.Status, tr.Detail = "not-needed", "no Go file changed"
		return nil, tr
	}
	bin, err := lookGosec()
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		tr.Status, tr.Detail = "not-installed", "gosec is not on the gate's PATH: install gosec "+GosecVersion+" to add its findings"
		return nil, tr
	}
	tr.Version = gosecVersion(bin)
	if tr.Version != GosecVersion {
		tr.Detail = "version differs from the pinned " + GosecVersion + ": rules may differ"
	}
	if run == nil {
		tr.Status = "failed"
		return []Finding{{Rule: "could-not-analyse", Message: "no sandbox runner: gosec not run"}}, tr
	}
	if _, ok := c.head["go.mod"]; !ok {
		tr.Status, tr.Detail = "failed", "no go.mod at the root"
		return nil, tr // goVet already reports that Go could not be analysed
	}
	sort.Strings(headPkgs)
	issues, err := runGosec(ctx, dir, headPkgs, bin, c, cfg, run)
	if err != nil {
		tr.Status = "failed"
		return []Finding{{Rule: "could-not-analyse", Message: scrubLine(clip(err.Error(), 400))}}, tr
	}
	tr.Status = "ran"
	headLines := newLineTexts(c.headText)
	type found struct {
		is   gosecIssue
		file string
		n    int
	}
	var head []found
	for _, is := range issues {
		file, n, ok := issueAt(is)
		if !ok || added[file] == nil {
			continue // not a changed file
		}
		head = append(head, found{is, file, n})
	}
	// The base's findings on the same files, when the head has any.
	var baseKeys map[string]int
	if len(head) > 0 {
		var files []string
		for _, h := range head {
			files = append(files, h.file)
		}
		for _, f := range c.files {
			if f.Status != "added" && strings.HasSuffix(f.Path, ".go") {
				files = append(files, f.Path) // code may have moved out of it
			}
		}
		baseKeys, err = baseGosec(ctx, c, files, bin, cfg, run)
		if err != nil {
			tr.Detail = strings.TrimPrefix(tr.Detail+"; ", "; ") + scrubLine(clip("base not analysed, so only findings on added lines count: "+err.Error(), 300))
		}
	}
	var fs []Finding
	for _, h := range head {
		if baseKeys == nil {
			if !added[h.file][h.n] {
				continue
			}
		} else {
			k := findingKey(h.is.RuleID, headLines.at(h.file, h.n))
			if baseKeys[k] > 0 {
				baseKeys[k]--
				continue
			}
		}
		msg := fmt.Sprintf("gosec %s (severity %s, confidence %s): %s", h.is.RuleID, strings.ToLower(h.is.Severity), strings.ToLower(h.is.Confidence), h.is.Details)
		fs = append(fs, Finding{Rule: "gosec-" + h.is.RuleID, File: h.file, Line: h.n, Message: scrubLine(clip(msg, 300)),
			Fingerprint: fingerprint(CheckStatic, "gosec-"+h.is.RuleID, h.file, h.is.Details)})
	}
	return fs, tr
}

// pkgArg is the go package pattern of a file's directory.
func pkgArg(file string) string {
	return strings.TrimSuffix("./"+path.Dir(file), "/.")
}

// issueAt returns the tree path and first line of a gosec issue.
func issueAt(is gosecIssue) (string, int, bool) {
	file := is.File
	if rel, ok := strings.CutPrefix(file, "/work/"); ok {
		file = rel
	}
	file = path.Clean(file)
	first, _, _ := strings.Cut(is.Line, "-")
	n, err := strconv.Atoi(first)
	if err != nil || !validRuleID(is.RuleID) {
		return "", 0, false
	}
	return file, n, true
}

// baseGosec runs gosec on the base packages holding the base versions of
// files (head paths, mapped through renames) and returns its findings as
// "rule\x00trimmed line text" counts.
func baseGosec(ctx context.Context, c *changeSet, files []string, bin string, cfg Config, run Runner) (map[string]int, error) {
	keys := map[string]int{}
	var pkgs []string
	seen := map[string]bool{}
	for _, p := range files {
		old := p
		if f := c.file(p); f != nil {
			if f.Status == "added" && f.OldPath == "" {
				continue // new file: nothing in the base
			}
			if f.OldPath != "" {
				old = f.OldPath
			}
		}
		if _, ok := c.base[old]; !ok {
			continue
		}
		if d := pkgArg(old); !seen[d] {
			seen[d] = true
			pkgs = append(pkgs, d)
		}
	}
	if len(pkgs) == 0 {
		return keys, nil
	}
	if _, ok := c.base["go.mod"]; !ok {
		return nil, fmt.Errorf("the base has no go.mod")
	}
	sort.Strings(pkgs)
	d, err := os.MkdirTemp("", "enclave-verify-base-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	dir := filepath.Join(d, "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := extractTree(c, c.base, dir); err != nil {
		return nil, fmt.Errorf("extract base tree: %w", err)
	}
	issues, err := runGosec(ctx, dir, pkgs, bin, c, cfg, run)
	if err != nil {
		return nil, err
	}
	lines := newLineTexts(c.baseText)
	for _, is := range issues {
		if file, n, ok := issueAt(is); ok {
			keys[findingKey(is.RuleID, lines.at(file, n))]++
		}
	}
	return keys, nil
}

// runGosec runs gosec in the sandbox on pkgs of the tree in dir and
// returns its issues.
func runGosec(ctx context.Context, dir string, pkgs []string, bin string, c *changeSet, cfg Config, run Runner) ([]gosecIssue, error) {
	out := filepath.Join(dir, gosecOut)
	if err := os.RemoveAll(out); err != nil {
		return nil, fmt.Errorf("gosec not run: remove %s: %v", gosecOut, err)
	}
	defer os.Remove(out)
	argv := append([]string{filepath.Base(bin), "-fmt=json", "-out=" + gosecOut, "-no-fail", "-exclude-generated"}, pkgs...)
	res, err := run.Run(ctx, RunSpec{Argv: argv, Dir: dir, Timeout: 5 * time.Minute, Memory: cfg.TestMemory, Go: true, GoCache: c.goCache, Tool: bin})
	if err != nil {
		return nil, fmt.Errorf("gosec could not run: %v", err)
	}
	data, rerr := readRegular(out, 64<<20)
	var rep gosecReport
	if res.ExitCode != 0 || rerr != nil || json.Unmarshal(data, &rep) != nil {
		msg := fmt.Sprintf("gosec failed (exit %d): %s", res.ExitCode, clip(tail(string(res.Output), 400), 400))
		if rerr != nil && res.ExitCode == 0 {
			msg = "gosec wrote no report: " + rerr.Error()
		} else if rerr == nil && res.ExitCode == 0 {
			msg = "gosec report is not valid JSON"
		}
		return nil, errors.New(msg)
	}
	if len(rep.Errors) > 0 {
		var pkgs []string
		for p := range rep.Errors {
			pkgs = append(pkgs, strings.TrimPrefix(p, "/work/"))
		}
		sort.Strings(pkgs)
		return nil, fmt.Errorf("gosec could not load %d package(s) (%s): missing modules or a build error", len(pkgs), clip(strings.Join(pkgs, ", "), 200))
	}
	return rep.Issues, nil
}

func validRuleID(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// readRegular reads a regular file (never through a symlink the sandboxed
// program may have left) of at most max bytes.
func readRegular(p string, max int64) ([]byte, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", filepath.Base(p))
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", filepath.Base(p), max)
	}
	return os.ReadFile(p)
}
