package workspace

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadPattern is wrapped by errors about a hidden-path pattern.
var ErrBadPattern = errors.New("bad hidden-path pattern")

// Hidden patterns (policy filesystem.hidden) name paths relative to the
// repository root, with slash separators:
//
//   - "*" matches any run of characters within one path segment;
//   - "**" as a whole segment matches any number of segments (zero or more);
//   - a pattern without a slash matches a name at any depth, as in
//     .gitignore: ".env" hides ".env", "app/.env" and "a/b/.env";
//   - a pattern with a slash is anchored at the root: "config/prod.yaml";
//     a leading "/" is allowed and means the same;
//   - a trailing "/" is dropped, and a matched directory hides everything
//     below it, so "secrets" and "secrets/**" both hide the tree.
//
// "?", "[", "\" and a leading "!" are refused rather than given a meaning
// that might differ from what the policy author expects.

// matcher matches repository-relative slash paths against hidden patterns.
type matcher struct {
	pats [][]string // each pattern split into segments
}

func newMatcher(patterns []string) (*matcher, error) {
	m := &matcher{}
	for i, p := range patterns {
		segs, err := compilePattern(p)
		if err != nil {
			return nil, fmt.Errorf("hidden[%d] %q: %w", i, p, err)
		}
		m.pats = append(m.pats, segs)
	}
	return m, nil
}

func compilePattern(p string) ([]string, error) {
	orig := p
	if p == "" {
		return nil, fmt.Errorf("%w: empty pattern", ErrBadPattern)
	}
	if strings.ContainsAny(p, "?[]\\\x00") {
		return nil, fmt.Errorf("%w: only '*' and '**' are supported, not '?', '[', ']' or '\\'", ErrBadPattern)
	}
	if strings.HasPrefix(p, "!") {
		return nil, fmt.Errorf("%w: negation with '!' is not supported", ErrBadPattern)
	}
	anchored := strings.HasPrefix(p, "/")
	p = strings.Trim(p, "/")
	if p == "" {
		return nil, fmt.Errorf("%w: pattern %q names the whole repository", ErrBadPattern, orig)
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("%w: empty path segment (write %q)", ErrBadPattern, path.Clean("/" + p)[1:])
		case s == "." || s == "..":
			return nil, fmt.Errorf("%w: %q segments are not allowed", ErrBadPattern, s)
		case strings.Contains(s, "**") && s != "**":
			return nil, fmt.Errorf("%w: '**' must be a whole path segment, as in \"a/**/b\"", ErrBadPattern)
		}
	}
	if segs[len(segs)-1] == "**" {
		// "x/**" hides x's contents; hiding x itself is the same thing for
		// a directory and hides nothing more for a file named x.
		segs = segs[:len(segs)-1]
		if len(segs) == 0 {
			return nil, fmt.Errorf("%w: pattern %q names the whole repository", ErrBadPattern, orig)
		}
	}
	if !anchored && !strings.Contains(p, "/") {
		segs = append([]string{"**"}, segs...)
	}
	return segs, nil
}

// match reports whether rel (a clean relative slash path) is hidden, either
// itself or because one of its parent directories is.
func (m *matcher) match(rel string) bool {
	if m == nil || len(m.pats) == 0 {
		return false
	}
	segs := strings.Split(rel, "/")
	for _, p := range m.pats {
		if matchPrefix(p, segs) {
			return true
		}
	}
	return false
}

// matchPrefix reports whether pat matches segs or a leading part of segs.
// It simulates the pattern as an automaton over segments, so the cost is
// len(pat)*len(segs) whatever the number of "**": the agent names the
// paths, and a deep path must not make matching explode.
func matchPrefix(pat, segs []string) bool {
	cur := make([]bool, len(pat)+1)
	next := make([]bool, len(pat)+1)
	cur[0] = true
	closure := func(st []bool) bool {
		for i := 0; i < len(pat); i++ {
			if st[i] && pat[i] == "**" {
				st[i+1] = true
			}
		}
		return st[len(pat)]
	}
	if closure(cur) {
		return true
	}
	for _, s := range segs {
		clear(next)
		any := false
		for i := 0; i < len(pat); i++ {
			if !cur[i] {
				continue
			}
			if pat[i] == "**" {
				next[i] = true
				any = true
			} else if matchSeg(pat[i], s) {
				next[i+1] = true
				any = true
			}
		}
		if !any {
			return false
		}
		if closure(next) {
			return true
		}
		cur, next = next, cur
	}
	return false
}

// matchSeg matches one segment with '*' wildcards, iteratively so that
// hostile names cannot make it exponential.
func matchSeg(pat, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			if pat[px] == '*' {
				nextPx, nextSx = px, sx+1
				px++
				continue
			}
			if sx < len(s) && s[sx] == pat[px] {
				px++
				sx++
				continue
			}
		}
		if nextPx >= 0 && nextSx <= len(s) {
			px, sx = nextPx+1, nextSx
			nextSx++
			continue
		}
		return false
	}
	return true
}

// excludeLines renders the patterns as gitignore lines for the shadow's
// info/exclude. This is only an optimisation (git then does not hash
// hidden files the agent created); the authoritative filter is match.
func (m *matcher) excludeLines() string {
	var b strings.Builder
	for _, p := range m.pats {
		// Spaces are escaped: gitignore drops trailing ones.
		b.WriteString("/" + strings.ReplaceAll(strings.Join(p, "/"), " ", "\\ ") + "\n")
	}
	return b.String()
}
