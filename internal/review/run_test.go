package review

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/authz"
)

type memLog struct {
	evs  []audit.Event
	fail bool
}

func (m *memLog) Append(_ context.Context, ev audit.Event) (audit.Entry, error) {
	if m.fail {
		return audit.Entry{}, errors.New("disk full")
	}
	m.evs = append(m.evs, ev)
	return audit.Entry{Seq: int64(len(m.evs))}, nil
}

func TestAuthorizeRun(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, authz.FileName), []byte(`@id("no-codex-on-sensitive")
forbid (principal, action == Action::"run", resource is Session)
when { resource.tier == "sensitive" && resource.agent == "codex" };`), 0o644)
	alice := authz.Principal{Type: authz.User, ID: "alice"}
	ctx := context.Background()
	for _, tt := range []struct {
		argv       []string
		tier, want string
		allow      bool
	}{
		{[]string{"/usr/bin/codex", "exec", "x"}, "sensitive", "sensitive", false},
		{[]string{"/usr/bin/codex"}, "", "routine", true},
		{[]string{"claude"}, "sensitive", "sensitive", true},
	} {
		log := &memLog{}
		d, err := AuthorizeRun(ctx, log, RunRequest{Repo: dir, Who: alice, Argv: tt.argv, Profile: "default", Tier: tt.tier})
		if d == nil || d.Allow != tt.allow || d.Tier != tt.want || (err == nil) != tt.allow {
			t.Fatalf("AuthorizeRun(%v, %q) = %+v, %v; want allow %v tier %s", tt.argv, tt.tier, d, err, tt.allow, tt.want)
		}
		if !tt.allow && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "no-codex-on-sensitive")) {
			t.Errorf("denial error %v does not name the policy", err)
		}
		if len(log.evs) != 1 || log.evs[0].Kind != KindAuthz || log.evs[0].Session != "" {
			t.Fatalf("recorded %+v, want one session-less authz event", log.evs)
		}
		var data map[string]any
		json.Unmarshal(log.evs[0].Data, &data)
		attrs, _ := data["resource_attrs"].(map[string]any)
		if data["action"] != "run" || attrs["agent"] != filepath.Base(tt.argv[0]) || attrs["tier"] != tt.want || attrs["profile"] != "default" {
			t.Errorf("recorded data %s", log.evs[0].Data)
		}
	}
	// Fail closed: an unrecordable decision is an error even when allowed.
	if _, err := AuthorizeRun(ctx, &memLog{fail: true}, RunRequest{Repo: dir, Who: alice, Argv: []string{"claude"}}); err == nil {
		t.Error("AuthorizeRun with a failing log = nil error")
	}
	if _, err := AuthorizeRun(ctx, nil, RunRequest{Repo: dir, Who: alice, Argv: []string{"claude"}}); err == nil {
		t.Error("AuthorizeRun without a log = nil error")
	}
	// A broken enclave.cedar is an error, never a fallback to the defaults.
	os.WriteFile(filepath.Join(dir, authz.FileName), []byte(`permit (`), 0o644)
	if _, err := AuthorizeRun(ctx, &memLog{}, RunRequest{Repo: dir, Who: alice, Argv: []string{"claude"}}); err == nil || !errors.Is(err, authz.ErrInvalid) {
		t.Errorf("AuthorizeRun with a broken policy = %v", err)
	}
}

// BenchmarkAuthorizeRun is the cost enclave run pays once per session:
// load enclave.review.yaml and enclave.cedar, decide, record.
func BenchmarkAuthorizeRun(b *testing.B) {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, authz.FileName), []byte(`@id("no-codex-on-sensitive")
forbid (principal, action == Action::"run", resource is Session)
when { resource.tier == "sensitive" && resource.agent == "codex" };`), 0o644)
	req := RunRequest{Repo: dir, Who: authz.Principal{Type: authz.User, ID: "alice"}, Argv: []string{"claude"}, Profile: "default", Tier: "sensitive"}
	ctx := context.Background()
	for b.Loop() {
		log := &memLog{}
		if _, err := AuthorizeRun(ctx, log, req); err != nil {
			b.Fatal(err)
		}
	}
}
