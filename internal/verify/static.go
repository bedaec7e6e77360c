package verify

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// astFinding is a built-in rule hit before it is matched against base.
type astFinding struct {
	rule, msg string
	line      int
	text      string // normalised source line, for matching base and head
}

// astChecks runs the built-in Go rules on each changed Go file at base and
// head and keeps the head findings not present at base: matched by rule
// and normalised line text against the base versions of every changed or
// deleted Go file (so code moved between files is not blamed on the
// agent), each base finding used once.
func astChecks(c *changeSet) []Finding {
	var out []Finding
	seen := map[string]int{}
	for _, f := range c.files {
		if !strings.HasSuffix(f.Path, ".go") && !strings.HasSuffix(f.OldPath, ".go") || f.Binary || f.Huge {
			continue
		}
		base, _ := goRules(f.Old)
		for _, b := range base {
			seen[b.rule+"\x00"+b.text]++
		}
	}
	for _, f := range c.files {
		if !strings.HasSuffix(f.Path, ".go") || f.Status == "deleted" || f.Binary || f.Huge || f.isSymlink() {
			continue
		}
		head, err := goRules(f.New)
		if err != nil {
			out = append(out, Finding{Rule: "could-not-analyse", File: f.Path, Message: scrubLine("Go file does not parse: " + clip(err.Error(), 200))})
			continue
		}
		for _, h := range head {
			k := h.rule + "\x00" + h.text
			if seen[k] > 0 {
				seen[k]--
				continue
			}
			out = append(out, Finding{Rule: h.rule, File: f.Path, Line: h.line, Message: h.msg,
				Fingerprint: fingerprint(CheckStatic, h.rule, f.Path, h.text)})
		}
	}
	return out
}

var secretName = regexp.MustCompile(`(?i)(password|passwd|secret|api_?key|access_?token|auth_?token|credential)`)

func goRules(src []byte) ([]astFinding, error) {
	if src == nil {
		return nil, nil
	}
	fset := token.NewFileSet()
	// Object resolution stays on: isConstString uses it to know the
	// constants declared in the file.
	f, err := parser.ParseFile(fset, "", src, 0)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(src), "\n")
	var out []astFinding
	add := func(n ast.Node, rule, msg string) {
		ln := fset.Position(n.Pos()).Line
		text := ""
		if ln-1 < len(lines) {
			text = normLine(lines[ln-1])
		}
		out = append(out, astFinding{rule: rule, msg: msg, line: ln, text: text})
	}
	execName := importName(f, "os/exec", "exec")
	ast.Inspect(f, func(n ast.Node) bool {
		switch t := n.(type) {
		case *ast.CallExpr:
			sel, ok := t.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == execName && execName != "" && (name == "Command" || name == "CommandContext") {
				args := t.Args
				if name == "CommandContext" && len(args) > 0 {
					args = args[1:]
				}
				for i, a := range args {
					if !isConstString(a) {
						what := "an argument"
						if i == 0 {
							what = "the program"
						}
						add(t, "exec-nonconst", fmt.Sprintf("exec.%s with %s not a constant: command injection if it carries input", name, what))
						break
					}
				}
				return true
			}
			switch name {
			case "Query", "QueryRow", "QueryContext", "QueryRowContext", "Exec", "ExecContext", "Prepare", "PrepareContext", "Raw", "Select", "Get":
				qi := 0
				if strings.HasSuffix(name, "Context") {
					qi = 1
				}
				if qi < len(t.Args) && builtString(t.Args[qi]) {
					add(t, "sql-concat", fmt.Sprintf("SQL for %s built by string concatenation or formatting: SQL injection; use placeholders", name))
				}
			}
		case *ast.KeyValueExpr:
			if k, ok := t.Key.(*ast.Ident); ok && k.Name == "InsecureSkipVerify" && isTrue(t.Value) {
				add(t, "insecure-tls", "InsecureSkipVerify: true disables TLS certificate checks")
			}
			if k, ok := t.Key.(*ast.Ident); ok && secretName.MatchString(k.Name) && isSecretLiteral(t.Value) {
				add(t, "hardcoded-password", fmt.Sprintf("%s set to a string literal: hard-coded credential", k.Name))
			}
		case *ast.AssignStmt:
			for i, l := range t.Lhs {
				if i >= len(t.Rhs) {
					break
				}
				name := ""
				switch x := l.(type) {
				case *ast.Ident:
					name = x.Name
				case *ast.SelectorExpr:
					name = x.Sel.Name
				}
				if name == "InsecureSkipVerify" && isTrue(t.Rhs[i]) {
					add(t, "insecure-tls", "InsecureSkipVerify set to true disables TLS certificate checks")
				}
				if name != "" && secretName.MatchString(name) && isSecretLiteral(t.Rhs[i]) {
					add(t, "hardcoded-password", fmt.Sprintf("%s assigned a string literal: hard-coded credential", name))
				}
			}
		case *ast.ValueSpec:
			for i, id := range t.Names {
				if i < len(t.Values) && secretName.MatchString(id.Name) && isSecretLiteral(t.Values[i]) {
					add(t, "hardcoded-password", fmt.Sprintf("%s declared with a string literal: hard-coded credential", id.Name))
				}
			}
		}
		return true
	})
	return out, nil
}

func importName(f *ast.File, pkgPath, def string) string {
	for _, im := range f.Imports {
		if p, _ := strconv.Unquote(im.Path.Value); p == pkgPath {
			if im.Name != nil {
				return im.Name.Name
			}
			return def
		}
	}
	return ""
}

func isConstString(e ast.Expr) bool {
	switch t := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.BinaryExpr:
		return isConstString(t.X) && isConstString(t.Y)
	case *ast.ParenExpr:
		return isConstString(t.X)
	case *ast.Ident:
		// An identifier may be a constant; without type information only
		// the conventional ALL_CAPS or constants declared in the file are
		// known. Treat identifiers as non-constant: false positives here
		// are cheaper than a missed injection.
		return t.Obj != nil && t.Obj.Kind == ast.Con
	}
	return false
}

// builtString reports a query built at run time: a + with a non-literal
// operand, or a fmt.Sprintf-style call.
func builtString(e ast.Expr) bool {
	switch t := e.(type) {
	case *ast.BinaryExpr:
		if t.Op == token.ADD {
			return !isConstString(t.X) || !isConstString(t.Y) || builtString(t.X) || builtString(t.Y)
		}
	case *ast.ParenExpr:
		return builtString(t.X)
	case *ast.CallExpr:
		if sel, ok := t.Fun.(*ast.SelectorExpr); ok {
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "fmt" && strings.HasPrefix(sel.Sel.Name, "Sprint") {
				return len(t.Args) > 1
			}
			if sel.Sel.Name == "Join" || sel.Sel.Name == "String" {
				return false
			}
		}
	}
	return false
}

func isTrue(e ast.Expr) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == "true"
}

func isSecretLiteral(e ast.Expr) bool {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return false
	}
	s, err := strconv.Unquote(bl.Value)
	if err != nil || len(s) < 6 || strings.ContainsAny(s, " \t") {
		return false
	}
	ls := strings.ToLower(s)
	for _, p := range []string{"changeme", "example", "placeholder", "xxxxxx", "${", "{{", "<"} {
		if strings.Contains(ls, p) {
			return false
		}
	}
	return true
}

// vetLine is one go vet diagnostic: file:line:col: message.
var vetLine = regexp.MustCompile(`^(?:\./)?([^:\s][^:]*\.go):(\d+)(?::\d+)?: (.+)$`)

// goVet runs go vet on the packages of changed Go files, in the sandbox,
// without network, and reports diagnostics on added lines.
func goVet(ctx context.Context, c *changeSet, dir string, cfg Config, run Runner) ([]Finding, error) {
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
		return nil, nil
	}
	if _, ok := c.head["go.mod"]; !ok {
		return []Finding{{Rule: "could-not-analyse", Message: "Go files changed but there is no go.mod at the root: go vet not run"}}, nil
	}
	if run == nil {
		return []Finding{{Rule: "could-not-analyse", Message: "no sandbox runner: go vet not run"}}, nil
	}
	var list []string
	for p := range pkgs {
		list = append(list, strings.TrimSuffix(p, "/."))
	}
	sort.Strings(list)
	argv := append([]string{"go", "vet"}, list...)
	res, err := run.Run(ctx, RunSpec{Argv: argv, Dir: dir, Timeout: 5 * time.Minute, Memory: cfg.TestMemory, Go: true, GoCache: c.goCache})
	if err != nil {
		return []Finding{{Rule: "could-not-analyse", Message: scrubLine("go vet could not run: " + clip(err.Error(), 300))}}, nil
	}
	var out []Finding
	parsed := 0
	for _, l := range strings.Split(string(res.Output), "\n") {
		m := vetLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		parsed++
		n, _ := strconv.Atoi(m[2])
		file := path.Clean(m[1])
		if added[file][n] {
			out = append(out, Finding{Rule: "go-vet", File: file, Line: n, Message: scrubLine(clip(m[3], 300)),
				Fingerprint: fingerprint(CheckStatic, "go-vet", file, m[3])})
		}
	}
	if res.ExitCode != 0 && parsed == 0 {
		// go vet failed without diagnostics: missing modules (no
		// network), a build error. Never a pass.
		out = append(out, Finding{Rule: "could-not-analyse", Message: scrubLine("go vet failed: " + clip(tail(string(res.Output), 400), 400))})
	}
	return out, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
