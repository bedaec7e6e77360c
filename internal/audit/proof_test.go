package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// buildCheckproof compiles testdata/checkproof, the independent checker
// that uses only tlog and note.
func buildCheckproof(t *testing.T) string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go toolchain to build testdata/checkproof")
		}
	}
	if _, err := os.Stat("testdata/checkproof/main.go"); err != nil {
		t.Skip("source tree not available (binary run elsewhere)")
	}
	bin := filepath.Join(t.TempDir(), "checkproof")
	cmd := exec.Command(gobin, "build", "-o", bin, "./testdata/checkproof")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build checkproof: %v\n%s", err, out)
	}
	// The checker must not depend on this package.
	cmd = exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./testdata/checkproof")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "golang.org/x/mod/sumdb/note", "golang.org/x/mod/sumdb/tlog", "github.com/enclave-dev/enclave/internal/audit/testdata/checkproof":
		default:
			t.Fatalf("testdata/checkproof depends on %s; it may use only tlog, note and the standard library", dep)
		}
	}
	return bin
}

func runCheckproof(t *testing.T, bin, vkey string, proof any) (string, error) {
	t.Helper()
	b, err := json.Marshal(proof)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, vkey)
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestProofsCheckedIndependently(t *testing.T) {
	bin := buildCheckproof(t)
	ctx := context.Background()
	st := store.NewMemory()
	k := fixedKey(t)
	l := openLog(t, st, k, audit.Options{})
	fill(t, l, 77)
	l.Close()

	for _, seq := range []int64{0, 1, 31, 64, 76} {
		p, err := audit.Prove(ctx, st, seq, nil)
		if err != nil {
			t.Fatalf("Prove(%d) = %v", seq, err)
		}
		if out, err := runCheckproof(t, bin, k.Public, p); err != nil || !strings.HasPrefix(out, "ok ") {
			t.Errorf("checkproof(Prove(%d)) = %q, %v, want ok", seq, out, err)
		}
	}

	// Export lines carry proofs the checker accepts too.
	var buf bytes.Buffer
	if _, err := audit.Export(ctx, st, &buf, audit.Filter{From: 40, To: 42}, audit.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e audit.ExportRecord
		json.Unmarshal([]byte(line), &e)
		if out, err := runCheckproof(t, bin, k.Public, e.Proof()); err != nil {
			t.Errorf("checkproof(export line %d) = %q, %v", e.Seq, out, err)
		}
	}

	good, _ := audit.Prove(ctx, st, 50, nil)
	v := verifier(t, k)
	for _, tt := range []struct {
		name   string
		change func(p *audit.Proof)
		key    string
	}{
		{"edited leaf", func(p *audit.Proof) { p.Leaf = strings.Replace(p.Leaf, `"actor":"agent"`, `"actor":"agenT"`, 1) }, k.Public},
		{"other seq", func(p *audit.Proof) { p.Seq = 51 }, k.Public},
		{"bad path", func(p *audit.Proof) { p.Path[2][0] ^= 1 }, k.Public},
		{"short path", func(p *audit.Proof) { p.Path = p.Path[1:] }, k.Public},
		{"edited checkpoint", func(p *audit.Proof) { p.Checkpoint = strings.Replace(p.Checkpoint, "\n77\n", "\n78\n", 1) }, k.Public},
		{"other key", func(*audit.Proof) {}, otherKey(t, "enclave-test").Public},
	} {
		p := *good
		p.Path = append([]tlog.Hash(nil), good.Path...)
		tt.change(&p)
		if out, err := runCheckproof(t, bin, tt.key, &p); err == nil {
			t.Errorf("checkproof(%s) = %q, nil error, want failure", tt.name, out)
		}
		vv := v
		if tt.key != k.Public {
			vv = verifier(t, otherKey(t, "enclave-test"))
		}
		if _, _, err := vv.CheckProof(&p); err == nil {
			t.Errorf("Verifier.CheckProof(%s) = nil, want error", tt.name)
		}
	}
}
