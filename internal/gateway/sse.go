package gateway

import (
	"bytes"
	"encoding/json"
)

// sseParser splits a server-sent event stream incrementally, as bytes pass
// through, without holding more than one event. It follows the WHATWG
// event-stream grammar for the fields the gateway needs (event, data):
// lines end in LF, CRLF or CR; a blank line dispatches; "data" lines join
// with LF; a leading space after the colon is dropped; comments are
// ignored. Events bigger than max are skipped (counted in dropped), so a
// hostile upstream cannot make the gateway buffer without bound.
type sseParser struct {
	onEvent func(event, data []byte)
	max     int

	line    []byte
	event   []byte
	data    []byte
	hasData bool
	skip    bool // current event grew past max
	lastCR  bool
	dropped int
}

func (p *sseParser) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if p.lastCR && b[0] == '\n' { // CRLF split across writes
			b = b[1:]
			p.lastCR = false
			continue
		}
		p.lastCR = false
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			p.appendLine(b)
			break
		}
		p.appendLine(b[:i])
		if b[i] == '\r' {
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			} else if i+1 == len(b) {
				p.lastCR = true
			}
		}
		p.endLine()
		b = b[i+1:]
	}
	return n, nil
}

func (p *sseParser) appendLine(b []byte) {
	if p.skip {
		return
	}
	if len(p.line)+len(b) > p.max {
		p.skip = true
		p.line = p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

func (p *sseParser) endLine() {
	line := p.line
	p.line = p.line[:0]
	if len(line) == 0 && !p.skip {
		if p.hasData && p.onEvent != nil {
			p.onEvent(p.event, p.data)
		}
		p.event, p.data, p.hasData = p.event[:0], p.data[:0], false
		return
	}
	if p.skip {
		if len(line) == 0 {
			p.dropped++
			p.skip = false
			p.event, p.data, p.hasData = p.event[:0], p.data[:0], false
		}
		return
	}
	if line[0] == ':' {
		return
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		p.event = append(p.event[:0], value...)
	case "data":
		if len(p.data)+len(value)+1 > p.max {
			p.skip = true
			return
		}
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	}
}

// usage is token counts taken from a provider's usage fields.
type usage struct {
	in, out  int64
	terminal bool // the stream's closing event was seen
	seen     bool
}

// hasUsageObject reports whether data may hold a usage object: a key
// "usage" or "usageMetadata" whose value is an object. It may say yes
// wrongly (the JSON decides); it never says no wrongly.
func hasUsageObject(data []byte) bool {
	for {
		i := bytes.Index(data, markUsage)
		if i < 0 {
			return false
		}
		data = data[i+len(markUsage):]
		data, _ = bytes.CutPrefix(data, []byte("Metadata"))
		if len(data) == 0 || data[0] != '"' {
			continue
		}
		j := 1
		for j < len(data) && isJSONSpace(data[j]) {
			j++
		}
		if j == len(data) || data[j] != ':' {
			continue
		}
		for j++; j < len(data) && isJSONSpace(data[j]); j++ {
		}
		if j < len(data) && data[j] == '{' {
			return true
		}
	}
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

var (
	markUsage   = []byte(`"usage`) // "usage", "usageMetadata"
	markFinish  = []byte(`"finishReason"`)
	markDone    = []byte("[DONE]")
	markRespEnd = []byte(`"response.`)
)

// observe handles one SSE event of family fam.
func (u *usage) observe(fam Family, event, data []byte) {
	switch fam {
	case Anthropic:
		if string(event) == "message_stop" || bytes.Contains(data, []byte(`"message_stop"`)) {
			u.terminal = true
		}
	case OpenAI:
		if bytes.Equal(bytes.TrimSpace(data), markDone) {
			u.terminal = true
			return
		}
		if bytes.Contains(data, markRespEnd) && (bytes.Contains(data, []byte(`"response.completed"`)) ||
			bytes.Contains(data, []byte(`"response.incomplete"`)) || bytes.Contains(data, []byte(`"response.failed"`))) {
			u.terminal = true
		}
	case Gemini:
		if bytes.Contains(data, markFinish) {
			u.terminal = true
		}
	}
	// Parsing JSON is the costly part: only events that carry usage (an
	// OpenAI stream asked to include usage sends "usage":null in every
	// chunk but the last).
	if !hasUsageObject(data) {
		return
	}
	var v any
	if json.Unmarshal(data, &v) == nil {
		u.from(v)
	}
}

// from takes the usage out of a decoded response body, SSE event payload
// or Gemini JSON array. Counts are cumulative in every family's stream, so
// the largest value seen wins.
func (u *usage) from(v any) {
	switch t := v.(type) {
	case []any:
		for _, e := range t {
			u.from(e)
		}
	case map[string]any:
		if m, ok := t["usage"].(map[string]any); ok {
			in := num(m["input_tokens"]) + num(m["prompt_tokens"]) +
				num(m["cache_creation_input_tokens"]) + num(m["cache_read_input_tokens"])
			out := num(m["output_tokens"]) + num(m["completion_tokens"])
			u.set(in, out)
		}
		if m, ok := t["usageMetadata"].(map[string]any); ok {
			u.set(num(m["promptTokenCount"]), num(m["candidatesTokenCount"])+num(m["thoughtsTokenCount"]))
		}
		for _, k := range []string{"message", "response"} {
			if m, ok := t[k].(map[string]any); ok {
				u.from(map[string]any{"usage": m["usage"]})
			}
		}
	}
}

func (u *usage) set(in, out int64) {
	u.seen = true
	u.in = max(u.in, in)
	u.out = max(u.out, out)
}

func num(v any) int64 {
	switch n := v.(type) {
	case float64:
		if n > 0 && n < 1e15 {
			return int64(n)
		}
	case json.Number:
		i, err := n.Int64()
		if err == nil && i > 0 {
			return i
		}
	}
	return 0
}
