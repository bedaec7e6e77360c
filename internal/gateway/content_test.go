package gateway

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// fakeAWSKey builds an AWS-shaped access key id at run time, so no
// key-shaped literal sits in the source tree.
func fakeAWSKey(seed int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b := []byte("AKIA")
	x := uint32(seed*2654435761 + 12345)
	for i := 0; i < 16; i++ {
		x = x*1664525 + 1013904223
		b = append(b, alphabet[x>>27])
	}
	return string(b)
}

func TestRedactionReachesUpstream(t *testing.T) {
	r := newRig(t, nil)
	aws := fakeAWSKey(1)
	pem := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBvbm90YXJlYWxrZXlidXRsb25nZW5vdWdodG9tYXRjaAAAAJgAAAAA\n-----END OPENSSH PRIVATE KEY-----"
	tool := fmt.Sprintf("$ cat ~/.aws/credentials\naws_access_key_id = %s\n$ cat id\n%s\n$ env\nDATABASE_URL=postgres://app:Hunter2xyz9@db.internal:5432/app\n", aws, pem)
	body := map[string]any{
		"model": "ok-1", "max_tokens": 10,
		"system": "You are helpful. <b>&</b>",
		"messages": []any{
			map[string]any{"role": "user", "content": "run it, key " + aws},
			map[string]any{"role": "assistant", "content": []any{
				map[string]any{"type": "thinking", "thinking": "hm", "signature": "sig-" + aws},
				map[string]any{"type": "tool_use", "id": "tu_1", "name": "Bash", "input": map[string]any{"command": "cat ~/.aws/credentials"}},
			}},
			map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "tool_result", "tool_use_id": "tu_1", "content": tool},
			}},
		},
	}
	raw, _ := json.Marshal(body)
	status, resp, _ := r.call(t, "POST", "/anthropic/v1/messages", string(raw), nil)
	if status != 200 {
		t.Fatalf("status %d: %s", status, resp)
	}
	up, _, _ := r.up.last()
	if !json.Valid(up) {
		t.Fatalf("upstream body is not valid JSON: %s", up)
	}
	s := string(up)
	for _, secret := range []string{"Hunter2xyz9", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"} {
		if strings.Contains(s, secret) {
			t.Errorf("secret %q reached the upstream", secret)
		}
	}
	// The key appears twice in content and once in the opaque signature,
	// which must stay untouched (the provider verifies it).
	if n := strings.Count(s, aws); n != 1 || !strings.Contains(s, `"sig-`+aws) {
		t.Errorf("aws key occurrences upstream = %d, want only the one inside the signature", n)
	}
	ph := regexp.MustCompile(`\[REDACTED:aws-access-key-id:[0-9a-f]{6}\]`).FindAllString(s, -1)
	if len(ph) != 2 || ph[0] != ph[1] {
		t.Errorf("aws placeholders = %v, want the same placeholder twice", ph)
	}
	for _, w := range []string{"[REDACTED:private-key:", "postgres://app:[REDACTED:url-credentials:", `<b>&</b>`} {
		if !strings.Contains(s, w) {
			t.Errorf("upstream body lacks %q", w)
		}
	}
	// The record names rules and hashes, never the secrets.
	var dec *Call
	for _, c := range r.rec.all() {
		if c.Phase == PhaseDecision {
			c := c
			dec = &c
		}
	}
	rec, _ := json.Marshal(dec)
	if strings.Contains(string(rec), aws) || strings.Contains(string(rec), "Hunter2") {
		t.Errorf("record contains a secret: %s", rec)
	}
	rules := map[string]int{}
	for _, rd := range dec.Redactions {
		rules[rd.Rule] += rd.Count
		if len(rd.Hash) != 16 {
			t.Errorf("redaction hash %q, want 16 hex digits", rd.Hash)
		}
	}
	if rules["aws-access-key-id"] != 2 || rules["private-key"] != 1 || rules["url-credentials"] != 1 {
		t.Errorf("recorded redactions = %v", rules)
	}
	// Same secret, same placeholder in the next request of the session;
	// another session gets a different one.
	r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "again "+aws), nil)
	up2, _, _ := r.up.last()
	if !strings.Contains(string(up2), ph[0]) {
		t.Errorf("second request placeholder differs: %s", up2)
	}
	s2, _ := r.g.NewSession(SessionConfig{ID: "other", Recorder: &memRecorder{}})
	out, _ := s2.newRedactor().redact("x " + aws)
	if strings.Contains(out, ph[0]) {
		t.Errorf("placeholder is linkable across sessions")
	}
}

func TestSessionTokenRedacted(t *testing.T) {
	r := newRig(t, func(c *Config, _ *SessionConfig) { c.DisableRedaction = true })
	status, _, _ := r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", false, "env says OPENAI_API_KEY="+r.s.Token()), nil)
	if status != 200 {
		t.Fatal(status)
	}
	up, _, _ := r.up.last()
	if strings.Contains(string(up), r.s.Token()) || !strings.Contains(string(up), "[REDACTED:enclave-session-token:") {
		t.Errorf("session token not redacted from prompt: %s", up)
	}
}

const classifiedSrc = `package vault

// Unseal derives the master key from the operator shares and opens the vault.
func Unseal(shares [][]byte, threshold int) (*Vault, error) {
	if len(shares) < threshold {
		return nil, fmt.Errorf("need %d shares, have %d", threshold, len(shares))
	}
	secret, err := combineShares(shares[:threshold])
	if err != nil {
		return nil, fmt.Errorf("combine shares: %w", err)
	}
	kek := deriveKey(secret, []byte("vault-master-kek-v3"), 600000)
	store, err := openEncryptedStore(kek, "/var/lib/vault/data.db")
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return &Vault{store: store, unsealedAt: time.Now()}, nil
}
`

func TestClassification(t *testing.T) {
	files := []ClassifiedFile{{Path: "internal/vault/unseal.go", Level: "restricted", Content: []byte(classifiedSrc)},
		{Path: "docs/guide.md", Level: "internal", Content: []byte(strings.Repeat("The guide explains how the widget frobnicates the gizmo in many steps.\n", 3) + classifiedSrc[:0])}}
	excerpt := strings.Join(strings.Split(classifiedSrc, "\n")[7:13], "\n")
	// Reformatted: tabs to spaces, spacing changed.
	reformatted := strings.ReplaceAll(strings.ReplaceAll(excerpt, "\t", "    "), ", ", ",")

	t.Run("block", func(t *testing.T) {
		r := newRig(t, func(_ *Config, s *SessionConfig) { s.Files = files })
		status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "please review:\n"+reformatted), nil)
		if status != 403 || !strings.Contains(body, "internal/vault/unseal.go") || !strings.Contains(body, "restricted") {
			t.Fatalf("got %d %s, want 403 naming the file and level", status, body)
		}
		if r.up.count() != 0 {
			t.Errorf("classified content reached the upstream")
		}
		c := r.rec.all()[0]
		if c.Allow || c.Rule != "classification" || len(c.Classification) != 1 || c.Classification[0].Action != "blocked" ||
			c.Classification[0].StartLine < 7 || c.Classification[0].EndLine > 14 {
			t.Errorf("record = %+v, want a classification refusal with the span", c)
		}
		// Unrelated code passes.
		if status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "func add(a, b int) int {\n\treturn a + b\n}\n"), nil); status != 200 {
			t.Errorf("unrelated prompt refused: %d %s", status, body)
		}
	})
	t.Run("redact", func(t *testing.T) {
		r := newRig(t, func(c *Config, s *SessionConfig) { s.Files = files; c.OnClassified = "redact" })
		status, body, _ := r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", false, "before\n"+excerpt+"\nafter"), nil)
		if status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		up, _, _ := r.up.last()
		s := string(up)
		if strings.Contains(s, "combineShares") || !strings.Contains(s, "[REDACTED:classified:restricted:internal/vault/unseal.go]") ||
			!strings.Contains(s, "before") || !strings.Contains(s, "after") {
			t.Errorf("upstream body = %s", s)
		}
	})
	t.Run("sticky", func(t *testing.T) {
		r := newRig(t, func(c *Config, s *SessionConfig) {
			s.Files = files
			c.Providers[0].Clearance = "restricted" // anthropic may see it; openai (internal) may not
		})
		if status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, excerpt), nil); status != 200 {
			t.Fatalf("cleared model refused: %d %s", status, body)
		}
		// A later turn with no classified content still cannot go to the
		// weaker model.
		status, body, _ := r.call(t, "POST", "/openai/v1/chat/completions", openaiBody("ok-1", false, "summarise our chat"), nil)
		// OpenAI family: 400, which Codex does not retry (see finalStatus).
		if status != 400 || !strings.Contains(body, "already sent restricted content") {
			t.Errorf("weaker model after restricted content: %d %s, want 400 (sticky)", status, body)
		}
		if status, _, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, "more"), nil); status != 200 {
			t.Errorf("cleared model refused after sticky: %d", status)
		}
	})
	t.Run("unknown level", func(t *testing.T) {
		r := newRig(t, nil)
		_, err := r.g.NewSession(SessionConfig{ID: "x", Recorder: &memRecorder{}, Files: []ClassifiedFile{{Path: "a", Level: "secret"}}})
		if err == nil || !strings.Contains(err.Error(), `level "secret"`) {
			t.Errorf("NewSession = %v, want an error naming the level", err)
		}
	})
}

func TestAgentEnv(t *testing.T) {
	const gw, tok = "http://127.0.0.1:4000", "enclave-tok"
	for _, tt := range []struct {
		argv    []string
		agent   Agent
		env     map[string]string
		files   []string
		inFiles []string
	}{
		{[]string{"claude", "-p", "x"}, AgentClaude,
			map[string]string{"ANTHROPIC_BASE_URL": gw + "/anthropic", "ANTHROPIC_API_KEY": tok, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, nil, nil},
		{[]string{"/opt/bin/codex", "exec"}, AgentCodex, map[string]string{"OPENAI_API_KEY": tok},
			[]string{".codex/config.toml"}, []string{`base_url = "http://127.0.0.1:4000/openai/v1"`, `model_provider = "enclave"`, `env_key = "OPENAI_API_KEY"`}},
		{[]string{"npx", "-y", "codex"}, AgentCodex, nil, []string{".codex/config.toml"}, nil},
		{[]string{"gemini", "-p"}, AgentGemini, map[string]string{"GOOGLE_GEMINI_BASE_URL": gw + "/gemini", "GEMINI_API_KEY": tok},
			[]string{".gemini/settings.json"}, []string{`"selectedType": "gemini-api-key"`, `"usageStatisticsEnabled": false`}},
		{[]string{"opencode", "run"}, AgentOpenCode, map[string]string{"ANTHROPIC_BASE_URL": gw + "/anthropic/v1", "OPENAI_BASE_URL": gw + "/openai/v1", "OPENCODE_DISABLE_MODELS_FETCH": "1"},
			[]string{".config/opencode/opencode.json"}, []string{`"baseURL": "http://127.0.0.1:4000/anthropic/v1"`, `{env:ANTHROPIC_API_KEY}`}},
		{[]string{"aider"}, AgentOther, map[string]string{"OPENAI_BASE_URL": gw + "/openai/v1", "OPENAI_API_KEY": tok}, nil, nil},
		{nil, AgentOther, nil, nil, nil},
	} {
		if got := DetectAgent(tt.argv); got != tt.agent {
			t.Errorf("DetectAgent(%q) = %s, want %s", tt.argv, got, tt.agent)
		}
		env, files := AgentEnv(tt.argv, gw+"/", tok)
		for k, v := range tt.env {
			if env[k] != v {
				t.Errorf("AgentEnv(%q)[%s] = %q, want %q", tt.argv, k, env[k], v)
			}
		}
		if len(files) != len(tt.files) {
			t.Errorf("AgentEnv(%q) files = %d, want %d", tt.argv, len(files), len(tt.files))
		}
		for _, f := range tt.files {
			for _, w := range tt.inFiles {
				if !strings.Contains(string(files[f]), w) {
					t.Errorf("AgentEnv(%q) %s lacks %q:\n%s", tt.argv, f, w, files[f])
				}
			}
			if strings.HasSuffix(f, ".json") && !json.Valid(files[f]) {
				t.Errorf("%s is not valid JSON", f)
			}
		}
	}
}

func TestScanCacheKeepsRecords(t *testing.T) {
	r := newRig(t, nil)
	aws := fakeAWSKey(3)
	long := strings.Repeat("ordinary tool output\n", 40) + "key " + aws + "\n"
	for i := 0; i < 2; i++ {
		if status, body, _ := r.call(t, "POST", "/anthropic/v1/messages", anthropicBody("ok-1", false, long), nil); status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		up, _, _ := r.up.last()
		if strings.Contains(string(up), aws) {
			t.Fatalf("request %d: secret reached upstream (cached scan)", i)
		}
	}
	n := 0
	for _, c := range r.rec.all() {
		if c.Phase == PhaseDecision && len(c.Redactions) == 1 && c.Redactions[0].Count == 1 {
			n++
		}
	}
	if n != 2 {
		t.Errorf("decision records with the redaction = %d, want 2 (the cached scan must still be recorded)", n)
	}
}

func TestHasUsageObject(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{`{"choices":[],"usage":null}`, false},
		{`{"choices":[{"delta":{"content":"usage"}}]}`, false},
		{`{"usage" : {"prompt_tokens":3}}`, true},
		{`{"usage":null,"x":{"usage":{"output_tokens":1}}}`, true},
		{`{"usageMetadata":{"promptTokenCount":1}}`, true},
		{`{"usage":`, false},
		{`"usage"`, false},
		{`{"usageMetadataX":{}}`, false},
	} {
		if got := hasUsageObject([]byte(tc.data)); got != tc.want {
			t.Errorf("hasUsageObject(%s) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestDecodeBody(t *testing.T) {
	m, err := decodeBody([]byte(`{"model":"m","seed":12345678901234567890,"t":0.70,"x":"\ud800 bin\u0000"}`))
	if err != nil {
		t.Fatalf("decodeBody: %v", err)
	}
	// Numbers stay as written; a lone surrogate (an agent that read a
	// binary file) is replaced, not refused.
	if m["seed"] != json.Number("12345678901234567890") || m["t"] != json.Number("0.70") || m["x"] != "\ufffd bin\x00" {
		t.Errorf("decoded %#v", m)
	}
	for in, want := range map[string]string{
		`{"model":"a","model":"b"}`: `duplicate object member name "model"`,
		`{"a":{"b":1,"b":2}}`:       `duplicate object member name "b" within "/a"`,
		`null`:                      "not an object",
		` [1]`:                      "not an object",
		`{"a":1} x`:                 "after top-level value",
		`{"a":`:                     "unexpected EOF",
		`"\xff"`:                    "not an object",
	} {
		if _, err := decodeBody([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("decodeBody(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}
