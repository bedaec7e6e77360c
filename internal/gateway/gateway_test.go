package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func anthropicBody(model string, stream bool, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 100, "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": text}}})
	return string(b)
}

func openaiBody(model string, stream bool, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": text}}})
	return string(b)
}

func responsesBody(model string, stream bool, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "stream": stream, "input": text})
	return string(b)
}

func geminiBody(text string) string {
	b, _ := json.Marshal(map[string]any{"contents": []any{map[string]any{"role": "user", "parts": []any{map[string]any{"text": text}}}}})
	return string(b)
}

func TestPassThrough(t *testing.T) {
	r := newRig(t, nil)
	for _, tt := range []struct {
		name, method, path, body string
		wantUpPath               string
		stream                   bool
		in, out                  int64
	}{
		{"anthropic", "POST", "/anthropic/v1/messages?beta=true", anthropicBody("ok-1", false, "hi"), "/v1/messages?beta=true", false, 11, 7},
		{"anthropic stream", "POST", "/anthropic/v1/messages", anthropicBody("ok-1", true, "hi"), "/v1/messages", true, 11, 7},
		{"anthropic no v1 (OpenCode shape)", "POST", "/anthropic/messages", anthropicBody("ok-1", true, "hi"), "/v1/messages", true, 11, 7},
		{"anthropic count_tokens", "POST", "/anthropic/v1/messages/count_tokens", anthropicBody("ok-1", false, "hi"), "/v1/messages/count_tokens", false, 0, 0},
		{"anthropic unprefixed", "POST", "/v1/messages", anthropicBody("ok-1", false, "hi"), "/v1/messages", false, 11, 7},
		{"openai chat", "POST", "/openai/v1/chat/completions", openaiBody("ok-1", false, "hi"), "/v1/chat/completions", false, 11, 7},
		{"openai chat stream", "POST", "/openai/v1/chat/completions", openaiBody("ok-1", true, "hi"), "/v1/chat/completions", true, 11, 7},
		{"openai responses", "POST", "/openai/v1/responses", responsesBody("ok-1", false, "hi"), "/v1/responses", false, 11, 7},
		{"openai responses stream", "POST", "/openai/responses", responsesBody("ok-1", true, "hi"), "/v1/responses", true, 11, 7},
		{"gemini generate", "POST", "/gemini/v1beta/models/gemini-ok:generateContent", geminiBody("hi"), "/v1beta/models/gemini-ok:generateContent", false, 11, 7},
		{"gemini stream sse", "POST", "/gemini/v1beta/models/gemini-ok:streamGenerateContent?alt=sse", geminiBody("hi"), "/v1beta/models/gemini-ok:streamGenerateContent?alt=sse", true, 11, 7},
		{"gemini count", "POST", "/gemini/v1beta/models/gemini-ok:countTokens", geminiBody("hi"), "/v1beta/models/gemini-ok:countTokens", false, 0, 0},
		{"gemini unprefixed", "POST", "/v1beta/models/gemini-ok:generateContent", geminiBody("hi"), "/v1beta/models/gemini-ok:generateContent", false, 11, 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.rec.waitResult(t, 0))
			hdr := map[string]string{}
			if strings.HasPrefix(tt.path, "/v1/") {
				hdr["X-Api-Key"] = r.s.Token()
			}
			if strings.HasPrefix(tt.path, "/v1beta/") {
				hdr["X-Goog-Api-Key"] = r.s.Token()
			}
			status, body, _ := r.call(t, tt.method, tt.path, tt.body, hdr)
			if status != 200 {
				t.Fatalf("status = %d, want 200; body %s", status, body)
			}
			upBody, upHdr, upPath := r.up.last()
			if upPath != tt.wantUpPath {
				t.Errorf("upstream path = %q, want %q", upPath, tt.wantUpPath)
			}
			if string(upBody) != tt.body {
				t.Errorf("upstream body = %s, want the agent's body unchanged %s", upBody, tt.body)
			}
			for k, vs := range upHdr {
				for _, v := range vs {
					if strings.Contains(v, r.s.Token()) {
						t.Errorf("upstream header %s carries the session token", k)
					}
				}
			}
			if tt.stream {
				if !strings.Contains(body, "data: ") {
					t.Errorf("stream body = %q, want SSE", body)
				}
			}
			res := r.rec.waitResult(t, before+1)
			if len(res) != before+1 {
				t.Fatalf("result records = %d, want %d", len(res), before+1)
			}
			c := res[len(res)-1]
			if c.InputTokens != tt.in || c.OutputTokens != tt.out || c.Partial || c.Status != 200 {
				t.Errorf("record = in %d out %d partial %v status %d, want in %d out %d, complete, 200 (err %q)",
					c.InputTokens, c.OutputTokens, c.Partial, c.Status, tt.in, tt.out, c.Error)
			}
			if c.ResponseBytes != int64(len(body)) {
				t.Errorf("record response bytes = %d, want %d", c.ResponseBytes, len(body))
			}
		})
	}
}

func TestAuth(t *testing.T) {
	r := newRig(t, nil)
	other, err := r.g.NewSession(SessionConfig{ID: "s2", Recorder: &memRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		path string
	}{
		{"no key", map[string]string{"X-Api-Key": ""}, "/anthropic/v1/messages"},
		{"wrong key", map[string]string{"X-Api-Key": "sk-ant-guess"}, "/anthropic/v1/messages"},
		{"other session", map[string]string{"X-Api-Key": other.Token()}, "/anthropic/v1/messages"},
		{"real key", map[string]string{"X-Api-Key": realAnthropicKey}, "/anthropic/v1/messages"},
		{"token plus wrong bearer", map[string]string{"Authorization": "Bearer nope"}, "/anthropic/v1/messages"},
		{"basic auth", map[string]string{"Authorization": "Basic Zm9vOmJhcg==", "X-Api-Key": ""}, "/anthropic/v1/messages"},
		{"openai wrong", map[string]string{"Authorization": "Bearer " + other.Token()}, "/openai/v1/chat/completions"},
		{"gemini query other", map[string]string{"X-Goog-Api-Key": ""}, "/gemini/v1beta/models/gemini-ok:generateContent?key=" + other.Token()},
		{"unknown path without key", map[string]string{"X-Api-Key": ""}, "/anthropic/v1/secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := r.up.count()
			status, body, _ := r.call(t, "POST", tt.path, anthropicBody("ok-1", false, "x"), tt.hdr)
			if status != 401 {
				t.Errorf("status = %d, want 401; body %s", status, body)
			}
			if r.up.count() != n {
				t.Errorf("upstream was contacted")
			}
			if strings.Contains(body, other.Token()) || strings.Contains(body, r.s.Token()) {
				t.Errorf("error body echoes a token: %s", body)
			}
		})
	}
	// The Gemini ?key= form works with the right token and is not forwarded.
	status, body, _ := r.call(t, "POST", "/gemini/v1beta/models/gemini-ok:generateContent?key="+r.s.Token(), geminiBody("x"), map[string]string{"X-Goog-Api-Key": ""})
	if status != 200 {
		t.Fatalf("?key= status = %d, want 200: %s", status, body)
	}
	if _, _, p := r.up.last(); strings.Contains(p, "key=") {
		t.Errorf("upstream path = %q, want no key parameter", p)
	}
	// After End, the token is worthless.
	r.s.End()
	r.s.End()
	status, body, _ = r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil)
	if status != 401 || !strings.Contains(body, "ended") {
		t.Errorf("after End: status = %d body %s, want 401 naming the ended session", status, body)
	}
}

func TestErrorShapes(t *testing.T) {
	r := newRig(t, nil)
	for _, tt := range []struct {
		name, method, path, body string
		status                   int
		want                     []string
	}{
		{"anthropic unknown path", "POST", "/anthropic/v1/complete", "{}", 404, []string{`"type":"error"`, `"not_found_error"`}},
		{"openai unknown path", "POST", "/openai/v1/embeddings", "{}", 404, []string{`"error":{`, `"code":"not_found"`}},
		{"gemini unknown op", "POST", "/gemini/v1beta/models/gemini-ok:embedContent", "{}", 404, []string{`"status":"NOT_FOUND"`}},
		{"gemini bad model", "POST", "/gemini/v1beta/models/..%2f..%2fx:generateContent", "{}", 400, []string{`INVALID_ARGUMENT`}},
		{"root path", "GET", "/", "", 404, []string{`not a model endpoint`}},
		{"unsanctioned anthropic", "POST", "/anthropic/v1/messages", anthropicBody("claude-big", false, "x"), 403,
			[]string{`permission_error`, `model \"claude-big\" is not sanctioned`, `ok-*`}},
		{"unsanctioned openai", "POST", "/openai/v1/chat/completions", openaiBody("gpt-x", true, "x"), 400, []string{`gpt-x`, `ok-*`, `"code":"permission_denied"`}},
		{"unsanctioned gemini", "POST", "/gemini/v1beta/models/gemini-secret:generateContent", geminiBody("x"), 403, []string{`PERMISSION_DENIED`, `gemini-secret`, `gemini-ok`}},
		{"malformed json", "POST", "/anthropic/v1/messages", `{"model":"ok-1",`, 400, []string{`invalid_request_error`, `not valid JSON`}},
		{"trailing json", "POST", "/openai/v1/chat/completions", `{"model":"ok-1"} {}`, 400, []string{`after top-level value`}},
		{"array json", "POST", "/openai/v1/chat/completions", `[1]`, 400, []string{`not an object`}},
		// The gateway must not check one "model" while the provider uses
		// another: a duplicate member name anywhere is refused.
		{"duplicate model", "POST", "/openai/v1/chat/completions", `{"model":"ok-1","model":"gpt-4o"}`, 400, []string{`duplicate object member name \"model\"`}},
		{"duplicate nested", "POST", "/openai/v1/chat/completions", `{"model":"ok-1","messages":[{"role":"user","content":"a","content":"b"}]}`, 400, []string{`duplicate object member name \"content\" within \"/messages/0\"`}},
		{"no model", "POST", "/openai/v1/chat/completions", `{"messages":[]}`, 400, []string{`no \"model\"`}},
		{"websocket", "GET", "/openai/v1/responses", "", 426, []string{`websocket`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.name == "websocket" {
				hdr["Upgrade"] = "websocket"
				hdr["Connection"] = "Upgrade"
			}
			if tt.path == "/" {
				hdr["Authorization"] = "Bearer " + r.s.Token()
			}
			n := r.up.count()
			status, body, h := r.call(t, tt.method, tt.path, tt.body, hdr)
			if status != tt.status {
				t.Errorf("status = %d, want %d; body %s", status, tt.status, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("body = %s, want it to contain %s", body, w)
				}
			}
			if !json.Valid([]byte(body)) || h.Get("Content-Type") != "application/json" {
				t.Errorf("error is not JSON: %s", body)
			}
			if got := h.Get("X-Should-Retry"); tt.status < 500 && got != "false" {
				t.Errorf("X-Should-Retry = %q, want false (a refusal is final)", got)
			}
			if r.up.count() != n {
				t.Errorf("upstream was contacted")
			}
		})
	}
	// Every refusal is recorded.
	refused := 0
	for _, c := range r.rec.all() {
		if c.Phase == PhaseDecision && !c.Allow {
			refused++
			if c.Rule == "" || c.Reason == "" {
				t.Errorf("refusal record without rule or reason: %+v", c)
			}
		}
	}
	if refused < 12 {
		t.Errorf("refusal records = %d, want at least 12", refused)
	}
}

func TestModelListFiltered(t *testing.T) {
	r := newRig(t, nil)
	for _, tt := range []struct {
		path, want, notWant string
		hdr                 map[string]string
	}{
		{"/anthropic/v1/models", `"ok-1"`, "forbidden-1", nil},
		{"/openai/v1/models", `"ok-2"`, "forbidden-1", nil},
		{"/v1/models", `"ok-1"`, "forbidden-1", map[string]string{"Authorization": "Bearer " + "TOKEN"}},
		{"/gemini/v1beta/models", `models/gemini-ok`, "gemini-secret", nil},
	} {
		hdr := tt.hdr
		if hdr != nil {
			hdr = map[string]string{"Authorization": "Bearer " + r.s.Token()}
		}
		status, body, _ := r.call(t, "GET", tt.path, "", hdr)
		if status != 200 || !strings.Contains(body, tt.want) || strings.Contains(body, tt.notWant) {
			t.Errorf("GET %s = %d %s, want 200 with %s and without %s", tt.path, status, body, tt.want, tt.notWant)
		}
	}
}

func TestKeyNeverLeaks(t *testing.T) {
	r := newRig(t, nil)
	var outputs []string
	add := func(_ int, body string, h http.Header) {
		outputs = append(outputs, body)
		for k, vs := range h {
			outputs = append(outputs, k+": "+strings.Join(vs, ","))
		}
	}
	add(r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("echo-1", false, "x"), nil))
	add(r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("echo-1", false, "x"), nil))
	add(r.call(t, "POST", "/gemini/v1beta/models/echo-1:generateContent", geminiBody("x"), nil))
	add(r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", true, "my key is "+realAnthropicKey), nil))
	add(r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("redir-1", false, "x"), nil))
	add(r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("nope", false, "x"), nil))
	add(r.call(t, "GET", "/anthropic/v1/models", "", nil))
	r.rec.waitResult(t, 6)
	recs, _ := json.Marshal(r.rec.all())
	outputs = append(outputs, string(recs), r.logs.String(), strings.Join(r.g.Describe(), "\n"))
	for _, key := range []string{realAnthropicKey, realOpenAIKey, realGeminiKey} {
		for i, o := range outputs {
			if strings.Contains(o, key) {
				t.Errorf("output %d contains a real key: %.200s", i, o)
			}
		}
	}
	// The key pasted into a prompt must not reach the upstream either.
	for _, b := range r.up.bodies {
		if strings.Contains(string(b), realAnthropicKey) {
			t.Errorf("a real key reached the upstream in a prompt")
		}
	}
	// The gateway does not follow the upstream's redirect.
	status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("redir-1", false, "x"), nil)
	if status != 502 || !strings.Contains(body, "redirect") {
		t.Errorf("redirect: status %d body %s, want 502 naming the redirect", status, body)
	}
	// A Gateway printed by mistake shows no key.
	if s := strings.Join([]string{sprint(r.g), sprint(r.g.providers[0])}, ""); strings.Contains(s, realAnthropicKey) {
		t.Errorf("printing the gateway shows the key")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good := write("good", realOpenAIKey+"\n", 0o600)
	for _, tt := range []struct {
		name    string
		file    string
		wantErr string
	}{
		{"0600 ok", good, ""},
		{"0640 refused", write("grp", realOpenAIKey, 0o640), "lets group or others read it"},
		{"0604 refused", write("oth", realOpenAIKey, 0o604), "0604"},
		{"empty", write("empty", "\n", 0o600), "exactly one non-empty line"},
		{"two lines", write("two", "a\nb\n", 0o600), "exactly one non-empty line"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Environ: []string{}, Providers: []ProviderConfig{{Name: "o", Family: OpenAI, KeyFile: tt.file, Models: []string{"*"}}}}, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrKeyFile) && !errors.Is(err, ErrConfig) {
				t.Errorf("error %v wraps neither ErrKeyFile nor ErrConfig", err)
			}
			if strings.Contains(err.Error(), realOpenAIKey) {
				t.Errorf("error contains the key")
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	cfg, err := FromEnv([]string{"ANTHROPIC_API_KEY=" + realAnthropicKey, "ANTHROPIC_BASE_URL=http://127.0.0.1:9/v1",
		"GEMINI_API_KEY=" + realGeminiKey, "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.providers) != 2 {
		t.Fatalf("providers = %d, want 2 (anthropic, gemini)", len(g.providers))
	}
	if got := g.providers[0].base.String(); got != "http://127.0.0.1:9" {
		t.Errorf("anthropic base = %q, want the trailing /v1 dropped", got)
	}
	if got := g.providers[1].base.String(); got != defaultGeminiURL {
		t.Errorf("gemini base = %q, want %q", got, defaultGeminiURL)
	}
	if !g.sanctioned(Anthropic, "anything-at-all") || g.sanctioned(OpenAI, "gpt") {
		t.Errorf("FromEnv sanctions: want every anthropic model and no openai model")
	}
	d := strings.Join(g.Describe(), "\n")
	for _, w := range []string{"anthropic", "gemini", "clearance up to internal", "no policy", "$ANTHROPIC_API_KEY"} {
		if !strings.Contains(d, w) {
			t.Errorf("Describe = %q, want %q", d, w)
		}
	}
	if _, err := FromEnv([]string{"PATH=/bin"}); !errors.Is(err, ErrConfig) {
		t.Errorf("FromEnv(no keys) = %v, want ErrConfig", err)
	}
	cfg, _ = FromEnv([]string{"OPENAI_API_KEY=x", "OPENAI_BASE_URL=http://127.0.0.1:9"})
	g, _ = New(cfg, nil)
	if got := g.providers[0].base.String(); got != "http://127.0.0.1:9/v1" {
		t.Errorf("openai base = %q, want /v1 added", got)
	}
}

func TestConfigErrors(t *testing.T) {
	env := []string{"K=v"}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no providers", Config{Environ: env}, "no providers"},
		{"bad family", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: "azure", KeyEnv: "K"}}}, `family "azure"`},
		{"bad url", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: OpenAI, BaseURL: "ftp://h", KeyEnv: "K"}}}, "base URL"},
		{"creds in url", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: OpenAI, BaseURL: "https://u:pw@h", KeyEnv: "K"}}}, "credentials"},
		{"unset key", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "NOPE"}}}, "NOPE is not set"},
		{"bad clearance", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "K", Clearance: "secret"}}}, `clearance "secret"`},
		{"dup name", Config{Environ: env, Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "K"}, {Name: "x", Family: Gemini, KeyEnv: "K"}}}, "repeated"},
		{"bad action", Config{Environ: env, OnClassified: "warn", Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "K"}}}, "block or redact"},
		{"bad rules", Config{Environ: env, SecretRules: []byte("[[rules]]\nid='a'\nregex='('"), Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "K"}}}, "rules[0] (a): regex"},
		{"unknown rule key", Config{Environ: env, SecretRules: []byte("[[rules]]\nid='a'\nregexx='a'"), Providers: []ProviderConfig{{Name: "x", Family: OpenAI, KeyEnv: "K"}}}, "unknown key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrConfig) {
				t.Errorf("New = %v, want ErrConfig containing %q", err, tt.want)
			}
		})
	}
}

func TestStreamsChunkByChunk(t *testing.T) {
	r := newRig(t, nil)
	r.up.release = make(chan struct{})
	for _, tt := range []struct{ path, body string }{
		{"/anthropic/v1/messages", anthropicBody("hang-1", true, "x")},
		{"/openai/v1/chat/completions", openaiBody("hang-1", true, "x")},
		{"/gemini/v1beta/models/hang-1:streamGenerateContent?alt=sse", geminiBody("x")},
	} {
		req, _ := http.NewRequest("POST", r.srv.URL+tt.path, strings.NewReader(tt.body))
		req.Header.Set("Authorization", "Bearer "+r.s.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// The upstream holds the stream after its first event: the agent
		// must already have it.
		got := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if !strings.HasPrefix(line, "event:") && !strings.HasPrefix(line, "data:") {
				t.Errorf("%s: first line = %q", tt.path, line)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: first event not delivered while the upstream holds the stream (buffering)", tt.path)
		}
		resp.Body.Close()
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	r := newRig(t, nil)
	r.up.release = make(chan struct{}) // never closed
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+"/anthropic/v1/messages", strings.NewReader(anthropicBody("hang-1", true, "x")))
	req.Header.Set("X-Api-Key", r.s.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	cancel()
	select {
	case <-r.up.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled when the client went away")
	}
	res := r.rec.waitResult(t, 1)
	if len(res) != 1 || !res[0].Partial || !strings.Contains(res[0].Error, "client disconnected") {
		t.Errorf("result = %+v, want partial with client disconnected", res)
	}
	// The gateway keeps serving.
	if status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil); status != 200 {
		t.Errorf("after a dropped client: %d %s", status, body)
	}
}

func TestStreamCutIsPartial(t *testing.T) {
	r := newRig(t, nil)
	for i, tt := range []struct{ path, body, wantEvent string }{
		{"/anthropic/v1/messages", anthropicBody("cut-1", true, "x"), "event: error"},
		{"/openai/v1/chat/completions", openaiBody("cut-1", true, "x"), `"upstream_error"`},
		{"/openai/v1/responses", responsesBody("cut-1", true, "x"), "event: error"},
		{"/gemini/v1beta/models/cut-1:streamGenerateContent?alt=sse", geminiBody("x"), ""},
	} {
		status, body, _ := r.call(t, "POST", tt.path, tt.body, nil)
		if status != 200 {
			t.Fatalf("%s: status %d", tt.path, status)
		}
		if tt.wantEvent != "" && !strings.Contains(body, tt.wantEvent) {
			t.Errorf("%s: body %q, want a closing error event %s", tt.path, body, tt.wantEvent)
		}
		res := r.rec.waitResult(t, i+1)
		c := res[len(res)-1]
		if !c.Partial || c.Error == "" {
			t.Errorf("%s: record partial=%v err=%q, want partial", tt.path, c.Partial, c.Error)
		}
	}
}

func TestUpstreamErrors(t *testing.T) {
	r := newRig(t, func(c *Config, _ *SessionConfig) { c.HeaderTimeout = 300 * time.Millisecond })
	status, body, h := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("e429-1", false, "x"), nil)
	if status != 429 || h.Get("Retry-After") != "7" || !strings.Contains(body, "rate_limit_error") {
		t.Errorf("429: got %d %s retry-after %q, want the upstream's 429 passed through", status, body, h.Get("Retry-After"))
	}
	status, body, _ = r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("slow-1", false, "x"), nil)
	if status != 504 || !strings.Contains(body, "did not answer in time") || !strings.Contains(body, `"error"`) {
		t.Errorf("timeout: got %d %s, want 504 in OpenAI shape", status, body)
	}
	r.up.srv.Close()
	status, body, _ = r.call(t, "POST", "/gemini/v1beta/models/gemini-ok:generateContent", geminiBody("x"), nil)
	if status != 502 || !strings.Contains(body, "unreachable") || !strings.Contains(body, `"status":"INTERNAL"`) {
		t.Errorf("unreachable: got %d %s, want 502 in Gemini shape", status, body)
	}
}

func TestRecorderFailureFailsClosed(t *testing.T) {
	r := newRig(t, nil)
	r.rec.fail = true
	status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil)
	if status != 503 || !strings.Contains(body, "audit log") {
		t.Errorf("got %d %s, want 503 naming the audit log", status, body)
	}
	if r.up.count() != 0 {
		t.Errorf("upstream contacted while the audit log was down")
	}
}

func TestBudgets(t *testing.T) {
	r := newRig(t, func(_ *Config, s *SessionConfig) { s.Budget = Budget{Requests: 2} })
	for i := 0; i < 2; i++ {
		if status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil); status != 200 {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
	}
	status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil)
	if status != 403 || !strings.Contains(body, "request budget of 2") {
		t.Errorf("3rd call = %d %s, want 403 naming the request budget", status, body)
	}
	r = newRig(t, func(_ *Config, s *SessionConfig) { s.Budget = Budget{Tokens: 30} })
	for i := 0; i < 2; i++ { // 18 tokens each: the second call passes (18 < 30), the third does not
		if status, body, _ := r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", true, "x"), nil); status != 200 {
			t.Fatalf("call %d: %d %s", i, status, body)
		}
		r.rec.waitResult(t, i+1)
	}
	status, body, _ = r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", true, "x"), nil)
	if status != 400 || !strings.Contains(body, "token budget of 30") || !strings.Contains(body, "36 used") {
		t.Errorf("3rd call = %d %s, want 400 (OpenAI family, final) naming the token budget", status, body)
	}
	var last Call
	for _, c := range r.rec.all() {
		last = c
	}
	if last.Allow || last.Rule != "budget.tokens" {
		t.Errorf("last record = %+v, want a budget.tokens refusal", last)
	}
	u := r.s.Usage()
	if len(u) != 1 || u[0].Requests != 2 || u[0].Refused != 1 || u[0].InputTokens != 22 || u[0].OutputTokens != 14 {
		t.Errorf("Usage = %+v", u)
	}
}

func TestBodyLimit(t *testing.T) {
	r := newRig(t, func(c *Config, _ *SessionConfig) { c.MaxBodyBytes = 1000 })
	status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, strings.Repeat("x", 2000)), nil)
	if status != 413 || !strings.Contains(body, "limit of 1000 bytes") {
		t.Errorf("got %d %s, want 413", status, body)
	}
	if status, _, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "small"), nil); status != 200 {
		t.Errorf("gateway stopped serving after a huge body: %d", status)
	}
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	r := newRig(t, nil)
	// A client that sends headers and a partial body, then stalls.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+"/anthropic/v1/messages", io.MultiReader(strings.NewReader(`{"model":"ok-1",`), blockingReader{ctx}))
	req.Header.Set("X-Api-Key", r.s.Token())
	go http.DefaultClient.Do(req)
	time.Sleep(50 * time.Millisecond)
	done := make(chan int, 1)
	go func() {
		s, _, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "x"), nil)
		done <- s
	}()
	select {
	case s := <-done:
		if s != 200 {
			t.Errorf("other client got %d", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled client blocked another")
	}
}

type blockingReader struct{ ctx context.Context }

func (b blockingReader) Read([]byte) (int, error) { <-b.ctx.Done(); return 0, b.ctx.Err() }

func sprint(v any) string { return fmt.Sprintf("%v %+v %#v", v, v, v) }

func TestServerCutsStalledBody(t *testing.T) {
	r := newRig(t, nil)
	srv := r.s.Server()
	srv.ReadTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nX-Api-Key: %s\r\nContent-Length: 1000\r\n\r\n{\"model\":", r.s.Token())
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.Contains(string(b), "400") || !strings.Contains(string(b), "reading the request body failed") {
		t.Errorf("stalled body got %q, want a 400 naming the body read", b)
	}
	if r.up.count() != 0 {
		t.Errorf("upstream contacted for a stalled request")
	}
}

// An agent that opens connections without end (it can fork many processes,
// each with its own descriptor limit) must not make the enclave process
// hold one goroutine, buffer set and descriptor per connection: the
// session's server takes at most MaxConns at once, and serves again once
// the flood is gone.
func TestServerCapsConnections(t *testing.T) {
	const limit = 4
	r := newRig(t, func(_ *Config, sc *SessionConfig) { sc.MaxConns = limit })
	srv := r.s.Server()
	var open, peak atomic.Int64
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			n := open.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	// The flood: connections that send nothing. The kernel completes each
	// handshake, so the agent sees them all as open.
	var flood []net.Conn
	for range 50 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		flood = append(flood, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() < limit && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for any accept over the cap
	if got := peak.Load(); got != limit {
		t.Fatalf("the server took %d of 50 idle connections at once, want %d", got, limit)
	}

	for _, c := range flood {
		c.Close()
	}
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/anthropic/v1/models", nil)
	req.Header.Set("X-Api-Key", r.s.Token())
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("after the flood closed, a request was not served: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the flood: status %d, want 200", resp.StatusCode)
	}
	if got := peak.Load(); got > limit {
		t.Errorf("peak of %d connections at once, over the cap of %d", got, limit)
	}
}
