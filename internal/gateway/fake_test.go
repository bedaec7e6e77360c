package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	realAnthropicKey = "sk-ant-api03-REALKEYanthropic0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
	realOpenAIKey    = "sk-proj-REALKEYopenai0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
	realGeminiKey    = "AIzaREALKEYgemini0123456789abcdefghijk"
)

// fakeUpstream is an in-process model provider for all three families. It
// checks the real key, logs what it received and answers in each family's
// shape. Behaviour is chosen by the model name:
//
//	cut-*    stream two events, then drop the connection
//	hang-*   stream one event, then wait for the client to go away
//	slow-*   wait before sending headers
//	e429-*   answer 429
//	echo-*   answer 401 with an error body that echoes the key it got
//	redir-*  answer 302 to another host
type fakeUpstream struct {
	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	bodies    [][]byte
	headers   []http.Header
	paths     []string
	cancelled chan struct{} // closed-on-cancel signal for hang-*
	release   chan struct{} // hang-*: continue after the first event when closed
	chunks    int           // events per stream (default 4)
	chunkWait time.Duration
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	f := &fakeUpstream{t: t, cancelled: make(chan struct{}, 16), chunks: 4}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeUpstream) last() ([]byte, http.Header, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil, nil, ""
	}
	n := len(f.bodies) - 1
	return f.bodies[n], f.headers[n], f.paths[n]
}

func (f *fakeUpstream) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.headers = append(f.headers, r.Header.Clone())
	f.paths = append(f.paths, r.URL.RequestURI())
	f.mu.Unlock()

	var fam Family
	var key string
	switch {
	case r.Header.Get("X-Api-Key") != "":
		fam, key = Anthropic, r.Header.Get("X-Api-Key")
	case r.Header.Get("X-Goog-Api-Key") != "":
		fam, key = Gemini, r.Header.Get("X-Goog-Api-Key")
	default:
		fam, key = OpenAI, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	want := map[Family]string{Anthropic: realAnthropicKey, OpenAI: realOpenAIKey, Gemini: realGeminiKey}[fam]
	var req map[string]any
	json.Unmarshal(body, &req)
	model, _ := req["model"].(string)
	stream, _ := req["stream"].(bool)
	path := r.URL.Path
	if fam == Gemini {
		rest := path[strings.Index(path, "/models/")+len("/models/"):]
		model, _, _ = strings.Cut(rest, ":")
		stream = strings.Contains(path, ":streamGenerateContent")
	}
	if strings.HasPrefix(model, "echo-") {
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s"}}`, key)
		return
	}
	if key != want {
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"message":"bad key"}}`)
		return
	}
	switch {
	case strings.HasPrefix(model, "e429-"):
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(429)
		io.WriteString(w, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`)
		return
	case strings.HasPrefix(model, "slow-"):
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return
		}
	case strings.HasPrefix(model, "redir-"):
		http.Redirect(w, r, "http://127.0.0.2:1/steal", http.StatusFound)
		return
	}
	if r.Method == http.MethodGet && strings.HasSuffix(path, "/models") {
		w.Header().Set("Content-Type", "application/json")
		if fam == Gemini {
			io.WriteString(w, `{"models":[{"name":"models/gemini-ok"},{"name":"models/gemini-secret"}]}`)
		} else {
			io.WriteString(w, `{"data":[{"id":"ok-1","type":"model"},{"id":"forbidden-1","type":"model"},{"id":"ok-2","type":"model"}],"has_more":false}`)
		}
		return
	}
	if strings.HasSuffix(path, "count_tokens") || strings.HasSuffix(path, ":countTokens") {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"input_tokens":42,"totalTokens":42}`)
		return
	}
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case fam == Anthropic:
			io.WriteString(w, `{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":11,"output_tokens":7}}`)
		case fam == Gemini:
			io.WriteString(w, `{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":7}}`)
		case strings.HasSuffix(path, "/responses"):
			io.WriteString(w, `{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":11,"output_tokens":7}}`)
		default:
			io.WriteString(w, `{"id":"c1","object":"chat.completion","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":7}}`)
		}
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	events := sseEvents(fam, strings.HasSuffix(path, "/responses"), f.chunks)
	for i, ev := range events {
		if strings.HasPrefix(model, "cut-") && i == 2 {
			hj, ok := w.(http.Hijacker)
			if ok {
				conn, _, _ := hj.Hijack()
				conn.Close()
			}
			return
		}
		io.WriteString(w, ev)
		fl.Flush()
		if strings.HasPrefix(model, "hang-") && i == 0 {
			select {
			case <-r.Context().Done():
				f.cancelled <- struct{}{}
				return
			case <-f.release:
			case <-time.After(10 * time.Second):
				return
			}
		}
		if f.chunkWait > 0 {
			time.Sleep(f.chunkWait)
		}
	}
}

// sseEvents is a small but faithful stream in each family's shape, with
// usage where the real APIs put it, and n content deltas.
func sseEvents(fam Family, responses bool, n int) []string {
	var ev []string
	switch {
	case fam == Anthropic:
		ev = append(ev, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n")
		for i := 0; i < n; i++ {
			ev = append(ev, fmt.Sprintf("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \"}}\n\n", i))
		}
		ev = append(ev, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	case fam == Gemini:
		for i := 0; i < n; i++ {
			ev = append(ev, fmt.Sprintf("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"w%d \"}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":%d}}\r\n\r\n", i, i+1))
		}
		ev = append(ev, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":7}}\r\n\r\n")
	case responses:
		ev = append(ev, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n")
		for i := 0; i < n; i++ {
			ev = append(ev, fmt.Sprintf("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"w%d \"}\n\n", i))
		}
		ev = append(ev, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":11,\"output_tokens\":7}}}\n\n")
	default:
		for i := 0; i < n; i++ {
			ev = append(ev, fmt.Sprintf("data: {\"choices\":[{\"delta\":{\"content\":\"w%d \"}}]}\n\n", i))
		}
		ev = append(ev, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}\n\n", "data: [DONE]\n\n")
	}
	return ev
}

// memRecorder keeps every call, and can be told to fail.
type memRecorder struct {
	mu    sync.Mutex
	calls []Call
	fail  bool
}

func (m *memRecorder) Record(_ context.Context, c *Call) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return fmt.Errorf("audit log unavailable")
	}
	m.calls = append(m.calls, *c)
	return nil
}

func (m *memRecorder) all() []Call {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Call(nil), m.calls...)
}

// waitResult waits for the result record of a call (it is written after
// the response is complete, so possibly after the client saw the end).
func (m *memRecorder) waitResult(t testing.TB, n int) []Call {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var res []Call
		for _, c := range m.all() {
			if c.Phase == PhaseResult {
				res = append(res, c)
			}
		}
		if len(res) >= n || time.Now().After(deadline) {
			return res
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ Recorder = (*memRecorder)(nil)

// rig is a gateway in front of a fake upstream, with one session served on
// a loopback listener.
type rig struct {
	up   *fakeUpstream
	g    *Gateway
	s    *Session
	rec  *memRecorder
	srv  *httptest.Server
	logs *bytes.Buffer
}

func testConfig(up *fakeUpstream) Config {
	return Config{
		Environ: []string{"ANTHROPIC_API_KEY=" + realAnthropicKey, "OPENAI_API_KEY=" + realOpenAIKey, "GEMINI_API_KEY=" + realGeminiKey},
		Providers: []ProviderConfig{
			{Name: "anthropic", Family: Anthropic, BaseURL: up.srv.URL, KeyEnv: "ANTHROPIC_API_KEY",
				Models: []string{"ok-*", "cut-*", "hang-*", "slow-*", "e429-*", "echo-*", "redir-*"}, Clearance: "internal"},
			{Name: "openai", Family: OpenAI, BaseURL: up.srv.URL + "/v1", KeyEnv: "OPENAI_API_KEY",
				Models: []string{"ok-*", "cut-*", "hang-*", "slow-*", "e429-*", "echo-*"}, Clearance: "internal"},
			{Name: "gemini", Family: Gemini, BaseURL: up.srv.URL, KeyEnv: "GEMINI_API_KEY",
				Models: []string{"gemini-ok", "cut-*", "hang-*", "e429-*", "echo-*"}, Clearance: "internal"},
		},
	}
}

func newRig(t testing.TB, mod func(*Config, *SessionConfig)) *rig {
	t.Helper()
	up := newFakeUpstream(t)
	cfg := testConfig(up)
	rec := &memRecorder{}
	sc := SessionConfig{ID: "s1", Recorder: rec}
	if mod != nil {
		mod(&cfg, &sc)
	}
	logs := &bytes.Buffer{}
	lg := slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := New(cfg, lg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s, err := g.NewSession(sc)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &rig{up: up, g: g, s: s, rec: rec, srv: srv, logs: logs}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// call sends one request through the gateway with the session token in
// the family's usual header.
func (r *rig) call(t testing.TB, method, path, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, r.srv.URL+path, strings.NewReader(body))
	fam, _, _ := cutFamily(path)
	switch fam {
	case Anthropic:
		req.Header.Set("X-Api-Key", r.s.Token())
		req.Header.Set("Anthropic-Version", "2023-06-01")
	case Gemini:
		req.Header.Set("X-Goog-Api-Key", r.s.Token())
	default:
		req.Header.Set("Authorization", "Bearer "+r.s.Token())
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}
