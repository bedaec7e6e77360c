package gateway

import (
	"strings"
	"testing"
)

// TestKeywordPrefilter: the one-pass keyword scan finds exactly the
// keywords strings.Contains finds, for the built-in rules and a rule file
// with one-byte and overlapping keywords.
func TestKeywordPrefilter(t *testing.T) {
	custom := []byte(`
[[rules]]
id = "a"
regex = "x"
keywords = ["k", "key", "keyring", "ab"]
[[rules]]
id = "b"
regex = "y"
keywords = ["eyj", "ke", ""]
`)
	for _, src := range [][]byte{nil, custom} {
		rs, err := loadRules(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []string{
			"", "k", "the keyring holds a key", "AKIA and aws and sk-ant-x", "eyJhbGciOi",
			"postgres://u:p@h", "bearer ab", "ke", "xoxb-", "nothing relevant here at all", "kk", "ghp_ghp_",
		} {
			lower := strings.ToLower(in)
			got := rs.present(lower)
			for id, k := range rs.kws {
				if want := strings.Contains(lower, k); got[id] != want {
					t.Errorf("present(%q)[%q] = %v, want %v", in, k, got[id], want)
				}
			}
		}
	}
}

// FuzzKeywordPrefilter: the prefilter agrees with strings.Contains on any
// input.
func FuzzKeywordPrefilter(f *testing.F) {
	rs, err := loadRules(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("aws_secret_access_key = x; password: y; ghp_abc")
	f.Fuzz(func(t *testing.T, in string) {
		lower := strings.ToLower(in)
		got := rs.present(lower)
		for id, k := range rs.kws {
			if want := strings.Contains(lower, k); got[id] != want {
				t.Fatalf("present(%q)[%q] = %v, want %v", in, k, got[id], want)
			}
		}
	})
}
