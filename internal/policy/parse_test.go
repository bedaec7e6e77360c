package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Regenerate the golden error messages with:
//
//	go test ./internal/policy -run TestGoldenErrors -update
var update = flag.Bool("update", false, "rewrite testdata/errors/*.golden")

const testHome = "/home/tester"

func TestGoldenErrors(t *testing.T) {
	t.Setenv("HOME", testHome)
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(name, data)
			if err == nil {
				t.Fatalf("Parse(%s) = nil error, want errors", name)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(Parse(%s), ErrInvalid) = false", name)
			}
			var e *Error
			if !errors.As(err, &e) || e.File != name {
				t.Errorf("errors.As(Parse(%s), *Error) = %v, file %q", name, e, e.File)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s) errors:\n%s\nwant:\n%s", name, got, want)
			}
		})
	}
}

func TestParseFull(t *testing.T) {
	t.Setenv("HOME", testHome)
	src := `version: 1
profile: ci
profiles:
  base:
    filesystem:
      read_only: [~/.cache/go-build, /opt/tools/]
      hidden: [.env, "secrets/**"]
    network:
      allow:
        - host: Registry.Example.COM.
        - host: pypi.example.com
          ports: [80]
          methods: [get]
          paths: ["/simple/**"]
      byte_budget: 1GiB
    limits:
      memory: 512MiB
      wall_time: 30m
    env:
      allow: [TERM, GOFLAGS]
      set: {CI: "1"}
  ci:
    extends: base
    network:
      dns: false
    limits:
      memory: 1GB
      cpu_time: 1d
    degrade: [cgroups]
providers:
  corp:
    api: openai
    base_url: https://llm.example.com/v1/
    key_file: ~/.config/enclave/key
    models: [gpt-5, "gpt-5-*"]
    terms: {training: false, retention: none, region: eu}
    clearance: secret
  local:
    api: anthropic
    base_url: http://127.0.0.1:9000
    models: ["*"]
classification:
  levels: [public, internal, secret]
  default: internal
  paths:
    - {path: "docs/**", level: public}
    - {path: "crypto/**", level: secret}
  action: redact
gateway:
  budget: {tokens: 1000, requests: 10}
`
	p, err := Parse("full.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if p.DefaultProfile != "ci" || p.Source != "full.yaml" || len(p.Hash) != 64 {
		t.Errorf("DefaultProfile, Source, Hash = %q, %q, %q", p.DefaultProfile, p.Source, p.Hash)
	}
	ci, err := p.Profile("")
	if err != nil {
		t.Fatal(err)
	}
	def, _ := Default().Profile("")
	want := &Profile{
		Name:    "ci",
		Extends: "base",
		Filesystem: Filesystem{
			ReadOnly: []string{testHome + "/.cache/go-build", "/opt/tools"},
			Hidden:   []string{".env", "secrets/**"},
		},
		Network: Network{
			Allow: []HostRule{
				{Host: "registry.example.com", Line: 10},
				{Host: "pypi.example.com", Ports: []int{80}, Methods: []string{"GET"}, Paths: []string{"/simple/**"}, Line: 11},
			},
			ByteBudget: 1 << 30,
			DNS:        false,
		},
		Limits: Limits{
			Memory: 1e9, Processes: 1024, CPUTime: 24 * time.Hour, FileSize: 2 << 30,
			WallTime: 30 * time.Minute, Disk: 10 << 30, TmpSize: 2 << 30, OpenFiles: 4096,
		},
		Env:     Env{Allow: []string{"TERM", "GOFLAGS"}, Set: map[string]string{"CI": "1"}},
		Degrade: []string{"cgroups"},
	}
	ci.at = nil
	if !reflect.DeepEqual(ci, want) {
		t.Errorf("profile ci =\n%+v\nwant\n%+v", ci, want)
	}
	// The parent keeps its own settings; unset ones are the defaults.
	base := p.Profiles["base"]
	if !base.Network.DNS || base.Limits.CPUTime != def.Limits.CPUTime || len(base.Degrade) != 0 {
		t.Errorf("base = %+v", base)
	}
	if len(p.Providers) != 2 {
		t.Fatalf("Providers = %+v", p.Providers)
	}
	corp := p.Providers[0]
	if corp.BaseURL != "https://llm.example.com/v1" || corp.KeyFile != testHome+"/.config/enclave/key" ||
		*corp.Terms.Training || *corp.Terms.Retention != 0 || corp.Terms.Region != "eu" || corp.Clearance != "secret" {
		t.Errorf("corp = %+v", corp)
	}
	if local := p.Providers[1]; local.Clearance != "internal" || local.Terms.Training != nil || !local.AllowsModel("anything") {
		t.Errorf("local = %+v", local)
	}
	for _, tt := range []struct {
		model string
		want  bool
	}{{"gpt-5", true}, {"gpt-5-mini", true}, {"gpt-4o", false}, {"", false}, {"gpt-5/x", false}} {
		if got := corp.AllowsModel(tt.model); got != tt.want {
			t.Errorf("AllowsModel(%q) = %v, want %v", tt.model, got, tt.want)
		}
	}
	c := p.Classification
	for _, tt := range []struct{ path, level string }{
		{"docs/readme.md", "public"}, {"crypto/aes.go", "secret"}, {"main.go", "internal"}, {".env", "internal"},
	} {
		if got, _ := c.Classify(tt.path); got != tt.level {
			t.Errorf("Classify(%q) = %q, want %q", tt.path, got, tt.level)
		}
	}
	if p.Gateway.Budget != (Budget{Tokens: 1000, Requests: 10}) || c.Action != ActionRedact {
		t.Errorf("Gateway = %+v, action %q", p.Gateway, c.Action)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestExtends(t *testing.T) {
	src := `version: 1
profiles:
  default:
    network:
      allow: [{host: a.example.com}]
      byte_budget: 1MiB
    env:
      allow: [TERM]
  wide:
    extends: default
    network:
      allow: [{host: b.example.com}]
  deeper:
    extends: wide
    env:
      allow: []
  empty-list:
    extends: default
    network:
      allow:
`
	p, err := Parse("extends.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	hosts := func(name string) []string {
		var h []string
		for _, r := range p.Profiles[name].Network.Allow {
			h = append(h, r.Host)
		}
		return h
	}
	for _, tt := range []struct {
		profile string
		hosts   []string
		env     []string
	}{
		{"default", []string{"a.example.com"}, []string{"TERM"}},
		{"wide", []string{"b.example.com"}, []string{"TERM"}}, // lists replace
		{"deeper", []string{"b.example.com"}, nil},
		{"empty-list", nil, []string{"TERM"}}, // "allow:" with no value is an empty list
	} {
		if got := hosts(tt.profile); !slices.Equal(got, tt.hosts) {
			t.Errorf("%s hosts = %v, want %v", tt.profile, got, tt.hosts)
		}
		if got := p.Profiles[tt.profile].Env.Allow; !slices.Equal(got, tt.env) {
			t.Errorf("%s env.allow = %v, want %v", tt.profile, got, tt.env)
		}
		if got := p.Profiles[tt.profile].Network.ByteBudget; got != 1<<20 {
			t.Errorf("%s byte_budget = %d, want inherited 1MiB", tt.profile, got)
		}
	}
	if _, err := p.Profile("nope"); !errors.Is(err, ErrUnknownProfile) || !strings.Contains(err.Error(), "deeper, default, empty-list, wide") {
		t.Errorf("Profile(nope) = %v", err)
	}
}

func TestNoProfilesUsesDefaults(t *testing.T) {
	p, err := Parse("min.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := p.Profile("")
	want, _ := Default().Profile("")
	got.at, want.at = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("profile = %+v, want defaults %+v", got, want)
	}
	if !reflect.DeepEqual(p.Classification, Default().Classification) {
		t.Errorf("classification differs from defaults")
	}
}

func TestDefaults(t *testing.T) {
	p := Default()
	if p.Source != SourceBuiltin || len(p.Hash) != 64 {
		t.Errorf("Source, Hash = %q, %q", p.Source, p.Hash)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	pr, _ := p.Profile("")
	wantLimits := Limits{Memory: 4 << 30, Processes: 1024, CPUTime: 2 * time.Hour, FileSize: 2 << 30,
		WallTime: 4 * time.Hour, Disk: 10 << 30, TmpSize: 2 << 30, OpenFiles: 4096}
	if pr.Limits != wantLimits {
		t.Errorf("limits = %+v, want %+v", pr.Limits, wantLimits)
	}
	if len(pr.Network.Allow) != 0 || pr.Network.ByteBudget != 64<<20 || !pr.Network.DNS {
		t.Errorf("network = %+v", pr.Network)
	}
	if len(pr.Filesystem.ReadOnly)+len(pr.Filesystem.ReadWrite)+len(pr.Filesystem.Hidden)+len(pr.Exec.Allow)+len(pr.Degrade) != 0 {
		t.Errorf("defaults add paths or degradations: %+v", pr)
	}
	if !slices.Equal(pr.Env.Allow, []string{"TERM", "COLORTERM", "LANG", "LC_*", "TZ", "NO_COLOR"}) {
		t.Errorf("env.allow = %v", pr.Env.Allow)
	}
	if len(p.Providers) != 0 {
		t.Errorf("providers = %v", p.Providers)
	}
	// Changing one copy does not change the next.
	pr.Network.Allow = append(pr.Network.Allow, HostRule{Host: "x.example.com"})
	if again, _ := Default().Profile(""); len(again.Network.Allow) != 0 {
		t.Error("Default() shares state between calls")
	}
}

// uncomment turns the template's "(uncomment to use...)" blocks into live
// settings: a block is the comment lines after the marker up to the first
// line that is not a comment. "replacing the line above" drops the setting
// before the marker.
func uncomment(t *testing.T, src string) string {
	t.Helper()
	lines := strings.Split(src, "\n")
	var out []string
	blocks := 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		out = append(out, l)
		trim := strings.TrimSpace(l)
		if !strings.HasPrefix(trim, "#") || !strings.Contains(trim, "(uncomment to use") || !strings.HasSuffix(trim, "):") {
			continue
		}
		blocks++
		if strings.Contains(trim, "replacing the line above") {
			j := len(out) - 2
			for j >= 0 && (strings.TrimSpace(out[j]) == "" || strings.HasPrefix(strings.TrimSpace(out[j]), "#")) {
				j--
			}
			out = slices.Delete(out, j, j+1)
		}
		for i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "#") {
			i++
			ind := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
			body := strings.TrimPrefix(strings.TrimPrefix(lines[i][ind:], "#"), " ")
			out = append(out, lines[i][:ind]+body)
		}
	}
	if blocks == 0 {
		t.Fatal("template has no example blocks")
	}
	return strings.Join(out, "\n")
}

func TestInitTemplate(t *testing.T) {
	t.Setenv("HOME", testHome)
	tmpl := InitTemplate()
	p, err := Parse("enclave.yaml", tmpl)
	if err != nil {
		t.Fatalf("template does not parse: %v", err)
	}
	// `enclave init` must not change what enclave does.
	got, _ := p.Profile("")
	want, _ := Default().Profile("")
	got.at, want.at = nil, nil
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(p.Classification, Default().Classification) ||
		p.Gateway != Default().Gateway || len(p.Providers) != 0 {
		t.Errorf("template differs from the built-in defaults")
	}

	// With the examples uncommented, every key of the schema appears.
	full := uncomment(t, string(tmpl))
	pf, err := Parse("enclave.yaml (uncommented)", []byte(full))
	if err != nil {
		t.Fatalf("template examples do not parse: %v\n%s", err, full)
	}
	if err := pf.Validate(); err != nil {
		t.Errorf("uncommented template: Validate() = %v", err)
	}
	seen := map[string]bool{}
	collectKeys(t, []byte(full), seen)
	for kind, keys := range schema {
		for _, k := range keys {
			if !seen[join(kind, k)] {
				t.Errorf("template never shows %s", join(kind, k))
			}
		}
	}
	for _, l := range strings.Split(string(tmpl), "\n") {
		if strings.Contains(l, "\t") {
			t.Errorf("template line has a tab: %q", l)
		}
	}
}

// collectKeys records every key of the YAML text in schema form
// ("profiles.*.network.allow[].host").
func collectKeys(t *testing.T, data []byte, seen map[string]bool) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, kind string)
	walk = func(n *yaml.Node, kind string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], kind)
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, kind+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := join(kind, n.Content[i].Value)
				seen[k] = true
				if k == "profiles" || k == "providers" {
					for j := 0; j+1 < len(n.Content[i+1].Content); j += 2 {
						walk(n.Content[i+1].Content[j+1], k+".*")
					}
					continue
				}
				walk(n.Content[i+1], k)
			}
		}
	}
	walk(&doc, "")
}

func TestLoadFor(t *testing.T) {
	t.Setenv("HOME", testHome)
	dir := t.TempDir()
	p, err := LoadFor(dir, "")
	if err != nil || p.Source != SourceBuiltin {
		t.Fatalf("LoadFor(no file) = %v, %v; want built-in", p, err)
	}
	file := filepath.Join(dir, FileName)
	data := []byte("version: 1\nprofiles:\n  default:\n    network:\n      dns: false\n")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = LoadFor(dir, "")
	if err != nil || p.Source != file || p.Profiles["default"].Network.DNS {
		t.Fatalf("LoadFor(file) = %+v, %v", p, err)
	}
	if q, _ := Parse("x", data); q.Hash != p.Hash {
		t.Errorf("Hash = %s, want the SHA-256 of the bytes %s", p.Hash, q.Hash)
	}
	// An explicit path wins, and must exist.
	other := filepath.Join(t.TempDir(), "strict.yaml")
	if _, err := LoadFor(dir, other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFor(missing explicit) = %v, want not-exist", err)
	}
	os.WriteFile(other, []byte("version: 1\n"), 0o644)
	if p, err := LoadFor(dir, other); err != nil || p.Source != other {
		t.Errorf("LoadFor(explicit) = %v, %v", p, err)
	}
	// The checkout itself may not be mounted.
	os.WriteFile(file, []byte("version: 1\nprofiles:\n  default:\n    filesystem:\n      read_write: ["+filepath.Dir(dir)+"]\n"), 0o644)
	if _, err := LoadFor(dir, ""); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "overlaps the repository checkout") || !strings.Contains(err.Error(), "enclave.yaml:5:") {
		t.Errorf("LoadFor(read_write parent of checkout) = %v", err)
	}
	os.WriteFile(file, []byte("version: 1\nprofiles:\n  default:\n    filesystem:\n      read_only: ["+dir+"]\n      hidden: [.env]\n"), 0o644)
	if _, err := LoadFor(dir, ""); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "filesystem.hidden removes") {
		t.Errorf("LoadFor(read_only checkout with hidden) = %v", err)
	}
	// A broken file is an error, never a silent fallback to the defaults.
	os.WriteFile(file, []byte("version: 1\nbogus: 1\n"), 0o644)
	if _, err := LoadFor(dir, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadFor(invalid) = %v, want ErrInvalid", err)
	}
	os.Remove(file)
	if err := os.Mkdir(file, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFor(dir, ""); err == nil {
		t.Error("LoadFor(enclave.yaml is a directory) = nil error")
	}
}

func TestLoadRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, FileName)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := LoadFor(dir, ""); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadFor(fifo) = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadFor(fifo) hangs")
	}
	if _, err := Load("/dev/zero"); err == nil {
		t.Error("Load(/dev/zero) = nil error")
	}
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, []byte("version: 1\n"+strings.Repeat("# padding\n", maxPolicyBytes/10+1)), 0o644)
	if _, err := Load(big); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func TestCheckHostPaths(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`version: 1
profiles:
  default:
    filesystem:
      read_only: [/srv/data, /var/lib/enclave-ro]
      read_write: [/srv/scratch]
`))
	if err != nil {
		t.Fatal(err)
	}
	pr := p.Profiles["default"]
	for _, tt := range []struct {
		checkout  string
		protected []string
		want      string
	}{
		{"/home/u/repo", nil, ""},
		{"/srv/scratch/repo", nil, "p.yaml:6:20: profiles.default.filesystem.read_write[0]: /srv/scratch overlaps the repository checkout /srv/scratch/repo"},
		{"/srv", nil, "overlaps the repository checkout /srv"},
		{"/home/u/repo", []string{"/srv/data/enclave/state"}, "p.yaml:5:19: profiles.default.filesystem.read_only[0]: /srv/data overlaps /srv/data/enclave/state"},
		{"/home/u/repo", []string{"/srv/scratch"}, "read_write[0]: /srv/scratch overlaps /srv/scratch"},
		{"/home/u/repo", []string{"/srv/scratchpad"}, ""},
	} {
		err := pr.CheckHostPaths("p.yaml", tt.checkout, tt.protected...)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("CheckHostPaths(%s, %v) = %q, want %q", tt.checkout, tt.protected, got, tt.want)
		}
	}
}

func TestValidateCatchesHandBuiltMistakes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(p *Policy)
		want   string
	}{
		{"uppercase host", func(p *Policy) { p.Profiles["default"].Network.Allow = []HostRule{{Host: "A.example.com"}} }, `write "a.example.com"`},
		{"relative path", func(p *Policy) { p.Profiles["default"].Filesystem.ReadOnly = []string{"rel"} }, "not absolute"},
		{"tilde path", func(p *Policy) { p.Profiles["default"].Exec.Allow = []string{"~/bin"} }, "expand ~"},
		{"zero limit", func(p *Policy) { p.Profiles["default"].Limits.Memory = 0 }, "limits.memory"},
		{"bad env", func(p *Policy) { p.Profiles["default"].Env.Allow = []string{"LD_PRELOAD"} }, "dynamic loader"},
		{"unknown default", func(p *Policy) { p.DefaultProfile = "x" }, `no profile named "x"`},
		{"provider clearance", func(p *Policy) {
			p.Providers = []Provider{{Name: "a", API: "openai", BaseURL: "https://x.example.com", Models: []string{"*"}, Clearance: "top"}}
		}, `"top" is not a classification level`},
		{"rw and ro", func(p *Policy) {
			p.Profiles["default"].Filesystem.ReadOnly = []string{"/a"}
			p.Profiles["default"].Filesystem.ReadWrite = []string{"/a"}
		}, "also in read_only"},
	} {
		p := Default()
		tt.change(p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestGrants(t *testing.T) {
	t.Setenv("HOME", testHome)
	if g := Default().Profiles["default"].Grants(); len(g) != 0 {
		t.Errorf("Default Grants() = %q, want none", g)
	}
	p, err := Parse("g.yaml", []byte(`version: 1
profiles:
  default:
    filesystem: {read_only: [/opt/a], read_write: [~/.cache/x]}
    network:
      allow:
        - {host: registry.example.com}
        - {host: up.example.com, ports: [80], methods: [POST], allow_connect: true}
      byte_budget: 1GiB
    env: {allow: [TERM, GOFLAGS], set: {CI: "1"}}
    limits: {memory: 1GiB, wall_time: 8h}
    degrade: [seccomp]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"network: registry.example.com on port 443, 80",
		"network: up.example.com on port 80 methods POST (and CONNECT tunnels, unchecked)",
		"read-only: /opt/a",
		"read-write: " + testHome + "/.cache/x",
		"environment passed: GOFLAGS",
		"environment set: CI",
		"network.byte_budget: 1073741824 bytes (default 67108864)",
		"limits.wall_time raised above the default",
		"may run without seccomp",
	}
	if got := p.Profiles["default"].Grants(); !slices.Equal(got, want) {
		t.Errorf("Grants() =\n%q\nwant\n%q", got, want)
	}
}
