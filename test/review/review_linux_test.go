//go:build linux

// Package review_test drives the review loop end to end through the enclave
// CLI: a scripted agent makes a change with `enclave run` (in a real
// sandbox), verification runs, people approve or are refused, the merge
// lands in the user's repository with an attestation that `enclave attest
// verify` accepts, and that fails after any byte of the commit, statement
// or signature changes. The agent's copy carries a malicious post-merge
// hook, core.fsmonitor and a filter; markers checked from outside show that
// none of them ran.
//
// The test binary is the enclave binary (ENCLAVE_REVIEW_CLI=1), as in
// test/escape. Acting people are named with ENCLAVE_TEST_USER, which only
// test binaries honour; the launcher is the OS user running the test.
package review_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/cli"
	"github.com/enclave-dev/enclave/internal/review"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

const cliEnv = "ENCLAVE_REVIEW_CLI"

func TestMain(m *testing.M) {
	sandbox.MaybeRunInternal()
	if os.Getenv(cliEnv) == "1" {
		os.Exit(cli.Main(context.Background(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

type fixture struct {
	t       *testing.T
	root    string
	repo    string
	state   string
	home    string
	markers string
	bin     string
	env     []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	if !sandbox.Probe().OK() {
		t.Skip("this machine lacks a protection layer the built-in policy needs; enclave run would refuse")
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	f := &fixture{t: t, root: root, bin: bin,
		repo: filepath.Join(root, "repo"), state: filepath.Join(root, "state"),
		home: filepath.Join(root, "home"), markers: filepath.Join(root, "markers")}
	for _, d := range []string{f.repo, f.home, f.markers} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(f.markers, 0o777)
	write(t, filepath.Join(f.home, ".gitconfig"), "[user]\n\tname = Launcher\n\temail = launcher@example.com\n[init]\n\tdefaultBranch = main\n")
	f.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home, "ENCLAVE_STATE_DIR=" + f.state, cliEnv + "=1", "LANG=C.UTF-8"}
	write(t, filepath.Join(f.repo, "README.md"), "# demo\n")
	write(t, filepath.Join(f.repo, "auth", "login.txt"), "login flow\n")
	write(t, filepath.Join(f.repo, "CODEOWNERS"), "# owners\n/auth/ @carol\nCODEOWNERS @carol\n")
	f.git(f.repo, "init", "-q", "-b", "main")
	f.git(f.repo, "add", "-A")
	f.git(f.repo, "commit", "-q", "-m", "initial")
	return f
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) git(dir string, args ...string) string {
	f.t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(append([]string{}, f.env...), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		f.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

type result struct {
	code           int
	stdout, stderr string
}

// enclave runs the CLI as person ("" = the launcher, the OS user).
func (f *fixture) enclave(person string, extraEnv []string, args ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Dir = f.repo
	cmd.Env = append(append([]string{}, f.env...), extraEnv...)
	if person != "" {
		cmd.Env = append(cmd.Env, "ENCLAVE_TEST_USER="+person)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("enclave %v: %v", args, err)
	}
	return result{code, so.String(), se.String()}
}

func (f *fixture) must(person string, args ...string) string {
	f.t.Helper()
	r := f.enclave(person, nil, args...)
	if r.code != 0 {
		f.t.Fatalf("enclave %v as %q: exit %d\nstdout: %s\nstderr: %s", args, person, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (f *fixture) refused(person string, extraEnv []string, want string, args ...string) {
	f.t.Helper()
	r := f.enclave(person, extraEnv, args...)
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		f.t.Fatalf("enclave %v as %q = exit %d, stderr %q; want a refusal containing %q", args, person, r.code, r.stderr, want)
	}
}

// runAgent runs a shell script as the agent and returns the session id.
func (f *fixture) runAgent(script, tier string) string {
	f.t.Helper()
	r := f.enclave("", nil, "run", "--trust-policy", "--tty", "never", "--gateway", "off", "--tier", tier, "--task", "scripted change", "--", "/bin/sh", "-c", script)
	if r.code != 0 {
		f.t.Fatalf("enclave run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var s struct {
		ID string `json:"id"`
	}
	out := f.must("", "sessions", "--json", "-n", "1")
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &s); err != nil || s.ID == "" {
		f.t.Fatalf("sessions --json: %v: %q", err, out)
	}
	// run recorded the tier; declaring the same tier through review
	// again is allowed (it does not lower it) and records the task.
	f.must("", "review", "tier", "--task", "scripted change", s.ID, tier)
	return s.ID
}

// authzEvents returns the session's authz decisions from the audit log.
func (f *fixture) authzEvents(id string) []map[string]any {
	f.t.Helper()
	out := f.must("", "log", "--json", "--kind", "authz", id)
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			f.t.Fatalf("log line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// lastDecision checks the newest authz record: its decision and that the
// policy named decided it.
func (f *fixture) lastDecision(id, action, decision, policy string) {
	f.t.Helper()
	evs := f.authzEvents(id)
	for i := len(evs) - 1; i >= 0; i-- {
		d, _ := evs[i]["data"].(map[string]any)
		if d["action"] != action {
			continue
		}
		pols, _ := json.Marshal(d["policies"])
		if evs[i]["decision"] != decision || (policy != "" && !strings.Contains(string(pols), `"`+policy+`"`)) {
			f.t.Fatalf("last %s decision = %v by %s, want %s by %s", action, evs[i]["decision"], pols, decision, policy)
		}
		return
	}
	f.t.Fatalf("no %s decision on the record", action)
}

// The agent's script: an honest change plus hostile git configuration in
// its copy. Each trap, if git ever ran it on the host, touches a marker.
func agentScript(markers string) string {
	return fmt.Sprintf(`set -e
printf '# demo\n\nUsage: run it.\n' > README.md
mkdir -p .git/hooks
for h in post-merge post-checkout post-rewrite pre-commit reference-transaction fsmonitor-watchman; do
  printf '#!/bin/sh\ntouch %[1]s/hook-%%s\n' "$h" > .git/hooks/$h; chmod +x .git/hooks/$h
done
git config core.fsmonitor "touch %[1]s/fsmonitor; false"
git config filter.evil.clean "touch %[1]s/filter-clean; cat"
git config filter.evil.smudge "touch %[1]s/filter-smudge; cat"
git config core.sshCommand "touch %[1]s/ssh"
printf '* filter=evil diff=evil merge=evil\n' > .gitattributes
git config diff.evil.command "touch %[1]s/diff"
git config merge.evil.driver "touch %[1]s/merge-driver; false"
`, markers)
}

func (f *fixture) markersPresent() []string {
	ents, _ := os.ReadDir(f.markers)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestReviewEndToEnd(t *testing.T) {
	f := newFixture(t)

	// The agent's change: sensitive tier, two approvals, verification must pass.
	id := f.runAgent(agentScript(f.markers), "sensitive")
	if m := f.markersPresent(); len(m) > 0 {
		t.Fatalf("markers after run: %v", m)
	}
	// run verified automatically; make sure a report exists either way.
	if _, err := os.Stat(filepath.Join(f.state, "sessions", id, "verify.json")); err != nil {
		if r := f.enclave("", nil, "verify", id); r.code != 0 && r.code != 3 && r.code != 1 {
			t.Fatalf("verify: %d %s", r.code, r.stderr)
		}
	}
	out := f.must("bob", "review", "--json", id)
	var facts map[string]any
	if err := json.Unmarshal([]byte(out), &facts); err != nil {
		t.Fatal(err)
	}
	if facts["tier"] != "sensitive" || facts["state"] != "needs-review" {
		t.Fatalf("review facts: tier %v state %v", facts["tier"], facts["state"])
	}
	switch facts["verify"] {
	case "pass":
	case "needs-review":
		// The gate flags the agent's .gitattributes for a human. The
		// built-in sensitive tier wants a pass: refused, on the record.
		f.refused("bob", nil, "verification-gate", "approve", id)
		f.lastDecision(id, "approve", "deny", "verification-gate")
		// The team's review config accepts needs-review for sensitive
		// work, keeping two approvals and separation of duties.
		write(t, filepath.Join(f.repo, review.ConfigFile), "version: 1\ntiers:\n  sensitive: {approvals: 2, gate: no-fail, separation_of_duties: true}\n")
	default:
		t.Skipf("verification is %v on this machine (%v)", facts["verify"], facts["verify_note"])
	}
	screen := f.must("bob", "review", id)
	for _, want := range []string{"session " + id, "tier", "sensitive", "verification", "README.md", "+Usage: run it.", "0 of 2 approvals"} {
		if !strings.Contains(screen, want) {
			t.Errorf("review screen lacks %q:\n%s", want, screen)
		}
	}

	// Denials, each on the record with the policy that decided.
	t.Run("agent cannot approve", func(t *testing.T) {
		f.refused("", []string{"ENCLAVE_SESSION=" + id}, "agents cannot act as a human", "approve", id)
		f.lastDecision(id, "approve", "deny", "agents-never-decide")
		f.refused("bob", []string{"ENCLAVE_SESSION=" + id}, "agents cannot act as a human", "merge", id)
		f.lastDecision(id, "merge", "deny", "agents-never-decide")
	})
	t.Run("launcher cannot approve own sensitive session", func(t *testing.T) {
		f.refused("", nil, "separation-of-duties", "approve", id)
		f.lastDecision(id, "approve", "deny", "separation-of-duties")
	})
	t.Run("merge before approvals", func(t *testing.T) {
		f.refused("bob", nil, "merge-needs-approvals", "merge", id)
	})

	f.must("bob", "approve", "-m", "looks right", id)
	f.lastDecision(id, "approve", "allow", "humans-act-on-sessions")
	f.refused("bob", nil, "merge-needs-approvals", "merge", id) // 1 of 2
	if table := f.must("", "sessions", "--state", "needs-review"); !strings.Contains(table, "1/2 approvals (bob)") {
		t.Errorf("sessions table after 1 of 2 approvals:\n%s", table)
	}
	f.must("dave", "approve", id)
	// Each approver's key, made on their first approval, is on the record.
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(f.must("", "audit", "export", "-kind", review.KindKey)), "\n") {
		var ev struct {
			Actor string `json:"actor"`
			Data  struct {
				KeyID string `json:"key_id"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Data.KeyID != "" {
			keys = append(keys, ev.Actor)
		}
	}
	if strings.Join(keys, ",") != "bob,dave" {
		t.Errorf("review.key records by %v, want bob then dave", keys)
	}
	out = f.must("bob", "merge", id)
	if !strings.Contains(out, "merged") {
		t.Fatalf("merge output %q", out)
	}
	head := f.git(f.repo, "rev-parse", "refs/heads/enclave/"+id)
	if got := f.git(f.repo, "show", head+":README.md"); !strings.Contains(got, "Usage: run it.") {
		t.Fatalf("merged README = %q", got)
	}
	if out := f.must("bob", "merge", id); !strings.Contains(out, "already merged") {
		t.Fatalf("second merge = %q, want a no-op", out)
	}
	if m := f.markersPresent(); len(m) > 0 {
		t.Fatalf("git ran the agent's configuration during review or merge: markers %v", m)
	}

	// Attestation: accepted as merged...
	out = f.must("", "attest", "verify", "enclave/"+id)
	if strings.Count(out, "ok: "+head) != 2 || !strings.Contains(out, "bob") || !strings.Contains(out, "dave") {
		t.Fatalf("attest verify = %q", out)
	}
	f.tamperChecks(head, id, 2)

	// Blind-spot check: the traps are real. Running git on the agent's copy
	// with its own configuration (what enclave never does) fires them.
	copyDir := filepath.Join(f.state, "sessions", id, "work")
	ctl := exec.Command("git", "-c", "safe.directory=*", "-C", copyDir, "status")
	ctl.Env = f.env
	ctl.Run()
	if m := f.markersPresent(); len(m) == 0 {
		t.Errorf("control: git status in the agent's copy fired no trap; the merge check above proves nothing")
	}
}

// A session touching a protected path needs an owner; an approval stops
// counting once the shadow branch moves.
func TestProtectedPathsAndMovedBranch(t *testing.T) {
	f := newFixture(t)
	id := f.runAgent(`printf 'login flow v2\n' > auth/login.txt`, "routine")
	out := f.must("bob", "review", "--json", id)
	var facts map[string]any
	json.Unmarshal([]byte(out), &facts)
	if facts["verify"] == "fail" || facts["verify"] == "none" {
		t.Skipf("verification %v (%v): routine tier needs it to run and not fail", facts["verify"], facts["verify_note"])
	}
	if p, _ := json.Marshal(facts["protected_paths"]); string(p) != `["auth/login.txt"]` {
		t.Fatalf("protected paths = %s", p)
	}
	f.refused("bob", nil, "protected-paths-need-owner", "approve", id)
	f.lastDecision(id, "approve", "deny", "protected-paths-need-owner")
	f.must("carol", "approve", id)

	// Move the shadow branch: a new commit on top of the approved head.
	shadow := filepath.Join(f.state, "sessions", id, "shadow.git")
	approved := f.git(shadow, "rev-parse", "refs/heads/enclave/"+id)
	tree := f.git(shadow, "rev-parse", approved+"^{tree}")
	cmd := exec.Command("git", "--git-dir", shadow, "commit-tree", tree, "-p", approved, "-m", "sneaky")
	cmd.Env = append(append([]string{}, f.env...), "GIT_AUTHOR_NAME=x", "GIT_AUTHOR_EMAIL=x@example.com", "GIT_COMMITTER_NAME=x", "GIT_COMMITTER_EMAIL=x@example.com")
	mo, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f.git(shadow, "update-ref", "refs/heads/enclave/"+id, strings.TrimSpace(string(mo)))

	f.refused("carol", nil, "approval-on-current-head", "merge", id)
	f.lastDecision(id, "merge", "deny", "approval-on-current-head")
	f.refused("carol", nil, "approval-on-current-head", "approve", id)
	if _, err := exec.Command("git", "-C", f.repo, "rev-parse", "--verify", "--quiet", "refs/heads/enclave/"+id).Output(); err == nil {
		t.Fatal("the branch was created despite the refusals")
	}

	// Back where it was approved, the approval counts again and merge works.
	f.git(shadow, "update-ref", "refs/heads/enclave/"+id, approved)
	f.must("carol", "merge", id)
	f.must("", "attest", "verify", "enclave/"+id)
}

// tamperChecks proves the attestation note on head (merged as enclave/id,
// signed by signers approvers) verifies as stored, and fails after any
// byte of the note (envelope, statement, signature) changes, through the
// library and the CLI, and on a commit differing by one byte.
func (f *fixture) tamperChecks(head, id string, nsigners int) []*review.Verified {
	t := f.t
	t.Helper()
	note := []byte(f.git(f.repo, "notes", "--ref=refs/notes/enclave", "show", head) + "\n")
	allowed, err := review.AllowedSigners(f.state)
	if err != nil || len(allowed) < nsigners {
		t.Fatalf("allowed signers: %v %v", allowed, err)
	}
	// Any byte of the note (envelope, statement, signature) changed fails.
	ctx := context.Background()
	if _, err := review.VerifyBundle(ctx, note, head, allowed); err != nil {
		t.Fatalf("VerifyBundle(note as stored) = %v", err)
	}
	for i := 0; i < len(note)-1; i++ {
		bad := bytes.Clone(note)
		bad[i] ^= 0x01
		if _, err := review.VerifyBundle(ctx, bad, head, allowed); err == nil {
			t.Fatalf("note with byte %d flipped (%q -> %q) still verifies", i, note[i], bad[i])
		}
	}
	// Through the CLI too: a changed note fails.
	bad := bytes.Replace(note, []byte(`"sig":"`), []byte(`"sig":"A`), 1)
	notefile := filepath.Join(f.root, "bad-note")
	os.WriteFile(notefile, bad, 0o644)
	f.git(f.repo, "notes", "--ref=refs/notes/enclave", "add", "-f", "-F", notefile, head)
	f.refused("", nil, "does not verify", "attest", "verify", "enclave/"+id)
	os.WriteFile(notefile, note, 0o644)
	f.git(f.repo, "notes", "--ref=refs/notes/enclave", "add", "-f", "-F", notefile, head)
	f.must("", "attest", "verify", "enclave/"+id)

	// A commit differing by one byte, carrying a copy of the note, fails.
	raw := f.git(f.repo, "cat-file", "commit", head) + "\n"
	forged := strings.Replace(raw, "\n\n", "\n\n ", 1)
	cmd := exec.Command("git", "-C", f.repo, "hash-object", "-t", "commit", "-w", "--stdin")
	cmd.Env = f.env
	cmd.Stdin = strings.NewReader(forged)
	fo, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	forgedID := strings.TrimSpace(string(fo))
	f.git(f.repo, "notes", "--ref=refs/notes/enclave", "add", "-f", "-F", notefile, forgedID)
	f.refused("", nil, "not commit "+forgedID, "attest", "verify", forgedID)

	vs, err := review.VerifyBundle(ctx, note, head, allowed)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}
