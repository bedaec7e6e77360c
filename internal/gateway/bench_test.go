package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchUpstream streams n SSE chunks in the OpenAI chat shape, each
// carrying the time it was written, gap apart; then usage and [DONE]. The
// query parameters chunks and gap override n and gap per request.
func benchUpstream(n int, gap time.Duration) *httptest.Server {
	return httptest.NewServer(benchHandler(n, gap))
}

func benchHandler(n int, gap time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, gap := n, gap
		if v, err := strconv.Atoi(r.URL.Query().Get("chunks")); err == nil {
			n = v
		}
		if v, err := time.ParseDuration(r.URL.Query().Get("gap")); err == nil {
			gap = v
		}
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"model":"hold"`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		if r.URL.Query().Get("plain") != "" || !strings.Contains(r.URL.Path, "chat") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: {\"t\":%d,\"choices\":[{\"delta\":{\"content\":\"token \"}}]}\n\n", time.Now().UnixNano())
			fl.Flush()
			if gap > 0 {
				time.Sleep(gap)
			}
		}
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":8}}\n\ndata: [DONE]\n\n")
	})
}

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, *Call) error { return nil }

// benchGateway serves one session in front of up.
func benchGateway(tb testing.TB, up *httptest.Server) (*httptest.Server, string) {
	g, err := New(Config{
		Environ:   []string{"K=" + realOpenAIKey},
		Providers: []ProviderConfig{{Name: "o", Family: OpenAI, BaseURL: up.URL + "/v1", KeyEnv: "K", Models: []string{"*"}}},
	}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := g.NewSession(SessionConfig{ID: "bench", Recorder: nopRecorder{}})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(s)
	return srv, s.Token()
}

func benchClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4096
	t.DisableCompression = true
	return &http.Client{Transport: t}
}

const benchPrompt = `{"model":"m","stream":true,"messages":[{"role":"system","content":"You are a coding agent. Use the tools."},{"role":"user","content":"Create hello.txt with the word hi, then list the directory and report what you did."}]}`

// doStream sends one request and reads the stream; it returns the time to
// the first chunk (what the gateway adds per request: parsing, checks,
// recording, the extra hop) and each chunk's delivery delay (receive time
// minus the time the upstream wrote it). Total stream time is paced by the
// upstream and says nothing about the gateway.
func doStream(c *http.Client, url, token string, body string) (time.Duration, []time.Duration, error) {
	start := time.Now()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var delays []time.Duration
	var ttfb time.Duration
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if ttfb == 0 {
			ttfb = time.Since(start)
		}
		if i := bytes.Index(line, []byte(`{"t":`)); i >= 0 {
			j := bytes.IndexByte(line[i+5:], ',')
			if ns, perr := strconv.ParseInt(string(line[i+5:i+5+j]), 10, 64); perr == nil {
				delays = append(delays, time.Since(time.Unix(0, ns)))
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("stream broke after %d chunks: %w", len(delays), err)
		}
	}
	return ttfb, delays, nil
}

func BenchmarkRequest(b *testing.B) {
	up := benchUpstream(0, 0)
	defer up.Close()
	gw, tok := benchGateway(b, up)
	defer gw.Close()
	body := strings.Replace(benchPrompt, `"stream":true`, `"stream":false`, 1)
	for _, tt := range []struct{ name, url string }{
		{"direct", up.URL + "/v1/chat/completions"},
		{"gateway", gw.URL + "/openai/v1/chat/completions"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			c := benchClient()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := doStream(c, tt.url, tok, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStream(b *testing.B) {
	const chunks = 50
	up := benchUpstream(chunks, 0)
	defer up.Close()
	gw, tok := benchGateway(b, up)
	defer gw.Close()
	for _, tt := range []struct{ name, url string }{
		{"direct", up.URL + "/v1/chat/completions"},
		{"gateway", gw.URL + "/openai/v1/chat/completions"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			c := benchClient()
			for b.Loop() {
				if _, _, err := doStream(c, tt.url, tok, benchPrompt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chunks), "ns/chunk")
		})
	}
}

func BenchmarkInspect(b *testing.B) {
	g, _ := New(Config{Environ: []string{"K=" + realOpenAIKey}, Providers: []ProviderConfig{{Name: "o", Family: OpenAI, KeyEnv: "K", Models: []string{"*"}}}}, nil)
	var files []ClassifiedFile
	for p, src := range goFiles(b, "net/http", 300) {
		files = append(files, ClassifiedFile{Path: p, Level: "restricted", Content: []byte(src)})
	}
	s, _ := g.NewSession(SessionConfig{ID: "b", Recorder: nopRecorder{}, Files: files})
	// A 50 KB agent request: a long system prompt and tool output.
	var sb strings.Builder
	for sb.Len() < 50<<10 {
		sb.WriteString("Tool output line with some ordinary words and paths /usr/lib/x and numbers 12345.\n")
	}
	body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}]}`, sb.String())
	b.SetBytes(int64(len(body)))
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			root, _ := decodeBody([]byte(body))
			clear(s.cache)
			s.inspect(root, g.providers[0])
		}
	})
	b.Run("repeat", func(b *testing.B) { // the history an agent resends every turn
		for b.Loop() {
			root, _ := decodeBody([]byte(body))
			s.inspect(root, g.providers[0])
		}
	})
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*p/100)]
}

// BenchmarkDecodeBody: the request body parse (json v2, one pass) against
// encoding/json's Decoder with UseNumber, as the gateway used before, on
// a 50 KB agent request.
func BenchmarkDecodeBody(b *testing.B) {
	var sb strings.Builder
	for sb.Len() < 50<<10 {
		sb.WriteString("Tool output line with some ordinary words and paths /usr/lib/x and numbers 12345.\n")
	}
	body := []byte(fmt.Sprintf(`{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":%q}]}`, sb.String()))
	b.Run("gateway", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := decodeBody(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
