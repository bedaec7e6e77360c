package workspace

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestHiddenMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{".env", ".env", true},
		{".env", "app/.env", true},
		{".env", "a/b/c/.env", true},
		{".env", ".envrc", false},
		{".env", ".env/inner", true}, // a hidden directory hides its contents
		{"/.env", "app/.env", false},
		{"/.env", ".env", true},
		{"secrets/**", "secrets", true},
		{"secrets/**", "secrets/a/b.key", true},
		{"secrets/**", "app/secrets/a", false},
		{"secrets/", "app/secrets/a", true},
		{"config/prod.yaml", "config/prod.yaml", true},
		{"config/prod.yaml", "x/config/prod.yaml", false},
		{"*.pem", "certs/server.pem", true},
		{"*.pem", "certs/server.pem.txt", false},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/x/c", false},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/b/x/c/d", true},
		{"**/id_*", "home/.ssh/id_ed25519", true},
		{"*", "anything/at/all", true},
		{"k*y*", "kxyz", true},
		{"k*y*", "kxz", false},
	} {
		m, err := newMatcher([]string{tt.pattern})
		if err != nil {
			t.Fatalf("newMatcher(%q): %v", tt.pattern, err)
		}
		if got := m.match(tt.path); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestHiddenBadPatterns(t *testing.T) {
	for _, tt := range []struct{ pattern, want string }{
		{"", "empty pattern"},
		{"a?b", "only '*' and '**'"},
		{"[ab]", "only '*' and '**'"},
		{`a\b`, "only '*' and '**'"},
		{"!keep", "negation"},
		{"/", "whole repository"},
		{"**", "whole repository"},
		{"a//b", "empty path segment"},
		{"a/../b", `".." segments`},
		{"a**b", "whole path segment"},
	} {
		_, err := newMatcher([]string{"ok", tt.pattern})
		if !errors.Is(err, ErrBadPattern) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "hidden[1]") {
			t.Errorf("newMatcher(%q) = %v, want ErrBadPattern naming hidden[1] and %q", tt.pattern, err, tt.want)
		}
	}
}

// A deep path and many "**" must not make matching slow.
func TestHiddenMatchLinear(t *testing.T) {
	m, err := newMatcher([]string{"**/a/**/a/**/a/**/a/**/zz"})
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Repeat("a/", 2000) + "b"
	done := make(chan bool)
	go func() { done <- m.match(p) }()
	if <-done {
		t.Errorf("match = true, want false")
	}
}

func FuzzHiddenMatch(f *testing.F) {
	f.Add("secrets/**", "secrets/a")
	f.Add(".env", "a/.env")
	f.Add("a/**/b*c", "a/x/y/bzc")
	f.Fuzz(func(t *testing.T, pattern, path string) {
		m, err := newMatcher([]string{pattern})
		if err != nil {
			return
		}
		m.match(path)
		m.excludeLines()
	})
}

func TestParseRawThenNumstat(t *testing.T) {
	// One diff-tree --raw --numstat -z: the raw records, then the numstat
	// ones, with no separator. A path beginning with ':' or a digit stays
	// a path.
	z := "\x00"
	in := ":100644 100644 " + strings.Repeat("a", 40) + " " + strings.Repeat("b", 40) + " M" + z + ":colon" + z +
		":100644 100644 " + strings.Repeat("d", 40) + " " + strings.Repeat("e", 40) + " R085" + z + "1\t2\told" + z + "new" + z +
		"3\t1\t:colon" + z + "1\t0\t" + z + "1\t2\told" + z + "new" + z
	files, rest, err := parseRawPrefix([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Path != ":colon" || files[1].OldPath != "1\t2\told" || files[1].Path != "new" {
		t.Fatalf("raw part = %+v", files)
	}
	stats, err := parseNumstat(rest)
	if err != nil {
		t.Fatal(err)
	}
	if stats[":colon"] != (numstat{Added: 3, Deleted: 1}) || stats["new"] != (numstat{Added: 1}) || len(stats) != 2 {
		t.Errorf("numstat part = %+v", stats)
	}
}

func TestParseRaw(t *testing.T) {
	z := "\x00"
	in := ":100644 100644 " + strings.Repeat("a", 40) + " " + strings.Repeat("b", 40) + " M" + z + "mod.txt" + z +
		":000000 120000 " + strings.Repeat("0", 40) + " " + strings.Repeat("c", 40) + " A" + z + "we\tird\nname" + z +
		":100644 100644 " + strings.Repeat("d", 40) + " " + strings.Repeat("d", 40) + " R100" + z + "old" + z + "new" + z +
		":100644 000000 " + strings.Repeat("e", 40) + " " + strings.Repeat("0", 40) + " D" + z + "gone" + z
	got, err := parseRaw([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []FileChange{
		{Path: "mod.txt", Status: Modified, OldMode: "100644", NewMode: "100644"},
		{Path: "we\tird\nname", Status: Added, NewMode: "120000"},
		{Path: "new", OldPath: "old", Status: Renamed, Similarity: 100, OldMode: "100644", NewMode: "100644"},
		{Path: "gone", Status: Deleted, OldMode: "100644"},
	}
	if len(got) != len(want) {
		t.Fatalf("parseRaw = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseRaw[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"x", ":100644 100644 a b M", ":100644 100644 a b M" + z, ":100644 100644 a b Q" + z + "p" + z,
		":100644 100644 a b R" + z + "p" + z + "q" + z, ":10064x 100644 a b M" + z + "p" + z, ":100644 100644 a b R50" + z + "p" + z,
	} {
		if _, err := parseRaw([]byte(bad)); err == nil {
			t.Errorf("parseRaw(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseNumstat(t *testing.T) {
	z := "\x00"
	got, err := parseNumstat([]byte("3\t1\ta.txt" + z + "-\t-\tbin" + z + "0\t0\t" + z + "old" + z + "new" + z))
	if err != nil {
		t.Fatal(err)
	}
	if got["a.txt"] != (numstat{3, 1, false}) || got["bin"] != (numstat{0, 0, true}) || got["new"] != (numstat{}) || len(got) != 3 {
		t.Errorf("parseNumstat = %+v", got)
	}
	for _, bad := range []string{"3\t1\ta", "x\t1\ta" + z, "3\ta" + z, "-1\t0\ta" + z, "0\t0\t" + z + "old" + z} {
		if _, err := parseNumstat([]byte(bad)); err == nil {
			t.Errorf("parseNumstat(%q) succeeded, want an error", bad)
		}
	}
}

// Git's output names agent-chosen paths; the parsers must never panic.
func FuzzParseRaw(f *testing.F) {
	f.Add([]byte(":100644 100644 aaaa bbbb M\x00p\x00"))
	f.Add([]byte(":100644 100644 aaaa bbbb R90\x00p\x00q\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		files, err := parseRaw(b)
		if err == nil {
			for _, fc := range files {
				if fc.Path == "" {
					t.Fatalf("parsed an empty path from %q", b)
				}
			}
		}
	})
}

func FuzzParseNumstat(f *testing.F) {
	f.Add([]byte("1\t2\tp\x00"))
	f.Add([]byte("-\t-\t\x00a\x00b\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseNumstat(b)
	})
}

func TestTerminalSafe(t *testing.T) {
	var b bytes.Buffer
	in := "ok\ttab\n\x1b[31mred\x1b]0;title\x07\r\x7f \xc2\x9b2J é"
	n, err := TerminalSafe(&b).Write([]byte(in))
	if err != nil || n != len(in) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got, want := b.String(), "ok\ttab\n?[31mred?]0;title??? ??2J é"; got != want {
		t.Errorf("TerminalSafe(%q) = %q, want %q", in, got, want)
	}
}

func TestGitignoreLiteral(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"a/b", "/a/b", true},
		{"#x/!y *[z]?\\", `/\#x/\!y\ \*\[z\]\?\\`, true},
		{"new\nline", "", false},
	} {
		got, ok := gitignoreLiteral(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("gitignoreLiteral(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestGitErrorScrubsControls(t *testing.T) {
	e := &gitError{args: []string{"add"}, err: errors.New("exit status 128"), stderr: "error: invalid path '\x1b]0;pwned\x07\u009b2J'\n"}
	if got := e.Error(); strings.ContainsAny(got, "\x1b\x07\u009b") {
		t.Errorf("gitError.Error() = %q, want no control characters", got)
	}
}
