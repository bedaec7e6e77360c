package policy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

type srcPos struct {
	file      string
	field     string // where the value was written, e.g. "profiles.base.network.allow[0]"
	line, col int
}

// Profile returns the named profile, or the default profile for "". The
// profile is already resolved: see [Policy.Profiles].
func (p *Policy) Profile(name string) (*Profile, error) {
	if name == "" {
		name = p.DefaultProfile
	}
	if pr, ok := p.Profiles[name]; ok {
		return pr, nil
	}
	names := make([]string, 0, len(p.Profiles))
	for n := range p.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("profile %q (policy %s defines %s): %w", name, p.Source, strings.Join(names, ", "), ErrUnknownProfile)
}

// materialize turns a resolved raw profile into a Profile and checks the
// settings against each other.
func (d *decoder) materialize(r *rawProfile, name string, builtin bool) *Profile {
	pr := &Profile{Name: name, at: map[string]srcPos{}}
	if r.extends.set {
		pr.Extends = r.extends.v
	}
	strs := func(o opt[[]item[string]], rel string) []string {
		var out []string
		for i, it := range o.v {
			out = append(out, it.v)
			pr.at[fmt.Sprintf("%s[%d]", rel, i)] = srcPos{it.file, it.field, it.n.Line, it.n.Column}
		}
		return out
	}
	pr.Filesystem.ReadOnly = strs(r.readOnly, "filesystem.read_only")
	pr.Filesystem.ReadWrite = strs(r.readWrite, "filesystem.read_write")
	pr.Filesystem.Hidden = strs(r.hidden, "filesystem.hidden")
	for i, it := range r.allow.v {
		pr.Network.Allow = append(pr.Network.Allow, it.v)
		pr.at[fmt.Sprintf("network.allow[%d]", i)] = srcPos{it.file, it.field, it.n.Line, it.n.Column}
	}
	pr.Network.ByteBudget = r.byteBudget.v
	pr.Network.DNS = r.dns.v
	pr.Exec.Allow = strs(r.exec, "exec.allow")
	pr.Limits = Limits{
		Memory:    r.memory.v,
		Processes: int(r.processes.v),
		CPUTime:   r.cpuTime.v,
		FileSize:  r.fileSize.v,
		WallTime:  r.wallTime.v,
		Disk:      r.disk.v,
		TmpSize:   r.tmpSize.v,
		OpenFiles: int(r.openFiles.v),
	}
	pr.Env.Allow = strs(r.envAllow, "env.allow")
	if r.envSet.set {
		pr.Env.Set = map[string]string{}
		for _, it := range r.envSet.v {
			pr.Env.Set[it.v[0]] = it.v[1]
			pr.at["env.set."+it.v[0]] = srcPos{it.file, it.field, it.n.Line, it.n.Column}
		}
	}
	pr.Degrade = strs(r.degrade, "degrade")

	if builtin {
		// The built-in defaults are the base of every other profile: a
		// setting they leave out would silently be zero everywhere.
		for _, s := range []struct {
			name string
			set  bool
		}{
			{"filesystem.read_only", r.readOnly.set}, {"filesystem.read_write", r.readWrite.set},
			{"filesystem.hidden", r.hidden.set}, {"network.allow", r.allow.set},
			{"network.byte_budget", r.byteBudget.set}, {"network.dns", r.dns.set},
			{"exec.allow", r.exec.set}, {"limits.memory", r.memory.set},
			{"limits.processes", r.processes.set}, {"limits.cpu_time", r.cpuTime.set},
			{"limits.file_size", r.fileSize.set}, {"limits.wall_time", r.wallTime.set},
			{"limits.disk", r.disk.set}, {"limits.tmp_size", r.tmpSize.set},
			{"limits.open_files", r.openFiles.set}, {"env.allow", r.envAllow.set},
			{"env.set", r.envSet.set}, {"degrade", r.degrade.set},
		} {
			if !s.set {
				d.failf(r.key, "profiles."+name+"."+s.name, "the built-in defaults must set every setting", "missing")
			}
		}
	}
	crossCheck(pr, func(rel string, p *problem) {
		at, ok := pr.at[rel]
		if ok && at.file == d.file {
			d.add(&Error{File: d.file, Line: at.line, Col: at.col, Field: at.field, Msg: p.msg, Hint: p.hint})
			return
		}
		if ok {
			p = bad(p.hint, "%s (inherited from the built-in defaults)", p.msg)
		}
		d.fail(r.key, "profiles."+name+"."+rel, p)
	})
	return pr
}

// crossCheck finds settings of one resolved profile that contradict each
// other or cannot mean what they say. rel is the setting's path within the
// profile.
func crossCheck(pr *Profile, report func(rel string, p *problem)) {
	fs := &pr.Filesystem
	for j, rw := range fs.ReadWrite {
		if i := slices.Index(fs.ReadOnly, rw); i >= 0 {
			report(fmt.Sprintf("filesystem.read_write[%d]", j), bad("keep it in one of read_only and read_write", "%s is also in read_only", rw))
		}
	}
	for _, l := range []struct {
		rel   string
		paths []string
		rw    bool
	}{{"filesystem.read_only", fs.ReadOnly, false}, {"filesystem.read_write", fs.ReadWrite, true}} {
		for i, p := range l.paths {
			if why := unsafeHostPath(p, l.rw); why != "" {
				report(fmt.Sprintf("%s[%d]", l.rel, i), bad("name the specific directories the agent needs", "%s %s", p, why))
			}
		}
	}
	for j, r := range pr.Network.Allow {
		if (len(r.Methods) > 0 || len(r.Paths) > 0) && !r.AllowConnect && len(r.Ports) > 0 && !slices.ContainsFunc(r.Ports, func(p int) bool { return p != 443 }) {
			report(fmt.Sprintf("network.allow[%d]", j), bad("add port 80 (or the plain-HTTP port) for method and path rules, or set allow_connect: true to allow HTTPS tunnels, whose methods and paths the proxy cannot see",
				"methods and paths apply only to plain HTTP, but the rule allows only port 443, where clients tunnel HTTPS with CONNECT; the rule allows nothing"))
		}
		for i, earlier := range pr.Network.Allow[:j] {
			if hostCovers(earlier.Host, r.Host) && portsCover(earlier.Ports, r.Ports) {
				report(fmt.Sprintf("network.allow[%d]", j), bad("merge the two rules, or put the narrower one first",
					"never used: network.allow[%d] (host %s) matches every request it could and comes first", i, earlier.Host))
				break
			}
		}
	}
}

// unsafeHostPath says why p may not be mounted, or "".
func unsafeHostPath(p string, rw bool) string {
	if p == "/" {
		return "is the whole host filesystem; enclave mounts an allowlist, not / minus exceptions"
	}
	for _, k := range []string{"/proc", "/sys", "/dev"} {
		if p == k || strings.HasPrefix(p, k+"/") {
			return "is a kernel interface; the sandbox mounts its own " + k
		}
	}
	if rw {
		for _, k := range []string{"/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/var", "/opt", "/root", "/home", "/run"} {
			if p == k || strings.HasPrefix(k, p+"/") {
				return "would let the agent change the host system"
			}
		}
	}
	return ""
}

func hostCovers(a, b string) bool {
	if a == b {
		return true
	}
	suffix, ok := strings.CutPrefix(a, "*.")
	return ok && strings.HasSuffix(b, "."+suffix)
}

// portsCover: a's ports include all of b's (nil means 80 and 443).
func portsCover(a, b []int) bool {
	if a == nil {
		a = []int{80, 443}
	}
	if b == nil {
		b = []int{80, 443}
	}
	for _, p := range b {
		if !slices.Contains(a, p) {
			return false
		}
	}
	return true
}

// CheckHostPaths refuses a profile that would expose the repository checkout
// or one of Enclave's own protected paths (state directory, audit database,
// the policy file) to the agent. The agent works on a copy of the checkout;
// mounting the real one read-write would let it change the user's files
// unreviewed, and mounting it read-only would show it the files
// filesystem.hidden removes from the copy. Protected paths may not be
// mounted read-write, nor read-only (the audit log is not the agent's to read).
//
// checkout and protected are absolute host paths; the caller resolves
// symlinks in them first. Errors point at the policy line where possible.
func (pr *Profile) CheckHostPaths(file, checkout string, protected ...string) error {
	var errs ErrorList
	report := func(rel string, p *problem) {
		e := &Error{File: file, Field: "profiles." + pr.Name + "." + rel, Msg: p.msg, Hint: p.hint}
		if at, ok := pr.at[rel]; ok && at.file == file {
			e.Field, e.Line, e.Col = at.field, at.line, at.col
		}
		errs = append(errs, e)
	}
	within := func(p, dir string) bool {
		return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
	}
	for _, l := range []struct {
		rel   string
		paths []string
		rw    bool
	}{{"filesystem.read_only", pr.Filesystem.ReadOnly, false}, {"filesystem.read_write", pr.Filesystem.ReadWrite, true}} {
		for i, p := range l.paths {
			rel := fmt.Sprintf("%s[%d]", l.rel, i)
			p = filepath.Clean(p)
			if checkout != "" {
				c := filepath.Clean(checkout)
				switch {
				case l.rw && (within(p, c) || within(c, p)):
					report(rel, bad("remove it: the agent already has its own writable copy of the repository", "%s overlaps the repository checkout %s, which the agent must never write", p, c))
					continue
				case !l.rw && within(c, p) && len(pr.Filesystem.Hidden) > 0:
					report(rel, bad("name narrower directories that do not contain the checkout", "%s contains the repository checkout %s, so the agent could read the files filesystem.hidden removes from its copy", p, c))
					continue
				}
			}
			for _, k := range protected {
				k = filepath.Clean(k)
				if within(p, k) || within(k, p) {
					report(rel, bad("name narrower directories", "%s overlaps %s, which belongs to enclave and must stay out of the agent's reach", p, k))
					break
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
