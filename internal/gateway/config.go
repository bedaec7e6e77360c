package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Family is a provider API family: the wire protocol a provider speaks.
type Family string

// The families the gateway serves.
const (
	Anthropic Family = "anthropic"
	OpenAI    Family = "openai"
	Gemini    Family = "gemini"
)

// DefaultLevels are the classification levels, lowest first, used when
// [Config.Levels] is empty.
var DefaultLevels = []string{"public", "internal", "confidential", "restricted"}

// DefaultClearance is the clearance of a provider that names none.
const DefaultClearance = "internal"

// Default limits.
const (
	DefaultMaxBodyBytes    = 32 << 20
	DefaultHeaderTimeout   = 10 * time.Minute
	defaultAnthropicURL    = "https://api.anthropic.com"
	defaultOpenAIURL       = "https://api.openai.com/v1"
	defaultGeminiURL       = "https://generativelanguage.googleapis.com"
	maxErrorBodyBytes      = 1 << 20
	maxUsageBodyBytes      = 8 << 20
	maxModelNameBytes      = 256
	classifiedActionBlock  = "block"
	classifiedActionRedact = "redact"
)

// Config is the gateway's configuration. The integrator builds it from the
// policy file, or with [FromEnv] when there is none.
type Config struct {
	// Providers are the sanctioned upstreams, tried in order: a request goes
	// to the first provider of its family whose Models match.
	Providers []ProviderConfig
	// Levels are the classification names, lowest first; empty means
	// [DefaultLevels].
	Levels []string
	// DefaultClearance applies to providers without one; empty means
	// [DefaultClearance].
	DefaultClearance string
	// OnClassified is "block" (default) or "redact": what to do with content
	// above the target model's clearance.
	OnClassified string
	// NormalizeIdentifiers makes classification fingerprints robust to
	// renamed identifiers, at some cost in false positives.
	NormalizeIdentifiers bool
	// SecretRules, if set, replaces the built-in secret rules; it is a
	// gitleaks-format TOML document ([[rules]] with id, regex, secretGroup,
	// entropy, keywords, allowlists).
	SecretRules []byte
	// DisableRedaction turns secret redaction off (it is on by default).
	DisableRedaction bool
	// MaxBodyBytes caps a request body; 0 means [DefaultMaxBodyBytes].
	MaxBodyBytes int64
	// HeaderTimeout caps the wait for upstream response headers; 0 means
	// [DefaultHeaderTimeout].
	HeaderTimeout time.Duration
	// Environ is where KeyEnv names are looked up; nil means os.Environ().
	Environ []string
	// Transport, if set, replaces the upstream transport (tests, proxies).
	Transport http.RoundTripper
	// FromEnvironment is set by [FromEnv]; it only changes the wording of
	// [Gateway.Describe].
	FromEnvironment bool
}

// ProviderConfig is one sanctioned upstream.
type ProviderConfig struct {
	// Name identifies the provider in records ("anthropic", "azure-east").
	Name string
	// Family is the wire protocol.
	Family Family
	// BaseURL is the upstream base in the SDK convention of its family:
	// Anthropic without "/v1" (a trailing "/v1" is dropped), OpenAI with
	// "/v1" (added when the URL has no path), Gemini without a version.
	// Empty means the provider's public endpoint.
	BaseURL string
	// KeyEnv names the host environment variable holding the key.
	KeyEnv string
	// KeyFile is a file holding the key; it must not be readable by group
	// or others. Used when KeyEnv is empty or unset.
	KeyFile string
	// Models are model ids or globs ("*" matches any run of characters).
	// Empty sanctions no model.
	Models []string
	// Terms are the data terms agreed with the provider, copied into records.
	Terms Terms
	// Clearance is the highest classification level this provider may
	// receive; empty means the gateway's default clearance.
	Clearance string
}

// Terms are the data terms an organisation agreed with a provider.
type Terms struct {
	TrainsOnInputs bool   `json:"trains_on_inputs"`
	Retention      string `json:"retention,omitempty"`
	Region         string `json:"region,omitempty"`
}

// secret holds a provider key behind a closure: fmt prints unexported
// struct fields by reflection without calling their String methods, but it
// cannot look inside a func, so a stray %+v of a Gateway shows an address,
// not the key. It also prints as "[redacted]" when formatted directly.
type secret struct{ get func() string }

func newSecret(v string) secret             { return secret{func() string { return v }} }
func (s secret) value() string              { return s.get() }
func (secret) String() string               { return "[redacted]" }
func (secret) GoString() string             { return "[redacted]" }
func (secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

type provider struct {
	ProviderConfig
	base      *url.URL
	host      string // for records: host[:port], no userinfo
	key       secret
	keySource string // "key from $X" or "key from file F", for Describe
	clearance int
}

// FromEnv builds the zero-setup configuration from the usual variables:
// ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, OPENAI_API_KEY / OPENAI_BASE_URL
// and GEMINI_API_KEY (or GOOGLE_API_KEY) / GOOGLE_GEMINI_BASE_URL. Each
// family with a key becomes a provider with every model sanctioned at
// [DefaultClearance]. It returns an error wrapping [ErrConfig] when no key
// is set.
func FromEnv(environ []string) (Config, error) {
	env := envMap(environ)
	cfg := Config{Environ: environ, FromEnvironment: true}
	add := func(name string, fam Family, keyVars []string, baseVar string) {
		for _, kv := range keyVars {
			if env[kv] != "" {
				cfg.Providers = append(cfg.Providers, ProviderConfig{
					Name: name, Family: fam, BaseURL: env[baseVar], KeyEnv: kv, Models: []string{"*"},
				})
				return
			}
		}
	}
	add("anthropic", Anthropic, []string{"ANTHROPIC_API_KEY"}, "ANTHROPIC_BASE_URL")
	add("openai", OpenAI, []string{"OPENAI_API_KEY"}, "OPENAI_BASE_URL")
	add("gemini", Gemini, []string{"GEMINI_API_KEY", "GOOGLE_API_KEY"}, "GOOGLE_GEMINI_BASE_URL")
	if len(cfg.Providers) == 0 {
		return cfg, fmt.Errorf("%w: none of ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY is set", ErrConfig)
	}
	return cfg, nil
}

// Describe returns one line per provider saying what it sanctions, for
// `enclave run` to print at start. It never includes a key.
func (g *Gateway) Describe() []string {
	var out []string
	for _, p := range g.providers {
		src := p.keySource
		models := strings.Join(p.Models, ", ")
		line := fmt.Sprintf("model gateway: %s (%s API at %s, %s): models %s, clearance up to %s",
			p.Name, p.Family, p.host, src, models, g.levels[p.clearance])
		if g.cfg.FromEnvironment {
			line += " (no policy: sanctioned from the environment)"
		}
		out = append(out, line)
	}
	return out
}

func (g *Gateway) environ() []string {
	if g.cfg.Environ != nil {
		return g.cfg.Environ
	}
	return os.Environ()
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (g *Gateway) load() error {
	c := &g.cfg
	g.levels = c.Levels
	if len(g.levels) == 0 {
		g.levels = DefaultLevels
	}
	for i, l := range g.levels {
		if l == "" || slices.Index(g.levels, l) != i {
			return fmt.Errorf("%w: levels[%d] %q is empty or repeated", ErrConfig, i, l)
		}
	}
	dc := c.DefaultClearance
	if dc == "" {
		dc = DefaultClearance
		if !slices.Contains(g.levels, dc) {
			dc = g.levels[0]
		}
	}
	g.clearance = slices.Index(g.levels, dc)
	if g.clearance < 0 {
		return fmt.Errorf("%w: default clearance %q is not a level (levels: %s)", ErrConfig, dc, strings.Join(g.levels, ", "))
	}
	switch c.OnClassified {
	case "":
		c.OnClassified = classifiedActionBlock
	case classifiedActionBlock, classifiedActionRedact:
	default:
		return fmt.Errorf("%w: on_classified %q must be block or redact", ErrConfig, c.OnClassified)
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if len(c.Providers) == 0 {
		return fmt.Errorf("%w: no providers", ErrConfig)
	}
	env := envMap(g.environ())
	names := map[string]bool{}
	for i, pc := range c.Providers {
		where := fmt.Sprintf("providers[%d] (%s)", i, pc.Name)
		if pc.Name == "" {
			return fmt.Errorf("%w: providers[%d]: name is empty", ErrConfig, i)
		}
		if names[pc.Name] {
			return fmt.Errorf("%w: %s: name repeated", ErrConfig, where)
		}
		names[pc.Name] = true
		p := &provider{ProviderConfig: pc}
		raw := pc.BaseURL
		switch pc.Family {
		case Anthropic:
			if raw == "" {
				raw = defaultAnthropicURL
			}
		case OpenAI:
			if raw == "" {
				raw = defaultOpenAIURL
			}
		case Gemini:
			if raw == "" {
				raw = defaultGeminiURL
			}
		default:
			return fmt.Errorf("%w: %s: family %q must be anthropic, openai or gemini", ErrConfig, where, pc.Family)
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			// The URL may hold credentials: name the field, not the value.
			return fmt.Errorf("%w: %s: base URL must be an http(s) URL with a host and no query", ErrConfig, where)
		}
		if u.User != nil {
			return fmt.Errorf("%w: %s: base URL must not carry credentials; use key_env or key_file", ErrConfig, where)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		switch pc.Family {
		case Anthropic:
			u.Path = strings.TrimSuffix(u.Path, "/v1")
		case OpenAI:
			if u.Path == "" {
				u.Path = "/v1"
			}
		}
		u.RawPath = ""
		p.base = u
		p.host = u.Host
		for j, m := range pc.Models {
			if m == "" || len(m) > maxModelNameBytes {
				return fmt.Errorf("%w: %s: models[%d] is empty or too long", ErrConfig, where, j)
			}
		}
		cl := pc.Clearance
		if cl == "" {
			p.clearance = g.clearance
		} else if p.clearance = slices.Index(g.levels, cl); p.clearance < 0 {
			return fmt.Errorf("%w: %s: clearance %q is not a level (levels: %s)", ErrConfig, where, cl, strings.Join(g.levels, ", "))
		}
		key, src, err := loadKey(pc, env)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		p.key, p.keySource = newSecret(key), src
		g.providers = append(g.providers, p)
	}
	// The environment holds the keys: do not keep it where a stray %+v of
	// the Gateway would print it.
	c.Environ = nil
	rules, err := loadRules(c.SecretRules)
	if err != nil {
		return err
	}
	g.rules = rules
	tr := c.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // the host's proxy settings are not the gateway's business
		t.DisableCompression = true
		t.ResponseHeaderTimeout = c.HeaderTimeout
		t.MaxIdleConnsPerHost = 256
		tr = t
	}
	g.client = &http.Client{
		Transport: tr,
		// Never follow redirects: a redirect could carry the key elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nil
}

func loadKey(pc ProviderConfig, env map[string]string) (key, source string, err error) {
	if pc.KeyEnv != "" {
		if v := strings.TrimSpace(env[pc.KeyEnv]); v != "" {
			return v, "key from $" + pc.KeyEnv, nil
		}
		if pc.KeyFile == "" {
			return "", "", fmt.Errorf("%w: key variable %s is not set", ErrConfig, pc.KeyEnv)
		}
	}
	if pc.KeyFile == "" {
		return "", "", fmt.Errorf("%w: no key_env or key_file", ErrConfig)
	}
	k, err := readKeyFile(pc.KeyFile)
	return k, "key from file " + pc.KeyFile, err
}

func readKeyFile(name string) (string, error) {
	pc := ProviderConfig{KeyFile: name}
	f, err := os.Open(pc.KeyFile)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrKeyFile, pc.KeyFile, err)
	}
	defer f.Close()
	fi, err := f.Stat() // on the open fd: no swap between check and read
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrKeyFile, pc.KeyFile, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w %q: not a regular file", ErrKeyFile, pc.KeyFile)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w %q: mode %04o lets group or others read it; chmod 600 it", ErrKeyFile, pc.KeyFile, perm)
	}
	if uid, ok := fileUID(fi); ok && uid != os.Getuid() {
		return "", fmt.Errorf("%w %q: owned by uid %d, not by the user running enclave (uid %d)", ErrKeyFile, pc.KeyFile, uid, os.Getuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrKeyFile, pc.KeyFile, err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" || strings.ContainsAny(k, "\r\n") {
		return "", fmt.Errorf("%w %q: must hold exactly one non-empty line", ErrKeyFile, pc.KeyFile)
	}
	return k, nil
}

// matchModel matches a model id against a glob where "*" matches any run of
// characters (including "/", which appears in some model ids).
func matchModel(pattern, s string) bool {
	for {
		i := strings.IndexByte(pattern, '*')
		if i < 0 {
			return pattern == s
		}
		if !strings.HasPrefix(s, pattern[:i]) {
			return false
		}
		s = s[i:]
		pattern = pattern[i+1:]
		if pattern == "" {
			return true
		}
		for j := 0; j <= len(s); j++ {
			if matchModel(pattern, s[j:]) {
				return true
			}
		}
		return false
	}
}

// resolve picks the provider for model in family, or explains the refusal.
func (g *Gateway) resolve(fam Family, model string) (*provider, string) {
	var allowed []string
	for _, p := range g.providers {
		if p.Family != fam {
			continue
		}
		for _, m := range p.Models {
			if matchModel(m, model) {
				return p, ""
			}
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		return nil, fmt.Sprintf("model %q is not sanctioned: the policy sanctions no %s model", model, fam)
	}
	return nil, fmt.Sprintf("model %q is not sanctioned by the policy; allowed %s models: %s", model, fam, strings.Join(allowed, ", "))
}

// sanctioned reports whether any provider of fam sanctions model.
func (g *Gateway) sanctioned(fam Family, model string) bool {
	p, _ := g.resolve(fam, model)
	return p != nil
}

func (g *Gateway) firstProvider(fam Family) *provider {
	for _, p := range g.providers {
		if p.Family == fam {
			return p
		}
	}
	return nil
}
