package policy

import (
	"slices"
	"strings"
)

// Allows reports whether the variable name may be passed from the
// launcher's environment into the sandbox: it matches an Allow entry (a
// name, or a prefix ending in "*") and is not forbidden. Forbidden names
// (those enclave sets itself, loader variables such as LD_PRELOAD, host
// socket variables, and names that look like secrets) are refused even when
// a prefix pattern matches them.
func (e *Env) Allows(name string) bool {
	if !validEnvName(name) || envForbidden(name) != "" {
		return false
	}
	for _, a := range e.Allow {
		if prefix, ok := strings.CutSuffix(a, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if a == name {
			return true
		}
	}
	return false
}

// Filter splits a launcher environment ("NAME=value" entries, as from
// os.Environ) into the entries the sandbox may see and the names of those it
// may not. dropped holds names only, never values, so it is safe to log.
// Only the first entry of a repeated name is kept: programs disagree on which
// one counts, and the sandbox must see what the policy checked.
func (e *Env) Filter(environ []string) (kept []string, dropped []string) {
	seen := make(map[string]bool, len(environ))
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || name == "":
			dropped = append(dropped, name)
		case seen[name]:
			dropped = append(dropped, name)
		case e.Allows(name):
			kept = append(kept, kv)
		default:
			dropped = append(dropped, name)
		}
		seen[name] = true
	}
	return kept, dropped
}

// Environ is the agent's environment from the policy's side: Filter's kept
// entries, then Set, which wins over a passed value of the same name, sorted
// by name. The sandbox adds its own variables (PATH, HOME, the proxy and
// gateway variables) after this.
func (e *Env) Environ(launcher []string) []string {
	kept, _ := e.Filter(launcher)
	out := make([]string, 0, len(kept)+len(e.Set))
	for _, kv := range kept {
		name, _, _ := strings.Cut(kv, "=")
		if _, set := e.Set[name]; !set {
			out = append(out, kv)
		}
	}
	for k, v := range e.Set {
		if validEnvName(k) && envForbidden(k) == "" && !strings.ContainsRune(v, 0) {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}
