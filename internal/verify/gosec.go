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

// GosecVersion is the gosec release the gate is documented and measured
// with. gosec is optional: when a gosec binary is on the PATH of the
// process running the gate, the static check also runs it (in the
// sandbox, on the head tree's changed packages) and reports its findings
// on added lines as static/gosec-<rule> (e.g. static/gosec-G204). Another
// version on PATH is run as well; its rules may differ.
const GosecVersion = "v2.22.4"

// lookGosec finds the gosec binary; tests replace it.
var lookGosec = func() (string, error) { return exec.LookPath("gosec") }

// gosecOut is where gosec writes its report inside the tree; it is
// removed before the run (the tree comes from the agent) and after.
const gosecOut = ".enclave-gosec.json"

type gosecReport struct {
	Issues []struct {
		Severity   string `json:"severity"`
		Confidence string `json:"confidence"`
		RuleID     string `json:"rule_id"`
		Details    string `json:"details"`
		File       string `json:"file"`
		Line       string `json:"line"`
	} `json:"Issues"`
}

// goSec runs gosec when it is installed; nil findings when it is not.
// New findings only: a finding counts when its first line is one the
// change added, as for go vet.
func goSec(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) []Finding {
	bin, err := lookGosec()
	if err != nil || run == nil {
		return nil
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil
	}
	pkgs := map[string]bool{}
	added := map[string]map[int]bool{}
	for _, f := range c.files {
		if strings.HasSuffix(f.Path, ".go") && f.Status != "deleted" {
			pkgs["./"+path.Dir(f.Path)] = true
			m := map[int]bool{}
			for _, l := range f.Added {
				m[l.N] = true
			}
			added[f.Path] = m
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	if _, ok := c.head["go.mod"]; !ok {
		return nil // goVet already reports that Go could not be analysed
	}
	var list []string
	for p := range pkgs {
		list = append(list, strings.TrimSuffix(p, "/."))
	}
	sort.Strings(list)
	out := filepath.Join(dir, gosecOut)
	if err := os.RemoveAll(out); err != nil {
		return []Finding{{Rule: "could-not-analyse", Message: fmt.Sprintf("gosec not run: remove %s: %v", gosecOut, err)}}
	}
	defer os.Remove(out)
	argv := append([]string{filepath.Base(bin), "-fmt=json", "-out=" + gosecOut, "-no-fail", "-exclude-generated"}, list...)
	res, err := run.Run(ctx, RunSpec{Argv: argv, Dir: dir, Timeout: 5 * time.Minute, Memory: cfg.TestMemory, Go: true, GoCache: c.goCache, Tool: bin})
	if err != nil {
		return []Finding{{Rule: "could-not-analyse", Message: scrubLine("gosec could not run: " + clip(err.Error(), 300))}}
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
		return []Finding{{Rule: "could-not-analyse", Message: scrubLine(msg)}}
	}
	var fs []Finding
	for _, is := range rep.Issues {
		file := is.File
		if rel, ok := strings.CutPrefix(file, "/work/"); ok {
			file = rel
		}
		file = path.Clean(file)
		first, _, _ := strings.Cut(is.Line, "-")
		n, err := strconv.Atoi(first)
		if err != nil || !added[file][n] || !validRuleID(is.RuleID) {
			continue
		}
		msg := fmt.Sprintf("gosec %s (severity %s, confidence %s): %s", is.RuleID, strings.ToLower(is.Severity), strings.ToLower(is.Confidence), is.Details)
		fs = append(fs, Finding{Rule: "gosec-" + is.RuleID, File: file, Line: n, Message: scrubLine(clip(msg, 300)),
			Fingerprint: fingerprint(CheckStatic, "gosec-"+is.RuleID, file, is.Details)})
	}
	return fs
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
