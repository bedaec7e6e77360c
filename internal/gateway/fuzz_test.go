package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func collectEvents(chunks [][]byte) []string {
	var evs []string
	p := &sseParser{max: 1 << 16, onEvent: func(ev, data []byte) {
		evs = append(evs, fmt.Sprintf("%s|%s", ev, data))
	}}
	for _, c := range chunks {
		p.Write(c)
	}
	return evs
}

func TestSSEParser(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"event: a\ndata: 1\n\n", []string{"a|1"}},
		{"data: x\r\ndata: y\r\n\r\n", []string{"|x\ny"}},
		{"data:nospace\r\rdata: b\n\n", []string{"|nospace", "|b"}},
		{": comment\ndata: c\n\n", []string{"|c"}},
		{"event: e\n\ndata: d\n\n", []string{"|d"}}, // event without data is not dispatched
		{"data: unterminated", nil},
	} {
		if got := collectEvents([][]byte{[]byte(tt.in)}); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Oversized events are skipped, and parsing recovers.
	var evs []string
	p := &sseParser{max: 8, onEvent: func(ev, data []byte) { evs = append(evs, string(data)) }}
	p.Write([]byte("data: 0123456789abcdef\n\ndata: ok\n\n"))
	if !reflect.DeepEqual(evs, []string{"ok"}) || p.dropped != 1 {
		t.Errorf("oversized: events %q dropped %d, want [ok] 1", evs, p.dropped)
	}
}

// FuzzSSEParser: never panics, and how the stream is split into writes
// does not change the events.
func FuzzSSEParser(f *testing.F) {
	for _, ev := range sseEvents(Anthropic, false, 2) {
		f.Add([]byte(ev), uint8(3))
	}
	f.Add([]byte("data: a\r\n\r\ndata: b\r\r"), uint8(1))
	f.Add([]byte("event: x\rdata: y\r\n\n"), uint8(7))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		whole := collectEvents([][]byte{b})
		n := int(step%16) + 1
		var chunks [][]byte
		for i := 0; i < len(b); i += n {
			chunks = append(chunks, b[i:min(i+n, len(b))])
		}
		if split := collectEvents(chunks); !reflect.DeepEqual(whole, split) {
			t.Fatalf("split by %d: %q, whole: %q", n, split, whole)
		}
		var u usage
		for _, e := range whole {
			ev, data, _ := strings.Cut(e, "|")
			for _, fam := range []Family{Anthropic, OpenAI, Gemini} {
				u.observe(fam, []byte(ev), []byte(data))
			}
		}
		if u.in < 0 || u.out < 0 {
			t.Fatalf("negative usage %+v", u)
		}
	})
}

// FuzzWalk: any JSON body the gateway accepts is redacted and inspected
// without panicking and re-encodes to valid JSON; secrets planted in any
// string value are gone afterwards.
func FuzzWalk(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"contents":[{"parts":[{"text":"x"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}]}`))
	f.Add([]byte(`{"a":[[[[{"b":"\u0000\ud800"}]]]],"signature":"s","n":1e400}`))
	f.Add([]byte(`{"input":[{"type":"message","content":[{"type":"input_text","text":"postgres://u:pw12345@h/db"}]}]}`))
	g, err := New(Config{Environ: []string{"K=k-not-in-any-prompt-0123456789"}, Providers: []ProviderConfig{{Name: "p", Family: OpenAI, KeyEnv: "K", Models: []string{"*"}}}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	s, err := g.NewSession(SessionConfig{ID: "fz", Recorder: &memRecorder{}, Files: []ClassifiedFile{{Path: "c.go", Level: "restricted", Content: []byte(classifiedSrc)}}})
	if err != nil {
		f.Fatal(err)
	}
	planted := fakeAWSKey(7)
	f.Fuzz(func(t *testing.T, b []byte) {
		root, err := decodeBody(b)
		if err != nil {
			return
		}
		// Plant a secret next to every string value.
		Walk(root, func(s string) (string, bool) { return s + " " + planted, true })
		ins := s.inspect(root, g.providers[0])
		out, err := encodeBody(root)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON after redaction: %s", out)
		}
		if ins.block == "" {
			var back any
			json.Unmarshal(out, &back)
			Walk(back, func(s string) (string, bool) {
				if strings.Contains(s, planted) {
					t.Fatalf("planted secret survived in %q", s)
				}
				return s, false
			})
		}
	})
}

// FuzzRoute: no path makes the router panic or build an upstream path that
// escapes the provider's base.
func FuzzRoute(f *testing.F) {
	for _, p := range []string{"/anthropic/v1/messages", "/gemini/v1beta/models/x:generateContent", "/v1/models", "/openai/../v1/x", "/gemini/v1/models/a:b:c"} {
		f.Add("POST", p)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		rt := parseRoute(method, path, http.Header{})
		if !rt.ok {
			return
		}
		if strings.Contains(rt.upPath, "..") || strings.Contains(rt.upPath, "//") || strings.ContainsAny(rt.upPath, "?#%\\") {
			t.Fatalf("route(%q) upstream path %q", path, rt.upPath)
		}
	})
}
