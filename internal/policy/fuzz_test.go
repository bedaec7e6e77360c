package policy

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzParse: Parse never panics, rejects with positioned errors, and any
// policy it accepts passes Validate and decides without panicking.
func FuzzParse(f *testing.F) {
	f.Add(InitTemplate())
	f.Add([]byte("version: 1\n"))
	f.Add([]byte("version: 1\nprofiles:\n  default:\n    network:\n      allow:\n        - host: \"*.example.com\"\n          ports: [80]\n          methods: [GET]\n          paths: [\"/a/**\"]\n"))
	f.Add([]byte("version: 1\nprofile: b\nprofiles:\n  a: {extends: b}\n  b: {extends: a}\n"))
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			l, ok := err.(ErrorList)
			if !ok || len(l) == 0 || len(l) > maxErrors+1 {
				t.Fatalf("Parse error %T with %d entries", err, len(l))
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted policy fails Validate: %v\n%s", err, data)
		}
		pr, err := p.Profile("")
		if err != nil {
			t.Fatalf("accepted policy has no default profile: %v", err)
		}
		pr.Network.Decide(Request{Host: "a.example.com", Port: 443, Method: "CONNECT"})
		pr.Network.Decide(Request{Host: "a.example.com", Port: 80, Method: "GET", Path: "/a/../b"})
		pr.Env.Filter([]string{"TERM=x", "LD_PRELOAD=y"})
		p.Classification.Classify("a/b/.env")
	})
}

func FuzzMatchPath(f *testing.F) {
	f.Add("/simple/**", "/simple/../x")
	f.Add("/a/*/b", "/a/%2e%2e/b")
	f.Add("/simple/**", "/simple")
	f.Add("/**", "/")
	f.Add("/a/b", "/a/b")
	f.Fuzz(func(t *testing.T, pattern, p string) {
		if n, ok := normalizeRequestPath(stripQuery(p)); ok && utf8.ValidString(pattern) {
			if fast, slow := matchGlob(pattern, n), globRegexp(pattern).MatchString(n); fast != slow {
				t.Fatalf("matchGlob(%q, %q) = %v, regexp says %v", pattern, n, fast, slow)
			}
		}
		if !MatchPath(pattern, p) {
			return
		}
		// Whatever matches must be a clean absolute path with no escape
		// tricks left: the normalised form matches too.
		n, ok := normalizeRequestPath(stripQuery(p))
		if !ok || n[0] != '/' {
			t.Fatalf("MatchPath(%q, %q) = true for a path that does not normalise", pattern, p)
		}
		if !MatchPath(pattern, n) {
			t.Fatalf("MatchPath(%q, %q) = true but false for its normal form %q", pattern, p, n)
		}
	})
}

func stripQuery(p string) string {
	if p == "" {
		return "/"
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '?' || p[i] == '#' {
			return p[:i]
		}
	}
	return p
}
