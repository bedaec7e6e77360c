//go:build linux

package review_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/review"
)

// authzRecords returns the audit log's authz events (all sessions, and
// those with none, like run decisions) through enclave audit export.
func (f *fixture) authzRecords() []map[string]any {
	f.t.Helper()
	out := f.must("", "audit", "export", "-no-proofs", "-kind", "authz")
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			f.t.Fatalf("export line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// runDecisions are the recorded run decisions: decision and policies.
func (f *fixture) runDecisions() [][2]string {
	var out [][2]string
	for _, ev := range f.authzRecords() {
		var d map[string]any
		switch v := ev["data"].(type) {
		case map[string]any:
			d = v
		case string:
			json.Unmarshal([]byte(v), &d)
		}
		if d["action"] != "run" {
			continue
		}
		pols, _ := json.Marshal(d["policies"])
		out = append(out, [2]string{ev["decision"].(string), string(pols)})
	}
	return out
}

func (f *fixture) sessionCount() int {
	f.t.Helper()
	out := strings.TrimSpace(f.must("", "sessions", "--json", "-n", "0"))
	if out == "" {
		return 0
	}
	return strings.Count(out, "\n") + 1
}

// enclave run asks the Cedar policy first: a user's enclave.cedar that
// forbids the sensitive tier for this agent refuses the session before it
// exists, naming the policy, with the denial on the audit record; other
// tiers and the defaults allow it.
func TestRunAuthorization(t *testing.T) {
	f := newFixture(t)
	run := func(tier string) result {
		return f.enclave("", nil, "run", "--trust-policy", "--tty", "never", "--gateway", "off", "--verify", "off", "--tier", tier, "--task", "t", "--", "/bin/sh", "-c", "echo ran > ran.txt")
	}
	// Defaults: any tier runs.
	if r := run("sensitive"); r.code != 0 {
		t.Fatalf("run --tier sensitive with the default policy: exit %d\n%s", r.code, r.stderr)
	}
	// Two records: the decision before the session existed, and its link
	// to the session once it did.
	if got := f.runDecisions(); len(got) != 2 || got[0] != [2]string{"allow", `["humans-act-on-sessions"]`} {
		t.Fatalf("run decisions after a default run = %v", got)
	}

	write(t, filepath.Join(f.repo, "enclave.cedar"), `@id("no-sh-on-sensitive")
forbid (principal, action == Action::"run", resource is Session)
when { resource.tier == "sensitive" && resource.agent == "sh" };
`)
	before := f.sessionCount()
	r := run("sensitive")
	if r.code == 0 || !strings.Contains(r.stderr, "no-sh-on-sensitive") || !strings.Contains(r.stderr, "not authorised") {
		t.Fatalf("run --tier sensitive under a forbid = exit %d, stderr %q; want a refusal naming no-sh-on-sensitive", r.code, r.stderr)
	}
	if n := f.sessionCount(); n != before {
		t.Fatalf("a refused run created a session (%d -> %d)", before, n)
	}
	got := f.runDecisions()
	if len(got) != 3 || got[2] != [2]string{"deny", `["no-sh-on-sensitive"]`} {
		t.Fatalf("run decisions = %v, want the denial by no-sh-on-sensitive on record", got)
	}
	// The forbid is narrow: the routine tier still runs.
	if r := run("routine"); r.code != 0 {
		t.Fatalf("run --tier routine: exit %d\n%s", r.code, r.stderr)
	}
	// The allowed run is on the session's own record too.
	var last struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(strings.SplitN(f.must("", "sessions", "--json", "-n", "1"), "\n", 2)[0]), &last)
	f.lastDecision(last.ID, "run", "allow", "humans-act-on-sessions")
	if got := f.runDecisions(); len(got) != 5 || got[3][0] != "allow" || got[4][0] != "allow" {
		t.Fatalf("run decisions = %v, want the decision and its link to the session", got)
	}
	// A tier that does not exist is an error naming the tiers, not a run.
	if r := run("yolo"); r.code == 0 || !strings.Contains(r.stderr, `tier "yolo" is not defined`) {
		t.Fatalf("run --tier yolo = exit %d, %q", r.code, r.stderr)
	}
	// A tier that names a sandbox profile fixes it: another --profile is
	// refused, and a profile the policy lacks is an error, not a fallback.
	write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  docs-tests: {approvals: 1, gate: none, profile: locked-down}\n")
	r = f.enclave("", nil, "run", "--trust-policy", "--tty", "never", "--gateway", "off", "--tier", "docs-tests", "--profile", "default", "--", "/bin/true")
	if r.code == 0 || !strings.Contains(r.stderr, `tier docs-tests runs with profile "locked-down"`) {
		t.Fatalf("run --tier docs-tests --profile default = exit %d, %q", r.code, r.stderr)
	}
	r = f.enclave("", nil, "run", "--trust-policy", "--tty", "never", "--gateway", "off", "--tier", "docs-tests", "--", "/bin/true")
	if r.code == 0 || !strings.Contains(r.stderr, `profile "locked-down"`) {
		t.Fatalf("run --tier docs-tests without that profile in the policy = exit %d, %q", r.code, r.stderr)
	}
	if n := f.sessionCount(); n != before+1 {
		t.Fatalf("sessions = %d, want %d", n, before+1)
	}
}

// merge: {auto: true}: the approval that makes the approvals sufficient
// merges; merging again is a no-op.
func TestAutoMerge(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  routine: {approvals: 2, gate: none}\nmerge: {auto: true}\n")
	id := f.runAgent(`printf '# demo\n\nauto\n' > README.md`, "routine")
	out := f.must("bob", "approve", id)
	if strings.Contains(out, "merged") {
		t.Fatalf("1 of 2 approvals merged: %q", out)
	}
	if _, err := exec.Command("git", "-C", f.repo, "rev-parse", "--verify", "--quiet", "refs/heads/enclave/"+id).Output(); err == nil {
		t.Fatal("the branch exists after 1 of 2 approvals")
	}
	out = f.must("dave", "approve", id)
	if !strings.Contains(out, "merged") || !strings.Contains(out, "refs/heads/enclave/"+id) {
		t.Fatalf("second approval output %q: want the automatic merge", out)
	}
	head := f.git(f.repo, "rev-parse", "refs/heads/enclave/"+id)
	if got := f.git(f.repo, "show", head+":README.md"); !strings.Contains(got, "auto") {
		t.Fatalf("merged README = %q", got)
	}
	f.lastDecision(id, "merge", "allow", "humans-act-on-sessions")
	var merges int
	for _, ev := range f.authzEvents(id) {
		if d, _ := ev["data"].(map[string]any); d["action"] == "merge" {
			merges++
			if d["principal"] != `User::"dave"` {
				t.Errorf("automatic merge decided for %v, want dave (whose approval completed it)", d["principal"])
			}
		}
	}
	if merges != 1 {
		t.Errorf("merge decisions = %d, want 1", merges)
	}
	if out := f.must("bob", "merge", id); !strings.Contains(out, "already merged") {
		t.Fatalf("merge after the automatic merge = %q, want a no-op", out)
	}
	if got := f.git(f.repo, "rev-parse", "refs/heads/enclave/"+id); got != head {
		t.Fatalf("branch moved on the no-op merge: %s -> %s", head, got)
	}
	f.must("", "attest", "verify", "enclave/"+id)

	// With the audit log's public key, each attestation's embedded
	// checkpoint is checked too; another log's key refuses it.
	out = f.must("", "attest", "verify", "--log-key", filepath.Join(f.state, "keys", "audit.pub"), "enclave/"+id)
	if strings.Count(out, "checkpoint: audit log") != 2 {
		t.Fatalf("attest verify --log-key = %q, want a checkpoint line per approval", out)
	}
	otherPub := filepath.Join(f.root, "other-audit.pub")
	if _, err := audit.GenerateKey(filepath.Join(f.root, "other-audit.key"), otherPub, "other.example.com"); err != nil {
		t.Fatal(err)
	}
	f.refused("", nil, "unknown key", "attest", "verify", "--log-key", otherPub, "enclave/"+id)
}

// merge.mode target: the change is merged into a branch that is not
// checked out, with a merge commit made with the user's identity and
// signed as the user's git config says (SSH signing here); the work tree
// is untouched; a checked-out target is refused; merging again is a no-op.
func TestMergeTargetSigned(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen is not installed: git cannot sign with SSH keys here")
	}
	f := newFixture(t)
	f.git(f.repo, "branch", "release")
	key := filepath.Join(f.home, "signing_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "launcher@example.com", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(f.home, "allowed_signers")
	write(t, allowed, "launcher@example.com "+string(pub))
	write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  routine: {approvals: 1, gate: none}\nmerge: {mode: target, target: release}\n")
	id := f.runAgent(`printf '# demo\n\ntarget\n' > README.md`, "routine")

	// The user's signing config, set after the agent ran: only merge uses it.
	f.git(f.repo, "config", "gpg.format", "ssh")
	f.git(f.repo, "config", "user.signingkey", key)
	f.git(f.repo, "config", "commit.gpgSign", "true")
	f.git(f.repo, "config", "gpg.ssh.allowedSignersFile", allowed)

	oldRelease := f.git(f.repo, "rev-parse", "release")
	mainBefore := f.git(f.repo, "rev-parse", "main")
	f.must("bob", "approve", id)
	out := f.must("bob", "merge", id)
	if !strings.Contains(out, "into the target") {
		t.Fatalf("merge output %q", out)
	}
	head := f.git(f.repo, "rev-parse", "refs/heads/enclave/"+id)
	release := f.git(f.repo, "rev-parse", "release")
	if parents := f.git(f.repo, "log", "-1", "--format=%P", release); parents != oldRelease+" "+head {
		t.Fatalf("release %s parents = %q, want %q", release, parents, oldRelease+" "+head)
	}
	if got := f.git(f.repo, "show", "release:README.md"); !strings.Contains(got, "target") {
		t.Fatalf("release README = %q", got)
	}
	msg := f.git(f.repo, "log", "-1", "--format=%B", release)
	if !strings.Contains(msg, "Enclave-Attested-Commit: "+head) || !strings.Contains(msg, "Enclave-Session: "+id) {
		t.Fatalf("merge commit message %q lacks the trailers", msg)
	}
	if who := f.git(f.repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", release); who != "Launcher <launcher@example.com>|Launcher <launcher@example.com>" {
		t.Fatalf("merge commit identity = %q, want the user's", who)
	}
	// Signed with the user's SSH key: git verifies it ("G" = good).
	if st := f.git(f.repo, "log", "-1", "--format=%G?", release); st != "G" {
		t.Fatalf("merge commit signature status = %q, want G (good)\n%s", st, f.git(f.repo, "log", "-1", "--show-signature", release))
	}
	f.git(f.repo, "verify-commit", release)
	// The checked-out branch and the work tree are untouched.
	if got := f.git(f.repo, "rev-parse", "main"); got != mainBefore {
		t.Fatalf("main moved: %s -> %s", mainBefore, got)
	}
	if st := f.git(f.repo, "status", "--porcelain", "--untracked-files=no"); st != "" {
		t.Fatalf("work tree changed: %q", st)
	}
	if b, _ := os.ReadFile(filepath.Join(f.repo, "README.md")); string(b) != "# demo\n" {
		t.Fatalf("work tree README = %q", b)
	}
	f.must("", "attest", "verify", "enclave/"+id)

	// Again: a no-op, release stays.
	if out := f.must("bob", "merge", id); !strings.Contains(out, "already merged") {
		t.Fatalf("second merge = %q", out)
	}
	if got := f.git(f.repo, "rev-parse", "release"); got != release {
		t.Fatalf("release moved on the second merge: %s -> %s", release, got)
	}

	// A target that is checked out is refused, and nothing moves.
	write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  routine: {approvals: 1, gate: none}\nmerge: {mode: target, target: main}\n")
	id2 := f.runAgent(`printf 'x\n' > other.txt`, "routine")
	f.must("bob", "approve", id2)
	f.refused("bob", nil, "main is checked out", "merge", id2)
	if got := f.git(f.repo, "rev-parse", "main"); got != mainBefore {
		t.Fatalf("main moved on a refused merge: %s -> %s", mainBefore, got)
	}
}

// Per-tier merge settings: a tier can merge automatically to a branch,
// another automatically into a target branch, a third waits for enclave
// merge, all from one enclave.review.yaml.
func TestAutoMergePerTier(t *testing.T) {
	f := newFixture(t)
	f.git(f.repo, "branch", "release")
	write(t, filepath.Join(f.repo, review.ConfigFile), `version: 1
tiers:
  docs-tests: {approvals: 1, gate: none, merge: {auto: true}}
  routine: {approvals: 1, gate: none, merge: {auto: true, mode: target, target: release}}
  sensitive: {approvals: 1, gate: none, separation_of_duties: true}
merge: {mode: branch}
`)
	branch := func(id string) bool {
		_, err := exec.Command("git", "-C", f.repo, "rev-parse", "--verify", "--quiet", "refs/heads/enclave/"+id).Output()
		return err == nil
	}
	release := f.git(f.repo, "rev-parse", "release")

	docs := f.runAgent(`printf '# demo\n\ndocs\n' > README.md`, "docs-tests")
	out := f.must("bob", "approve", docs)
	if !strings.Contains(out, "merged") || strings.Contains(out, "into the target") || !branch(docs) {
		t.Fatalf("docs-tests approval = %q, branch %v: want an automatic merge to enclave/%s only", out, branch(docs), docs)
	}
	if got := f.git(f.repo, "rev-parse", "release"); got != release {
		t.Fatalf("release moved on a branch-mode tier: %s -> %s", release, got)
	}
	f.must("", "attest", "verify", "enclave/"+docs)

	routine := f.runAgent(`printf 'routine\n' > routine.txt`, "routine")
	out = f.must("bob", "approve", routine)
	if !strings.Contains(out, "into the target") {
		t.Fatalf("routine approval = %q: want an automatic merge into release", out)
	}
	if got := f.git(f.repo, "show", "release:routine.txt"); got != "routine" {
		t.Fatalf("release:routine.txt = %q", got)
	}
	f.must("", "attest", "verify", "enclave/"+routine)

	sens := f.runAgent(`printf 'sensitive\n' > sensitive.txt`, "sensitive")
	out = f.must("bob", "approve", sens)
	if strings.Contains(out, "merged") || branch(sens) {
		t.Fatalf("sensitive approval = %q, branch %v: the tier has no automatic merge", out, branch(sens))
	}
	if screen := f.must("bob", "review", sens); !strings.Contains(screen, "to branch enclave/<session>, by enclave merge") {
		t.Errorf("review screen of the sensitive session does not say how it merges:\n%s", screen)
	}
	var rj struct{ Merge review.MergeConfig }
	if err := json.Unmarshal([]byte(f.must("bob", "review", "--json", routine)), &rj); err != nil || rj.Merge != (review.MergeConfig{Mode: "target", Target: "release", Auto: true}) {
		t.Errorf("review --json of the routine session: merge = %+v (%v), want target release, auto", rj.Merge, err)
	}
	// The team lead's view: filters by state, tier and agent, and a
	// compact status per session.
	ids := func(args ...string) string {
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(f.must("", append([]string{"sessions", "--json", "-n", "0"}, args...)...)), "\n") {
			var s struct{ ID string }
			if line != "" && json.Unmarshal([]byte(line), &s) == nil {
				got = append(got, s.ID)
			}
		}
		slices.Sort(got)
		return strings.Join(got, " ")
	}
	sorted := func(s ...string) string { slices.Sort(s); return strings.Join(s, " ") }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--state", "merged"}, sorted(docs, routine)},
		{[]string{"--state", "approved"}, sens},
		{[]string{"--state", "needs-review"}, ""},
		{[]string{"--tier", "docs-tests"}, docs},
		{[]string{"--tier", "sensitive", "--state", "approved"}, sens},
		{[]string{"--agent", "sh"}, sorted(docs, routine, sens)},
		{[]string{"--agent", "claude"}, ""},
	} {
		if got := ids(tt.args...); got != tt.want {
			t.Errorf("sessions %v = [%s], want [%s]", tt.args, got, tt.want)
		}
	}
	table := f.must("", "sessions")
	for _, want := range []string{"merged to enclave/" + docs, "merged to enclave/" + routine, "1/1 approvals (bob)"} {
		if !strings.Contains(table, want) {
			t.Errorf("sessions table lacks %q:\n%s", want, table)
		}
	}
	if out := f.must("bob", "merge", sens); !strings.Contains(out, "merged") || !branch(sens) {
		t.Fatalf("merge of the sensitive session = %q", out)
	}
	if got := f.git(f.repo, "rev-parse", "release"); strings.Contains(f.git(f.repo, "log", "--format=%H", got), f.git(f.repo, "rev-parse", "enclave/"+sens)) {
		t.Fatal("the sensitive session landed on release; its tier merges to a branch")
	}
}

// An agent's change to enclave's own governance files (here the review
// config, to merge its sessions automatically) would govern the next
// sessions: such files are always protected, and with no owner named for
// them nobody can approve the change; once the user's owners file names
// one, that owner can.
func TestGovernanceFilesProtected(t *testing.T) {
	f := newFixture(t)
	id := f.runAgent(`printf 'version: 1\ntiers:\n  routine: {approvals: 1, gate: none}\nmerge: {auto: true, mode: target, target: main}\n' > enclave.review.yaml`, "routine")
	var facts struct {
		Verify         string   `json:"verify"`
		ProtectedPaths []string `json:"protected_paths"`
	}
	json.Unmarshal([]byte(f.must("bob", "review", "--json", id)), &facts)
	if strings.Join(facts.ProtectedPaths, ",") != review.ConfigFile {
		t.Fatalf("protected paths = %v, want the review config", facts.ProtectedPaths)
	}
	if facts.Verify == "fail" || facts.Verify == "none" {
		t.Skipf("verification %v: routine tier needs it to run and not fail", facts.Verify)
	}
	if screen := f.must("bob", "review", id); !strings.Contains(screen, "governs enclave and has no owner") {
		t.Errorf("review screen does not say the change needs an owner nobody is:\n%s", screen)
	}
	for _, who := range []string{"bob", "carol"} {
		f.refused(who, nil, "protected-paths-need-owner", "approve", id)
	}
	f.lastDecision(id, "approve", "deny", "protected-paths-need-owner")
	f.refused("bob", nil, "merge-needs-approvals", "merge", id)
	if _, err := exec.Command("git", "-C", f.repo, "rev-parse", "--verify", "--quiet", "refs/heads/enclave/"+id).Output(); err == nil {
		t.Fatal("the branch exists after the refusals")
	}

	// The user names an owner of enclave's files in their own checkout.
	write(t, filepath.Join(f.repo, "CODEOWNERS"), "# owners\n/auth/ @carol\nCODEOWNERS @carol\nenclave.* @carol\n")
	f.refused("bob", nil, "protected-paths-need-owner", "approve", id)
	f.must("carol", "approve", id)
	f.must("carol", "merge", id)
	f.must("", "attest", "verify", "enclave/"+id)
}
