package policy

import (
	"slices"
	"testing"
)

func TestEnvAllows(t *testing.T) {
	e := &Env{Allow: []string{"TERM", "LC_*", "AWS_*", "NPM_CONFIG_*", "GOFLAGS"}}
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"TERM", true},
		{"term", false}, // names are case-sensitive
		{"TERMINAL", false},
		{"LC_ALL", true},
		{"LC_", true},
		{"LANG", false},
		{"GOFLAGS", true},
		{"AWS_REGION", true},
		{"AWS_SECRET_ACCESS_KEY", false}, // forbidden even though AWS_* matches
		{"AWS_SESSION_TOKEN", false},
		{"AWS_ACCESS_KEY_ID", false},
		{"NPM_CONFIG_REGISTRY", true},
		{"NPM_CONFIG__AUTH", false},
		{"NPM_CONFIG_PASSWORD", false},
		{"PATH", false},
		{"LD_PRELOAD", false},
		{"", false},
		{"A=B", false},
	} {
		if got := e.Allows(tt.name); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Allow entries that Validate would refuse still never pass forbidden names.
	raw := &Env{Allow: []string{"LD_PRELOAD", "HTTPS_PROXY", "GITHUB_TOKEN", "SSH_AUTH_SOCK", "GLIBC_TUNABLES", "OPENAI_API_KEY"}}
	for _, n := range raw.Allow {
		if raw.Allows(n) {
			t.Errorf("Allows(%q) = true for a forbidden name", n)
		}
	}
}

func TestEnvForbidden(t *testing.T) {
	for _, tt := range []struct {
		name      string
		forbidden bool
	}{
		{"TOKENIZERS_PARALLELISM", false},
		{"KEYBOARD", false},
		{"MONKEY", false},
		{"GPG_TTY", false},
		{"GITHUB_TOKEN", true},
		{"GH_TOKEN", true},
		{"HF_TOKEN", true},
		{"ANTHROPIC_API_KEY", true},
		{"OPENAI_APIKEY", true},
		{"GOOGLE_APPLICATION_CREDENTIALS", true},
		{"PGPASSWORD", true},
		{"DB_PASSWD", true},
		{"CLIENT_SECRET", true},
		{"GITLAB_PAT", true},
		{"SIGNING_KEY", true},
		{"DOCKER_HOST", true},
		{"no_proxy", true},
		{"Ld_Library_Path", true},
		{"HOME", true},
	} {
		if got := envForbidden(tt.name) != ""; got != tt.forbidden {
			t.Errorf("envForbidden(%q) = %v, want %v", tt.name, got, tt.forbidden)
		}
	}
}

func TestEnvFilter(t *testing.T) {
	e := &Env{Allow: []string{"TERM", "LANG", "LC_*"}, Set: map[string]string{"CI": "1", "LANG": "C.UTF-8"}}
	launcher := []string{
		"TERM=xterm", "HOME=/root", "ANTHROPIC_API_KEY=sk-secret", "LC_ALL=C", "LANG=en_US.UTF-8",
		"TERM=evil", "garbage", "=x", "LD_PRELOAD=/tmp/x.so", "PATH=/usr/bin",
	}
	kept, dropped := e.Filter(launcher)
	if want := []string{"TERM=xterm", "LC_ALL=C", "LANG=en_US.UTF-8"}; !slices.Equal(kept, want) {
		t.Errorf("kept = %q, want %q", kept, want)
	}
	if want := []string{"HOME", "ANTHROPIC_API_KEY", "TERM", "garbage", "", "LD_PRELOAD", "PATH"}; !slices.Equal(dropped, want) {
		t.Errorf("dropped = %q, want %q", dropped, want)
	}
	for _, d := range dropped {
		if d == "sk-secret" || len(d) > 0 && slices.Contains([]string{"/root", "/tmp/x.so"}, d) {
			t.Errorf("dropped leaks a value: %q", d)
		}
	}
	if got, want := e.Environ(launcher), []string{"CI=1", "LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm"}; !slices.Equal(got, want) {
		t.Errorf("Environ = %q, want %q", got, want)
	}
	// The built-in defaults pass only terminal and locale settings.
	def, _ := Default().Profile("")
	kept, _ = def.Env.Filter([]string{"TERM=xterm", "COLORTERM=truecolor", "LANG=C", "LC_CTYPE=C", "TZ=UTC", "NO_COLOR=1", "EDITOR=vi", "SSH_AUTH_SOCK=/tmp/s", "AWS_PROFILE=x", "USER=root"})
	if want := []string{"TERM=xterm", "COLORTERM=truecolor", "LANG=C", "LC_CTYPE=C", "TZ=UTC", "NO_COLOR=1"}; !slices.Equal(kept, want) {
		t.Errorf("default kept = %q, want %q", kept, want)
	}
}

func BenchmarkEnvFilter(b *testing.B) {
	def, _ := Default().Profile("")
	env := []string{"TERM=xterm", "HOME=/root", "PATH=/usr/bin", "LANG=C", "LC_ALL=C", "SHELL=/bin/bash", "USER=root",
		"ANTHROPIC_API_KEY=x", "PWD=/", "SSH_AUTH_SOCK=/tmp/s", "EDITOR=vi", "GOPATH=/go", "TZ=UTC"}
	b.ReportAllocs()
	for b.Loop() {
		def.Env.Filter(env)
	}
}
