package cli

import (
	"strings"
	"testing"
)

func TestScrub(t *testing.T) {
	for _, tt := range []struct {
		in       string
		secret   string
		mustKeep string
	}{
		{"bad key sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnop", "bad key"},
		{"id AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "here"},
		{"dial https://user:hunter2@registry.example.com/x", "hunter2", "registry.example.com"},
		{"GET /v1?api_key=abc123&x=1", "abc123", "x=1"},
		{"token enc_0123456789abcdefghijklmnop", "0123456789abcdefghij", "token"},
	} {
		got := scrub(tt.in)
		if strings.Contains(got, tt.secret) || !strings.Contains(got, tt.mustKeep) {
			t.Errorf("scrub(%q) = %q, want %q gone and %q kept", tt.in, got, tt.secret, tt.mustKeep)
		}
	}
}
