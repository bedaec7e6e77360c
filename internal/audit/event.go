package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Event is one thing that happened, as a producer hands it to [Log.Append].
// EVENTS.md documents the kinds and the Data schema of each.
type Event struct {
	// Session is the session ID, or "" for events about the log itself.
	Session string
	// Kind names the event type, e.g. "egress"; lowercase letters, digits,
	// '.', '_' and '-', starting with a letter, at most 64 bytes.
	Kind string
	// Time is when it happened; the zero value means "now" (set by Append).
	// It is recorded in UTC to the nanosecond.
	Time time.Time
	// Actor is who acted: "agent", "enclave", a user name.
	Actor string
	// Decision is the outcome of a policy decision ("allow", "deny",
	// "approve", ...) or "" when the event is not one.
	Decision string
	// Data is a JSON object with the kind's fields; nil means {}. It is
	// canonicalised before hashing (see [EncodeLeaf]).
	Data json.RawMessage
}

// Entry acknowledges a durable append.
type Entry struct {
	// Seq is the event's position in the log (the Merkle leaf index).
	Seq int64
	// Hash is the leaf hash, tlog.RecordHash of the canonical encoding.
	Hash [32]byte
}

// Limits on event fields; an event over a limit is refused, not truncated.
const (
	MaxDataSize  = 1 << 20 // bytes of Data before canonicalisation
	MaxFieldSize = 256     // bytes of Session, Actor and Decision
	maxKindSize  = 64
	maxDepth     = 64 // nesting of Data
)

// ErrInvalidEvent is wrapped by every error about a malformed event or a
// malformed stored leaf.
var ErrInvalidEvent = errors.New("invalid event")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))
}

// leafPrefix opens every version-1 leaf. The field order is fixed by the
// format, not sorted, so the sequence number sits at a known offset.
const leafPrefix = `{"v":1,"seq":`

// EncodeLeaf returns the canonical version-1 encoding of ev at position
// seq: the bytes that are hashed as the Merkle leaf. The encoding is
//
//	{"v":1,"seq":SEQ,"time":TIME,"session":S,"kind":K,"actor":A,"decision":D,"data":DATA}
//
// with no whitespace, fields in exactly this order, all present. SEQ is a
// decimal integer. TIME is RFC 3339 in UTC with nanoseconds and trailing
// zeros removed (Go's time.RFC3339Nano). Strings are JSON strings holding
// UTF-8 with only '"', '\\' and control characters below U+0020 escaped
// (\b \f \n \r \t, else \u00xx in lower-case hex); invalid UTF-8 becomes
// U+FFFD. DATA is Data canonicalised: an object whose members are sorted by
// the bytes of their (unescaped, UTF-8) keys, duplicate keys refused,
// strings as above, integers written as they are (but "-0" as "0"), other
// numbers as the shortest decimal that round-trips a float64
// (strconv 'g' form, e.g. 1.5, 1e+21), and no insignificant whitespace.
//
// The same event at the same position always encodes to the same bytes;
// EVENTS.md has known-answer examples.
func EncodeLeaf(seq int64, ev *Event) ([]byte, error) {
	body, err := encodeBody(ev)
	if err != nil {
		return nil, err
	}
	return appendLeaf(nil, seq, body), nil
}

func appendLeaf(dst []byte, seq int64, body []byte) []byte {
	dst = append(dst, leafPrefix...)
	dst = strconv.AppendInt(dst, seq, 10)
	return append(dst, body...)
}

// encodeBody validates ev and encodes everything after the sequence number.
// Append runs it in the caller's goroutine, so canonicalisation happens in
// parallel and the writer only splices in the sequence number.
func encodeBody(ev *Event) ([]byte, error) {
	if err := checkKind(ev.Kind); err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{{"session", ev.Session}, {"actor", ev.Actor}, {"decision", ev.Decision}} {
		if len(f.v) > MaxFieldSize {
			return nil, invalidf("%s is %d bytes, limit %d", f.name, len(f.v), MaxFieldSize)
		}
	}
	t := ev.Time.UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return nil, invalidf("time %v is outside years 1-9999", ev.Time)
	}
	if len(ev.Data) > MaxDataSize {
		return nil, invalidf("data is %d bytes, limit %d", len(ev.Data), MaxDataSize)
	}
	b := make([]byte, 0, 128+len(ev.Data))
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","session":`...)
	b = appendString(b, ev.Session)
	b = append(b, `,"kind":`...)
	b = appendString(b, ev.Kind)
	b = append(b, `,"actor":`...)
	b = appendString(b, ev.Actor)
	b = append(b, `,"decision":`...)
	b = appendString(b, ev.Decision)
	b = append(b, `,"data":`...)
	if len(bytes.TrimSpace(ev.Data)) == 0 {
		b = append(b, "{}"...)
	} else {
		var err error
		if b, err = CanonicalJSON(b, ev.Data); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func checkKind(k string) error {
	if k == "" {
		return invalidf("kind is empty")
	}
	if len(k) > maxKindSize {
		return invalidf("kind %.64q... is longer than %d bytes", k, maxKindSize)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if 'a' <= c && c <= 'z' || i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			continue
		}
		return invalidf("kind %q: byte %d (%q) not allowed; use lowercase letters, digits, '.', '_' or '-', starting with a letter", k, i, c)
	}
	return nil
}

// ParseLeaf decodes a stored leaf and checks that it is exactly the
// canonical encoding of what it decodes to: any other bytes, even
// equivalent JSON, are refused, because their hash would not be the hash
// of the canonical form.
func ParseLeaf(leaf []byte) (seq int64, ev Event, err error) {
	h, err := parseHeader(leaf)
	if err != nil {
		return 0, Event{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, h.time)
	if err != nil {
		return 0, Event{}, invalidf("leaf time %q: %v", h.time, err)
	}
	ev = Event{Session: h.session, Kind: h.kind, Time: t.UTC(), Actor: h.actor, Decision: h.decision, Data: json.RawMessage(h.data)}
	again, err := EncodeLeaf(h.seq, &ev)
	if err != nil {
		return 0, Event{}, fmt.Errorf("leaf %d: %w", h.seq, err)
	}
	if !bytes.Equal(again, leaf) {
		return 0, Event{}, invalidf("leaf %d is not in canonical form", h.seq)
	}
	ev.Data = slices.Clone(ev.Data)
	return h.seq, ev, nil
}

// header is a leaf's fields, decoded without checking canonical form.
type header struct {
	seq                                  int64
	time, session, kind, actor, decision string
	data                                 []byte
}

// headerBytes is header with fields that may alias the leaf.
type headerBytes struct {
	seq                                  int64
	time, session, kind, actor, decision []byte
	data                                 []byte
}

func parseHeader(b []byte) (header, error) {
	h, err := parseHeaderBytes(b)
	return header{seq: h.seq, time: string(h.time), session: string(h.session), kind: string(h.kind),
		actor: string(h.actor), decision: string(h.decision), data: h.data}, err
}

// parseHeaderBytes reads the fixed-order fields of a version-1 leaf without
// copying them. It is the fast path verification uses to compare a record
// with its query columns.
func parseHeaderBytes(b []byte) (headerBytes, error) {
	var h headerBytes
	if !bytes.HasPrefix(b, []byte(leafPrefix)) {
		if bytes.HasPrefix(b, []byte(`{"v":`)) {
			return h, invalidf("leaf has an unsupported encoding version")
		}
		return h, invalidf("leaf does not start with %s", leafPrefix)
	}
	p := len(leafPrefix)
	start := p
	for p < len(b) && '0' <= b[p] && b[p] <= '9' {
		p++
	}
	digits := b[start:p]
	if len(digits) == 0 || len(digits) > 18 || (len(digits) > 1 && digits[0] == '0') {
		return h, invalidf("leaf sequence number %q is not canonical", digits)
	}
	var seq int64
	for _, d := range digits {
		seq = seq*10 + int64(d-'0')
	}
	h.seq = seq
	fields := [...]struct {
		key string
		dst *[]byte
	}{{`,"time":`, &h.time}, {`,"session":`, &h.session}, {`,"kind":`, &h.kind}, {`,"actor":`, &h.actor}, {`,"decision":`, &h.decision}}
	for _, f := range fields {
		if !bytes.HasPrefix(b[p:], []byte(f.key)) {
			return h, invalidf("leaf %d: want %s at offset %d", seq, f.key, p)
		}
		p += len(f.key)
		s, n, err := parseStringBytes(b[p:])
		if err != nil {
			return h, invalidf("leaf %d: field %s: %v", seq, strings.Trim(f.key, `,":`), err)
		}
		*f.dst = s
		p += n
	}
	const dataKey = `,"data":`
	if !bytes.HasPrefix(b[p:], []byte(dataKey)) || len(b) < p+len(dataKey)+1 || b[len(b)-1] != '}' {
		return h, invalidf("leaf %d: want %s{...}} at offset %d", seq, dataKey, p)
	}
	h.data = b[p+len(dataKey) : len(b)-1]
	return h, nil
}

// appendString appends s as a canonical JSON string.
func appendString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\b':
				dst = append(dst, '\\', 'b')
			case c == '\f':
				dst = append(dst, '\\', 'f')
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// parseString decodes the JSON string at the start of b and returns it and
// the number of bytes it took. Lone surrogates and invalid UTF-8 decode to
// U+FFFD.
func parseString(b []byte) (string, int, error) {
	s, n, err := parseStringBytes(b)
	return string(s), n, err
}

// parseStringBytes is parseString without the copy when the string has no
// escapes and is plain ASCII: it then returns a sub-slice of b.
func parseStringBytes(b []byte) ([]byte, int, error) {
	if len(b) == 0 || b[0] != '"' {
		return nil, 0, errors.New("want string")
	}
	// Fast path: no escapes, all ASCII printable.
	for i := 1; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			return b[1:i:i], i + 1, nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
	}
	var out []byte
	for i := 1; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return out, i + 1, nil
		case c < 0x20:
			return nil, 0, fmt.Errorf("control character %#x in string", c)
		case c == '\\':
			if i+1 >= len(b) {
				return nil, 0, errors.New("unterminated escape")
			}
			e := b[i+1]
			i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(b[i:])
				if !ok {
					return nil, 0, errors.New(`bad \u escape`)
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2, ok := rune(-1), false
					if i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
						r2, ok = hex4(b[i+2:])
					}
					if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
						r = d
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, 0, fmt.Errorf("bad escape \\%c", e)
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, b[i:i+size]...)
			}
			i += size
		}
	}
	return nil, 0, errors.New("unterminated string")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// CanonicalJSON appends the canonical form of the JSON object in src to dst
// (see [EncodeLeaf] for the rules). It refuses anything but a single
// object, duplicate keys, nesting deeper than 64, and invalid JSON, with
// an error naming the byte offset.
func CanonicalJSON(dst, src []byte) ([]byte, error) {
	p := &parser{in: src}
	p.ws()
	if p.pos >= len(src) || src[p.pos] != '{' {
		return nil, invalidf("data must be a JSON object")
	}
	out, err := p.value(dst, 0)
	if err != nil {
		return nil, invalidf("data: offset %d: %v", p.pos, err)
	}
	p.ws()
	if p.pos != len(src) {
		return nil, invalidf("data: offset %d: trailing bytes after the object", p.pos)
	}
	return out, nil
}

type parser struct {
	in  []byte
	pos int
}

func (p *parser) ws() {
	for p.pos < len(p.in) {
		switch p.in[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(dst []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	p.ws()
	if p.pos >= len(p.in) {
		return nil, errors.New("unexpected end")
	}
	switch c := p.in[p.pos]; {
	case c == '{':
		return p.object(dst, depth)
	case c == '[':
		p.pos++
		dst = append(dst, '[')
		p.ws()
		if p.pos < len(p.in) && p.in[p.pos] == ']' {
			p.pos++
			return append(dst, ']'), nil
		}
		for {
			var err error
			if dst, err = p.value(dst, depth+1); err != nil {
				return nil, err
			}
			p.ws()
			if p.pos >= len(p.in) {
				return nil, errors.New("unterminated array")
			}
			if p.in[p.pos] == ']' {
				p.pos++
				return append(dst, ']'), nil
			}
			if p.in[p.pos] != ',' {
				return nil, errors.New("want , or ] in array")
			}
			p.pos++
			dst = append(dst, ',')
		}
	case c == '"':
		s, n, err := parseStringBytes(p.in[p.pos:])
		if err != nil {
			return nil, err
		}
		p.pos += n
		return appendString(dst, s), nil
	case c == '-' || '0' <= c && c <= '9':
		return p.number(dst)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(p.in[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				return append(dst, lit...), nil
			}
		}
		return nil, fmt.Errorf("unexpected byte %q", c)
	}
}

func (p *parser) object(dst []byte, depth int) ([]byte, error) {
	p.pos++ // '{'
	p.ws()
	if p.pos < len(p.in) && p.in[p.pos] == '}' {
		p.pos++
		return append(dst, '{', '}'), nil
	}
	// Members are encoded one after another into dst from mark, then
	// rearranged in key order.
	type member struct {
		key        []byte
		start, end int
	}
	var small [16]member
	ms := small[:0]
	mark := len(dst)
	for {
		p.ws()
		key, n, err := parseStringBytes(p.in[p.pos:])
		if err != nil {
			return nil, fmt.Errorf("object key: %v", err)
		}
		p.pos += n
		p.ws()
		if p.pos >= len(p.in) || p.in[p.pos] != ':' {
			return nil, errors.New("want : after object key")
		}
		p.pos++
		start := len(dst)
		dst = appendString(dst, key)
		dst = append(dst, ':')
		if dst, err = p.value(dst, depth+1); err != nil {
			return nil, err
		}
		ms = append(ms, member{key, start, len(dst)})
		p.ws()
		if p.pos >= len(p.in) {
			return nil, errors.New("unterminated object")
		}
		if p.in[p.pos] == '}' {
			p.pos++
			break
		}
		if p.in[p.pos] != ',' {
			return nil, errors.New("want , or } in object")
		}
		p.pos++
	}
	slices.SortStableFunc(ms, func(a, b member) int { return bytes.Compare(a.key, b.key) })
	for i := 1; i < len(ms); i++ {
		if bytes.Equal(ms[i].key, ms[i-1].key) {
			return nil, fmt.Errorf("duplicate key %q", ms[i].key)
		}
	}
	tmp := append([]byte(nil), dst[mark:]...)
	dst = append(dst[:mark], '{')
	for i, m := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, tmp[m.start-mark:m.end-mark]...)
	}
	return append(dst, '}'), nil
}

func (p *parser) number(dst []byte) ([]byte, error) {
	start := p.pos
	in := p.in
	i := p.pos
	if i < len(in) && in[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
		return i - j
	}
	intStart := i
	if n := digits(); n == 0 {
		return nil, errors.New("bad number")
	} else if n > 1 && in[intStart] == '0' {
		return nil, errors.New("number with leading zero")
	}
	integer := true
	if i < len(in) && in[i] == '.' {
		i++
		integer = false
		if digits() == 0 {
			return nil, errors.New("bad number fraction")
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		integer = false
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if digits() == 0 {
			return nil, errors.New("bad number exponent")
		}
	}
	p.pos = i
	lit := string(in[start:i])
	if integer {
		if lit == "-0" {
			lit = "0"
		}
		return append(dst, lit...), nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return nil, fmt.Errorf("number %s out of range", lit)
	}
	if f == 0 {
		f = 0 // -0.0 becomes 0
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
}
