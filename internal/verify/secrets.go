package verify

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed rules.toml
var builtinRules []byte

// secretRule is one compiled gitleaks-format rule.
type secretRule struct {
	id, description string
	re              *regexp.Regexp
	group           int
	entropy         float64
	keywords        []string
	allow           []*regexp.Regexp
	stop            []string
}

type ruleFile struct {
	Allowlist struct {
		Regexes   []string `toml:"regexes"`
		Stopwords []string `toml:"stopwords"`
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
			Regexes   []string `toml:"regexes"`
			Stopwords []string `toml:"stopwords"`
		} `toml:"allowlists"`
	} `toml:"rules"`
}

// loadSecretRules parses a gitleaks-format TOML rule file. Unknown keys
// are an error, so a misspelt field does not silently weaken a rule.
func loadSecretRules(src []byte) ([]*secretRule, error) {
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
		sr := &secretRule{id: r.ID, description: r.Description, re: re, group: r.SecretGroup, entropy: r.Entropy, allow: global, stop: f.Allowlist.Stopwords}
		for _, k := range r.Keywords {
			sr.keywords = append(sr.keywords, strings.ToLower(k))
		}
		for _, al := range r.Allowlists {
			for _, s := range al.Regexes {
				are, err := regexp.Compile(s)
				if err != nil {
					return nil, fmt.Errorf("secret rules: rule %q: allowlist regex %q: %w", r.ID, s, err)
				}
				sr.allow = append(sr.allow, are)
			}
			sr.stop = append(sr.stop, al.Stopwords...)
		}
		out = append(out, sr)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("secret rules: no rule with a regex")
	}
	return out, nil
}

// maxSecretLine bounds the line length the regexes see; longer lines
// (minified code) are scanned in overlapping windows.
const maxSecretLine = 4096

// scanSecrets scans the added lines of every text file in the change.
func scanSecrets(c *changeSet, cfg Config) ([]Finding, error) {
	src := cfg.SecretRules
	if src == nil {
		src = builtinRules
	}
	rules, err := loadSecretRules(src)
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

func scanLine(rules []*secretRule, file string, l line) []Finding {
	var out []Finding
	text := l.Text
	for start := 0; start < len(text) || start == 0; start += maxSecretLine - 256 {
		end := min(start+maxSecretLine, len(text))
		win := text[start:end]
		lower := strings.ToLower(win)
		for _, r := range rules {
			if len(r.keywords) > 0 && !containsAny(lower, r.keywords) {
				continue
			}
			for _, m := range r.re.FindAllStringSubmatchIndex(win, -1) {
				s := win[m[2*r.group]:m[2*r.group+1]]
				if r.entropy > 0 && entropy(s) < r.entropy {
					continue
				}
				if r.allowed(s) {
					continue
				}
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

func containsAny(s string, subs []string) bool {
	for _, k := range subs {
		if strings.Contains(s, k) {
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
