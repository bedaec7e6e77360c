package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Validate checks a Policy with the rules Parse applies, for a Policy built
// or changed in code (for example by command-line flags that add a host).
// Values must be in the normal form Parse produces: lowercase hosts without
// trailing dots, absolute clean paths with "~" expanded, uppercase methods,
// and every limit set. The returned error is an ErrorList whose entries
// name the setting (no line: there is no file).
func (p *Policy) Validate() error {
	var errs ErrorList
	report := func(field string, pr *problem) {
		if len(errs) <= maxErrors {
			errs = append(errs, &Error{File: p.Source, Field: field, Msg: pr.msg, Hint: pr.hint})
		}
	}
	if p.Version != 1 {
		report("version", bad("set Version to 1", "version %d is not supported", p.Version))
	}
	if _, ok := p.Profiles[p.DefaultProfile]; !ok {
		report("profile", bad(profileHint(p.profileNames()), "no profile named %q", p.DefaultProfile))
	}
	for _, name := range p.profileNames() {
		pr := p.Profiles[name]
		f := "profiles." + name
		if pr == nil {
			report(f, bad("remove it or fill it in", "profile is nil"))
			continue
		}
		if pr.Name != name {
			report(f, bad("make Name match the key", "profile is named %q", pr.Name))
		}
		if p := checkProfileName(name); p != nil {
			report(f, p)
		}
		validateProfile(pr, func(rel string, pb *problem) { report(f+"."+rel, pb) })
	}
	validateClassification(&p.Classification, report)
	for i, pv := range p.Providers {
		validateProvider(&pv, &p.Classification, func(rel string, pb *problem) {
			report(fmt.Sprintf("providers.%s.%s", pv.Name, rel), pb)
		})
		if slices.ContainsFunc(p.Providers[:i], func(o Provider) bool { return o.Name == pv.Name }) {
			report("providers."+pv.Name, bad("rename one", "defined twice"))
		}
	}
	if p.Gateway.Budget.Tokens <= 0 {
		report("gateway.budget.tokens", bad("set a positive number", "%d is not positive", p.Gateway.Budget.Tokens))
	}
	if p.Gateway.Budget.Requests <= 0 {
		report("gateway.budget.requests", bad("set a positive number", "%d is not positive", p.Gateway.Budget.Requests))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// normal checks that norm accepts s and leaves it unchanged.
func normal(s string, norm func(string) (string, *problem)) *problem {
	n, p := norm(s)
	if p != nil {
		return p
	}
	if n != s {
		return bad(fmt.Sprintf("write %q", n), "%q is not in normal form", s)
	}
	return nil
}

func validateProfile(pr *Profile, report func(rel string, p *problem)) {
	abs := func(s string) (string, *problem) {
		if strings.HasPrefix(s, "~") {
			return "", bad("expand ~ before building a Policy in code", "%q is not absolute", s)
		}
		return hostPath(s, "", nil)
	}
	list := func(rel string, l []string, norm func(string) (string, *problem)) {
		for i, s := range l {
			f := fmt.Sprintf("%s[%d]", rel, i)
			if p := normal(s, norm); p != nil {
				report(f, p)
			}
			if slices.Contains(l[:i], s) {
				report(f, bad("remove one of them", "%q is listed twice", s))
			}
		}
	}
	list("filesystem.read_only", pr.Filesystem.ReadOnly, abs)
	list("filesystem.read_write", pr.Filesystem.ReadWrite, abs)
	list("filesystem.hidden", pr.Filesystem.Hidden, normalizeWorkspaceGlob)
	list("exec.allow", pr.Exec.Allow, abs)
	list("env.allow", pr.Env.Allow, func(s string) (string, *problem) { return s, checkEnvPattern(s) })
	list("degrade", pr.Degrade, func(s string) (string, *problem) { return s, checkLayer(s) })
	for k, v := range pr.Env.Set {
		if p := checkEnvName(k); p != nil {
			report("env.set."+k, p)
		}
		if strings.ContainsRune(v, 0) || len(v) > 32<<10 {
			report("env.set."+k, bad("write a value under 32 KiB without NUL bytes", "value cannot be passed to a program"))
		}
	}
	for i, r := range pr.Network.Allow {
		f := fmt.Sprintf("network.allow[%d]", i)
		if p := normal(r.Host, normalizeHostPattern); p != nil {
			report(f+".host", p)
		}
		if r.Ports != nil && len(r.Ports) == 0 {
			report(f+".ports", bad("use nil for 443 and 80", "empty list allows no port"))
		}
		for j, port := range r.Ports {
			if port < 1 || port > 65535 || slices.Contains(r.Ports[:j], port) {
				report(fmt.Sprintf("%s.ports[%d]", f, j), bad("write distinct numbers from 1 to 65535", "%d is not a valid port here", port))
			}
		}
		list(f+".methods", r.Methods, normalizeMethod)
		list(f+".paths", r.Paths, func(s string) (string, *problem) { return s, checkHTTPPathGlob(s) })
	}
	positive := []struct {
		rel string
		v   int64
	}{
		{"network.byte_budget", pr.Network.ByteBudget},
		{"limits.memory", pr.Limits.Memory}, {"limits.processes", int64(pr.Limits.Processes)},
		{"limits.cpu_time", int64(pr.Limits.CPUTime)}, {"limits.file_size", pr.Limits.FileSize},
		{"limits.wall_time", int64(pr.Limits.WallTime)}, {"limits.disk", pr.Limits.Disk},
		{"limits.tmp_size", pr.Limits.TmpSize}, {"limits.open_files", int64(pr.Limits.OpenFiles)},
	}
	for _, l := range positive {
		if l.v <= 0 {
			report(l.rel, bad("set a positive value; Parse fills in the built-in default", "%d is not positive", l.v))
		}
	}
	crossCheck(pr, report)
}

func validateClassification(c *Classification, report func(string, *problem)) {
	if len(c.Levels) == 0 {
		report("classification.levels", bad("list at least one level", "no levels"))
	}
	for i, l := range c.Levels {
		if p := checkLevelName(l); p != nil {
			report(fmt.Sprintf("classification.levels[%d]", i), p)
		}
		if slices.Contains(c.Levels[:i], l) {
			report(fmt.Sprintf("classification.levels[%d]", i), bad("remove one of them", "%q is listed twice", l))
		}
	}
	if c.Rank(c.Default) < 0 {
		report("classification.default", bad("levels: "+strings.Join(c.Levels, ", "), "%q is not a level", c.Default))
	}
	if c.Action != ActionBlock && c.Action != ActionRedact {
		report("classification.action", bad("write block or redact", "%q is not an action", c.Action))
	}
	for i, cp := range c.Paths {
		f := fmt.Sprintf("classification.paths[%d]", i)
		if p := normal(cp.Path, normalizeWorkspaceGlob); p != nil {
			report(f+".path", p)
		}
		if c.Rank(cp.Level) < 0 {
			report(f+".level", bad("levels: "+strings.Join(c.Levels, ", "), "%q is not a level", cp.Level))
		}
	}
}

func validateProvider(pv *Provider, c *Classification, report func(string, *problem)) {
	if p := checkProfileName(pv.Name); p != nil {
		report("name", p)
	}
	if pv.API != APIAnthropic && pv.API != APIOpenAI && pv.API != APIGemini {
		report("api", bad("write anthropic, openai or gemini", "%q is not an API enclave's gateway speaks", pv.API))
	}
	if p := checkBaseURL(pv.BaseURL); p != nil {
		report("base_url", p)
	}
	if pv.KeyEnv != "" && !validEnvName(pv.KeyEnv) {
		report("key_env", bad("write a variable name", "%q is not a variable name", pv.KeyEnv))
	}
	if pv.KeyFile != "" {
		if p := normal(pv.KeyFile, func(s string) (string, *problem) { return hostPath(s, "", nil) }); p != nil || strings.HasPrefix(pv.KeyFile, "~") {
			report("key_file", bad("write an absolute path", "%q is not an absolute clean path", pv.KeyFile))
		}
		if pv.KeyEnv != "" {
			report("key_file", bad("keep key_env or key_file, not both", "both key_env and key_file are set"))
		}
	}
	if len(pv.Models) == 0 {
		report("models", bad(`list model ids or globs; "*" sanctions every model`, "empty list sanctions no model"))
	}
	for i, m := range pv.Models {
		if p := checkModelGlob(m); p != nil {
			report(fmt.Sprintf("models[%d]", i), p)
		}
	}
	if pv.Terms.Retention != nil && *pv.Terms.Retention < 0 {
		report("terms.retention", bad("use 0 for none", "negative"))
	}
	if c.Rank(pv.Clearance) < 0 {
		report("clearance", bad("levels: "+strings.Join(c.Levels, ", "), "%q is not a classification level", pv.Clearance))
	}
}
