package verify

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/mod/modfile"
)

// Ecosystem names, as OSV spells them.
const (
	EcoGo     = "Go"
	EcoNPM    = "npm"
	EcoPyPI   = "PyPI"
	EcoCrates = "crates.io"
)

// DepChange is one added or changed dependency.
type DepChange struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	// Version is the head's version or requirement as written; Resolved
	// is the concrete version checked against the OSV database (the exact
	// pin, or the lowest version a range allows), "" if none.
	Version    string `json:"version"`
	Resolved   string `json:"resolved,omitempty"`
	OldVersion string `json:"old_version,omitempty"`
	File       string `json:"file"`
	Change     string `json:"change"` // "added" or "changed"
	// Vulns lists OSV ids affecting Resolved.
	Vulns []string `json:"vulns,omitempty"`
}

// manifest parsers: each returns name → version/requirement.
type manifestParser struct {
	eco   string
	match func(base string) bool
	parse func(b []byte, file string) (map[string]string, error)
}

var manifests = []manifestParser{
	{EcoGo, func(b string) bool { return b == "go.mod" }, parseGoMod},
	{EcoNPM, func(b string) bool { return b == "package.json" }, parsePackageJSON},
	{EcoNPM, func(b string) bool { return b == "package-lock.json" || b == "npm-shrinkwrap.json" }, parsePackageLock},
	{EcoPyPI, func(b string) bool {
		return b == "requirements.txt" || strings.HasPrefix(b, "requirements") && strings.HasSuffix(b, ".txt")
	}, parseRequirements},
	{EcoPyPI, func(b string) bool { return b == "pyproject.toml" }, parsePyproject},
	{EcoCrates, func(b string) bool { return b == "Cargo.toml" }, parseCargoToml},
	{EcoCrates, func(b string) bool { return b == "Cargo.lock" }, parseCargoLock},
}

// reviewDeps lists added and changed dependencies and judges them.
func reviewDeps(c *changeSet, cfg Config) ([]Finding, []DepChange, error) {
	var out []Finding
	deps := []DepChange{}
	for _, f := range c.files {
		if f.Status == "deleted" {
			continue
		}
		b := path.Base(f.Path)
		for _, m := range manifests {
			if !m.match(b) {
				continue
			}
			if f.Binary || f.Huge || f.isSymlink() {
				out = append(out, Finding{Rule: "malformed", File: f.Path, Message: "manifest is binary, a symlink or too large to parse: its dependencies are not reviewed"})
				continue
			}
			head, err := m.parse(f.New, f.Path)
			if err != nil {
				out = append(out, Finding{Rule: "malformed", File: f.Path, Message: scrubLine(fmt.Sprintf("cannot parse manifest: %v", err))})
				continue
			}
			base := map[string]string{}
			if f.Old != nil {
				if b, err := m.parse(f.Old, f.Path); err == nil {
					base = b
				}
			}
			names := make([]string, 0, len(head))
			for n := range head {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				v := head[n]
				ov, had := base[n]
				if had && ov == v {
					continue
				}
				d := DepChange{Ecosystem: m.eco, Name: n, Version: v, File: f.Path, Change: "added"}
				if had {
					d.Change, d.OldVersion = "changed", ov
				}
				d.Resolved = resolveVersion(m.eco, v)
				deps = append(deps, d)
			}
		}
	}
	var db *osvDB
	if cfg.OSV != "" {
		var err error
		if db, err = loadOSV(cfg.OSV); err != nil {
			return out, deps, err
		}
	} else if len(deps) > 0 {
		out = append(out, Finding{Rule: "no-osv", Message: "no OSV database configured: dependencies were not checked for known vulnerabilities"})
	}
	for i := range deps {
		d := &deps[i]
		loc := lineOf(c.file(d.File).New, d.Name)
		what := fmt.Sprintf("%s %s %s", d.Ecosystem, d.Name, d.Version)
		if d.OldVersion != "" {
			what += " (was " + d.OldVersion + ")"
		}
		switch {
		case policyMatch(cfg.Deps.Deny, d.Ecosystem, d.Name):
			out = append(out, Finding{Rule: "denied", File: d.File, Line: loc, Message: what + ": denied by policy"})
		case policyMatch(cfg.Deps.NeedsApproval, d.Ecosystem, d.Name):
			out = append(out, Finding{Rule: "needs-approval", File: d.File, Line: loc, Message: what + ": needs approval by policy"})
		case len(cfg.Deps.Allow) > 0 && !policyMatch(cfg.Deps.Allow, d.Ecosystem, d.Name):
			out = append(out, Finding{Rule: "needs-approval", File: d.File, Line: loc, Message: what + ": not on the policy's allow list"})
		default:
			out = append(out, Finding{Rule: d.Change, File: d.File, Line: loc, Message: what})
		}
		if d.Resolved == "" {
			out = append(out, Finding{Rule: "unpinned", File: d.File, Line: loc, Message: what + ": no concrete version to check against the vulnerability database"})
		} else if db != nil {
			ids, err := db.affected(d.Ecosystem, d.Name, d.Resolved)
			if err != nil {
				out = append(out, Finding{Rule: "unpinned", File: d.File, Line: loc, Message: scrubLine(fmt.Sprintf("%s: cannot compare version: %v", what, err))})
			}
			d.Vulns = ids
			if len(ids) > 0 {
				out = append(out, Finding{Rule: "vulnerable", File: d.File, Line: loc,
					Message: fmt.Sprintf("%s: version %s is affected by %s", what, d.Resolved, strings.Join(ids, ", "))})
			}
		}
		if near := typosquat(d.Ecosystem, d.Name); near != "" && !policyMatch(cfg.Deps.Allow, d.Ecosystem, d.Name) {
			out = append(out, Finding{Rule: "typosquat", File: d.File, Line: loc, Action: ActionNeedsHuman,
				Message: fmt.Sprintf("%s %q is one or two edits from the popular package %q", d.Ecosystem, d.Name, near)})
		}
	}
	for i := range out {
		out[i].Message = scrubLine(out[i].Message)
	}
	return out, deps, nil
}

func policyMatch(list []string, eco, name string) bool {
	for _, p := range list {
		if e, n, ok := strings.Cut(p, ":"); ok && (e == EcoGo || e == EcoNPM || e == EcoPyPI || e == EcoCrates) {
			if e != eco {
				continue
			}
			p = n
		}
		if strings.HasSuffix(p, "*") && strings.HasPrefix(normName(eco, name), normName(eco, strings.TrimSuffix(p, "*"))) ||
			normName(eco, p) == normName(eco, name) {
			return true
		}
	}
	return false
}

var pypiNorm = regexp.MustCompile(`[-_.]+`)

func normName(eco, n string) string {
	switch eco {
	case EcoPyPI:
		return pypiNorm.ReplaceAllString(strings.ToLower(n), "-")
	case EcoCrates:
		return strings.ReplaceAll(strings.ToLower(n), "_", "-")
	}
	return n
}

var exactSemver = regexp.MustCompile(`^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// resolveVersion turns a requirement into the concrete version checked:
// the pin itself, or for ^, ~, >=, = and a bare Cargo version the lowest
// version the requirement allows. Anything else ("*", "latest", URLs,
// "<2") gives "".
func resolveVersion(eco, v string) string {
	v = strings.TrimSpace(v)
	switch eco {
	case EcoGo:
		return v
	case EcoPyPI:
		if r, ok := strings.CutPrefix(v, "=="); ok && !strings.ContainsAny(r, "*,;") {
			return strings.TrimSpace(r)
		}
		if r, ok := strings.CutPrefix(v, "~="); ok && !strings.Contains(r, ",") {
			return strings.TrimSpace(r)
		}
		if r, ok := strings.CutPrefix(v, ">="); ok && !strings.Contains(r, ",") {
			return strings.TrimSpace(r)
		}
		return ""
	default:
		for _, p := range []string{"^", "~", ">=", "="} {
			if r, ok := strings.CutPrefix(v, p); ok {
				v = strings.TrimSpace(r)
				break
			}
		}
		if exactSemver.MatchString(v) {
			return v
		}
		// Cargo allows "1.2" meaning ^1.2.0.
		if eco == EcoCrates && regexp.MustCompile(`^\d+\.\d+$`).MatchString(v) {
			return v + ".0"
		}
		return ""
	}
}

func parseGoMod(b []byte, file string) (map[string]string, error) {
	mf, err := modfile.Parse(file, b, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range mf.Require {
		out[r.Mod.Path] = r.Mod.Version
	}
	for _, r := range mf.Replace {
		// A replacement changes where code comes from: record it as the
		// replaced module's version.
		to := r.New.Path
		if r.New.Version != "" {
			to += "@" + r.New.Version
		}
		out[r.Old.Path] = "=> " + to
	}
	return out, nil
}

func parsePackageJSON(b []byte, file string) (map[string]string, error) {
	var pj map[string]json.RawMessage
	if err := json.Unmarshal(b, &pj); err != nil {
		return nil, jsonErr(b, err)
	}
	out := map[string]string{}
	for _, sec := range []string{"dependencies", "devDependencies", "optionalDependencies", "peerDependencies"} {
		raw, ok := pj[sec]
		if !ok {
			continue
		}
		var m map[string]string
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%s: want an object of name to version strings: %v", sec, err)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out, nil
}

func parsePackageLock(b []byte, file string) (map[string]string, error) {
	var pl struct {
		Packages map[string]struct {
			Version string `json:"version"`
			Link    bool   `json:"link"`
		} `json:"packages"`
		Dependencies map[string]struct {
			Version string `json:"version"`
		} `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &pl); err != nil {
		return nil, jsonErr(b, err)
	}
	out := map[string]string{}
	for k, p := range pl.Packages {
		i := strings.LastIndex(k, "node_modules/")
		if k == "" || i < 0 || p.Link {
			continue
		}
		out[k[i+len("node_modules/"):]] = p.Version
	}
	if len(pl.Packages) == 0 {
		for k, p := range pl.Dependencies {
			out[k] = p.Version
		}
	}
	return out, nil
}

func jsonErr(b []byte, err error) error {
	var se *json.SyntaxError
	if ok := asSyntax(err, &se); ok {
		return fmt.Errorf("line %d: %v", strings.Count(string(b[:min(int(se.Offset), len(b))]), "\n")+1, err)
	}
	return err
}

func asSyntax(err error, se **json.SyntaxError) bool {
	s, ok := err.(*json.SyntaxError)
	if ok {
		*se = s
	}
	return ok
}

// pep508 is the name and version part of a PEP 508 requirement.
var pep508 = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(\(?\s*(?:===|==|~=|!=|<=|>=|<|>)[^;]*)?\s*(?:;.*)?$`)

func parseRequirement(s string) (string, string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, " @ ") {
		n, u, _ := strings.Cut(s, " @ ")
		return strings.TrimSpace(n), "@ " + strings.TrimSpace(u), nil
	}
	m := pep508.FindStringSubmatch(s)
	if m == nil {
		return "", "", fmt.Errorf("not a requirement: %q", clip(s, 80))
	}
	v := strings.Trim(strings.TrimSpace(m[2]), "()")
	return m[1], strings.ReplaceAll(v, " ", ""), nil
}

func parseRequirements(b []byte, file string) (map[string]string, error) {
	out := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		if j := strings.Index(l, " #"); j >= 0 {
			l = l[:j]
		}
		l = strings.TrimSpace(strings.TrimSuffix(l, "\\"))
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "-") {
			// Options (-r, -c, -e, --index-url) change where packages
			// come from; an index URL is itself a dependency source.
			if strings.HasPrefix(l, "--index-url") || strings.HasPrefix(l, "--extra-index-url") || strings.HasPrefix(l, "-i ") ||
				strings.HasPrefix(l, "-e ") || strings.HasPrefix(l, "--editable") {
				out[l] = "option"
			}
			continue
		}
		n, v, err := parseRequirement(l)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		out[n] = v
	}
	return out, nil
}

func parsePyproject(b []byte, file string) (map[string]string, error) {
	var pp struct {
		Project struct {
			Dependencies []string            `toml:"dependencies"`
			Optional     map[string][]string `toml:"optional-dependencies"`
		} `toml:"project"`
		Tool struct {
			Poetry struct {
				Dependencies    map[string]any `toml:"dependencies"`
				DevDependencies map[string]any `toml:"dev-dependencies"`
			} `toml:"poetry"`
		} `toml:"tool"`
	}
	if _, err := toml.Decode(string(b), &pp); err != nil {
		return nil, err
	}
	out := map[string]string{}
	reqs := pp.Project.Dependencies
	for _, o := range pp.Project.Optional {
		reqs = append(reqs, o...)
	}
	for _, r := range reqs {
		n, v, err := parseRequirement(r)
		if err != nil {
			return nil, fmt.Errorf("project.dependencies: %v", err)
		}
		out[n] = v
	}
	for _, m := range []map[string]any{pp.Tool.Poetry.Dependencies, pp.Tool.Poetry.DevDependencies} {
		for n, v := range m {
			if n == "python" {
				continue
			}
			out[n] = poetryVersion(v)
		}
	}
	return out, nil
}

func poetryVersion(v any) string {
	switch t := v.(type) {
	case string:
		if exactSemver.MatchString(t) || regexp.MustCompile(`^\d+(\.\d+)*$`).MatchString(t) {
			return "==" + t
		}
		return t
	case map[string]any:
		if s, ok := t["version"].(string); ok {
			return poetryVersion(s)
		}
		for _, k := range []string{"git", "path", "url"} {
			if s, ok := t[k].(string); ok {
				return k + " " + s
			}
		}
	}
	return fmt.Sprint(v)
}

func parseCargoToml(b []byte, file string) (map[string]string, error) {
	var ct map[string]any
	if _, err := toml.Decode(string(b), &ct); err != nil {
		return nil, err
	}
	out := map[string]string{}
	add := func(sec map[string]any) {
		for n, v := range sec {
			switch t := v.(type) {
			case string:
				out[n] = t
			case map[string]any:
				name := n
				if p, ok := t["package"].(string); ok {
					name = p
				}
				if s, ok := t["version"].(string); ok {
					out[name] = s
				} else if s, ok := t["git"].(string); ok {
					out[name] = "git " + s
				} else if s, ok := t["path"].(string); ok {
					out[name] = "path " + s
				} else {
					out[name] = "*"
				}
			}
		}
	}
	for _, s := range []string{"dependencies", "dev-dependencies", "build-dependencies"} {
		if m, ok := ct[s].(map[string]any); ok {
			add(m)
		}
	}
	if tg, ok := ct["target"].(map[string]any); ok {
		for _, t := range tg {
			if tm, ok := t.(map[string]any); ok {
				for _, s := range []string{"dependencies", "dev-dependencies", "build-dependencies"} {
					if m, ok := tm[s].(map[string]any); ok {
						add(m)
					}
				}
			}
		}
	}
	return out, nil
}

func parseCargoLock(b []byte, file string) (map[string]string, error) {
	var cl struct {
		Package []struct {
			Name    string `toml:"name"`
			Version string `toml:"version"`
		} `toml:"package"`
	}
	if _, err := toml.Decode(string(b), &cl); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range cl.Package {
		out[p.Name] = p.Version
	}
	return out, nil
}
