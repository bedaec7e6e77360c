package audit_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// katEvent and its encoding are pinned: changing the encoding changes every
// hash in every existing log. The leaf hash was cross-checked outside Go
// with `(printf '\0'; printf '%s' LEAF) | sha256sum` (RFC 6962 leaf hash).
var katEvent = audit.Event{
	Session:  "s-20261124-150405-a1b2c3",
	Kind:     "egress",
	Time:     time.Date(2026, 11, 24, 15, 4, 5, 120000000, time.FixedZone("CET", 3600)),
	Actor:    "agent",
	Decision: "deny",
	Data:     json.RawMessage(`{"port": 443, "host": "evil.example.com", "path": "/<x>\u00e9\ud83d\ude00", "bytes_up": -0, "ratio": 1.50e0, "nested": {"b": [true, null], "a": "tab\t"}}`),
}

const (
	katLeaf = `{"v":1,"seq":7,"time":"2026-11-24T14:04:05.12Z","session":"s-20261124-150405-a1b2c3","kind":"egress","actor":"agent","decision":"deny","data":{"bytes_up":0,"host":"evil.example.com","nested":{"a":"tab\t","b":[true,null]},"path":"/<x>é😀","port":443,"ratio":1.5}}`
	katHash = "b693af695bcd8161339510ef986a9e01aef3cab5af0bf94c8643b1c7787ceb2b"
)

func TestEncodeLeafKnownAnswer(t *testing.T) {
	b, err := audit.EncodeLeaf(7, &katEvent)
	if err != nil {
		t.Fatalf("EncodeLeaf = %v", err)
	}
	if string(b) != katLeaf {
		t.Fatalf("EncodeLeaf(kat) =\n%s\nwant\n%s", b, katLeaf)
	}
	h := tlog.RecordHash(b)
	if got := hex.EncodeToString(h[:]); got != katHash {
		t.Errorf("leaf hash = %s, want %s", got, katHash)
	}
	// Same event, other spelling of the same data: same bytes.
	ev2 := katEvent
	ev2.Time = katEvent.Time.UTC()
	ev2.Data = json.RawMessage(`{"nested":{"a":"tab\u0009","b":[true,null]},"ratio":15e-1,"port":443,"path":"/\u003cx>é😀","host":"evil.example.com","bytes_up":0}`)
	if b2, _ := audit.EncodeLeaf(7, &ev2); !bytes.Equal(b2, b) {
		t.Errorf("EncodeLeaf(equivalent event) =\n%s\nwant\n%s", b2, b)
	}
	seq, ev, err := audit.ParseLeaf(b)
	if err != nil || seq != 7 || ev.Kind != "egress" || !ev.Time.Equal(katEvent.Time) || ev.Decision != "deny" {
		t.Fatalf("ParseLeaf(kat) = %d, %+v, %v", seq, ev, err)
	}
}

// The tree root and checkpoint of katEvent at positions 0, 1, 2 under the
// fixed key. The root was cross-checked outside Go (Python hashlib:
// H(1||H(1||l0||l1)||l2) with li = H(0||leaf i)). Ed25519 signing is
// deterministic, so the whole note is pinned.
const katCheckpoint = "enclave-test\n3\nlBc/hbrdSVSm6E3uSq8kOb5KLh8v3H7y5oyXH8P79AQ=\n\n— enclave-test 9G18ujibkf0GJVxIcn/yP9fglRvzKs4vUkcA9i85vvFSdP0hK8yjLs69b6lg/1qfb2EyO1Ve/plS1vy3hGfF6MaHdQ0=\n"

func TestCheckpointKnownAnswer(t *testing.T) {
	var leaves []tlog.Hash
	for i := int64(0); i < 3; i++ {
		ev := katEvent
		b, err := audit.EncodeLeaf(i, &ev)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, tlog.RecordHash(b))
	}
	root := tlog.NodeHash(tlog.NodeHash(leaves[0], leaves[1]), leaves[2])
	msg, err := note.Sign(&note.Note{Text: string(audit.FormatCheckpoint("enclave-test", tlog.Tree{N: 3, Hash: root}))}, fixedKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != katCheckpoint {
		t.Errorf("checkpoint =\n%q\nwant\n%q", msg, katCheckpoint)
	}
	cp, err := verifier(t, fixedKey(t)).OpenCheckpoint([]byte(katCheckpoint))
	if err != nil || cp.Tree.N != 3 || cp.Tree.Hash != root || cp.Origin != "enclave-test" {
		t.Errorf("OpenCheckpoint(kat) = %+v, %v", cp, err)
	}
}

func TestCanonicalJSON(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{`{}`, `{}`, ""},
		{" { \"b\" : 1 ,\n\"a\":2}\t", `{"a":2,"b":1}`, ""},
		{`{"a":[1, 2.0, -0, -0.0, 1e2, 1E-7, 123456789012345678901234567890]}`, `{"a":[1,2,0,0,100,1e-07,123456789012345678901234567890]}`, ""},
		{`{"s":"\u0000\u001f\"\\\/\b\f\n\r\t\u00e9\u2028"}`, `{"s":"\u0000\u001f\"\\/\b\f\n\r\t` + "é\u2028" + `"}`, ""},
		{`{"lone":"\ud800x"}`, `{"lone":"` + "\ufffd" + `x"}`, ""},
		{"{\"bad\":\"\xff\"}", `{"bad":"` + "\ufffd" + `"}`, ""},
		{`{"é":1,"z":2,"a":3}`, `{"a":3,"z":2,"é":1}`, ""},
		{`{"a":1,"a":2}`, "", "duplicate key"},
		{`{"a":1,"\u0061":2}`, "", "duplicate key"},
		{`[]`, "", "must be a JSON object"},
		{`{"a":1} x`, "", "trailing bytes"},
		{`{"a":01}`, "", "leading zero"},
		{`{"a":1.}`, "", "fraction"},
		{`{"a":1e999}`, "", "out of range"},
		{`{"a":tru}`, "", "unexpected byte"},
		{`{"a":"x`, "", "unterminated"},
		{"{\"a\":\"\x01\"}", "", "control character"},
		{`{"a":1,}`, "", "object key"},
		{strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70), "", "nested deeper"},
	} {
		got, err := audit.CanonicalJSON(nil, []byte(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, audit.ErrInvalidEvent) {
				t.Errorf("CanonicalJSON(%q) = %q, %v, want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("CanonicalJSON(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestEventValidation(t *testing.T) {
	ok := audit.Event{Kind: "exec", Time: baseTime}
	for _, tt := range []struct {
		name string
		ev   func(e *audit.Event)
		err  string
	}{
		{"empty kind", func(e *audit.Event) { e.Kind = "" }, "kind is empty"},
		{"upper kind", func(e *audit.Event) { e.Kind = "Exec" }, "not allowed"},
		{"kind with space", func(e *audit.Event) { e.Kind = "ex ec" }, "not allowed"},
		{"long session", func(e *audit.Event) { e.Session = strings.Repeat("s", 300) }, "session is 300 bytes"},
		{"year 10000", func(e *audit.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "outside years"},
		{"data array", func(e *audit.Event) { e.Data = json.RawMessage(`[1]`) }, "must be a JSON object"},
		{"huge data", func(e *audit.Event) {
			e.Data = json.RawMessage(`{"a":"` + strings.Repeat("x", audit.MaxDataSize) + `"}`)
		}, "limit"},
	} {
		ev := ok
		tt.ev(&ev)
		if _, err := audit.EncodeLeaf(0, &ev); err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("EncodeLeaf(%s) = %v, want error containing %q", tt.name, err, tt.err)
		}
	}
	if b, err := audit.EncodeLeaf(0, &ok); err != nil || !strings.HasSuffix(string(b), `"data":{}}`) {
		t.Errorf("EncodeLeaf(no data) = %s, %v, want data {}", b, err)
	}
}

func TestParseLeafRejectsNonCanonical(t *testing.T) {
	for _, in := range []string{
		strings.Replace(katLeaf, `"port":443,"ratio"`, `"ratio":1.5,"port":443,"ratio_"`, 1),
		strings.Replace(katLeaf, `"seq":7`, `"seq":07`, 1),
		strings.Replace(katLeaf, `{"v":1`, `{"v":2`, 1),
		strings.Replace(katLeaf, `"port":443`, `"port": 443`, 1),
		strings.Replace(katLeaf, `14:04:05.12Z`, `15:04:05.12+01:00`, 1),
		strings.Replace(katLeaf, `14:04:05.12Z`, `14:04:05.120Z`, 1),
		strings.Replace(katLeaf, `"tab\t"`, `"tab\u0009"`, 1),
		katLeaf + " ",
		katLeaf[:len(katLeaf)-1],
	} {
		if _, _, err := audit.ParseLeaf([]byte(in)); err == nil {
			t.Errorf("ParseLeaf(%s) = nil error, want refusal", in)
		}
	}
}

func TestParseCheckpoint(t *testing.T) {
	good := "log\n5\n" + strings.Repeat("A", 43) + "=\n"
	if o, tr, err := audit.ParseCheckpoint([]byte(good)); err != nil || o != "log" || tr.N != 5 {
		t.Fatalf("ParseCheckpoint(good) = %q, %v, %v", o, tr, err)
	}
	for _, in := range []string{
		"", "log\n5\n", "log\n5\nAAAA\n", "log\n05\n" + strings.Repeat("A", 43) + "=\n", "log\n-1\n" + strings.Repeat("A", 43) + "=\n",
		"log\n5\n" + strings.Repeat("A", 43) + "=\next\n", "lo g\n5\n" + strings.Repeat("A", 43) + "=\n", "\n5\n" + strings.Repeat("A", 43) + "=\n",
		"log\n5\n" + strings.Repeat("A", 43) + "=",
	} {
		if _, _, err := audit.ParseCheckpoint([]byte(in)); err == nil {
			t.Errorf("ParseCheckpoint(%q) = nil error, want refusal", in)
		}
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	priv, pub := dir+"/keys/audit.key", dir+"/keys/audit.pub"
	vkey, err := audit.GenerateKey(priv, pub, "enclave-host1")
	if err != nil {
		t.Fatalf("GenerateKey = %v", err)
	}
	if _, err := audit.GenerateKey(priv, pub, "enclave-host1"); err == nil {
		t.Errorf("GenerateKey over an existing key = nil, want refusal")
	}
	k, err := audit.LoadKey(priv)
	if err != nil {
		t.Fatalf("LoadKey = %v", err)
	}
	if k.Public != vkey {
		t.Errorf("LoadKey derived public key %q, want %q", k.Public, vkey)
	}
	if got, err := audit.ReadPublicKey(pub); err != nil || got != vkey {
		t.Errorf("ReadPublicKey = %q, %v, want %q", got, err, vkey)
	}
	if err := chmod(priv, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.LoadKey(priv); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKey(mode 0640) = %v, want refusal", err)
	}
	if _, err := audit.ParseKey("PRIVATE+KEY+x+00000000+AAAA"); err == nil || strings.Contains(err.Error(), "AAAA") {
		t.Errorf("ParseKey(garbage) = %v, want error without key material", err)
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,2.5,{"b":null}]}`, `{"a":"\ud83d\ude00"}`, `{"a":1,"a":2}`, string(katEvent.Data)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := audit.CanonicalJSON(nil, in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("CanonicalJSON(%q) = %q, not valid JSON", in, out)
		}
		again, err := audit.CanonicalJSON(nil, out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("CanonicalJSON not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
	})
}

func FuzzParseLeaf(f *testing.F) {
	f.Add([]byte(katLeaf))
	f.Add([]byte(`{"v":1,"seq":0,"time":"0001-01-01T00:00:00Z","session":"","kind":"x","actor":"","decision":"","data":{}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		seq, ev, err := audit.ParseLeaf(in)
		if err != nil {
			return
		}
		again, err := audit.EncodeLeaf(seq, &ev)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("ParseLeaf accepted %q but it re-encodes to %q, %v", in, again, err)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("log\n5\n" + strings.Repeat("A", 43) + "=\n"))
	f.Add([]byte(katCheckpoint))
	f.Fuzz(func(t *testing.T, in []byte) {
		o, tr, err := audit.ParseCheckpoint(in)
		if err != nil {
			return
		}
		if got := audit.FormatCheckpoint(o, tr); !bytes.Equal(got, in) {
			t.Fatalf("ParseCheckpoint accepted %q, formats back as %q", in, got)
		}
	})
}

func FuzzCheckProof(f *testing.F) {
	f.Add([]byte(`{"seq":0,"leaf":"","checkpoint":"","path":[]}`))
	f.Add([]byte(`{"seq":1,"leaf":` + jsonString(katLeaf) + `,"checkpoint":` + jsonString(katCheckpoint) + `,"path":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`))
	v := verifier(f, fixedKey(f))
	f.Fuzz(func(t *testing.T, in []byte) {
		var p audit.Proof
		if json.Unmarshal(in, &p) != nil {
			return
		}
		v.CheckProof(&p) // must not panic
	})
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
