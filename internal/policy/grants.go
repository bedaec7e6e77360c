package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Grants lists, one line each, what pr allows beyond the built-in default
// profile: hosts, mounted paths, passed or set variables, looser limits and
// accepted degradations. An empty list means pr is no looser than the
// defaults.
//
// enclave.yaml usually comes with the repository, and a repository can be
// hostile: a cloned project's policy can open the network or mount paths.
// The CLI should show these lines before the first run with a policy (or
// with a changed Policy.Hash) and ask the user to accept them.
func (pr *Profile) Grants() []string {
	def := builtinProfile()
	var g []string
	for _, r := range pr.Network.Allow {
		ports := "443, 80"
		if len(r.Ports) > 0 {
			ps := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ps[i] = fmt.Sprint(p)
			}
			ports = strings.Join(ps, ", ")
		}
		line := fmt.Sprintf("network: %s on port %s", r.Host, ports)
		if len(r.Methods) > 0 {
			line += " methods " + strings.Join(r.Methods, ", ")
		}
		if len(r.Paths) > 0 {
			line += " paths " + strings.Join(r.Paths, ", ")
		}
		if r.AllowConnect && (len(r.Methods) > 0 || len(r.Paths) > 0) {
			line += " (and CONNECT tunnels, unchecked)"
		}
		g = append(g, line)
	}
	for _, p := range pr.Filesystem.ReadOnly {
		g = append(g, "read-only: "+p)
	}
	for _, p := range pr.Filesystem.ReadWrite {
		g = append(g, "read-write: "+p)
	}
	for _, a := range pr.Env.Allow {
		if !slices.Contains(def.Env.Allow, a) {
			g = append(g, "environment passed: "+a)
		}
	}
	for _, k := range sortedKeys(pr.Env.Set) {
		g = append(g, "environment set: "+k)
	}
	// exec.allow can only narrow the built-in "any program in the view".
	if pr.Network.ByteBudget > def.Network.ByteBudget {
		g = append(g, fmt.Sprintf("network.byte_budget: %d bytes (default %d)", pr.Network.ByteBudget, def.Network.ByteBudget))
	}
	for _, l := range []struct {
		name      string
		got, dflt int64
	}{
		{"memory", pr.Limits.Memory, def.Limits.Memory},
		{"processes", int64(pr.Limits.Processes), int64(def.Limits.Processes)},
		{"cpu_time", int64(pr.Limits.CPUTime), int64(def.Limits.CPUTime)},
		{"file_size", pr.Limits.FileSize, def.Limits.FileSize},
		{"wall_time", int64(pr.Limits.WallTime), int64(def.Limits.WallTime)},
		{"disk", pr.Limits.Disk, def.Limits.Disk},
		{"tmp_size", pr.Limits.TmpSize, def.Limits.TmpSize},
		{"open_files", int64(pr.Limits.OpenFiles), int64(def.Limits.OpenFiles)},
	} {
		if l.got > l.dflt {
			g = append(g, fmt.Sprintf("limits.%s raised above the default", l.name))
		}
	}
	for _, d := range pr.Degrade {
		g = append(g, "may run without "+d)
	}
	return g
}

func builtinProfile() *Profile {
	p, _ := builtin()
	return p.Profiles[p.DefaultProfile]
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
