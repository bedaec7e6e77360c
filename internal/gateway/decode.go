package gateway

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"io"
	"strings"
	"unicode/utf8"
)

// Encoded content. An agent can put a file's text into a prompt encoded
// (`base64 secret.go`, `xxd -p`, a URL-encoded query, a JSON string inside
// a string, gzip piped through base64), on purpose or because a tool did.
// The secret rules and the classification fingerprints see only the
// characters of the prompt, so before they run, [decodeViews] finds runs
// that decode to text and hands the text to them as well.
//
// What is decoded, at most [maxDecodeDepth] layers deep (base64 of gzip of
// hex counts three):
//
//   - base64, standard and URL alphabets, padded or not, wrapped over lines
//     (GNU base64 wraps at 76 columns);
//   - hex, also wrapped (xxd -p), and hex dumps (xxd, hexdump -C,
//     od -An -tx1);
//   - percent-encoding (%XX, "+" as a space);
//   - backslash escapes: \n \t \" \\ \uXXXX (JSON, JavaScript), \xNN;
//   - gzip and zlib streams found inside base64 or hex.
//
// Only decodings that are text (valid UTF-8, almost no control characters)
// count; base64-looking words such as long identifiers decode to noise and
// are dropped. The work is bounded: the decoded output of one string is
// capped at [maxDecodedBytes], each inflated stream at [maxInflateBytes]
// (a decompression bomb stops there), and the number of runs tried. When a
// bound is reached the string is reported as over the limit and the
// request is refused rather than passed unread (fail closed).
//
// Not decoded: encryption, custom or split encodings (every other
// character, a file spread over turns), other compressors, images of text.
// Opaque fields the provider issued are skipped by [Walk] and so are never
// decoded.
const (
	maxDecodeDepth  = 3
	maxDecodedBytes = 16 << 20
	maxInflateBytes = 4 << 20
	maxDecodeRuns   = 4096
	// minEncodedRun is the shortest run worth decoding: shorter runs decode
	// to less than a fingerprint's k-gram and to less than most secrets.
	minEncodedRun = 24
)

// view is the decoded text of an encoded run of a string.
type view struct {
	start, end int    // the run, bytes of the outermost string
	enc        string // the layers, outermost first: "base64", "base64+gzip"
	text       string
}

// decoder holds the limits of one string's decoding.
type decoder struct {
	left int // decoded bytes left
	runs int
	over bool // a limit was reached: something was not decoded
}

// decodeViews returns the decoded text of every plausible encoded run in
// s, nested ones included, and whether a limit was reached.
func decodeViews(s string) ([]view, bool) {
	d := &decoder{left: maxDecodedBytes}
	var out []view
	d.scan(s, 0, len(s), "", 1, &out)
	return out, d.over
}

// scan finds encoded runs in s. outer gives the span reported for every
// view found (the run of the outermost string), or, at the top level
// (enc == ""), the run itself.
func (d *decoder) scan(s string, outerStart, outerEnd int, enc string, depth int, out *[]view) {
	if depth > maxDecodeDepth {
		return
	}
	emit := func(start, end int, name string, text []byte) {
		if d.over {
			return
		}
		if len(text) > d.left {
			d.over = true
			return
		}
		d.left -= len(text)
		e := name
		if enc != "" {
			e = enc + "+" + name
		}
		vs, ve := start, end
		if enc != "" {
			vs, ve = outerStart, outerEnd
		}
		*out = append(*out, view{start: vs, end: ve, enc: e, text: string(text)})
		d.scan(string(text), vs, ve, e, depth+1, out)
	}
	// Binary layers inside base64 or hex: gzip and zlib, then text.
	binary := func(start, end int, name string, raw []byte) {
		if z := inflate(raw, d); z != nil {
			if isText(z) {
				emit(start, end, name+"+"+zname(raw), z)
			}
			return
		}
		if isText(raw) {
			emit(start, end, name, raw)
		}
	}
	for _, run := range alnumRuns(s) {
		for _, r := range wrappedGroups(s, run) {
			if d.runs++; d.runs > maxDecodeRuns {
				d.over = true
				return
			}
			compact := stripSpace(s[r[0]:r[1]])
			if len(compact) < minEncodedRun {
				continue
			}
			if isHex(compact) {
				if raw, err := hex.DecodeString(compact[:len(compact)&^1]); err == nil {
					binary(r[0], r[1], "hex", raw)
					continue
				}
			}
			if raw := decodeBase64(compact); raw != nil {
				binary(r[0], r[1], "base64", raw)
			}
			if d.over {
				return
			}
		}
	}
	for _, h := range hexDumps(s) {
		if d.runs++; d.runs > maxDecodeRuns {
			d.over = true
			return
		}
		binary(h.start, h.end, "hexdump", h.raw)
	}
	for _, sp := range denseSpans(s, percentLen) {
		if t := percentDecode(s[sp[0]:sp[1]]); isText(t) {
			emit(sp[0], sp[1], "percent", t)
		}
	}
	for _, sp := range denseSpans(s, escapeLen) {
		if t := unescape(s[sp[0]:sp[1]]); isText(t) {
			emit(sp[0], sp[1], "escapes", t)
		}
	}
}

// hexDump is a run of hex-dump lines and the bytes they show.
type hexDump struct {
	start, end int
	raw        []byte
}

// hexDumps finds hex dumps: consecutive lines of space-separated groups
// of hex digits (2, 4 or 8 per group), each line optionally led by an
// offset and followed by a text column, as xxd, hexdump -C and
// od -An -tx1 print them. A line holds at most 16 bytes after an offset
// (the text column cannot add any) and 64 without one.
func hexDumps(s string) []hexDump {
	var out []hexDump
	cur := hexDump{start: -1}
	flush := func() {
		if len(cur.raw) >= minEncodedRun/2 {
			out = append(out, cur)
		}
		cur = hexDump{start: -1}
	}
	for off := 0; off < len(s); {
		end := len(s)
		if i := strings.IndexByte(s[off:], '\n'); i >= 0 {
			end = off + i
		}
		if b := hexDumpLine(s[off:end]); b != nil {
			if cur.start < 0 {
				cur.start = off
			}
			cur.raw = append(cur.raw, b...)
			cur.end = end
		} else {
			flush()
		}
		off = end + 1
	}
	flush()
	return out
}

// hexDumpLine returns the bytes one hex-dump line shows, nil if it is not
// one (fewer than 4 bytes).
func hexDumpLine(line string) []byte {
	if len(line) < 8 || strings.IndexByte(line, ' ') < 0 {
		return nil
	}
	// Cheap test first: the first word is hex (an offset or a byte group),
	// or the line is not a dump. Most prompt lines fail here.
	t := strings.TrimLeft(line, " \t")
	w, _, _ := strings.Cut(t, " ")
	if w == "" || !isHex(strings.TrimSuffix(w, ":")) {
		return nil
	}
	f := strings.Fields(line)
	limit, i := 64, 0
	if len(f) > 1 {
		if t := strings.TrimSuffix(f[0], ":"); (len(t) != len(f[0]) || len(t) >= 6) && len(t) <= 16 && isHex(t) {
			limit, i = 16, 1
		}
	}
	var b []byte
	for ; i < len(f) && len(b) < limit; i++ {
		t := f[i]
		if len(t) > 8 || len(t)%2 != 0 || !isHex(t) {
			break
		}
		raw, err := hex.DecodeString(t)
		if err != nil {
			break
		}
		b = append(b, raw...)
	}
	if len(b) < 4 {
		return nil
	}
	return b[:min(len(b), limit)]
}

// Escapes count as an encoded run where they are dense: at least
// minEscapes of them, each within maxEscapeGap bytes of the last. Source
// code with an occasional "\n" in a string is not an encoding, and a
// secret found in a run is redacted with the whole run, so runs stay
// tight.
const (
	minEscapes   = 4
	maxEscapeGap = 256
)

// denseSpans returns the spans of s where escapes of the kind escLen
// recognises (it returns an escape's length at the start of its argument,
// 0 for none) are dense, from the first escape to the end of the last.
func denseSpans(s string, escLen func(string) int) [][2]int {
	var spans [][2]int
	first, last, n := -1, -1, 0
	end := func() {
		if n >= minEscapes {
			spans = append(spans, [2]int{first, last})
		}
		first, last, n = -1, -1, 0
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' && s[i] != '\\' {
			continue
		}
		w := escLen(s[i:])
		if w == 0 {
			continue
		}
		if n > 0 && i-last > maxEscapeGap {
			end()
		}
		if first < 0 {
			first = i
		}
		last = i + w
		n++
		i += w - 1
	}
	end()
	return spans
}

// percentLen is the length of the %XX escape at the start of s, 0 if none.
func percentLen(s string) int {
	if len(s) >= 3 && s[0] == '%' && unhex(s[1]) >= 0 && unhex(s[2]) >= 0 {
		return 3
	}
	return 0
}

// alnumRuns returns the spans of runs of base64 characters (both alphabets
// and padding), joined across line breaks and the spaces that wrap or
// indent them. A run is split after its padding, since "=" ends base64.
func alnumRuns(s string) [][2]int {
	var runs [][2]int
	start, padded, lineStart := -1, false, false
	flush := func(end int) {
		if start >= 0 {
			// Trim the whitespace the run may end with.
			for end > start && isSpace(s[end-1]) {
				end--
			}
			if end-start >= minEncodedRun {
				runs = append(runs, [2]int{start, end})
			}
		}
		start, padded = -1, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isB64(c):
			if padded {
				flush(i)
			}
			if start < 0 {
				start = i
			}
			lineStart = false
		case c == '=':
			if start >= 0 {
				padded = true
			}
			lineStart = false
		case c == '\n' || c == '\r':
			// A wrapped block continues on the next line.
			lineStart = true
		case c == ' ' || c == '\t':
			// Indentation after a line break continues a run; a space
			// inside a line separates words and ends it.
			if !lineStart {
				flush(i)
			}
		default:
			flush(i)
			lineStart = false
		}
	}
	flush(len(s))
	return runs
}

// wrappedGroups splits a run into the blocks an encoder wrapped: lines
// of one length (GNU base64: 76, xxd -p: 60) up to and including the
// first shorter line. Text on the line after an unpadded block then
// starts a block of its own instead of spoiling the decoding.
func wrappedGroups(s string, run [2]int) [][2]int {
	var groups [][2]int
	start, width, prevEnd := -1, 0, 0
	for i := run[0]; i < run[1]; {
		j := i + strings.IndexByte(s[i:run[1]], '\n')
		if j < i {
			j = run[1]
		}
		a, b := i, j
		for a < b && isSpace(s[a]) {
			a++
		}
		for b > a && isSpace(s[b-1]) {
			b--
		}
		i = j + 1
		if a == b {
			continue
		}
		switch {
		case start < 0:
			start, width = a, b-a
		case b-a > width: // a longer line starts a block of its own
			groups = append(groups, [2]int{start, prevEnd})
			start, width = a, b-a
		case b-a < width: // the short last line ends the block
			groups = append(groups, [2]int{start, b})
			start = -1
			continue
		}
		prevEnd = b
	}
	if start >= 0 {
		groups = append(groups, [2]int{start, prevEnd})
	}
	return groups
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func stripSpace(s string) string {
	if strings.IndexAny(s, " \t\r\n") < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !isSpace(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// decodeBase64 decodes s (padding already cut off by alnumRuns, or not) in
// the alphabet its characters say; nil if it does not decode.
func decodeBase64(s string) []byte {
	s = strings.TrimRight(s, "=")
	std := strings.ContainsAny(s, "+/")
	url := strings.ContainsAny(s, "-_")
	if std && url {
		return nil
	}
	if len(s)%4 == 1 { // one stray character cannot be base64
		s = s[:len(s)-1]
	}
	enc := base64.RawStdEncoding
	if url {
		enc = base64.RawURLEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// inflate returns the decompressed content of a gzip or zlib stream, at
// most maxInflateBytes of it (a truncated stream still yields what it
// holds), or nil if raw is neither.
func inflate(raw []byte, d *decoder) []byte {
	var r io.Reader
	var err error
	switch {
	case len(raw) >= 10 && raw[0] == 0x1f && raw[1] == 0x8b:
		r, err = gzip.NewReader(bytes.NewReader(raw))
	case len(raw) >= 2 && raw[0]&0x0f == 8 && (uint16(raw[0])<<8|uint16(raw[1]))%31 == 0:
		r, err = zlib.NewReader(bytes.NewReader(raw))
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(r, maxInflateBytes+1))
	if len(b) > maxInflateBytes {
		d.over = true
		b = b[:maxInflateBytes]
	}
	if len(b) == 0 {
		return nil
	}
	return b
}

func zname(raw []byte) string {
	if raw[0] == 0x1f {
		return "gzip"
	}
	return "zlib"
}

// isText reports whether b reads as text: at least 8 bytes, of which at
// most 1 in 50 are control characters (other than tab, CR and LF) or bytes
// that are not UTF-8. The slack lets a few bytes of noise through, such as
// a line of text an agent printed after an unpadded base64 block.
func isText(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	bad := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\n' && c != '\r' && c != '\t' || c == 0x7f {
				bad++
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			bad++
		}
		i += n
	}
	return bad*50 <= len(b)
}

func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0:
			b = append(b, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
		case c == '+':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return b
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// escapeLen is the length of the escape at the start of s, 0 if none.
func escapeLen(s string) int {
	if len(s) < 2 || s[0] != '\\' {
		return 0
	}
	switch s[1] {
	case 'n', 'r', 't', '"', '\\', '/', 'b', 'f', '\'':
		return 2
	case 'u':
		if len(s) >= 6 && unhex(s[2]) >= 0 && unhex(s[3]) >= 0 && unhex(s[4]) >= 0 && unhex(s[5]) >= 0 {
			return 6
		}
	case 'x':
		if len(s) >= 4 && unhex(s[2]) >= 0 && unhex(s[3]) >= 0 {
			return 4
		}
	}
	return 0
}

// unescape resolves backslash escapes leniently: what is not an escape is
// kept as it is.
func unescape(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		w := escapeLen(s[i:])
		if w == 0 {
			b = append(b, s[i])
			i++
			continue
		}
		switch c := s[i+1]; c {
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'x':
			b = append(b, byte(unhex(s[i+2])<<4|unhex(s[i+3])))
		case 'u':
			r := rune(unhex(s[i+2])<<12 | unhex(s[i+3])<<8 | unhex(s[i+4])<<4 | unhex(s[i+5]))
			if r >= 0xd800 && r < 0xdc00 && escapeLen(s[i+6:]) == 6 && s[i+7] == 'u' {
				lo := rune(unhex(s[i+8])<<12 | unhex(s[i+9])<<8 | unhex(s[i+10])<<4 | unhex(s[i+11]))
				if lo >= 0xdc00 && lo < 0xe000 {
					r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
					w = 12
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			b = append(b, c)
		}
		i += w
	}
	return b
}
