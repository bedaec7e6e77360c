package workspace

import (
	"regexp"
	"strings"
	"testing"
)

var sessionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func TestValidSessionChars(t *testing.T) {
	for _, id := range []string{
		"", "a", "s-20261124-171748-ab6758", "-a", ".a", "_a", "a.b_c-d", "a/b", "a b", "é",
		strings.Repeat("a", 64), strings.Repeat("a", 65), "a\x00", "A9", "9", "a..b",
	} {
		if got, want := validSessionChars(id), sessionPattern.MatchString(id); got != want {
			t.Errorf("validSessionChars(%q) = %v, want %v", id, got, want)
		}
	}
}

func FuzzValidSessionChars(f *testing.F) {
	f.Add("s-20261124-171748-ab6758")
	f.Add("-x")
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := validSessionChars(id), sessionPattern.MatchString(id); got != want {
			t.Errorf("validSessionChars(%q) = %v, want %v", id, got, want)
		}
	})
}
