//go:build linux

package review_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enclave-dev/enclave/internal/authz"
)

// An enclave.cedar forbid narrows what enclave.yaml (here --allow-host)
// allows: a sandboxed agent's request to an allowlisted host is refused by
// the egress proxy at the tier the policy names, and served at another.
// Judged from outside: what the host's server received, and the egress
// record naming the deciding policy.
func TestCedarNarrowsEgress(t *testing.T) {
	f := newFixture(t)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("served\n"))
	}))
	defer up.Close()
	port := up.Listener.Addr().(*net.TCPAddr).Port
	write(t, filepath.Join(f.repo, authz.FileName), `
@id("no-loopback-for-sensitive")
forbid (principal, action == Action::"egress", resource is Host)
when { resource.name == "127.0.0.1" && context.tier == "sensitive" };
`)
	f.git(f.repo, "add", authz.FileName)
	f.git(f.repo, "commit", "-q", "-m", "cedar policy")
	script := fmt.Sprintf(`curl -sS -o /dev/null -w '%%{http_code}\n' http://127.0.0.1:%d/data > status.txt 2>&1 || true`, port)
	for _, tt := range []struct {
		tier, decision, policy, status string
		hits                           int64
	}{
		{"sensitive", "deny", "no-loopback-for-sensitive", "403", 0},
		{"routine", "allow", "egress-network-allowlist", "200", 1},
	} {
		t.Run(tt.tier, func(t *testing.T) {
			before := hits.Load()
			r := f.enclave("", nil, "run", "--trust-policy", "--tty", "never", "--gateway", "off", "--tier", tt.tier,
				"--allow-host", fmt.Sprintf("127.0.0.1:%d", port), "--", "/bin/sh", "-c", script)
			if r.code != 0 {
				t.Fatalf("enclave run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if got := hits.Load() - before; got != tt.hits {
				t.Errorf("the host's server got %d requests, want %d", got, tt.hits)
			}
			var s struct {
				ID string `json:"id"`
			}
			json.Unmarshal([]byte(strings.SplitN(f.must("", "sessions", "--json", "-n", "1"), "\n", 2)[0]), &s)
			if diff := f.must("", "diff", s.ID); !strings.Contains(diff, "+"+tt.status) {
				t.Errorf("the agent saw another status than %s:\n%s", tt.status, diff)
			}
			var found bool
			for _, line := range strings.Split(strings.TrimSpace(f.must("", "log", "--json", "--kind", "egress", s.ID)), "\n") {
				var ev struct {
					Decision string `json:"decision"`
					Data     struct {
						Host     string   `json:"host"`
						Rule     string   `json:"rule"`
						Policies []string `json:"policies"`
					} `json:"data"`
				}
				if err := json.Unmarshal([]byte(line), &ev); err != nil {
					t.Fatal(err)
				}
				if ev.Data.Host != "127.0.0.1" {
					continue
				}
				found = true
				if ev.Decision != tt.decision || strings.Join(ev.Data.Policies, ",") != tt.policy {
					t.Errorf("egress record = %s by %v (rule %s), want %s by %s", ev.Decision, ev.Data.Policies, ev.Data.Rule, tt.decision, tt.policy)
				}
			}
			if !found {
				t.Error("no egress record for 127.0.0.1")
			}
			// The reviewer sees the refusal and the policy behind it.
			if screen := f.must("bob", "review", "--no-pager", s.ID); (tt.decision == "deny") != strings.Contains(screen, "no-loopback-for-sensitive") {
				t.Errorf("review screen (decision %s) and the deciding policy:\n%s", tt.decision, screen)
			}
		})
	}
}

// Verify is a stage too: the Cedar policy decides who may run the gate on
// a session, on the record; a refused verify leaves the report untouched.
func TestVerifyAuthorization(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.repo, authz.FileName), `
@id("mallory-never-verifies")
forbid (principal == User::"mallory", action == Action::"verify", resource is Session);
`)
	f.git(f.repo, "add", authz.FileName)
	f.git(f.repo, "commit", "-q", "-m", "cedar policy")
	id := f.runAgent(`printf 'x\n' > x.txt`, "routine")
	report := filepath.Join(f.state, "sessions", id, "verify.json")
	before, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("run did not verify the change: %v", err)
	}
	f.lastDecision(id, "verify", "allow", "humans-act-on-sessions")
	f.refused("mallory", nil, "mallory-never-verifies", "verify", id)
	f.lastDecision(id, "verify", "deny", "mallory-never-verifies")
	f.refused("", []string{"ENCLAVE_SESSION=" + id}, "no policy permits it", "verify", id)
	if after, _ := os.ReadFile(report); !bytes.Equal(before, after) {
		t.Fatal("a refused verify rewrote the report")
	}
	if r := f.enclave("bob", nil, "verify", id); r.code != 0 && r.code != 3 {
		t.Fatalf("bob's verify: exit %d\n%s", r.code, r.stderr)
	}
	f.lastDecision(id, "verify", "allow", "humans-act-on-sessions")
}
