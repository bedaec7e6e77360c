package verify

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

//go:embed rules.toml
var builtinRules []byte

// The default secret rules are Enclave's own rules.toml followed by
// gitleaks' rule set, vendored as data in gitleaks/ (MIT, see its README),
// both read by loadSecretRules. A gitleaks rule whose id Enclave also uses
// is renamed "gitleaks-<id>"; where both find the same secret on a line,
// the first rule (Enclave's) reports it.
//
//go:embed gitleaks/gitleaks.toml
var gitleaksRules []byte

// The vendored gitleaks release and the SHA-256 of its rule file; a test
// checks the embedded file against it, so that an edit shows.
const (
	gitleaksVersion     = "v8.30.1"
	gitleaksRulesSHA256 = "e163e53b9e7e8a8511e77271e2b323ed057759542a6d988258afe3a1fa329caf"
)

var defaultRules = sync.OnceValues(func() (*ruleSet, error) {
	own, err := loadSecretRules(builtinRules)
	if err != nil {
		return nil, fmt.Errorf("built-in rules: %w", err)
	}
	gl, err := loadSecretRules(gitleaksRules)
	if err != nil {
		return nil, fmt.Errorf("gitleaks %s rules: %w", gitleaksVersion, err)
	}
	seen := map[string]bool{}
	for _, r := range own.rules {
		seen[r.id] = true
	}
	for _, r := range gl.rules {
		if seen[r.id] {
			r.id = "gitleaks-" + r.id
		}
	}
	return (&ruleSet{rules: append(own.rules, gl.rules...)}).index(), nil
})

// ruleSet is a loaded rule file: its rules and the index of their
// keywords.
type ruleSet struct {
	rules []*secretRule
	kw    *kwIndex
}

// index builds the keyword index; call it after the rules are final.
func (rs *ruleSet) index() *ruleSet {
	ids := map[string]int32{}
	var words []string
	for _, r := range rs.rules {
		r.kwIDs = r.kwIDs[:0]
		for _, w := range r.keywords {
			id, ok := ids[w]
			if !ok {
				id = int32(len(words))
				ids[w] = id
				words = append(words, w)
			}
			r.kwIDs = append(r.kwIDs, id)
		}
	}
	rs.kw = newKWIndex(words)
	return rs
}

// secretRule is one compiled gitleaks-format rule.
type secretRule struct {
	id, description string
	re              *regexp.Regexp
	group           int
	entropy         float64
	keywords        []string
	kwIDs           []int32 // keywords' ids in the rule set's index
	allow           []*regexp.Regexp
	stop            []string
	// lineAllow and matchAllow are allowlist regexes gitleaks applies to
	// the whole line or the whole match (regexTarget) instead of the
	// secret.
	lineAllow, matchAllow []*regexp.Regexp
	// path, if set, limits the rule to files whose path matches.
	path *regexp.Regexp
	// skip lists global path allowlists: files never scanned.
	skip []*regexp.Regexp
}

type ruleFile struct {
	Allowlist struct {
		Regexes   []string `toml:"regexes"`
		Stopwords []string `toml:"stopwords"`
		Paths     []string `toml:"paths"`
	} `toml:"allowlist"`
	Rules []struct {
		ID          string   `toml:"id"`
		Description string   `toml:"description"`
		Regex       string   `toml:"regex"`
		SecretGroup int      `toml:"secretGroup"`
		Entropy     float64  `toml:"entropy"`
		Keywords    []string `toml:"keywords"`
		Path        string   `toml:"path"`
		Allowlists  []struct {
			Regexes     []string `toml:"regexes"`
			Stopwords   []string `toml:"stopwords"`
			RegexTarget string   `toml:"regexTarget"`
			Condition   string   `toml:"condition"`
			Paths       []string `toml:"paths"`
			Description string   `toml:"description"`
		} `toml:"allowlists"`
	} `toml:"rules"`
}

// loadSecretRules parses a gitleaks-format TOML rule file. Unknown keys
// are an error, so a misspelt field does not silently weaken a rule.
func loadSecretRules(src []byte) (*ruleSet, error) {
	var f ruleFile
	md, err := toml.Decode(string(src), &f)
	if err != nil {
		return nil, fmt.Errorf("secret rules: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		// gitleaks' own files carry keys Enclave does not use (tags,
		// extend, ...): only unknown keys inside rules are fatal.
		for _, k := range und {
			if len(k) >= 2 && k[0] == "rules" && k[1] != "tags" {
				return nil, fmt.Errorf("secret rules: unsupported key %q", k.String())
			}
		}
	}
	var global []*regexp.Regexp
	for _, s := range f.Allowlist.Regexes {
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("secret rules: allowlist regex %q: %w", s, err)
		}
		global = append(global, re)
	}
	var skip []*regexp.Regexp
	for _, s := range f.Allowlist.Paths {
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("secret rules: allowlist path %q: %w", s, err)
		}
		skip = append(skip, re)
	}
	var out []*secretRule
	seen := map[string]bool{}
	for i, r := range f.Rules {
		if r.ID == "" || seen[r.ID] {
			return nil, fmt.Errorf("secret rules: rule %d: missing or duplicate id %q", i, r.ID)
		}
		seen[r.ID] = true
		if r.Regex == "" {
			// Path-only rules are not used for added-line scanning.
			continue
		}
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			return nil, fmt.Errorf("secret rules: rule %q: %w", r.ID, err)
		}
		if r.SecretGroup < 0 || r.SecretGroup > re.NumSubexp() {
			return nil, fmt.Errorf("secret rules: rule %q: secretGroup %d but the regex has %d groups", r.ID, r.SecretGroup, re.NumSubexp())
		}
		// Each rule gets its own copy of the global lists: appending its
		// allowlists to a shared slice would let one rule's entries
		// overwrite another's.
		sr := &secretRule{id: r.ID, description: r.Description, re: re, group: r.SecretGroup, entropy: r.Entropy,
			allow: slices.Clone(global), stop: slices.Clone(f.Allowlist.Stopwords), skip: skip}
		if r.Path != "" {
			if sr.path, err = regexp.Compile(r.Path); err != nil {
				return nil, fmt.Errorf("secret rules: rule %q: path %q: %w", r.ID, r.Path, err)
			}
		}
		if r.SecretGroup == 0 && re.NumSubexp() > 0 {
			sr.group = -1 // the first group that matched, as gitleaks does
		}
		for _, k := range r.Keywords {
			sr.keywords = append(sr.keywords, strings.ToLower(k))
		}
		for _, al := range r.Allowlists {
			// An allowlist that holds only when several conditions meet
			// (condition AND) or that names paths cannot be applied to a
			// single line faithfully here: it is left out, so the rule
			// reports more, never less.
			if strings.EqualFold(al.Condition, "AND") || len(al.Paths) > 0 {
				continue
			}
			for _, s := range al.Regexes {
				are, err := regexp.Compile(s)
				if err != nil {
					return nil, fmt.Errorf("secret rules: rule %q: allowlist regex %q: %w", r.ID, s, err)
				}
				switch al.RegexTarget {
				case "", "secret":
					sr.allow = append(sr.allow, are)
				case "line":
					sr.lineAllow = append(sr.lineAllow, are)
				case "match":
					sr.matchAllow = append(sr.matchAllow, are)
				default:
					return nil, fmt.Errorf("secret rules: rule %q: regexTarget %q is not secret, match or line", r.ID, al.RegexTarget)
				}
			}
			sr.stop = append(sr.stop, al.Stopwords...)
		}
		out = append(out, sr)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("secret rules: no rule with a regex")
	}
	return (&ruleSet{rules: out}).index(), nil
}

// maxSecretLine bounds the line length the regexes see; longer lines
// (minified code) are scanned in overlapping windows.
const maxSecretLine = 4096

// scanSecrets scans the added lines of every text file in the change.
func scanSecrets(c *changeSet, cfg Config) ([]Finding, error) {
	rules, err := defaultRules()
	if cfg.SecretRules != nil {
		rules, err = loadSecretRules(cfg.SecretRules)
	}
	if err != nil {
		return nil, err
	}
	var out []Finding
	for _, f := range c.files {
		for _, l := range f.Added {
			out = append(out, scanLine(rules, f.Path, l)...)
		}
	}
	return out, nil
}

func scanLine(rs *ruleSet, file string, l line) []Finding {
	var out []Finding
	seen := make([]bool, rs.kw.n)
	var found map[string]bool // secrets reported on this line
	text := l.Text
	for start := 0; start < len(text) || start == 0; start += maxSecretLine - 256 {
		end := min(start+maxSecretLine, len(text))
		win := text[start:end]
		clear(seen)
		rs.kw.present(strings.ToLower(win), seen)
		for _, r := range rs.rules {
			if len(r.kwIDs) > 0 && !anySeen(seen, r.kwIDs) {
				continue
			}
			if !r.applies(file) {
				continue
			}
			for _, m := range r.re.FindAllStringSubmatchIndex(win, -1) {
				g := r.group
				if g < 0 {
					g = 0
					for i := 1; 2*i+1 < len(m); i++ {
						if m[2*i] >= 0 && m[2*i+1] > m[2*i] {
							g = i
							break
						}
					}
				}
				if m[2*g] < 0 {
					continue
				}
				s := win[m[2*g]:m[2*g+1]]
				if r.entropy > 0 && entropy(s) < r.entropy {
					continue
				}
				if r.allowed(s) || anyMatch(r.matchAllow, win[m[0]:m[1]]) || anyMatch(r.lineAllow, text) {
					continue
				}
				if found[s] {
					continue // an earlier rule reported this secret
				}
				if found == nil {
					found = map[string]bool{}
				}
				found[s] = true
				out = append(out, Finding{Check: CheckSecrets, Rule: r.id, File: file, Line: l.N,
					Message:     fmt.Sprintf("%s: %s", r.description, redact(s)),
					Fingerprint: fingerprint(CheckSecrets, r.id, file, s)})
			}
		}
		if end == len(text) {
			break
		}
	}
	return dedupe(out)
}

// applies reports whether the rule scans file: not on a global path
// allowlist, and within the rule's path if it has one.
func (r *secretRule) applies(file string) bool {
	if anyMatch(r.skip, file) {
		return false
	}
	return r.path == nil || r.path.MatchString(file)
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func (r *secretRule) allowed(s string) bool {
	for _, re := range r.allow {
		if re.MatchString(s) {
			return true
		}
	}
	ls := strings.ToLower(s)
	for _, w := range r.stop {
		if strings.Contains(ls, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

func dedupe(fs []Finding) []Finding {
	seen := map[string]bool{}
	out := fs[:0]
	for _, f := range fs {
		if !seen[f.Fingerprint] {
			seen[f.Fingerprint] = true
			out = append(out, f)
		}
	}
	return out
}

func anySeen(seen []bool, ids []int32) bool {
	for _, id := range ids {
		if seen[id] {
			return true
		}
	}
	return false
}

// redact keeps enough of a secret to find it again, never all of it.
func redact(s string) string {
	if len(s) <= 8 {
		return strings.Repeat("*", len(s))
	}
	return s[:4] + strings.Repeat("*", min(len(s)-4, 16))
}

// entropy is the Shannon entropy of s in bits per byte.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	var h float64
	n := float64(len(s))
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
