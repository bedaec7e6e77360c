package review

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte("version: 1\ndefault_tier: sensitive\ntiers:\n  deploy: {approvals: 3, gate: pass, separation_of_duties: true, profile: strict}\nmerge: {mode: target, target: main, auto: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultTier != "sensitive" || c.Tiers["deploy"].Approvals != 3 || c.Tiers["routine"].Gate != GateNoFail || c.Merge.Mode != MergeTarget || !c.Merge.Auto || c.Hash == "" {
		t.Errorf("ParseConfig() = %+v", c)
	}
	for _, tt := range []struct{ text, want string }{
		{"version: 2\n", "version must be 1"},
		{"version: 1\nbogus: 1\n", "field bogus not found"},
		{"version: 1\ntiers:\n  x: {approvals: 0, gate: pass}\n", "tiers.x.approvals must be 1 to 10"},
		{"version: 1\ntiers:\n  x: {approvals: 1, gate: maybe}\n", "tiers.x.gate must be pass, no-fail or none"},
		{"version: 1\ntiers:\n  X_Y: {approvals: 1, gate: pass}\n", `tier name "X_Y"`},
		{"version: 1\ndefault_tier: nope\n", `default_tier "nope" is not a tier`},
		{"version: 1\nowners: ../CODEOWNERS\n", "owners must be a path inside the repository"},
		{"version: 1\nmerge: {mode: target}\n", "merge.target must name a branch"},
		{"version: 1\nmerge: {mode: target, target: -x}\n", "merge.target must name a branch"},
		{"version: 1\nmerge: {mode: squash}\n", "merge.mode must be branch or target"},
		{"version: 1\ntiers:\n  x: {approvals: 1, gate: none, merge: {mode: squash}}\n", "tiers.x.merge.mode must be branch or target"},
		{"version: 1\ntiers:\n  x: {approvals: 1, gate: none, merge: {mode: target}}\n", "tiers.x.merge.target must name a branch"},
		{"version: 1\ntiers:\n  x: {approvals: 1, gate: none, merge: {target: release}}\n", "tiers.x.merge.target is set but the tier merges to a branch"},
		{"version: 1\ntiers:\n  x: {approvals: 1, gate: none, merge: {auto: maybe}}\n", "cannot unmarshal"},
		{"version: 1\ntiers:\n  a: &x {approvals: 1, gate: pass}\n  b: *x\n", "aliases"},
	} {
		_, err := ParseConfig("r.yaml", []byte(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseConfig(%q) error = %v, want %q", tt.text, err, tt.want)
		}
	}
}

// Per-tier merge settings override the top-level merge section key by key.
func TestMergeFor(t *testing.T) {
	c, err := ParseConfig("r.yaml", []byte(`version: 1
tiers:
  docs-tests: {approvals: 1, gate: none, merge: {auto: true}}
  routine: {approvals: 1, gate: no-fail, merge: {auto: true, mode: target, target: next}}
  sensitive: {approvals: 2, gate: pass, separation_of_duties: true, merge: {auto: false}}
  hotfix: {approvals: 1, gate: pass, merge: {mode: branch}}
merge: {mode: target, target: main, auto: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tier string
		want MergeConfig
	}{
		{"docs-tests", MergeConfig{Mode: MergeTarget, Target: "main", Auto: true}},
		{"routine", MergeConfig{Mode: MergeTarget, Target: "next", Auto: true}},
		{"sensitive", MergeConfig{Mode: MergeTarget, Target: "main", Auto: false}},
		{"hotfix", MergeConfig{Mode: MergeBranch, Auto: true}},
		{"unknown", MergeConfig{Mode: MergeTarget, Target: "main", Auto: true}},
	} {
		if got := c.MergeFor(tt.tier); got != tt.want {
			t.Errorf("MergeFor(%s) = %+v, want %+v", tt.tier, got, tt.want)
		}
	}
	if got := DefaultConfig().MergeFor(TierRoutine); got != (MergeConfig{Mode: MergeBranch}) {
		t.Errorf("default MergeFor(routine) = %+v, want branch, manual", got)
	}
}

// Enclave's own governance files are protected with or without an owners
// file; a rule naming owners says who may approve them, a rule without
// owners does not unprotect them.
func TestGovernancePaths(t *testing.T) {
	none := &Owners{Source: "none", Always: GovernancePaths(DefaultConfig())}
	paths := []string{"a.go", "enclave.cedar", "enclave.review.yaml", "enclave.yaml", ".github/CODEOWNERS", "sub/enclave.yaml"}
	if got := none.Protected(paths); !slices.Equal(got, []string{".github/CODEOWNERS", "enclave.cedar", "enclave.review.yaml", "enclave.yaml"}) {
		t.Errorf("Protected(%v) without owners = %v", paths, got)
	}
	if owners, ok := none.OwnersOf("enclave.cedar"); !ok || len(owners) != 0 || none.Owns("alice", "enclave.cedar") {
		t.Errorf("OwnersOf(enclave.cedar) = %v, %v; want protected with no owner", owners, ok)
	}
	o, err := ParseOwners("CODEOWNERS", []byte("* @everyone\nenclave.* @lead\ndocs/\n"))
	if err != nil {
		t.Fatal(err)
	}
	o.Always = GovernancePaths(&Config{Owners: "team/OWNERS"})
	for _, tt := range []struct {
		path      string
		protected bool
		owner     string
	}{
		{"enclave.cedar", true, "lead"},
		{"enclave.yaml", true, "lead"},
		{"CODEOWNERS", true, "everyone"},
		{"team/OWNERS", true, "everyone"},
		{"docs/x.md", false, ""},
		{"a.go", true, "everyone"},
	} {
		owners, ok := o.OwnersOf(tt.path)
		if ok != tt.protected || (tt.owner != "" && !o.Owns(tt.owner, tt.path)) {
			t.Errorf("OwnersOf(%s) = %v, %v; want protected %v owned by %q", tt.path, owners, ok, tt.protected, tt.owner)
		}
	}
}

func TestOwners(t *testing.T) {
	o, err := ParseOwners("CODEOWNERS", []byte("# c\n* @everyone\n/auth/ @carol @dan\n*.yml @ops # ci\n/deploy @ops\ndocs/generated\nCODEOWNERS @lead\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path   string
		owners string
		prot   bool
	}{
		{"main.go", "everyone", true},
		{"auth/login.go", "carol,dan", true},
		{"auth/sub/x.go", "carol,dan", true},
		{"x/auth/login.go", "everyone", true},
		{".github/workflows/ci.yml", "ops", true},
		{"deploy/prod.txt", "ops", true},
		{"docs/generated/a.md", "", false},
		{"CODEOWNERS", "lead", true},
	} {
		got, ok := o.OwnersOf(tt.path)
		if strings.Join(got, ",") != tt.owners || ok != tt.prot {
			t.Errorf("OwnersOf(%q) = %v, %v; want %s, %v", tt.path, got, ok, tt.owners, tt.prot)
		}
	}
	if !o.Owns("dan", "auth/a") || o.Owns("ops", "auth/a") {
		t.Error("Owns wrong")
	}
	for _, bad := range []string{"!x @a\n", "a[bc] @a\n", "x @\n"} {
		if _, err := ParseOwners("C", []byte(bad)); err == nil {
			t.Errorf("ParseOwners(%q) accepted", bad)
		}
	}
}

func TestSummaryKeepsOtherKeys(t *testing.T) {
	s := &store.Session{ID: "s-1", Summary: json.RawMessage(`{"tier":"sensitive","task":"t","other":{"x":1}}`)}
	sum, err := ReadSummary(s)
	if err != nil || sum.Tier != "sensitive" || sum.Task != "t" {
		t.Fatalf("ReadSummary() = %+v, %v", sum, err)
	}
	sum.Approvals = append(sum.Approvals, Approval{User: "bob", Head: "h", Envelope: json.RawMessage(`{}`)})
	if err := WriteSummary(s, sum); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(s.Summary, []byte(`"other":{"x":1}`)) || !bytes.Contains(s.Summary, []byte(`"user":"bob"`)) {
		t.Errorf("summary = %s", s.Summary)
	}
	s.Summary = json.RawMessage(`{"review":[1]}`)
	if _, err := ReadSummary(s); err == nil {
		t.Error("malformed review summary accepted; approvals must not silently vanish")
	}
}

func TestLaxer(t *testing.T) {
	c := DefaultConfig()
	if !Laxer(c.Tiers[TierRoutine], c.Tiers[TierSensitive]) || Laxer(c.Tiers[TierSensitive], c.Tiers[TierRoutine]) || Laxer(c.Tiers[TierRoutine], c.Tiers[TierRoutine]) {
		t.Error("Laxer ordering wrong")
	}
}

func testStatement(s *Signer, commit string) *Statement {
	return &Statement{
		Type: StatementType, PredicateType: PredicateType,
		Subject: []Subject{{Name: "x", Digest: map[string]string{"gitCommit": commit}}},
		Predicate: Predicate{
			Session:  PredSession{ID: "s-1", Tier: "routine", ApprovalsRequired: 1, Head: commit},
			Models:   []PredModel{},
			Approver: PredApprover{Name: s.Name, Key: s.Public, KeyID: s.KeyID},
			Decision: []string{"humans-act-on-sessions"}, Time: "2026-01-01T00:00:00Z",
		},
	}
}

func TestAttestation(t *testing.T) {
	dir := t.TempDir()
	bob, err := CreateKey(dir, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateKey(dir, "bob"); err == nil {
		t.Error("CreateKey overwrote a key")
	}
	mallory, _ := CreateKey(t.TempDir(), "mallory")
	if fi, _ := os.Stat(bob.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v", fi.Mode().Perm())
	}
	again, err := LoadKey(dir, "bob")
	if err != nil || again.KeyID != bob.KeyID {
		t.Fatalf("LoadKey() = %v, %v", again, err)
	}
	signers, err := AllowedSigners(dir)
	if err != nil || len(signers) != 1 {
		t.Fatalf("AllowedSigners() = %v, %v", signers, err)
	}
	ctx := context.Background()
	commit := strings.Repeat("ab", 20)
	env, err := Sign(ctx, bob, testStatement(bob, commit))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyEnvelope(ctx, env, commit, signers); err != nil {
		t.Fatalf("VerifyEnvelope() = %v", err)
	}
	if _, err := VerifyEnvelope(ctx, env, strings.Repeat("cd", 20), signers); err == nil {
		t.Error("envelope verified for another commit")
	}
	// Signed by a key not in the allowed signers.
	menv, _ := Sign(ctx, mallory, testStatement(mallory, commit))
	if _, err := VerifyEnvelope(ctx, menv, commit, signers); err == nil {
		t.Error("untrusted key verified")
	}
	// Trusted key, but the statement claims another approver: refused by
	// Sign, and by VerifyEnvelope if forged by hand.
	st := testStatement(bob, commit)
	st.Predicate.Approver.Name = "alice"
	if _, err := Sign(ctx, bob, st); err == nil {
		t.Error("Sign accepted an approver other than the key's owner")
	}
	// Every single-bit change of the envelope fails.
	for i := range env {
		for _, bit := range []byte{0x01, 0x20} {
			bad := bytes.Clone(env)
			bad[i] ^= bit
			if _, err := VerifyEnvelope(ctx, bad, commit, signers); err == nil {
				t.Fatalf("byte %d ^ %#x (%q -> %q) still verifies", i, bit, env[i], bad[i])
			}
		}
	}
	// Bundles: the same person twice, or too few approvals, fail.
	twice := append(append(append([]byte{}, env...), '\n'), env...)
	if _, err := VerifyBundle(ctx, twice, commit, signers); err == nil || !strings.Contains(err.Error(), "approved twice") {
		t.Errorf("VerifyBundle(twice) = %v", err)
	}
	st2 := testStatement(bob, commit)
	st2.Predicate.Session.ApprovalsRequired = 2
	env2, _ := Sign(ctx, bob, st2)
	if _, err := VerifyBundle(ctx, env2, commit, signers); err == nil || !strings.Contains(err.Error(), "requires 2") {
		t.Errorf("VerifyBundle(1 of 2) = %v", err)
	}
}

func TestSSHKey(t *testing.T) {
	dir := t.TempDir()
	s, err := CreateKey(filepath.Join(dir, "a"), "x")
	if err != nil {
		t.Fatal(err)
	}
	linked, err := LinkSSHKey(filepath.Join(dir, "b"), "bob", s.Path)
	if err != nil || linked.KeyID != s.KeyID {
		t.Fatalf("LinkSSHKey() = %v, %v", linked, err)
	}
	if got, err := LoadKey(filepath.Join(dir, "b"), "bob"); err != nil || got.KeyID != s.KeyID || got.Name != "bob" {
		t.Fatalf("LoadKey(linked) = %v, %v", got, err)
	}
	os.Chmod(s.Path, 0o644)
	if _, err := LoadSSHKey("x", s.Path); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("LoadSSHKey(0644) = %v", err)
	}
	if _, err := LoadKey(dir, "../x"); err == nil {
		t.Error("LoadKey accepted a path as user name")
	}
}

func TestAgentSession(t *testing.T) {
	if s, in := AgentSession(func(k string) string {
		if k == "ENCLAVE_SESSION" {
			return "s-9"
		}
		return ""
	}); !in || s != "s-9" {
		t.Errorf("AgentSession(with ENCLAVE_SESSION) = %q, %v", s, in)
	}
	if _, in := AgentSession(func(string) string { return "" }); in {
		t.Skip("this test process runs in a non-initial user namespace")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("version: 1\ntiers:\n  a: {approvals: 1, gate: pass}\nmerge: {mode: branch}\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseConfig("f", b) })
}

func FuzzParseOwners(f *testing.F) {
	f.Add([]byte("/auth/ @a\n*.yml @b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOwners("f", b)
		if err == nil {
			o.Protected([]string{"auth/x", "a/b.yml", "c"})
		}
	})
}

func FuzzVerifyEnvelope(f *testing.F) {
	dir := f.TempDir()
	s, _ := CreateKey(dir, "bob")
	signers, _ := AllowedSigners(dir)
	env, _ := Sign(context.Background(), s, testStatement(s, strings.Repeat("ab", 20)))
	f.Add(env)
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := VerifyEnvelope(context.Background(), b, "", signers); err == nil && !bytes.Equal(b, env) {
			t.Fatalf("a different envelope verified: %q", b)
		}
	})
}

func FuzzParseAllowedSigners(f *testing.F) {
	f.Add([]byte("bob ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID6HRqILGzcWWP6k2vnV4nvFKwPp8kSbVu2FlaXjzWyN c\n# x\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseAllowedSigners("f", b) })
}

func TestCheckCheckpoint(t *testing.T) {
	sign := func(origin string, n int64) (string, string) {
		skey, vkey, err := note.GenerateKey(rand.Reader, "audit.example.com")
		if err != nil {
			t.Fatal(err)
		}
		s, _ := note.NewSigner(skey)
		msg, err := note.Sign(&note.Note{Text: string(audit.FormatCheckpoint(origin, tlog.Tree{N: n, Hash: tlog.Hash{1}}))}, s)
		if err != nil {
			t.Fatal(err)
		}
		return string(msg), vkey
	}
	cp, vkey := sign("enclave/test", 7)
	other, otherKey := sign("enclave/test", 7)
	v, err := audit.NewVerifier("", vkey)
	if err != nil {
		t.Fatal(err)
	}
	st := func(cp, origin string, n int64) *Statement {
		return &Statement{Predicate: Predicate{Audit: PredAudit{Origin: origin, Size: n, Checkpoint: cp}}}
	}
	if got, err := CheckCheckpoint(v, st(cp, "enclave/test", 7)); err != nil || got.Tree.N != 7 {
		t.Fatalf("CheckCheckpoint(good) = %v, %v", got, err)
	}
	flipped := []byte(cp)
	flipped[len(flipped)-5] ^= 0x01
	for _, tt := range []struct {
		name string
		st   *Statement
		want string
	}{
		{"signed by another key", st(other, "enclave/test", 7), "unknown key"},
		{"size differs", st(cp, "enclave/test", 8), "size 8"},
		{"origin differs", st(cp, "enclave/other", 7), `"enclave/other"`},
		{"signature byte changed", st(string(flipped), "enclave/test", 7), "checkpoint"},
		{"no checkpoint", st("", "enclave/test", 7), "no audit checkpoint"},
	} {
		_, err := CheckCheckpoint(v, tt.st)
		if err == nil || !errors.Is(err, ErrAttestation) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckCheckpoint(%s) = %v, want an ErrAttestation naming %q", tt.name, err, tt.want)
		}
	}
	// The other log's key accepts its own checkpoint: the check is the key.
	ov, _ := audit.NewVerifier("", otherKey)
	if _, err := CheckCheckpoint(ov, st(other, "enclave/test", 7)); err != nil {
		t.Errorf("CheckCheckpoint(other key, its checkpoint) = %v", err)
	}
}

func TestRunProfile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte("version: 1\ntiers:\n  sensitive: {approvals: 2, gate: pass, separation_of_duties: true, profile: strict}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ tier, asked, want, err string }{
		{"", "", "default", ""},
		{"routine", "lax", "lax", ""},
		{"sensitive", "", "strict", ""},
		{"sensitive", "strict", "strict", ""},
		{"sensitive", "lax", "", `tier sensitive runs with profile "strict"`},
		{"nope", "", "", `tier "nope" is not defined`},
	} {
		got, err := RunProfile(dir, tt.tier, tt.asked, "default")
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("RunProfile(%q, %q) = %q, %v; want %q, %q", tt.tier, tt.asked, got, err, tt.want, tt.err)
		}
	}
}
