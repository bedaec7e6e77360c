package verify

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"hash/fnv"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Metrics are the quality measures of a change; each is defined in
// REPORT.md.
type Metrics struct {
	FilesChanged      int     `json:"files_changed"`
	LinesAdded        int     `json:"lines_added"`
	LinesDeleted      int     `json:"lines_deleted"`
	LinesMoved        int     `json:"lines_moved"`
	FilesRenamed      int     `json:"files_renamed"`
	DuplicatedLines   int     `json:"duplicated_lines"`
	TestLinesChanged  int     `json:"test_lines_changed"`
	CodeLinesChanged  int     `json:"code_lines_changed"`
	TestRatio         float64 `json:"test_ratio"`
	ComplexityDelta   int     `json:"complexity_delta"`
	FilesOutsideScope int     `json:"files_outside_scope"`
	TestsDeleted      int     `json:"tests_deleted"`
	TestsSkipped      int     `json:"tests_skipped"`
	// Churn: see churn.go and REPORT.md.
	ChurnSessionLines int     `json:"churn_session_lines"`
	SessionSnapshots  int     `json:"session_snapshots"`
	ChurnRecentLines  int     `json:"churn_recent_lines"`
	ChurnRecentRatio  float64 `json:"churn_recent_ratio"`
	ChurnWindowDays   int     `json:"churn_window_days"`
	ChurnPartial      bool    `json:"churn_partial,omitempty"`
	// Functions lists changed Go functions whose complexity changed.
	Functions []FuncComplexity `json:"functions,omitempty"`
}

// FuncComplexity is the cyclomatic complexity of one Go function at base
// and head (0 where absent).
type FuncComplexity struct {
	File string `json:"file"`
	Func string `json:"func"`
	Base int    `json:"base"`
	Head int    `json:"head"`
}

// minCloneLines is the clone size: six or more normalised lines.
const minCloneLines = 6

func isTestFile(p string) bool {
	b := path.Base(p)
	return strings.HasSuffix(b, "_test.go") || strings.HasPrefix(b, "test_") && strings.HasSuffix(b, ".py") ||
		strings.HasSuffix(b, "_test.py") || strings.Contains(b, ".test.") || strings.Contains(b, ".spec.") ||
		hasPrefixDir(p, "tests") || hasPrefixDir(p, "test") || hasPrefixDir(p, "__tests__") || hasPrefixDir(p, "testdata")
}

func isTestSource(p string) bool {
	b := path.Base(p)
	return strings.HasSuffix(b, "_test.go") || strings.HasPrefix(b, "test_") && strings.HasSuffix(b, ".py") ||
		strings.HasSuffix(b, "_test.py") || regexp.MustCompile(`\.(test|spec)\.[cm]?[jt]sx?$`).MatchString(b)
}

var skipPatterns = []*regexp.Regexp{
	regexp.MustCompile(`\bt\.Skip(?:f|Now)?\(`),
	regexp.MustCompile(`\b(?:it|describe|test)\.skip\(|\bx(?:it|describe)\(`),
	regexp.MustCompile(`@pytest\.mark\.(?:skip|skipif|xfail)\b|@unittest\.skip|\bpytest\.skip\(`),
	regexp.MustCompile(`#\[ignore\]`),
}

func quality(c *changeSet, cfg Config) ([]Finding, *Metrics) {
	m := &Metrics{}
	var out []Finding
	deletedNorm := map[string]int{}
	for _, f := range c.files {
		m.FilesChanged++
		m.LinesAdded += len(f.Added)
		m.LinesDeleted += len(f.Deleted)
		if f.Status == "added" && f.OldPath != "" && !f.Binary && !f.Huge {
			// A renamed file's unchanged lines moved with it.
			m.FilesRenamed++
			m.LinesMoved += max(0, len(splitLines(f.New))-len(f.Added))
		}
		if isTestFile(f.Path) {
			m.TestLinesChanged += len(f.Added) + len(f.Deleted)
		} else {
			m.CodeLinesChanged += len(f.Added) + len(f.Deleted)
		}
		for _, l := range f.Deleted {
			if n := normLine(l.Text); len(n) >= 4 {
				deletedNorm[n]++
			}
		}
		if len(cfg.Scope) > 0 && !inScope(cfg.Scope, f.Path) {
			m.FilesOutsideScope++
			out = append(out, Finding{Rule: "out-of-scope", File: f.Path, Message: "file changed outside the task's declared scope"})
		}
		if f.Status == "deleted" && isTestSource(f.Path) {
			m.TestsDeleted++
			out = append(out, Finding{Rule: "deleted-test", File: f.Path, Message: "test file deleted"})
		}
		if isTestSource(f.Path) || strings.HasSuffix(f.Path, ".py") || strings.HasSuffix(f.Path, ".rs") {
			for _, l := range f.Added {
				for _, re := range skipPatterns {
					if re.MatchString(l.Text) {
						m.TestsSkipped++
						out = append(out, Finding{Rule: "skipped-test", File: f.Path, Line: l.N, Message: "test skip added: " + clip(strings.TrimSpace(l.Text), 100)})
						break
					}
				}
			}
		}
	}
	for _, f := range c.files {
		for _, l := range f.Added {
			if n := normLine(l.Text); len(n) >= 4 && deletedNorm[n] > 0 {
				deletedNorm[n]--
				m.LinesMoved++
			}
		}
	}
	if total := m.CodeLinesChanged; total > 0 {
		m.TestRatio = float64(m.TestLinesChanged) / float64(total)
	}
	dupFindings, dup := duplication(c, cfg)
	m.DuplicatedLines = dup
	out = append(out, dupFindings...)
	cf, funcs, delta := complexity(c, cfg)
	m.Functions, m.ComplexityDelta = funcs, delta
	out = append(out, cf...)
	return out, m
}

func inScope(scope []string, p string) bool {
	for _, g := range scope {
		if globMatch(g, p) {
			return true
		}
	}
	return false
}

// normLine normalises a line for clone detection: whitespace collapsed,
// trimmed; lines of only punctuation become "".
func normLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if strings.Trim(s, "{}()[];,") == "" {
		return ""
	}
	return s
}

type normLineRef struct {
	n     int // 1-based line number
	added bool
	h     uint64
}

func normalised(b []byte, added map[int]bool) []normLineRef {
	var out []normLineRef
	for i, l := range strings.Split(string(b), "\n") {
		n := normLine(l)
		if n == "" {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(n))
		out = append(out, normLineRef{n: i + 1, added: added[i+1], h: h.Sum64()})
	}
	return out
}

func windowHash(ls []normLineRef) uint64 {
	var h uint64 = 14695981039346656037
	for _, l := range ls {
		h ^= l.h
		h *= 1099511628211
		h = h<<13 | h>>51
	}
	return h
}

// maxDupBytes bounds how much of the head tree the duplication check
// reads as the "rest of the repository".
const maxDupBytes = 64 << 20

// duplication counts added lines that are part of a clone: a window of
// minCloneLines normalised non-blank lines, entirely added, whose hash
// occurs elsewhere in the head tree (another file, or a non-overlapping
// place in the same file).
func duplication(c *changeSet, cfg Config) ([]Finding, int) {
	type loc struct {
		file  string
		start int // index into the normalised lines
	}
	index := map[uint64][]loc{}
	norm := map[string][]normLineRef{}
	changed := map[string]*fileChange{}
	for _, f := range c.files {
		changed[f.Path] = f
	}
	var paths []string
	for p := range c.head {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	read := 0
	for _, p := range paths {
		if !isSourceLike(p) {
			continue
		}
		var b []byte
		added := map[int]bool{}
		if f, ok := changed[p]; ok {
			if f.Binary || f.Huge || f.isSymlink() {
				continue
			}
			b = f.New
			for _, l := range f.Added {
				added[l.N] = true
			}
		} else {
			if read > maxDupBytes {
				continue
			}
			b = c.headText(p)
			read += len(b)
		}
		ls := normalised(b, added)
		norm[p] = ls
		for i := 0; i+minCloneLines <= len(ls); i++ {
			h := windowHash(ls[i : i+minCloneLines])
			index[h] = append(index[h], loc{p, i})
		}
	}
	var out []Finding
	total := 0
	for _, f := range c.files {
		ls := norm[f.Path]
		if len(f.Added) == 0 || ls == nil {
			continue
		}
		dup := make([]bool, len(ls))
		var firstOther string
		firstLine := 0
		for i := 0; i+minCloneLines <= len(ls); i++ {
			w := ls[i : i+minCloneLines]
			all := true
			for _, l := range w {
				if !l.added {
					all = false
					break
				}
			}
			if !all {
				continue
			}
			for _, o := range index[windowHash(w)] {
				if o.file == f.Path && o.start > i-minCloneLines && o.start < i+minCloneLines {
					continue
				}
				for j := i; j < i+minCloneLines; j++ {
					dup[j] = true
				}
				if firstOther == "" {
					firstOther = fmt.Sprintf("%s:%d", o.file, norm[o.file][o.start].n)
					firstLine = w[0].n
				}
				break
			}
		}
		n := 0
		for _, d := range dup {
			if d {
				n++
			}
		}
		total += n
		if n >= cfg.DuplicationLines {
			out = append(out, Finding{Rule: "duplication", File: f.Path, Line: firstLine,
				Message: scrubLine(fmt.Sprintf("%d added lines are clones of code elsewhere (first: %s)", n, firstOther))})
		}
	}
	return out, total
}

func isSourceLike(p string) bool {
	switch strings.ToLower(path.Ext(p)) {
	case ".go", ".py", ".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp",
		".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".sql", ".vue", ".svelte":
		return true
	}
	return false
}

// complexity compares the cyclomatic complexity of the Go functions in
// changed files at base and head.
func complexity(c *changeSet, cfg Config) ([]Finding, []FuncComplexity, int) {
	var out []Finding
	var funcs []FuncComplexity
	delta := 0
	for _, f := range c.files {
		if !strings.HasSuffix(f.Path, ".go") || f.Binary || f.Huge {
			continue
		}
		base, head := goComplexity(f.Old), goComplexity(f.New)
		names := map[string]bool{}
		for k := range base {
			names[k] = true
		}
		for k := range head {
			names[k] = true
		}
		var sorted []string
		for k := range names {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			b, h := base[k], head[k]
			if b.c == h.c {
				continue
			}
			delta += h.c - b.c
			funcs = append(funcs, FuncComplexity{File: f.Path, Func: k, Base: b.c, Head: h.c})
			if h.c > cfg.ComplexityLimit && h.c > b.c {
				out = append(out, Finding{Rule: "complexity", File: f.Path, Line: h.line,
					Message: fmt.Sprintf("function %s has cyclomatic complexity %d (was %d), over the limit of %d", k, h.c, b.c, cfg.ComplexityLimit)})
			}
		}
	}
	return out, funcs, delta
}

type funcCC struct{ c, line int }

func goComplexity(src []byte) map[string]funcCC {
	out := map[string]funcCC{}
	if src == nil {
		return out
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.SkipObjectResolution)
	if err != nil {
		return out
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) > 0 {
			name = "(" + exprString(fd.Recv.List[0].Type) + ")." + name
		}
		out[name] = funcCC{c: cyclomatic(fd.Body), line: fset.Position(fd.Pos()).Line}
	}
	return out
}

// cyclomatic is 1 + the number of decision points: if, for, range, case
// and comm clauses (not default), && and ||.
func cyclomatic(n ast.Node) int {
	c := 1
	ast.Inspect(n, func(n ast.Node) bool {
		switch t := n.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			c++
		case *ast.CaseClause:
			if t.List != nil {
				c++
			}
		case *ast.CommClause:
			if t.Comm != nil {
				c++
			}
		case *ast.BinaryExpr:
			if t.Op == token.LAND || t.Op == token.LOR {
				c++
			}
		}
		return true
	})
	return c
}

func exprString(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.StarExpr:
		return "*" + exprString(t.X)
	case *ast.SelectorExpr:
		return exprString(t.X) + "." + t.Sel.Name
	case *ast.IndexExpr:
		return exprString(t.X)
	case *ast.IndexListExpr:
		return exprString(t.X)
	}
	return "?"
}
