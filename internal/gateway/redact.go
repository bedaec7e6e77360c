package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed rules.toml
var builtinRules []byte

// ruleFile is the subset of the gitleaks configuration format the gateway
// understands. Unknown keys are rejected so a typo does not silently drop a
// rule.
type ruleFile struct {
	Title     string         `toml:"title"`
	Allowlist *allowlistSpec `toml:"allowlist"`
	Rules     []struct {
		ID          string          `toml:"id"`
		Description string          `toml:"description"`
		Regex       string          `toml:"regex"`
		SecretGroup int             `toml:"secretGroup"`
		Entropy     float64         `toml:"entropy"`
		Keywords    []string        `toml:"keywords"`
		Tags        []string        `toml:"tags"`
		Allowlist   *allowlistSpec  `toml:"allowlist"`
		Allowlists  []allowlistSpec `toml:"allowlists"`
	} `toml:"rules"`
}

type allowlistSpec struct {
	Description string   `toml:"description"`
	Regexes     []string `toml:"regexes"`
	Stopwords   []string `toml:"stopwords"`
}

type rule struct {
	id        string
	re        *regexp.Regexp
	group     int
	entropy   float64
	keywords  []string
	kwIDs     []int // indexes of keywords in ruleSet.kws
	allow     []*regexp.Regexp
	stopwords []string
}

type ruleSet struct {
	rules []rule
	allow []*regexp.Regexp

	// The keyword prefilter: which rules' keywords occur in a string is
	// found in one pass over it, not one strings.Contains per keyword.
	kws      []string         // distinct keywords, lowercased
	lead     *[1 << 16]bool   // two-byte prefixes of keywords
	byLead   map[uint16][]int // keyword indexes by their two-byte prefix
	shortKws []int            // keywords of one byte
}

// indexKeywords builds the keyword prefilter.
func (rs *ruleSet) indexKeywords() {
	ids := map[string]int{}
	rs.lead = new([1 << 16]bool)
	rs.byLead = map[uint16][]int{}
	for i := range rs.rules {
		r := &rs.rules[i]
		for _, k := range r.keywords {
			if k == "" {
				continue
			}
			id, ok := ids[k]
			if !ok {
				id = len(rs.kws)
				ids[k] = id
				rs.kws = append(rs.kws, k)
				if len(k) == 1 {
					rs.shortKws = append(rs.shortKws, id)
				} else {
					l := uint16(k[0])<<8 | uint16(k[1])
					rs.lead[l] = true
					rs.byLead[l] = append(rs.byLead[l], id)
				}
			}
			r.kwIDs = append(r.kwIDs, id)
		}
	}
}

// present reports which keywords occur in lower (already lowercased).
func (rs *ruleSet) present(lower string) []bool {
	p := make([]bool, len(rs.kws))
	for _, id := range rs.shortKws {
		p[id] = strings.Contains(lower, rs.kws[id])
	}
	for i := 0; i+1 < len(lower); i++ {
		l := uint16(lower[i])<<8 | uint16(lower[i+1])
		if !rs.lead[l] {
			continue
		}
		for _, id := range rs.byLead[l] {
			if !p[id] && strings.HasPrefix(lower[i:], rs.kws[id]) {
				p[id] = true
			}
		}
	}
	return p
}

// loadRules parses a gitleaks-format rule file; nil means the built-in one.
func loadRules(src []byte) (*ruleSet, error) {
	name := "built-in secret rules"
	if src == nil {
		src = builtinRules
	} else {
		name = "secret rules"
	}
	var f ruleFile
	md, err := toml.Decode(string(src), &f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%w: %s: unknown key %q", ErrConfig, name, und[0].String())
	}
	rs := &ruleSet{}
	compile := func(where string, specs ...*allowlistSpec) ([]*regexp.Regexp, []string, error) {
		var res []*regexp.Regexp
		var stop []string
		for _, a := range specs {
			if a == nil {
				continue
			}
			for i, s := range a.Regexes {
				re, err := regexp.Compile(s)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: %s: %s allowlist regexes[%d]: %w", ErrConfig, name, where, i, err)
				}
				res = append(res, re)
			}
			for _, w := range a.Stopwords {
				stop = append(stop, strings.ToLower(w))
			}
		}
		return res, stop, nil
	}
	rs.allow, _, err = compile("global", f.Allowlist)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for i, r := range f.Rules {
		where := fmt.Sprintf("rules[%d] (%s)", i, r.ID)
		if r.ID == "" || ids[r.ID] {
			return nil, fmt.Errorf("%w: %s: %s: id is empty or repeated", ErrConfig, name, where)
		}
		ids[r.ID] = true
		if r.Regex == "" {
			// Path-only gitleaks rules match file names, not content.
			continue
		}
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %s: regex: %w", ErrConfig, name, where, err)
		}
		if r.SecretGroup < 0 || r.SecretGroup > re.NumSubexp() {
			return nil, fmt.Errorf("%w: %s: %s: secretGroup %d but the regex has %d groups", ErrConfig, name, where, r.SecretGroup, re.NumSubexp())
		}
		specs := []*allowlistSpec{r.Allowlist}
		for j := range r.Allowlists {
			specs = append(specs, &r.Allowlists[j])
		}
		allow, stop, err := compile(where, specs...)
		if err != nil {
			return nil, err
		}
		kw := make([]string, len(r.Keywords))
		for j, k := range r.Keywords {
			kw[j] = strings.ToLower(k)
		}
		rs.rules = append(rs.rules, rule{id: r.ID, re: re, group: r.SecretGroup, entropy: r.Entropy,
			keywords: kw, allow: allow, stopwords: stop})
	}
	if len(rs.rules) == 0 {
		return nil, fmt.Errorf("%w: %s: no rules with a regex", ErrConfig, name)
	}
	rs.indexKeywords()
	return rs, nil
}

// finding is one secret in a string: s[start:end].
type finding struct {
	start, end int
	rule       string
}

// find returns the non-overlapping secrets in s, in order. Earlier rules
// win where two overlap.
func (rs *ruleSet) find(s string) []finding {
	var present []bool
	var out []finding
	for i := range rs.rules {
		r := &rs.rules[i]
		if len(r.kwIDs) > 0 {
			if present == nil {
				present = rs.present(strings.ToLower(s))
			}
			if !slices.ContainsFunc(r.kwIDs, func(id int) bool { return present[id] }) {
				continue
			}
		}
		for _, m := range r.re.FindAllStringSubmatchIndex(s, -1) {
			a, b := m[2*r.group], m[2*r.group+1]
			if a < 0 || a == b {
				continue
			}
			sec := s[a:b]
			if r.entropy > 0 && shannon(sec) < r.entropy {
				continue
			}
			if rs.allowed(r, sec) {
				continue
			}
			if overlaps(out, a, b) {
				continue
			}
			out = append(out, finding{a, b, r.id})
		}
	}
	slices.SortFunc(out, func(x, y finding) int { return x.start - y.start })
	return out
}

func (rs *ruleSet) allowed(r *rule, sec string) bool {
	for _, re := range rs.allow {
		if re.MatchString(sec) {
			return true
		}
	}
	for _, re := range r.allow {
		if re.MatchString(sec) {
			return true
		}
	}
	if len(r.stopwords) > 0 {
		l := strings.ToLower(sec)
		for _, w := range r.stopwords {
			if strings.Contains(l, w) {
				return true
			}
		}
	}
	return false
}

func overlaps(fs []finding, a, b int) bool {
	for _, f := range fs {
		if a < f.end && f.start < b {
			return true
		}
	}
	return false
}

// shannon is the Shannon entropy of s in bits per byte.
func shannon(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	n := float64(len(s))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// redactor replaces secrets in one request and remembers what it did.
type redactor struct {
	rules   *ruleSet
	salt    []byte
	literal []literalSecret // exact strings always redacted (token, keys)
	found   map[string]*Redaction
	order   []string
}

type literalSecret struct{ value, rule string }

const minLiteralSecret = 8

func (s *Session) newRedactor() *redactor {
	rd := &redactor{salt: s.salt, found: map[string]*Redaction{}}
	if !s.g.cfg.DisableRedaction {
		rd.rules = s.g.rules
	}
	// The session token and the real keys are redacted even with redaction
	// off: an agent that ran `env` must not send either to a model.
	rd.literal = append(rd.literal, literalSecret{string(s.token), "enclave-session-token"})
	for _, p := range s.g.providers {
		rd.literal = append(rd.literal, literalSecret{p.key.value(), "provider-key"})
	}
	return rd
}

// placeholder is stable for a secret within a session: the same secret
// gets the same placeholder, so the model can still tell two apart.
func (rd *redactor) placeholder(rule, sec string) (string, string) {
	m := hmac.New(sha256.New, rd.salt)
	m.Write([]byte(sec))
	h := hex.EncodeToString(m.Sum(nil))
	return fmt.Sprintf("[REDACTED:%s:%s]", rule, h[:6]), h[:16]
}

// redact returns s with secrets replaced, and whether it changed.
func (rd *redactor) redact(s string) (string, bool) {
	fs := rd.findings(s)
	if len(fs) == 0 {
		return s, false
	}
	var b strings.Builder
	last := 0
	for _, f := range fs {
		b.WriteString(s[last:f.start])
		b.WriteString(rd.record(f.rule, s[f.start:f.end]))
		last = f.end
	}
	b.WriteString(s[last:])
	return b.String(), true
}

// record notes one occurrence of secret sec found by rule and returns its
// placeholder.
func (rd *redactor) record(rule, sec string) string {
	ph, h := rd.placeholder(rule, sec)
	key := rule + "\x00" + h
	if r := rd.found[key]; r != nil {
		r.Count++
	} else {
		rd.found[key] = &Redaction{Rule: rule, Hash: h, Placeholder: ph, Count: 1}
		rd.order = append(rd.order, key)
	}
	return ph
}

// redactEncoded replaces every encoded run of s whose decoded text holds a
// secret (views from decodeViews of s) by the secrets' placeholders: the
// rule is named with the encoding ("aws-access-key-id/base64"), and the
// hash is of the secret itself, so it matches the plain occurrence's. The
// whole run goes, since a part of an encoding cannot be cut out cleanly.
func (rd *redactor) redactEncoded(s string, views []view) (string, bool) {
	type cut struct {
		start, end int
		ph         []string
	}
	var cuts []cut
	for _, v := range views {
		fs := rd.findings(v.text)
		if len(fs) == 0 {
			continue
		}
		c := cut{start: v.start, end: v.end}
		for _, f := range fs {
			c.ph = append(c.ph, rd.record(f.rule+"/"+v.enc, v.text[f.start:f.end]))
		}
		cuts = append(cuts, c)
	}
	if len(cuts) == 0 {
		return s, false
	}
	// Overlapping runs (a base64 run inside a percent-encoded span) merge
	// into one cut; then cut from the end so earlier offsets hold.
	slices.SortStableFunc(cuts, func(a, b cut) int { return a.start - b.start })
	merged := cuts[:1]
	for _, c := range cuts[1:] {
		m := &merged[len(merged)-1]
		if c.start < m.end {
			m.end = max(m.end, c.end)
			m.ph = append(m.ph, c.ph...)
			continue
		}
		merged = append(merged, c)
	}
	for i := len(merged) - 1; i >= 0; i-- {
		c := merged[i]
		s = s[:c.start] + strings.Join(slices.Compact(c.ph), " ") + s[c.end:]
	}
	return s, true
}

// findings returns the secrets in s, literal ones (the session token, the
// provider keys) first, in order of position.
func (rd *redactor) findings(s string) []finding {
	var fs []finding
	for _, l := range rd.literal {
		if len(l.value) < minLiteralSecret {
			continue // a key this short would redact ordinary words
		}
		for off := 0; ; {
			i := strings.Index(s[off:], l.value)
			if i < 0 {
				break
			}
			a := off + i
			fs = append(fs, finding{a, a + len(l.value), l.rule})
			off = a + len(l.value)
		}
	}
	if rd.rules != nil {
		for _, f := range rd.rules.find(s) {
			if !overlaps(fs, f.start, f.end) {
				fs = append(fs, f)
			}
		}
	}
	slices.SortFunc(fs, func(x, y finding) int { return x.start - y.start })
	return fs
}

func (rd *redactor) list() []Redaction {
	out := make([]Redaction, 0, len(rd.order))
	for _, k := range rd.order {
		out = append(out, *rd.found[k])
	}
	return out
}

// fork returns a redactor with the same rules and key but no findings.
func (rd *redactor) fork() *redactor {
	return &redactor{rules: rd.rules, salt: rd.salt, literal: rd.literal, found: map[string]*Redaction{}}
}

// add merges findings from a fork (or a cached scan).
func (rd *redactor) add(rs []Redaction) {
	for _, r := range rs {
		key := r.Rule + "\x00" + r.Hash
		if e := rd.found[key]; e != nil {
			e.Count += r.Count
			continue
		}
		c := r
		rd.found[key] = &c
		rd.order = append(rd.order, key)
	}
}
