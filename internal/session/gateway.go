package session

// The model gateway's part of a session: its configuration from the policy
// (or, with no providers in the policy, from the launcher's environment),
// the per-session token, the audit records of every model call, the
// classified files of the workspace copy, the adapter files in the agent's
// HOME, and the egress rules that would let the agent reach a provider
// without the gateway.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/gateway"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

// GatewayAddr is where the agent reaches the model gateway inside the
// sandbox.
const GatewayAddr = "127.0.0.2:8787"

// Bounds of the classified-file walk at session start: a workspace larger
// than this is fingerprinted up to the bound and the record says so.
const (
	maxClassifiedFiles = 20000
	maxClassifiedBytes = 256 << 20
	maxClassifiedFile  = 4 << 20
)

// agentHomeName is the session directory holding the adapter files mounted
// into the agent's HOME.
const agentHomeName = "agent-home"

// GatewayMode says whether and how a session runs the model gateway.
type GatewayMode int

const (
	// GatewayAuto runs the gateway when the policy names providers or the
	// launcher's environment holds a provider key; otherwise the session
	// has no gateway (and no model access).
	GatewayAuto GatewayMode = iota
	// GatewayOff never runs the gateway.
	GatewayOff
	// GatewayRequired fails the session when no provider is configured.
	GatewayRequired
)

// gatewayConfig builds the gateway configuration: the policy's providers
// if it names any, else the zero-setup providers of the launcher's
// environment (gateway.FromEnv). ok is false when neither configures a
// provider.
func gatewayConfig(pol *policy.Policy, environ []string) (cfg gateway.Config, ok bool, err error) {
	cl := &pol.Classification
	if len(pol.Providers) == 0 {
		cfg, err = gateway.FromEnv(environ)
		if err != nil {
			return gateway.Config{}, false, nil
		}
	} else {
		cfg = gateway.Config{Environ: environ}
		for _, p := range pol.Providers {
			pc := gateway.ProviderConfig{
				Name: p.Name, Family: gateway.Family(p.API), BaseURL: p.BaseURL,
				KeyEnv: p.KeyEnv, KeyFile: p.KeyFile, Models: slices.Clone(p.Models),
				Clearance: p.Clearance,
				Terms:     gateway.Terms{Region: p.Terms.Region},
			}
			if pc.KeyEnv == "" && pc.KeyFile == "" {
				pc.KeyEnv = defaultKeyEnv(p.API)
			}
			if p.Terms.Training != nil {
				pc.Terms.TrainsOnInputs = *p.Terms.Training
			}
			if r := p.Terms.Retention; r != nil {
				if *r == 0 {
					pc.Terms.Retention = "none"
				} else {
					pc.Terms.Retention = r.String()
				}
			}
			cfg.Providers = append(cfg.Providers, pc)
		}
	}
	cfg.Levels = slices.Clone(cl.Levels)
	cfg.DefaultClearance = cl.Default
	cfg.OnClassified = cl.Action
	return cfg, true, nil
}

func defaultKeyEnv(api string) string {
	switch api {
	case policy.APIAnthropic:
		return "ANTHROPIC_API_KEY"
	case policy.APIOpenAI:
		return "OPENAI_API_KEY"
	case policy.APIGemini:
		return "GEMINI_API_KEY"
	}
	return ""
}

// providerEndpoint is one provider upstream as host and port, for the
// egress check.
type providerEndpoint struct {
	Provider string `json:"provider"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
}

// Public endpoints of the provider families, used when a provider names no
// base URL (the gateway's defaults).
var familyHosts = map[gateway.Family]string{
	gateway.Anthropic: "api.anthropic.com",
	gateway.OpenAI:    "api.openai.com",
	gateway.Gemini:    "generativelanguage.googleapis.com",
}

func providerEndpoints(cfg gateway.Config) ([]providerEndpoint, error) {
	var out []providerEndpoint
	for _, p := range cfg.Providers {
		host, port := familyHosts[p.Family], 443
		if p.BaseURL != "" {
			u, err := url.Parse(p.BaseURL)
			if err != nil || u.Hostname() == "" {
				return nil, fmt.Errorf("provider %s: base URL is not a URL with a host", p.Name)
			}
			host = u.Hostname()
			port = 443
			if u.Scheme == "http" {
				port = 80
			}
			if ps := u.Port(); ps != "" {
				n, err := strconv.Atoi(ps)
				if err != nil {
					return nil, fmt.Errorf("provider %s: base URL port %q is not a number", p.Name, ps)
				}
				port = n
			}
		}
		out = append(out, providerEndpoint{Provider: p.Name, Host: policy.NormalizeHost(host), Port: port})
	}
	return out, nil
}

// DroppedRule is an egress rule removed for a session because it would let
// the agent reach a model provider without the gateway.
type DroppedRule struct {
	Index    int    `json:"index"`
	Host     string `json:"host"`
	Ports    []int  `json:"ports,omitempty"`
	Provider string `json:"provider"`
	Reason   string `json:"reason"`
}

// routeOnlyThroughGateway returns a copy of n without the rules that would
// allow a provider's upstream (for a plain request or a tunnel), so the
// only route to a provider is the gateway. A wildcard rule that covers a
// provider host is dropped whole, because a rule cannot carve an exception:
// fail closed, and the record says which rule went and why.
func routeOnlyThroughGateway(n *policy.Network, eps []providerEndpoint) (*policy.Network, []DroppedRule) {
	out := *n
	out.Allow = nil
	var dropped []DroppedRule
	for i, r := range n.Allow {
		one := policy.Network{Allow: []policy.HostRule{r}}
		hit := -1
		for j, ep := range eps {
			for _, method := range []string{"CONNECT", "POST"} {
				if one.Decide(policy.Request{Host: ep.Host, Port: ep.Port, Method: method, Path: "/"}).Allow {
					hit = j
				}
			}
			// A rule for the name is enough to resolve it through the
			// sandbox's DNS; keep the answer from the agent too.
			if one.AllowsName(ep.Host) && (len(r.Ports) == 0 || slices.Contains(r.Ports, ep.Port)) {
				hit = j
			}
			if hit >= 0 {
				break
			}
		}
		if hit < 0 {
			out.Allow = append(out.Allow, r)
			continue
		}
		ep := eps[hit]
		dropped = append(dropped, DroppedRule{
			Index: i, Host: r.Host, Ports: slices.Clone(r.Ports), Provider: ep.Provider,
			Reason: fmt.Sprintf("network.allow[%d] (%s) would reach %s:%d, the upstream of model provider %s, without the gateway; with the gateway on, models are reached only through it",
				i, r.Host, ep.Host, ep.Port, ep.Provider),
		})
	}
	return &out, dropped
}

// classifiedFiles walks the workspace copy and returns the files whose
// classification is above the lowest level, for fingerprinting. It never
// follows a symlink, skips .git, and stops at the bounds above (truncated
// reports that it did).
func classifiedFiles(root string, cl *policy.Classification) (files []gateway.ClassifiedFile, truncated bool, err error) {
	if len(cl.Levels) == 0 {
		return nil, false, nil
	}
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // unreadable part of the agent's copy: skip it
		}
		if p == root {
			return nil
		}
		rel := filepath.ToSlash(p[len(root)+1:])
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // symlinks and devices are not followed
		}
		level, _ := cl.Classify(rel)
		if cl.Rank(level) <= 0 {
			return nil
		}
		if len(files) >= maxClassifiedFiles || total >= maxClassifiedBytes {
			truncated = true
			return filepath.SkipAll
		}
		data, err := readNoFollow(p, maxClassifiedFile)
		if err != nil {
			return nil
		}
		total += int64(len(data))
		files = append(files, gateway.ClassifiedFile{Path: rel, Level: level, Content: data})
		return nil
	})
	return files, truncated, err
}

func readNoFollow(p string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// adapterMounts writes the agent adapter files (paths relative to HOME)
// under dir and returns mounts of their directories at the same places in
// the sandbox's HOME. Directories the agent writes in (Codex's session
// files, Gemini's chats) are read-write; the others are read-only, which
// also stops OpenCode from installing plugins into its config directory.
func adapterMounts(dir string, files map[string][]byte) ([]sandbox.Mount, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make adapter directory: %w", err)
	}
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for rel := range files {
		names = append(names, rel)
	}
	sort.Strings(names)
	for _, rel := range names {
		clean := path.Clean(rel)
		if path.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "../") || !strings.Contains(clean, "/") {
			return nil, fmt.Errorf("adapter file %q: want a path inside a directory of HOME", rel)
		}
		host := filepath.Join(dir, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(host), 0o700); err != nil {
			return nil, fmt.Errorf("adapter file %q: %w", rel, err)
		}
		if err := writeNoFollow(host, string(files[rel])); err != nil {
			return nil, fmt.Errorf("adapter file %q: %w", rel, err)
		}
		dirs[adapterMountDir(clean)] = true
	}
	var mounts []sandbox.Mount
	for d := range dirs {
		mounts = append(mounts, sandbox.Mount{
			Source:   filepath.Join(dir, filepath.FromSlash(d)),
			Target:   path.Join(HomeDir, d),
			Writable: writableAdapterDir(d),
		})
	}
	slices.SortFunc(mounts, func(a, b sandbox.Mount) int { return strings.Compare(a.Target, b.Target) })
	return mounts, nil
}

// adapterMountDir is the directory of HOME mounted for an adapter file: its
// own directory, or for OpenCode's the config directory that holds it.
func adapterMountDir(rel string) string {
	if strings.HasPrefix(rel, ".config/opencode/") {
		return ".config/opencode"
	}
	return path.Dir(rel)
}

func writableAdapterDir(d string) bool {
	switch d {
	case ".codex", ".gemini", ".config/opencode":
		// Codex keeps its sessions in ~/.codex, Gemini its chats in
		// ~/.gemini, OpenCode writes a .gitignore into its config
		// directory and fails without it.
		return true
	}
	return false
}

// extraAdapterFiles adds files enclave itself places beside the gateway's
// adapter files. OpenCode npm-installs its plugin package into its config
// directory on every fresh HOME unless the directory already holds
// node_modules and a package.json whose dependencies its package-lock.json
// lists; without these stubs every session would try to reach the package
// registry (refused by the egress proxy, but noise in the record).
func extraAdapterFiles(agent gateway.Agent, files map[string][]byte) {
	if agent != gateway.AgentOpenCode {
		return
	}
	const dir = ".config/opencode/"
	files[dir+"package.json"] = []byte(`{ "dependencies": { "@opencode-ai/plugin": "0.0.0-enclave" } }` + "\n")
	files[dir+"package-lock.json"] = []byte(`{ "lockfileVersion": 3, "packages": { "": { "dependencies": { "@opencode-ai/plugin": "0.0.0-enclave" } } } }` + "\n")
	files[dir+"node_modules/.keep"] = nil
}

// gatewayRecorder turns the gateway's call records into "model.call"
// audit events: the decision before anything is forwarded (an error there
// makes the gateway refuse the call), the result after.
type gatewayRecorder struct{ r *recorder }

func (g gatewayRecorder) Record(ctx context.Context, c *gateway.Call) error {
	decision, actor := "", "enclave"
	if c.Phase == gateway.PhaseDecision {
		decision, actor = "deny", "agent"
		if c.Allow {
			decision = "allow"
		} else {
			what := c.Model
			if what == "" {
				what = string(c.Family)
			}
			g.r.addBlocked(Blocked{Kind: "model", What: strings.TrimSpace(what + " " + c.Path), Reason: c.Reason})
		}
	}
	// The agent hanging up must not cancel the record of what it did.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return g.r.append(rctx, "model.call", decision, actor, c)
}

// gatewayRun is the running gateway of one session.
type gatewayRun struct {
	gw       *gateway.Gateway
	sess     *gateway.Session
	env      map[string]string
	mounts   []sandbox.Mount
	network  *policy.Network
	describe []string
	srv      interface {
		Serve(net.Listener) error
		Close() error
	}
}

// startGateway configures the gateway for the session, or returns nil when
// it is off.
func startGateway(ctx context.Context, o Options, sessDir, copyDir, id string, rec *recorder, scope *authz.Scope, log *slog.Logger) (*gatewayRun, error) {
	if o.Gateway == GatewayOff {
		return nil, nil
	}
	cfg, ok, err := gatewayConfig(o.Policy, o.Environ)
	if err != nil {
		return nil, err
	}
	if !ok {
		if o.Gateway == GatewayRequired {
			return nil, errors.New("model gateway: the policy names no provider and none of ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY is set")
		}
		return nil, rec.append(ctx, "gateway", "", "enclave", map[string]any{
			"enabled": false, "reason": "the policy names no provider and the environment holds no provider key",
		})
	}
	eps, err := providerEndpoints(cfg)
	if err != nil {
		return nil, fmt.Errorf("model gateway: %w", err)
	}
	gw, err := gateway.New(cfg, log.With("part", "gateway"))
	if err != nil {
		return nil, fmt.Errorf("model gateway: %w", err)
	}
	files, truncated, err := classifiedFiles(copyDir, &o.Policy.Classification)
	if err != nil {
		return nil, fmt.Errorf("model gateway: fingerprint classified files: %w", err)
	}
	b := o.Policy.Gateway.Budget
	gs, err := gw.NewSession(gateway.SessionConfig{
		ID: id, Recorder: gatewayRecorder{rec}, Files: files,
		Budget:    gateway.Budget{Tokens: b.Tokens, Requests: b.Requests},
		Logger:    log.With("part", "gateway"),
		Authorize: modelAuthorizer(scope),
	})
	if err != nil {
		return nil, fmt.Errorf("model gateway: %w", err)
	}
	netw, dropped := routeOnlyThroughGateway(&o.Profile.Network, eps)
	env, adapters := gateway.AgentEnv(o.Argv, "http://"+GatewayAddr, gs.Token())
	extraAdapterFiles(gateway.DetectAgent(o.Argv), adapters)
	mounts, err := adapterMounts(filepath.Join(sessDir, agentHomeName), adapters)
	if err != nil {
		return nil, fmt.Errorf("model gateway: %w", err)
	}
	g := &gatewayRun{gw: gw, sess: gs, env: env, mounts: mounts, network: netw, describe: gw.Describe(), srv: gs.Server()}
	for _, d := range dropped {
		g.describe = append(g.describe, "model gateway: dropped egress rule "+d.Reason)
	}
	classified := make([]map[string]string, 0, len(files))
	for _, f := range files {
		classified = append(classified, map[string]string{"path": f.Path, "level": f.Level})
	}
	adapterNames := make([]string, 0, len(adapters))
	for k := range adapters {
		adapterNames = append(adapterNames, k)
	}
	sort.Strings(adapterNames)
	if err := rec.append(ctx, "gateway", "", "enclave", map[string]any{
		"enabled": true, "addr": GatewayAddr, "agent": gateway.DetectAgent(o.Argv),
		"from_environment": cfg.FromEnvironment, "describe": g.describe,
		"providers": eps, "dropped_rules": dropped, "classified_files": classified,
		"classified_truncated": truncated, "adapter_files": adapterNames,
		"budget": map[string]int64{"tokens": b.Tokens, "requests": b.Requests},
	}); err != nil {
		return nil, err
	}
	return g, nil
}
