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
// tool descriptions, text documents), replacing it with fn's result. Object
// keys and opaque values (see opaqueKeys, and the "data" of a binary media
// block or data: URL, such as an image) are left alone; the data of a text
// media block (text/plain, JSON, source code, octet-stream), base64 or
// not, is prompt text like any other. It reports whether anything changed.
func Walk(v any, fn func(s string) (string, bool)) (any, bool) {
	return walk(v, "", nil, fn)
}

func walk(v any, key string, parent map[string]any, fn func(string) (string, bool)) (any, bool) {
	switch t := v.(type) {
	case string:
		if opaqueKeys[key] || key == "data" && parent != nil && isMedia(parent) && !textMedia(parent) ||
			isDataURL(t) && !isTextDataURL(t) {
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

// textMedia reports whether a media block holds text (a plain-text
// document, JSON, source code): its data is checked like any prompt text,
// base64 or not, since anything can be sent as a "text/plain" document.
func textMedia(m map[string]any) bool {
	for _, k := range []string{"media_type", "mimeType", "mime_type"} {
		if t, ok := m[k].(string); ok && isTextType(t) {
			return true
		}
	}
	return false
}

func isTextType(t string) bool {
	t = strings.ToLower(strings.TrimSpace(t))
	if i := strings.IndexByte(t, ';'); i >= 0 {
		t = t[:i]
	}
	return strings.HasPrefix(t, "text/") || strings.HasSuffix(t, "json") || strings.HasSuffix(t, "xml") ||
		strings.HasSuffix(t, "yaml") || strings.HasSuffix(t, "javascript") || t == "application/x-sh" ||
		t == "application/octet-stream" || t == ""
}

func isTextDataURL(s string) bool {
	i := strings.IndexByte(s, ',')
	return i > 5 && isTextType(strings.TrimSuffix(s[5:i], ";base64"))
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
	overLimit := false
	_, changed := Walk(root, func(str string) (string, bool) {
		out, changed, matches, over := s.scanString(rd, str)
		overLimit = overLimit || over
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
				enc := ""
				if m.Encoding != "" {
					enc = ", " + m.Encoding + "-encoded"
				}
				blocked = append(blocked, fmt.Sprintf("%s lines %d-%d (%s%s)", m.Path, m.FileStart, m.FileEnd, levels[m.Level], enc))
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
	if overLimit {
		// Fail closed: what was not decoded was not checked.
		ins.rule = "inspect.encoded"
		ins.block = fmt.Sprintf("the prompt holds more encoded data (base64, hex, compressed) than the gateway decodes to check it (%d MiB decoded, %d MiB per compressed stream, %d runs per string); send it as plain text or in smaller parts",
			maxDecodedBytes>>20, maxInflateBytes>>20, maxDecodeRuns)
		ins.level = -1
		return ins
	}
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
	over    bool // an encoded run was left undecoded at a limit
}

// scanString redacts secrets in str and matches it against the classified
// files, plain and decoded (see decodeViews), reusing the result for a
// string seen before in this session.
func (s *Session) scanString(rd *redactor, str string) (string, bool, []Match, bool) {
	if len(str) < scanCacheMin {
		r := s.scanOnce(rd, str)
		return r.out, r.changed, r.matches, r.over
	}
	key := sha256.Sum256([]byte(str))
	s.cacheMu.Lock()
	r, ok := s.cache[key]
	s.cacheMu.Unlock()
	if ok {
		rd.add(r.found)
		return r.out, r.changed, r.matches, r.over
	}
	sub := rd.fork()
	r = s.scanOnce(sub, str)
	r.found = sub.list()
	rd.add(r.found)
	s.cacheMu.Lock()
	if len(s.cache) >= scanCacheMax {
		clear(s.cache) // crude but bounded; a later turn refills it
	}
	s.cache[key] = r
	s.cacheMu.Unlock()
	return r.out, r.changed, r.matches, r.over
}

// scanOnce does the work of scanString with rd recording the redactions.
func (s *Session) scanOnce(rd *redactor, str string) *scanResult {
	out, changed := rd.redact(str)
	r := &scanResult{}
	if len(out) >= minEncodedRun {
		views, over := decodeViews(out)
		if o, c := rd.redactEncoded(out, views); c {
			// The runs that held secrets are placeholders now; decode
			// what is left for the classification check.
			out, changed = o, true
			views, over = decodeViews(out)
		}
		r.over = over
		lines := lineStarts(out)
		for _, v := range views {
			for _, m := range s.index.Match(v.text) {
				m.TextStart, m.TextEnd = lineAt(lines, v.start), lineAt(lines, max(v.start, v.end-1))
				m.Encoding = v.enc
				r.matches = append(r.matches, m)
			}
		}
	}
	r.out, r.changed = out, changed
	r.matches = append(s.index.Match(out), r.matches...)
	return r
}

// lineStarts returns the byte offset of each line of s.
func lineStarts(s string) []int {
	starts := []int{0}
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

// lineAt is the 1-based line holding byte off.
func lineAt(starts []int, off int) int {
	i, _ := slices.BinarySearch(starts, off+1)
	return i
}
