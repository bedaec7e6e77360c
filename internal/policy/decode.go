package policy

// The YAML decoder. It walks yaml.v3 nodes itself, rather than unmarshalling
// into structs, to keep line and column for every error, to refuse unknown
// and duplicate keys, and to tell an unset setting (inherited from the parent
// profile) from one set to its zero value.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// schema lists the keys each mapping may hold. The decoder rejects every
// other key, and a test checks that the init template shows every one.
// "*" stands for a user-chosen name, "[]" for a list element.
var schema = map[string][]string{
	"":                           {"version", "profile", "profiles", "providers", "classification", "gateway", "gates"},
	"profiles.*":                 {"extends", "filesystem", "network", "exec", "limits", "env", "degrade"},
	"profiles.*.filesystem":      {"read_only", "read_write", "hidden"},
	"profiles.*.network":         {"allow", "byte_budget", "dns"},
	"profiles.*.network.allow[]": {"host", "ports", "methods", "paths", "allow_connect"},
	"profiles.*.exec":            {"allow"},
	"profiles.*.limits":          {"memory", "processes", "cpu_time", "file_size", "wall_time", "disk", "tmp_size", "open_files"},
	"profiles.*.env":             {"allow", "set"},
	"providers.*":                {"api", "base_url", "key_env", "key_file", "models", "terms", "clearance"},
	"providers.*.terms":          {"training", "retention", "region"},
	"classification":             {"levels", "default", "paths", "action"},
	"classification.paths[]":     {"path", "level"},
	"gateway":                    {"budget"},
	"gateway.budget":             {"tokens", "requests"},
	"gates":                      {"verify"},
	"gates.verify":               {"checks", "rules", "allow", "scope", "dependencies", "osv", "secret_rules", "test_command", "test_timeout", "test_memory", "test_network", "churn_window"},
	"gates.verify.allow[]":       {"check", "rule", "path", "fingerprint", "reason"},
	"gates.verify.dependencies":  {"allow", "deny", "needs_approval"},
}

// maxPolicyBytes bounds the policy text; real ones are a few KiB.
const maxPolicyBytes = 1 << 20

type item[T any] struct {
	v     T
	n     *yaml.Node
	field string
	file  string // the built-in defaults or the file being parsed
}

type opt[T any] struct {
	set   bool
	v     T
	n     *yaml.Node
	field string
}

func (o opt[T]) or(parent opt[T]) opt[T] {
	if o.set {
		return o
	}
	return parent
}

type rawProfile struct {
	name    string
	key     *yaml.Node
	extends opt[string]

	readOnly, readWrite, hidden opt[[]item[string]]
	allow                       opt[[]item[HostRule]]
	byteBudget                  opt[int64]
	dns                         opt[bool]
	exec                        opt[[]item[string]]

	memory, fileSize, disk, tmpSize opt[int64]
	processes, openFiles            opt[int64]
	cpuTime, wallTime               opt[time.Duration]

	envAllow opt[[]item[string]]
	envSet   opt[[]item[[2]string]]
	degrade  opt[[]item[string]]
}

// over returns c with every unset setting taken from p.
func (c *rawProfile) over(p *rawProfile) *rawProfile {
	m := *c
	m.readOnly = c.readOnly.or(p.readOnly)
	m.readWrite = c.readWrite.or(p.readWrite)
	m.hidden = c.hidden.or(p.hidden)
	m.allow = c.allow.or(p.allow)
	m.byteBudget = c.byteBudget.or(p.byteBudget)
	m.dns = c.dns.or(p.dns)
	m.exec = c.exec.or(p.exec)
	m.memory = c.memory.or(p.memory)
	m.fileSize = c.fileSize.or(p.fileSize)
	m.disk = c.disk.or(p.disk)
	m.tmpSize = c.tmpSize.or(p.tmpSize)
	m.processes = c.processes.or(p.processes)
	m.openFiles = c.openFiles.or(p.openFiles)
	m.cpuTime = c.cpuTime.or(p.cpuTime)
	m.wallTime = c.wallTime.or(p.wallTime)
	m.envAllow = c.envAllow.or(p.envAllow)
	m.envSet = c.envSet.or(p.envSet)
	m.degrade = c.degrade.or(p.degrade)
	return &m
}

// rawPolicy keeps what a later file inherits from the built-in defaults.
type rawPolicy struct {
	profile  *rawProfile // the resolved default profile
	levels   opt[[]item[string]]
	deflt    opt[string]
	paths    opt[[]item[ClassPath]]
	action   opt[string]
	tokens   opt[int64]
	requests opt[int64]
}

type decoder struct {
	file    string
	errs    ErrorList
	seen    map[string]bool
	home    string
	homeErr error
}

func (d *decoder) fail(n *yaml.Node, field string, p *problem) {
	e := &Error{File: d.file, Field: field, Msg: p.msg, Hint: p.hint}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	d.add(e)
}

func (d *decoder) add(e *Error) {
	k := e.Error()
	if d.seen[k] {
		return // an inherited value is checked once per profile
	}
	d.seen[k] = true
	if len(d.errs) < 10*maxErrors {
		d.errs = append(d.errs, e)
	}
}

// result sorts the errors into file order and keeps the first maxErrors.
func (d *decoder) result() ErrorList {
	slices.SortStableFunc(d.errs, func(a, b *Error) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	if len(d.errs) > maxErrors {
		msg := fmt.Sprintf("%d more errors not shown", len(d.errs)-maxErrors)
		if len(d.errs) == maxErrors+1 {
			msg = "1 more error not shown"
		}
		d.errs = append(d.errs[:maxErrors:maxErrors], &Error{File: d.file, Msg: msg, Hint: "fix these first"})
	}
	return d.errs
}

func (d *decoder) failf(n *yaml.Node, field, hint, format string, args ...any) {
	d.fail(n, field, bad(hint, format, args...))
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parse decodes and validates one policy. base is nil when parsing the
// built-in defaults themselves, which must then set every setting.
func parse(name string, data []byte, base *rawPolicy, home string, homeErr error) (p *Policy, raw *rawPolicy, err error) {
	d := &decoder{file: name, seen: map[string]bool{}, home: home, homeErr: homeErr}
	if len(data) > maxPolicyBytes {
		d.failf(nil, "", "a policy is a few KiB of YAML", "file is larger than %d bytes", maxPolicyBytes)
		return nil, nil, d.errs
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := decodeSafe(dec, &doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.failf(nil, "", "start with: version: 1", "file is empty")
			return nil, nil, d.errs
		}
		d.add(yamlError(name, err))
		return nil, nil, d.errs
	}
	var extra yaml.Node
	if err := decodeSafe(dec, &extra); !errors.Is(err, io.EOF) {
		d.failf(&extra, "", "remove the \"---\" and what follows, or merge it into the first document", "more than one YAML document")
		return nil, nil, d.errs
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if d.noAliases(root); len(d.errs) > 0 {
		return nil, nil, d.errs
	}
	p, raw = d.policy(root, base)
	if len(d.errs) > 0 {
		return nil, nil, d.result()
	}
	return p, raw, nil
}

// decodeSafe turns a panic inside the YAML library into an error: the
// policy may be hostile input and a crash is not a decision.
func decodeSafe(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: line 0: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

func yamlError(file string, err error) *Error {
	msg := err.Error()
	e := &Error{File: file, Msg: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: "), Hint: "check the indentation and quoting near this line"}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Col = 1
		e.Msg = "not valid YAML: " + m[2]
	}
	if strings.Contains(msg, "found character that cannot start any token") {
		e.Hint = "indent with spaces, not tabs, and quote values that start with @ or `"
	}
	return e
}

// noAliases refuses anchors, aliases and merge keys: policies do not need
// them (profiles have extends) and they let a small file expand hugely.
func (d *decoder) noAliases(n *yaml.Node) {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.failf(n, "", "write the value out, or use extends: to share settings between profiles", "YAML anchors and aliases are not supported")
		return
	}
	for _, c := range n.Content {
		d.noAliases(c)
	}
}

// fields checks that n is a mapping (or empty) whose keys are all in
// schema[kind] and appear once, and returns the values by key.
func (d *decoder) fields(n *yaml.Node, field, kind string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	for _, kv := range d.pairs(n, field) {
		k := kv[0].Value
		if !slices.Contains(schema[kind], k) {
			hint := "valid keys: " + strings.Join(schema[kind], ", ")
			if s := suggest(k, schema[kind]); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			d.failf(kv[0], join(field, k), hint, "unknown setting %q", k)
			continue
		}
		out[k] = kv[1]
	}
	return out
}

// pairs returns the key and value nodes of a mapping (nil for an empty
// value), refusing duplicate and non-string keys.
func (d *decoder) pairs(n *yaml.Node, field string) [][2]*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.failf(n, field, "write it as a mapping of \"key: value\" lines", "must be a mapping, not %s", describe(n))
		return nil
	}
	var out [][2]*yaml.Node
	at := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			d.failf(k, field, "quote the key", "key %s is not a string", describe(k))
			continue
		}
		if line, dup := at[k.Value]; dup {
			d.failf(k, join(field, k.Value), "remove one of them", "set twice (first at line %d)", line)
			continue
		}
		at[k.Value] = k.Line
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out
}

func (d *decoder) seq(n *yaml.Node, field string) ([]*yaml.Node, bool) {
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		d.failf(n, field, "write a list: [a, b] or lines starting with \"- \"", "must be a list, not %s", describe(n))
		return nil, false
	}
	return n.Content, true
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the text %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "empty"
		}
		return fmt.Sprintf("%q (%s)", n.Value, n.ShortTag())
	}
	return "an unexpected node"
}

func (d *decoder) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind == yaml.ScalarNode && n.Value == "~" && n.ShortTag() == "!!null" {
		d.failf(n, field, `YAML reads a bare ~ as "no value"; write "~/" followed by a directory`, "must be text, not empty")
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.failf(n, field, "write text; quote it if it looks like a number or boolean", "must be text, not %s", describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) boolean(n *yaml.Node, field string) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.failf(n, field, "write true or false", "must be true or false, not %s", describe(n))
		return false, false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		d.failf(n, field, "write true or false", "must be true or false, not %s", describe(n))
		return false, false
	}
	return b, true
}

// count decodes a whole number in [1, max].
func (d *decoder) count(n *yaml.Node, field string, max int64, hint string) (int64, bool) {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		d.failf(n, field, hint, "must be a whole number, not %s", describe(n))
		return 0, false
	}
	if v <= 0 {
		d.failf(n, field, "write a number greater than zero, or remove the setting to use the default", "%s is not positive", n.Value)
		return 0, false
	}
	if v > max {
		d.failf(n, field, fmt.Sprintf("write at most %d", max), "%s is too large", n.Value)
		return 0, false
	}
	return v, true
}

func (d *decoder) size(n *yaml.Node, field string) (int64, bool) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		d.failf(n, field, fmt.Sprintf("add a unit, e.g. %sMiB or %sB", n.Value, n.Value), "%s has no unit", n.Value)
		return 0, false
	}
	s, ok := d.str(n, field)
	if !ok {
		return 0, false
	}
	v, p := parseSize(s)
	if p != nil {
		d.fail(n, field, p)
		return 0, false
	}
	return v, true
}

func (d *decoder) duration(n *yaml.Node, field string) (time.Duration, bool) {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		d.failf(n, field, fmt.Sprintf("add a unit, e.g. %ss or %sm", n.Value, n.Value), "%s has no unit", n.Value)
		return 0, false
	}
	s, ok := d.str(n, field)
	if !ok {
		return 0, false
	}
	v, p := parseDuration(s)
	if p != nil {
		d.fail(n, field, p)
		return 0, false
	}
	return v, true
}

// strList decodes a list of text, normalising each entry with norm and
// refusing duplicates after normalisation.
func (d *decoder) strList(n *yaml.Node, field string, norm func(string) (string, *problem)) opt[[]item[string]] {
	out := opt[[]item[string]]{set: true, n: n, field: field, v: []item[string]{}}
	elems, ok := d.seq(n, field)
	if !ok {
		return out
	}
	at := map[string]int{}
	for i, e := range elems {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := d.str(e, f)
		if !ok {
			continue
		}
		v, p := norm(s)
		if p != nil {
			d.fail(e, f, p)
			continue
		}
		if line, dup := at[v]; dup {
			d.failf(e, f, "remove one of them", "%q is listed twice (first at line %d)", s, line)
			continue
		}
		at[v] = e.Line
		out.v = append(out.v, item[string]{v: v, n: e, field: f, file: d.file})
	}
	return out
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// suggest returns the known key closest to k, if it is close.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if dd := editDistance(strings.ToLower(k), c); dd < bestD || strings.ReplaceAll(strings.ToLower(k), "-", "_") == c {
			best, bestD = c, dd
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) policy(root *yaml.Node, base *rawPolicy) (*Policy, *rawPolicy) {
	if root.Kind != yaml.MappingNode {
		d.failf(root, "", "start with: version: 1", "the policy must be a mapping of settings, not %s", describe(root))
		return nil, nil
	}
	top := d.fields(root, "", "")
	if v, ok := top["version"]; !ok {
		d.failf(root, "version", "add version: 1 as the first line", "missing")
	} else if n, ok := d.count(v, "version", math.MaxInt32, "write version: 1"); ok && n != 1 {
		d.failf(v, "version", "this enclave reads version: 1; upgrade enclave for newer files", "version %d is not supported", n)
	}

	p := &Policy{Version: 1, DefaultProfile: "default", Profiles: map[string]*Profile{}}
	raw := &rawPolicy{}
	if base != nil {
		*raw = *base
	}
	d.classification(top["classification"], raw)
	d.gateway(top["gateway"], raw)
	p.Gates = d.gates(top["gates"])

	// Profiles.
	var order []string
	profiles := map[string]*rawProfile{}
	profilesNode := top["profiles"]
	for _, kv := range d.pairs(profilesNode, "profiles") {
		name := kv[0].Value
		if p := checkProfileName(name); p != nil {
			d.fail(kv[0], "profiles."+name, p)
			continue
		}
		profiles[name] = d.profile(kv[1], name, kv[0])
		order = append(order, name)
	}
	if n, ok := top["profile"]; ok {
		if s, ok := d.str(n, "profile"); ok {
			p.DefaultProfile = s
			if _, ok := profiles[s]; !ok && (len(order) > 0 || s != "default") {
				d.failf(n, "profile", profileHint(order), "no profile named %q", s)
			}
		}
	} else if _, ok := profiles["default"]; !ok && len(order) > 0 {
		d.failf(profilesNode, "profile", fmt.Sprintf("add profile: %s (the profile enclave run uses without --profile), or name one profile default", order[0]), "missing, and no profile is named \"default\"")
	}

	var root0 *rawProfile
	if base != nil {
		root0 = base.profile
	} else {
		root0 = &rawProfile{}
	}
	resolved := map[string]*rawProfile{}
	var resolve func(name string, chain []string) *rawProfile
	resolve = func(name string, chain []string) *rawProfile {
		if r, ok := resolved[name]; ok {
			return r
		}
		c := profiles[name]
		parent := root0
		if c.extends.set {
			pn := c.extends.v
			switch {
			case slices.Contains(chain, pn) || pn == name:
				cyc := append(chain[slices.Index(append(chain, name), pn):], name, pn)
				d.failf(c.extends.n, c.extends.field, "remove extends from one of these profiles", "profiles extend each other in a cycle: %s", strings.Join(cyc, " -> "))
			case profiles[pn] == nil:
				d.failf(c.extends.n, c.extends.field, profileHint(order), "no profile named %q", pn)
			default:
				parent = resolve(pn, append(chain, name))
			}
		}
		r := c.over(parent)
		resolved[name] = r
		return r
	}
	for _, name := range order {
		resolve(name, nil)
	}
	if len(order) == 0 {
		resolved["default"] = root0
		order = []string{"default"}
	}
	for _, name := range order {
		pr := d.materialize(resolved[name], name, base == nil)
		p.Profiles[name] = pr
	}
	if r, ok := resolved[p.DefaultProfile]; ok {
		raw.profile = r
	}

	// Policy-wide sections.
	p.Classification = d.materializeClass(raw)
	p.Gateway.Budget = Budget{Tokens: raw.tokens.v, Requests: raw.requests.v}
	if base == nil && (!raw.tokens.set || !raw.requests.set) {
		d.failf(nil, "gateway.budget", "the built-in defaults must set every setting", "incomplete")
	}
	for _, kv := range d.pairs(top["providers"], "providers") {
		pv := d.provider(kv[1], kv[0].Value, kv[0], &p.Classification)
		p.Providers = append(p.Providers, pv)
	}
	return p, raw
}

func checkProfileName(name string) *problem {
	if name == "" || !validEnvName(strings.ReplaceAll(name, "-", "_")) {
		return bad("use letters, digits, - and _", "%q is not a profile name", name)
	}
	return nil
}

func profileHint(names []string) string {
	if len(names) == 0 {
		return "define it under profiles:"
	}
	return "defined profiles: " + strings.Join(names, ", ")
}

func (d *decoder) profile(n *yaml.Node, name string, key *yaml.Node) *rawProfile {
	f := "profiles." + name
	r := &rawProfile{name: name, key: key}
	fs := d.fields(n, f, "profiles.*")
	if v, ok := fs["extends"]; ok {
		if s, ok := d.str(v, f+".extends"); ok {
			r.extends = opt[string]{set: true, v: s, n: v, field: f + ".extends"}
		}
	}
	hostPathNorm := func(s string) (string, *problem) { return hostPath(s, d.home, d.homeErr) }
	mountNorm := func(s string) (string, *problem) {
		p, pr := hostPath(s, d.home, d.homeErr)
		if pr == nil {
			pr = credentialPath(p, d.home)
		}
		return p, pr
	}
	if v, ok := fs["filesystem"]; ok {
		ff := f + ".filesystem"
		m := d.fields(v, ff, "profiles.*.filesystem")
		if v, ok := m["read_only"]; ok {
			r.readOnly = d.strList(v, ff+".read_only", mountNorm)
		}
		if v, ok := m["read_write"]; ok {
			r.readWrite = d.strList(v, ff+".read_write", mountNorm)
		}
		if v, ok := m["hidden"]; ok {
			r.hidden = d.strList(v, ff+".hidden", normalizeWorkspaceGlob)
		}
	}
	if v, ok := fs["network"]; ok {
		nf := f + ".network"
		m := d.fields(v, nf, "profiles.*.network")
		if v, ok := m["allow"]; ok {
			r.allow = d.hostRules(v, nf+".allow")
		}
		if v, ok := m["byte_budget"]; ok {
			if b, ok := d.size(v, nf+".byte_budget"); ok {
				r.byteBudget = opt[int64]{set: true, v: b, n: v, field: nf + ".byte_budget"}
			}
		}
		if v, ok := m["dns"]; ok {
			if b, ok := d.boolean(v, nf+".dns"); ok {
				r.dns = opt[bool]{set: true, v: b, n: v, field: nf + ".dns"}
			}
		}
	}
	if v, ok := fs["exec"]; ok {
		m := d.fields(v, f+".exec", "profiles.*.exec")
		if v, ok := m["allow"]; ok {
			r.exec = d.strList(v, f+".exec.allow", hostPathNorm)
		}
	}
	if v, ok := fs["limits"]; ok {
		lf := f + ".limits"
		m := d.fields(v, lf, "profiles.*.limits")
		sizes := []struct {
			key string
			dst *opt[int64]
		}{{"memory", &r.memory}, {"file_size", &r.fileSize}, {"disk", &r.disk}, {"tmp_size", &r.tmpSize}}
		for _, s := range sizes {
			if v, ok := m[s.key]; ok {
				if b, ok := d.size(v, lf+"."+s.key); ok {
					*s.dst = opt[int64]{set: true, v: b, n: v, field: lf + "." + s.key}
				}
			}
		}
		counts := []struct {
			key string
			dst *opt[int64]
			max int64
		}{{"processes", &r.processes, 1 << 22}, {"open_files", &r.openFiles, 1 << 20}}
		for _, s := range counts {
			if v, ok := m[s.key]; ok {
				if c, ok := d.count(v, lf+"."+s.key, s.max, "write a number like 1024"); ok {
					*s.dst = opt[int64]{set: true, v: c, n: v, field: lf + "." + s.key}
				}
			}
		}
		durs := []struct {
			key string
			dst *opt[time.Duration]
		}{{"cpu_time", &r.cpuTime}, {"wall_time", &r.wallTime}}
		for _, s := range durs {
			if v, ok := m[s.key]; ok {
				if t, ok := d.duration(v, lf+"."+s.key); ok {
					*s.dst = opt[time.Duration]{set: true, v: t, n: v, field: lf + "." + s.key}
				}
			}
		}
	}
	if v, ok := fs["env"]; ok {
		ef := f + ".env"
		m := d.fields(v, ef, "profiles.*.env")
		if v, ok := m["allow"]; ok {
			r.envAllow = d.strList(v, ef+".allow", func(s string) (string, *problem) { return s, checkEnvPattern(s) })
		}
		if v, ok := m["set"]; ok {
			r.envSet = opt[[]item[[2]string]]{set: true, n: v, field: ef + ".set", v: []item[[2]string]{}}
			for _, kv := range d.pairs(v, ef+".set") {
				kf := ef + ".set." + kv[0].Value
				if p := checkEnvName(kv[0].Value); p != nil {
					d.fail(kv[0], kf, p)
					continue
				}
				val, ok := d.str(kv[1], kf)
				if !ok {
					continue
				}
				if strings.ContainsRune(val, 0) || len(val) > 32<<10 {
					d.failf(kv[1], kf, "write a value under 32 KiB without NUL bytes", "value cannot be passed to a program")
					continue
				}
				r.envSet.v = append(r.envSet.v, item[[2]string]{v: [2]string{kv[0].Value, val}, n: kv[0], field: kf, file: d.file})
			}
		}
	}
	if v, ok := fs["degrade"]; ok {
		r.degrade = d.strList(v, f+".degrade", func(s string) (string, *problem) { return s, checkLayer(s) })
	}
	return r
}

func (d *decoder) hostRules(n *yaml.Node, field string) opt[[]item[HostRule]] {
	out := opt[[]item[HostRule]]{set: true, n: n, field: field, v: []item[HostRule]{}}
	elems, _ := d.seq(n, field)
	for i, e := range elems {
		f := fmt.Sprintf("%s[%d]", field, i)
		if e.Kind == yaml.ScalarNode && e.ShortTag() == "!!str" {
			d.failf(e, f, fmt.Sprintf("write a rule: - host: %s", e.Value), "must be a rule with host:, not the text %q", e.Value)
			continue
		}
		m := d.fields(e, f, "profiles.*.network.allow[]")
		if isNull(e) {
			d.failf(e, f, "write a rule such as {host: registry.example.com}", "empty rule")
			continue
		}
		rule := HostRule{Line: e.Line}
		ok := true
		if v, has := m["host"]; !has {
			if e.Kind == yaml.MappingNode {
				d.failf(e, f+".host", "add host: registry.example.com", "missing")
			}
			ok = false
		} else if s, good := d.str(v, f+".host"); good {
			h, p := normalizeHostPattern(s)
			if p != nil {
				d.fail(v, f+".host", p)
				ok = false
			}
			rule.Host = h
		} else {
			ok = false
		}
		if v, has := m["ports"]; has {
			ps, good := d.seq(v, f+".ports")
			ok = ok && good
			for j, pn := range ps {
				pf := fmt.Sprintf("%s.ports[%d]", f, j)
				var port int
				if pn.Kind != yaml.ScalarNode || pn.ShortTag() != "!!int" || pn.Decode(&port) != nil {
					hint := "write a number like 443"
					if pn.Value == "https" {
						hint = "write 443"
					} else if pn.Value == "http" {
						hint = "write 80"
					}
					d.failf(pn, pf, hint, "%q is not a port number", pn.Value)
					ok = false
					continue
				}
				if port < 1 || port > 65535 {
					d.failf(pn, pf, "write a number from 1 to 65535", "%d is not a port number", port)
					ok = false
					continue
				}
				if slices.Contains(rule.Ports, port) {
					d.failf(pn, pf, "remove one of them", "port %d is listed twice", port)
					continue
				}
				rule.Ports = append(rule.Ports, port)
			}
			if good && len(ps) == 0 {
				d.failf(v, f+".ports", "remove ports to allow 443 and 80, or list the ports", "empty list allows no port")
				ok = false
			}
		}
		if v, has := m["methods"]; has {
			l := d.strList(v, f+".methods", normalizeMethod)
			for _, it := range l.v {
				rule.Methods = append(rule.Methods, it.v)
			}
		}
		if v, has := m["paths"]; has {
			l := d.strList(v, f+".paths", func(s string) (string, *problem) { return s, checkHTTPPathGlob(s) })
			for _, it := range l.v {
				rule.Paths = append(rule.Paths, it.v)
			}
		}
		if v, has := m["allow_connect"]; has {
			b, good := d.boolean(v, f+".allow_connect")
			ok = ok && good
			rule.AllowConnect = b
		}
		if ok {
			out.v = append(out.v, item[HostRule]{v: rule, n: e, field: f, file: d.file})
		}
	}
	return out
}

func (d *decoder) classification(n *yaml.Node, raw *rawPolicy) {
	if n == nil {
		return
	}
	m := d.fields(n, "classification", "classification")
	if v, ok := m["levels"]; ok {
		raw.levels = d.strList(v, "classification.levels", func(s string) (string, *problem) { return s, checkLevelName(s) })
		if len(raw.levels.v) == 0 {
			d.failf(v, "classification.levels", "list the levels from least to most sensitive, e.g. [public, internal, confidential, restricted]", "no levels")
		}
	}
	if v, ok := m["default"]; ok {
		if s, ok := d.str(v, "classification.default"); ok {
			raw.deflt = opt[string]{set: true, v: s, n: v, field: "classification.default"}
		}
	}
	if v, ok := m["action"]; ok {
		if s, ok := d.str(v, "classification.action"); ok {
			if s != ActionBlock && s != ActionRedact {
				d.failf(v, "classification.action", "write block or redact", "%q is not an action", s)
			}
			raw.action = opt[string]{set: true, v: s, n: v, field: "classification.action"}
		}
	}
	if v, ok := m["paths"]; ok {
		raw.paths = opt[[]item[ClassPath]]{set: true, n: v, field: "classification.paths", v: []item[ClassPath]{}}
		elems, _ := d.seq(v, "classification.paths")
		for i, e := range elems {
			f := fmt.Sprintf("classification.paths[%d]", i)
			pm := d.fields(e, f, "classification.paths[]")
			cp := ClassPath{Line: e.Line}
			ok := true
			for _, k := range []string{"path", "level"} {
				if _, has := pm[k]; !has && e.Kind == yaml.MappingNode {
					d.failf(e, f+"."+k, fmt.Sprintf("add %s:", k), "missing")
					ok = false
				}
			}
			if pv, has := pm["path"]; has {
				if s, good := d.str(pv, f+".path"); good {
					g, p := normalizeWorkspaceGlob(s)
					if p != nil {
						d.fail(pv, f+".path", p)
						ok = false
					}
					cp.Path = g
				} else {
					ok = false
				}
			}
			if lv, has := pm["level"]; has {
				s, good := d.str(lv, f+".level")
				ok = ok && good
				cp.Level = s
			}
			if ok && e.Kind == yaml.MappingNode {
				raw.paths.v = append(raw.paths.v, item[ClassPath]{v: cp, n: pm["level"], field: f + ".level", file: d.file})
			}
		}
	}
}

func (d *decoder) materializeClass(raw *rawPolicy) Classification {
	c := Classification{Default: raw.deflt.v, Action: raw.action.v}
	for _, l := range raw.levels.v {
		c.Levels = append(c.Levels, l.v)
	}
	if !raw.levels.set || !raw.deflt.set || !raw.action.set || !raw.paths.set {
		d.failf(nil, "classification", "the built-in defaults must set every setting", "incomplete")
		return c
	}
	if len(c.Levels) > 0 && c.Rank(c.Default) < 0 {
		d.failf(raw.deflt.n, raw.deflt.field, "levels: "+strings.Join(c.Levels, ", "), "%q is not a level", c.Default)
	}
	for _, it := range raw.paths.v {
		if len(c.Levels) > 0 && c.Rank(it.v.Level) < 0 {
			if it.file != d.file {
				d.failf(raw.levels.n, "classification.levels", "set classification.paths too, using your level names", "the built-in classification.paths use level %q, which these levels do not define", it.v.Level)
				break
			}
			d.failf(it.n, it.field, "levels: "+strings.Join(c.Levels, ", "), "%q is not a level", it.v.Level)
			continue
		}
		c.Paths = append(c.Paths, it.v)
	}
	return c
}

func (d *decoder) gateway(n *yaml.Node, raw *rawPolicy) {
	if n == nil {
		return
	}
	m := d.fields(n, "gateway", "gateway")
	b, ok := m["budget"]
	if !ok {
		return
	}
	bm := d.fields(b, "gateway.budget", "gateway.budget")
	for _, s := range []struct {
		key string
		dst *opt[int64]
	}{{"tokens", &raw.tokens}, {"requests", &raw.requests}} {
		if v, ok := bm[s.key]; ok {
			f := "gateway.budget." + s.key
			if c, ok := d.count(v, f, math.MaxInt64, "write a number like 1000000"); ok {
				*s.dst = opt[int64]{set: true, v: c, n: v, field: f}
			}
		}
	}
}

func (d *decoder) provider(n *yaml.Node, name string, key *yaml.Node, c *Classification) Provider {
	f := "providers." + name
	pv := Provider{Name: name, Line: key.Line}
	if p := checkProfileName(name); p != nil {
		d.fail(key, f, bad("use letters, digits, - and _", "%q is not a provider name", name))
	}
	m := d.fields(n, f, "providers.*")
	if v, ok := m["api"]; !ok {
		d.failf(key, f+".api", "add api: anthropic, openai or gemini", "missing")
	} else if s, ok := d.str(v, f+".api"); ok {
		if s != APIAnthropic && s != APIOpenAI && s != APIGemini {
			d.failf(v, f+".api", "write anthropic, openai or gemini", "%q is not an API enclave's gateway speaks", s)
		}
		pv.API = s
	}
	if v, ok := m["base_url"]; !ok {
		d.failf(key, f+".base_url", "add base_url: https://llm.example.com", "missing")
	} else if s, ok := d.str(v, f+".base_url"); ok {
		if p := checkBaseURL(s); p != nil {
			d.fail(v, f+".base_url", p)
		}
		pv.BaseURL = strings.TrimSuffix(s, "/")
	}
	if v, ok := m["key_env"]; ok {
		if s, ok := d.str(v, f+".key_env"); ok {
			if !validEnvName(s) {
				d.failf(v, f+".key_env", "write a variable name such as LLM_API_KEY", "%q is not a variable name", s)
			}
			pv.KeyEnv = s
		}
	}
	if v, ok := m["key_file"]; ok {
		if s, ok := d.str(v, f+".key_file"); ok {
			kp, p := hostPath(s, d.home, d.homeErr)
			if p != nil {
				d.fail(v, f+".key_file", p)
			}
			pv.KeyFile = kp
		}
		if pv.KeyEnv != "" {
			d.failf(v, f+".key_file", "keep key_env or key_file, not both", "both key_env and key_file are set")
		}
	}
	if v, ok := m["models"]; !ok {
		d.failf(key, f+".models", `list the sanctioned model ids or globs, e.g. [claude-sonnet-4-5, "claude-haiku-*"]; "*" sanctions every model`, "missing")
	} else {
		l := d.strList(v, f+".models", func(s string) (string, *problem) { return s, checkModelGlob(s) })
		for _, it := range l.v {
			pv.Models = append(pv.Models, it.v)
		}
		if isNull(v) || v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
			d.failf(v, f+".models", `list model ids or globs; "*" sanctions every model`, "empty list sanctions no model")
		}
	}
	if v, ok := m["terms"]; ok {
		tm := d.fields(v, f+".terms", "providers.*.terms")
		if tv, ok := tm["training"]; ok {
			if b, ok := d.boolean(tv, f+".terms.training"); ok {
				pv.Terms.Training = &b
			}
		}
		if tv, ok := tm["retention"]; ok {
			if tv.Kind == yaml.ScalarNode && tv.Value == "none" && tv.ShortTag() == "!!str" {
				var zero time.Duration
				pv.Terms.Retention = &zero
			} else if dur, ok := d.duration(tv, f+".terms.retention"); ok {
				pv.Terms.Retention = &dur
			}
		}
		if tv, ok := tm["region"]; ok {
			if s, ok := d.str(tv, f+".terms.region"); ok {
				if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(s) > 64 {
					d.failf(tv, f+".terms.region", `write a short region name such as "eu" or "us-east"`, "%q is not a region", s)
				}
				pv.Terms.Region = s
			}
		}
	}
	pv.Clearance = c.Default
	if v, ok := m["clearance"]; ok {
		if s, ok := d.str(v, f+".clearance"); ok {
			if c.Rank(s) < 0 {
				d.failf(v, f+".clearance", "levels: "+strings.Join(c.Levels, ", "), "%q is not a classification level", s)
			}
			pv.Clearance = s
		}
	}
	return pv
}
