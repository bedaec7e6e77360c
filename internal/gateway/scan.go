package gateway

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
)

// opaqueKeys hold values the provider issued and checks byte for byte
// (thinking signatures, encrypted reasoning) or binary payloads; they are
// forwarded unscanned because changing them breaks the protocol.
var opaqueKeys = map[string]bool{
	"signature": true, "encrypted_content": true, "thoughtSignature": true, "thought_signature": true,
	"model": true,
}

// Walk calls fn on every string value in a decoded JSON body that may carry
// prompt text (message content, system prompts, tool inputs and results,
// tool descriptions), replacing it with fn's result. Object keys and opaque
// values (see opaqueKeys, base64 media "data" next to a media type, and
// data: URLs) are left alone. It reports whether anything changed. The walk
// is iterative-safe for any nesting the JSON decoder accepts.
func Walk(v any, fn func(s string) (string, bool)) (any, bool) {
	return walk(v, "", nil, fn)
}

func walk(v any, key string, parent map[string]any, fn func(string) (string, bool)) (any, bool) {
	switch t := v.(type) {
	case string:
		if opaqueKeys[key] || key == "data" && parent != nil && isMedia(parent) || isDataURL(t) {
			return t, false
		}
		return fn(t)
	case map[string]any:
		changed := false
		for k, e := range t {
			nv, c := walk(e, k, t, fn)
			if c {
				t[k] = nv
				changed = true
			}
		}
		return t, changed
	case []any:
		changed := false
		for i, e := range t {
			nv, c := walk(e, key, nil, fn)
			if c {
				t[i] = nv
				changed = true
			}
		}
		return t, changed
	}
	return v, false
}

func isMedia(m map[string]any) bool {
	_, a := m["media_type"]
	_, b := m["mimeType"]
	_, c := m["mime_type"]
	return a || b || c
}

func isDataURL(s string) bool {
	if !strings.HasPrefix(s, "data:") {
		return false
	}
	i := strings.IndexByte(s, ',')
	return i > 0 && i < 200 && strings.HasSuffix(s[:i], ";base64")
}

// inspection is what the content checks found in one request.
type inspection struct {
	modified   bool
	redactions []Redaction
	hits       []Hit
	block      string // non-empty: refuse with this message
	rule       string
	level      int // highest classified level being sent, -1 none
	levelFrom  string
}

// inspect redacts secrets in root (in place) and checks it against the
// session's classified files and sticky sensitivity for provider p.
func (s *Session) inspect(root map[string]any, p *provider) inspection {
	ins := inspection{level: -1}
	levels := s.g.levels
	s.mu.Lock()
	sent, from := s.sentMax, s.sentFrom
	s.mu.Unlock()
	if sent > p.clearance {
		ins.block = fmt.Sprintf("this session already sent %s content (from %s) to a model; %s is cleared only up to %s, so the session may not use it any more",
			levels[sent], from, p.Name, levels[p.clearance])
		ins.rule = "classification.sticky"
		return ins
	}
	rd := s.newRedactor()
	redactClassified := s.g.cfg.OnClassified == classifiedActionRedact
	var blocked []string
	_, changed := Walk(root, func(str string) (string, bool) {
		out, changed, matches := s.scanString(rd, str)
		var spans []Match
		for _, m := range matches {
			h := Hit{Path: m.Path, Level: levels[m.Level], StartLine: m.FileStart, EndLine: m.FileEnd, Matched: m.Matched}
			switch {
			case m.Level <= p.clearance:
				h.Action = "allowed"
				if m.Level > ins.level {
					ins.level, ins.levelFrom = m.Level, m.Path
				}
			case redactClassified:
				h.Action = "redacted"
				spans = append(spans, m)
			default:
				h.Action = "blocked"
				blocked = append(blocked, fmt.Sprintf("%s lines %d-%d (%s)", m.Path, m.FileStart, m.FileEnd, levels[m.Level]))
			}
			ins.hits = append(ins.hits, h)
		}
		// Replace from the bottom up so earlier line numbers stay valid;
		// overlapping spans merge into the one that starts first.
		slices.SortFunc(spans, func(a, b Match) int { return b.TextStart - a.TextStart })
		floor := int(^uint(0) >> 1)
		for _, m := range spans {
			end := min(m.TextEnd, floor-1)
			if end < m.TextStart {
				continue
			}
			out = redactLines(out, m.TextStart, end, fmt.Sprintf("[REDACTED:classified:%s:%s]", levels[m.Level], m.Path))
			floor = m.TextStart
			changed = true
		}
		return out, changed
	})
	ins.modified = changed
	ins.redactions = rd.list()
	if len(blocked) > 0 {
		ins.rule = "classification"
		ins.block = fmt.Sprintf("the prompt contains classified content above the clearance of %s (cleared up to %s): %s; remove it from the conversation or use a model cleared for it",
			p.Name, levels[p.clearance], strings.Join(blocked, "; "))
		ins.level = -1
	}
	return ins
}

// redactLines replaces lines start..end (1-based, inclusive) of s with ph.
func redactLines(s string, start, end int, ph string) string {
	lines := strings.SplitAfter(s, "\n")
	if start < 1 || start > len(lines) {
		return s
	}
	end = min(end, len(lines))
	var b strings.Builder
	for _, l := range lines[:start-1] {
		b.WriteString(l)
	}
	b.WriteString(ph)
	if strings.HasSuffix(lines[end-1], "\n") {
		b.WriteByte('\n')
	}
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return b.String()
}

// noteSent raises the session's sticky sensitivity to level.
func (s *Session) noteSent(level int, from string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if level > s.sentMax {
		s.sentMax, s.sentFrom = level, from
	}
}

// scanCacheMin is the smallest string worth caching: agents resend the
// whole conversation every turn, so long strings repeat request after
// request and their scan result can be reused.
const (
	scanCacheMin = 512
	scanCacheMax = 8192
)

type scanResult struct {
	out     string
	changed bool
	found   []Redaction // redactions this string produced, Count per occurrence
	matches []Match
}

// scanString redacts secrets in str and matches it against the classified
// files, reusing the result for a string seen before in this session.
func (s *Session) scanString(rd *redactor, str string) (string, bool, []Match) {
	if len(str) < scanCacheMin {
		out, changed := rd.redact(str)
		return out, changed, s.index.Match(out)
	}
	key := sha256.Sum256([]byte(str))
	s.cacheMu.Lock()
	r, ok := s.cache[key]
	s.cacheMu.Unlock()
	if ok {
		rd.add(r.found)
		return r.out, r.changed, r.matches
	}
	sub := rd.fork()
	out, changed := sub.redact(str)
	r = &scanResult{out: out, changed: changed, found: sub.list(), matches: s.index.Match(out)}
	rd.add(r.found)
	s.cacheMu.Lock()
	if len(s.cache) >= scanCacheMax {
		clear(s.cache) // crude but bounded; a later turn refills it
	}
	s.cache[key] = r
	s.cacheMu.Unlock()
	return r.out, r.changed, r.matches
}
