package policy

import "testing"

func TestMatchWorkspace(t *testing.T) {
	for _, tt := range []struct {
		pattern, rel string
		want         bool
	}{
		{".env", ".env", true},
		{".env", "a/b/.env", true},
		{".env", ".env.local", false},
		{".env", ".env/x", true}, // a matched directory covers its contents
		{".env.*", "svc/.env.prod", true},
		{"*.pem", "certs/server.pem", true},
		{"*.pem", "certs/server.pem.txt", false},
		{"secrets/**", "secrets", true},
		{"secrets/**", "secrets/a/b", true},
		{"secrets/**", "app/secrets/a", false}, // anchored: has a "/"
		{"secrets", "app/secrets/a", true},     // no "/": any depth
		{"app/*/key", "app/x/key", true},
		{"app/*/key", "app/x/y/key", false},
		{"**/*.key", "k.key", true},
		{"docs/**", "docs/../src/main.go", false},
		{"src/**", "src/../../etc/passwd", false},
		{"a", "./a", true},
	} {
		if got := MatchWorkspace(tt.pattern, tt.rel); got != tt.want {
			t.Errorf("MatchWorkspace(%q, %q) = %v, want %v", tt.pattern, tt.rel, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	c := Default().Classification
	c.Paths = append(c.Paths,
		ClassPath{Path: "docs/**", Level: "public"},
		ClassPath{Path: "**", Level: "confidential"}, // listed last, still wins over public
		ClassPath{Path: "vendor/**", Level: "public"},
	)
	for _, tt := range []struct{ rel, level string }{
		{"main.go", "confidential"},
		{"docs/a.md", "confidential"},
		{"svc/.env", "restricted"},
		{"deploy/tls.key", "restricted"},
	} {
		if got, rule := c.Classify(tt.rel); got != tt.level {
			t.Errorf("Classify(%q) = %q (%s), want %q", tt.rel, got, rule, tt.level)
		}
	}
	d := Default().Classification
	d.Paths = append(d.Paths, ClassPath{Path: "docs/**", Level: "public"})
	if got, rule := d.Classify("docs/a.md"); got != "public" || rule != "classification.paths[10]" {
		t.Errorf("Classify(docs/a.md) = %q %q, want public classification.paths[10]", got, rule)
	}
	if got, rule := d.Classify("main.go"); got != "internal" || rule != "default" {
		t.Errorf("Classify(main.go) = %q %q, want internal default", got, rule)
	}
	for _, tt := range []struct {
		clearance, level string
		want             bool
	}{
		{"internal", "public", true}, {"internal", "internal", true}, {"internal", "confidential", false},
		{"restricted", "restricted", true}, {"bogus", "public", false}, {"restricted", "bogus", false},
	} {
		if got := d.Cleared(tt.clearance, tt.level); got != tt.want {
			t.Errorf("Cleared(%q, %q) = %v, want %v", tt.clearance, tt.level, got, tt.want)
		}
	}
}
