package review

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/enclave-dev/enclave/internal/policy"
)

// OwnerRule is one line of a CODEOWNERS-style file.
type OwnerRule struct {
	Pattern string
	Owners  []string // without the leading '@'
	Line    int
}

// Owners is a parsed CODEOWNERS-style file: every path a rule matches is
// protected, and only the rule's owners may approve a change to it. As in
// CODEOWNERS, the last matching rule wins; a rule with no owners unprotects
// the paths it matches.
type Owners struct {
	Source string
	Hash   string
	Rules  []OwnerRule
	// Always are paths protected whatever the rules say: enclave's own
	// governance files (see [GovernancePaths]). A rule naming owners for
	// one of them says who may approve a change to it; without such a
	// rule nobody can, and the change must be made by a person.
	Always []string
}

// GovernancePaths are the repository-relative files that govern enclave
// itself: the sandbox policy, the Cedar policies, the review config and
// the owners files. An agent's change to them would govern the next
// sessions, so they are always protected.
func GovernancePaths(c *Config) []string {
	out := []string{"enclave.yaml", "enclave.cedar", ConfigFile}
	out = append(out, ownersCandidates...)
	if c != nil && c.Owners != "" && !slices.Contains(out, c.Owners) {
		out = append(out, filepath.ToSlash(filepath.Clean(c.Owners)))
	}
	return out
}

// ownersCandidates are tried in order when Config.Owners is empty.
var ownersCandidates = []string{"CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS"}

// LoadOwners reads the owners file for the repository at top (the user's
// own checkout, never the agent's copy: an agent must not be able to make
// itself the owner of what it changed). No file means no protected paths.
func LoadOwners(top string, c *Config) (*Owners, error) {
	names := ownersCandidates
	if c.Owners != "" {
		names = []string{c.Owners}
	}
	for _, n := range names {
		p := filepath.Join(top, filepath.FromSlash(n))
		data, err := readSmall(p)
		if errors.Is(err, fs.ErrNotExist) {
			if c.Owners != "" {
				return nil, fmt.Errorf("owners file %q named in %s does not exist: %w", p, c.Source, ErrInvalidConfig)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		o, err := ParseOwners(p, data)
		if err != nil {
			return nil, err
		}
		o.Always = GovernancePaths(c)
		return o, nil
	}
	return &Owners{Source: "none", Always: GovernancePaths(c)}, nil
}

// ParseOwners parses CODEOWNERS text.
func ParseOwners(name string, data []byte) (*Owners, error) {
	o := &Owners{Source: name, Hash: sha256Hex(data)}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, " #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		r := OwnerRule{Pattern: f[0], Line: n}
		if strings.HasPrefix(r.Pattern, "!") || strings.Contains(r.Pattern, "\\") {
			return nil, fmt.Errorf("%s:%d: pattern %q: negation and escapes are not supported: %w", name, n, r.Pattern, ErrInvalidConfig)
		}
		if strings.Contains(r.Pattern, "[") {
			return nil, fmt.Errorf("%s:%d: pattern %q: character ranges are not supported: %w", name, n, r.Pattern, ErrInvalidConfig)
		}
		for _, ow := range f[1:] {
			ow = strings.TrimPrefix(ow, "@")
			if ow == "" {
				return nil, fmt.Errorf("%s:%d: empty owner: %w", name, n, ErrInvalidConfig)
			}
			r.Owners = append(r.Owners, ow)
		}
		o.Rules = append(o.Rules, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	return o, nil
}

// OwnersOf returns the owners of a repository-relative path and whether it
// is protected.
func (o *Owners) OwnersOf(rel string) ([]string, bool) {
	always := slices.Contains(o.Always, rel)
	for i := len(o.Rules) - 1; i >= 0; i-- {
		r := o.Rules[i]
		if matchOwner(r.Pattern, rel) {
			return r.Owners, len(r.Owners) > 0 || always
		}
	}
	return nil, always
}

// Protected returns the protected paths among paths, sorted.
func (o *Owners) Protected(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, ok := o.OwnersOf(p); ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Owns reports whether user owns path.
func (o *Owners) Owns(user, rel string) bool {
	owners, ok := o.OwnersOf(rel)
	return ok && slices.Contains(owners, user)
}

func matchOwner(pattern, rel string) bool {
	p := strings.TrimSuffix(pattern, "/")
	if p == "*" || p == "/*" && !strings.Contains(rel, "/") {
		return true
	}
	if strings.HasPrefix(p, "/") {
		p = strings.TrimPrefix(p, "/")
		if !strings.Contains(p, "/") {
			// Anchored single segment: the top-level entry and all below.
			first, _, _ := strings.Cut(rel, "/")
			ok, _ := path.Match(p, first)
			return ok
		}
	}
	return policy.MatchWorkspace(p, rel)
}
