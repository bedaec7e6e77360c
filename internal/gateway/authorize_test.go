package gateway

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// SessionConfig.Authorize can only narrow: it is asked about calls the
// gateway allowed, its refusal and its error refuse before anything goes
// upstream, and the deciding policies are on the record.
func TestAuthorizeNarrows(t *testing.T) {
	var mu sync.Mutex
	var asked []ModelCheck
	files := []ClassifiedFile{{Path: "internal/vault/unseal.go", Level: "internal", Content: []byte(classifiedSrc)}}
	excerpt := strings.Join(strings.Split(classifiedSrc, "\n")[7:13], "\n")
	r := newRig(t, func(_ *Config, s *SessionConfig) {
		s.Files = files
		s.Authorize = func(ctx context.Context, q ModelCheck) (Authorization, error) {
			mu.Lock()
			c := *q.Call
			asked = append(asked, ModelCheck{Call: &c, Level: q.Level, Rank: q.Rank})
			mu.Unlock()
			switch {
			case q.Call.Provider == "openai":
				return Authorization{Policies: []string{"no-openai"}, Reason: "forbidden by no-openai"}, nil
			case q.Call.Model == "ok-broken":
				return Authorization{}, errors.New("policy unreadable")
			case q.Rank >= 1:
				return Authorization{Policies: []string{"nothing-internal"}, Reason: "forbidden by nothing-internal"}, nil
			}
			return Authorization{Allow: true, Policies: []string{"models-sanctioned"}}, nil
		}
	})
	for _, tt := range []struct {
		name, path, body string
		status           int
		rule             string
		policies         []string
	}{
		{"allowed", "/anthropic/v1/messages", anthropicBody("ok-1", false, "hi"), 200, "model.sanctioned", []string{"models-sanctioned"}},
		// OpenAI-family refusals are 400 (final for Codex), see writeError.
		{"provider forbidden", "/openai/v1/chat/completions", openaiBody("ok-1", false, "hi"), 400, RuleAuthz, []string{"no-openai"}},
		{"authoriser error", "/anthropic/v1/messages", anthropicBody("ok-broken", false, "hi"), 403, RuleAuthz, nil},
		{"classified content", "/anthropic/v1/messages", anthropicBody("ok-1", false, "review:\n"+excerpt), 403, RuleAuthz, []string{"nothing-internal"}},
		{"not sanctioned: never asked", "/anthropic/v1/messages", anthropicBody("nope-1", false, "hi"), 403, "model.sanctioned", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := r.up.count()
			n := len(r.rec.all())
			status, body, _ := r.call(t, "POST", tt.path, tt.body, nil)
			if status != tt.status {
				t.Fatalf("status = %d (%s), want %d", status, body, tt.status)
			}
			if got := r.up.count() > before; got != (status == 200) {
				t.Errorf("upstream reached = %v with status %d", got, status)
			}
			c := r.rec.all()[n]
			if c.Phase != PhaseDecision || c.Rule != tt.rule || !slices.Equal(c.Policies, tt.policies) {
				t.Errorf("decision record = rule %q policies %v, want %q %v", c.Rule, c.Policies, tt.rule, tt.policies)
			}
			if tt.rule == RuleAuthz && !strings.Contains(body, "polic") && !strings.Contains(body, "forbidden") {
				t.Errorf("refusal body %q does not say why", body)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 4 {
		t.Fatalf("Authorize asked %d times, want 4 (never for a call the gateway refused)", len(asked))
	}
	if q := asked[0]; q.Level != "" || q.Rank != -1 || q.Call.Provider != "anthropic" || q.Call.Model != "ok-1" || q.Call.Clearance != "internal" {
		t.Errorf("first check = %+v %+v, want anthropic/ok-1, cleared internal, no classified content", q, q.Call)
	}
	if q := asked[3]; q.Level != "internal" || q.Rank != 1 {
		t.Errorf("classified check = level %q rank %d, want internal 1", q.Level, q.Rank)
	}
}

// A model listing shows only models a call to which Authorize would allow.
func TestAuthorizeFiltersModelList(t *testing.T) {
	r := newRig(t, func(_ *Config, s *SessionConfig) {
		s.Authorize = func(ctx context.Context, q ModelCheck) (Authorization, error) {
			switch q.Call.Model {
			case "ok-2":
				return Authorization{Reason: "forbidden by no-ok-2"}, nil
			case "ok-1":
				if q.Call.Provider != "anthropic" || q.Rank != -1 {
					return Authorization{}, errors.New("unexpected check")
				}
			}
			return Authorization{Allow: true}, nil
		}
	})
	status, body, _ := r.call(t, "GET", "/anthropic/v1/models", "", nil)
	if status != 200 || !strings.Contains(body, `"ok-1"`) || strings.Contains(body, `"ok-2"`) || strings.Contains(body, "forbidden-1") {
		t.Errorf("GET /anthropic/v1/models = %d %s, want ok-1 only", status, body)
	}
}
