package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/review"
	"github.com/enclave-dev/enclave/internal/sandbox"
	"github.com/enclave-dev/enclave/internal/session"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/workspace"
)

const runAbout = `Run starts COMMAND as an agent in a new session. The agent works in a copy
of the current repository (or directory) on branch enclave/SESSION, inside a
sandbox that sees the system directories read-only, its workspace, a fresh
HOME and nothing else of the host. It reaches the network only through
enclave's egress proxy, which allows the hosts the policy names. Every exec,
flow and DNS query is written to the audit log before it happens.

The policy is --policy FILE, else enclave.yaml in the current directory,
else the built-in defaults (no network at all). Flags add to the profile for
this run only. Enclave prints the session id when the session starts and a
summary when the agent exits; the exit code is the agent's.`

const runExamples = `    enclave run -- claude
    enclave run --allow-host registry.example.com -- npm install
    enclave run --ro ~/go/pkg/mod --pass GOFLAGS -- go test ./...
    enclave run --profile strict --policy team.yaml -- codex exec "fix the build"`

// runFlags are the flags shared by run and demo.
type runFlags struct {
	policyPath, profile onceString
	ro, rw, allowHost   listFlag
	pass, setEnv        listFlag
	degrade             listFlag
	tty, gateway        onceString
	verify, task, tier  onceString
	quiet, trustPolicy  bool
	noAutoMount         bool
	checkpointEvery     time.Duration
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.policyPath, "policy", "policy `file` (default: ./enclave.yaml, else built-in)")
	fs.Var(&f.profile, "profile", "policy profile `name` (default: the policy's profile)")
	fs.Var(&f.ro, "ro", "also mount host `path[:inside]` read-only (repeatable)")
	fs.Var(&f.rw, "rw", "also mount host `path[:inside]` read-write (repeatable)")
	fs.Var(&f.allowHost, "allow-host", "also allow egress to `host[:port]` (repeatable; port default 443 and 80)")
	fs.Var(&f.pass, "pass", "pass the launcher's variable `NAME` into the sandbox (repeatable)")
	fs.Var(&f.setEnv, "env", "set `NAME=value` inside the sandbox (repeatable)")
	fs.Var(&f.degrade, "degrade", "run without protection `layer` (landlock, seccomp, cgroups) if this kernel lacks it")
	fs.Var(&f.tty, "tty", "give the agent a terminal: `mode` auto, always or never")
	fs.Var(&f.verify, "verify", "verification gate `mode` when the agent exits: auto (when it changed something) or off")
	fs.Var(&f.task, "task", "the `task` the agent was given, for the record and the reviewer")
	fs.Var(&f.tier, "tier", "task `tier` for review: docs-tests, routine (default) or sensitive")
	fs.Var(&f.gateway, "gateway", "model gateway `mode`: auto (on when a provider is configured), on (required), off")
	fs.BoolVar(&f.quiet, "q", false, "print no session banner and summary")
	fs.BoolVar(&f.noAutoMount, "no-agent-mount", false, "do not mount the agent's own install when it lives outside the sandbox's view")
	fs.BoolVar(&f.trustPolicy, "trust-policy", false, "trust the repository's enclave.yaml as it is now (asked once per content)")
	fs.DurationVar(&f.checkpointEvery, "checkpoint-every", session.DefaultCheckpointEvery, "record the workspace's tree this often while the agent works, pausing it briefly (for the gate's session churn; 0 never)")
}

func (e *Env) runCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("run", "run [flags] -- COMMAND [ARG...]", runAbout, runExamples)
	var f runFlags
	f.register(fs.FlagSet)
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("run: name the agent command, e.g. enclave run -- claude")
	}
	switch f.verify.val {
	case "", "auto", "off":
	default:
		return usagef("-verify %q: write auto or off", f.verify.val)
	}
	if mount, command, ok := agentInstall(argv[0], e.getenv("PATH"), e.getenv("HOME")); ok && !f.noAutoMount && !coveredBy(mount, f.ro, f.rw) {
		// Most agents install under HOME, which the sandbox never shows:
		// mount just the agent's own install, read-only, and say so.
		f.ro = append(f.ro, mount)
		argv = append([]string{command}, argv[1:]...)
		if !f.quiet {
			fmt.Fprintf(e.Stderr, "enclave: mounting the agent's install read-only: %s\n", mount)
		}
	}
	res, err := e.runSession(ctx, &f, argv, nil)
	if err != nil {
		return err
	}
	if f.verify.val != "off" && res.Change != nil && len(res.Change.Files) > 0 {
		// The gate's report goes to stderr: stdout belongs to the agent.
		sub := *e
		sub.Stdout = e.Stderr
		fmt.Fprintf(e.Stderr, "enclave: verifying the change (enclave verify %s; -verify off skips this)\n", res.Session.ID)
		var ee *exitError
		if verr := sub.verifyCmd(ctx, []string{res.Session.ID}); verr != nil && !errors.As(verr, &ee) {
			fmt.Fprintf(e.Stderr, "enclave: verify: %s\n", scrub(verr.Error()))
		}
	}
	if res.ExitCode != 0 {
		return &exitError{res.ExitCode}
	}
	return nil
}

// runSession loads the policy, applies the flags and runs one session,
// printing the banner and summary to stderr.
func (e *Env) runSession(ctx context.Context, f *runFlags, argv []string, tweak func(*policy.Profile)) (*session.Result, error) {
	dir, err := e.dir()
	if err != nil {
		return nil, err
	}
	// A state directory that is already set up opens while git locates
	// the repository and the policy is checked.
	opening := e.openStateEarly(ctx)
	defer opening.discard()
	// One git process answers where the repository is, for this and for
	// the workspace (which would otherwise ask again). Its top level holds
	// enclave.yaml, enclave.cedar and enclave.review.yaml, wherever in the
	// repository enclave was started.
	repo, err := workspace.Locate(ctx, dir)
	if err != nil {
		return nil, err
	}
	top := repo.Dir
	if repo.Top != "" {
		top = repo.Top
	}
	pol, err := policy.LoadFor(top, f.policyPath.val)
	if err != nil {
		return nil, err
	}
	// A tier that names a sandbox profile fixes it.
	name, err := review.RunProfile(top, f.tier.val, f.profile.val, pol.DefaultProfile)
	if err != nil {
		return nil, err
	}
	prof, err := pol.Profile(name)
	if err != nil {
		return nil, err
	}
	stateDir, err := e.stateDir()
	if err != nil {
		return nil, err
	}
	if err := prof.CheckHostPaths(pol.Source, top, realPath(stateDir)); err != nil {
		return nil, err
	}
	if f.policyPath.val == "" && pol.Source != policy.SourceBuiltin {
		// A repository's own enclave.yaml arrives with a clone: it is
		// the repository author's wish, not the user's. What it opens
		// beyond the defaults needs the user's word once per content.
		if err := e.trustRepoPolicy(stateDir, pol, prof, f.trustPolicy); err != nil {
			return nil, err
		}
	}
	// enclave.review.yaml and enclave.cedar also arrive with a clone, and
	// say who may approve and merge agents' changes: the same once-per-
	// content word from the user, whichever enclave.yaml is in force.
	if err := e.trustRepoGovernance(stateDir, top, f.trustPolicy); err != nil {
		return nil, err
	}
	mounts, err := applyRunFlags(prof, f)
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if within(realPath(m.Source), realPath(stateDir)) || within(realPath(stateDir), realPath(m.Source)) {
			return nil, fmt.Errorf("mount %s: it overlaps enclave's state directory %s, which the agent must never reach", m.Source, stateDir)
		}
	}
	if tweak != nil {
		tweak(prof)
	}
	st, err := opening.take()
	if err != nil {
		return nil, err
	}
	defer st.Close()

	stdin, stdout, stderr := fileOr(e.Stdin, os.Stdin), fileOr(e.Stdout, os.Stdout), fileOr(e.Stderr, os.Stderr)
	tty := false
	switch f.tty.val {
	case "", "auto":
		tty = term.IsTerminal(int(stdin.Fd())) && term.IsTerminal(int(stdout.Fd()))
	case "always":
		tty = true
	case "never":
	default:
		return nil, usagef("-tty %q: write auto, always or never", f.tty.val)
	}

	// Signals go to the agent, which runs in its own session and so does
	// not get the terminal's; enclave itself keeps running to record the
	// end. With a terminal in raw mode, ^C reaches the agent as a byte.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	var gw session.GatewayMode
	switch f.gateway.val {
	case "", "auto":
		gw = session.GatewayAuto
	case "on":
		gw = session.GatewayRequired
	case "off":
		gw = session.GatewayOff
	default:
		return nil, usagef("-gateway %q: write auto, on or off", f.gateway.val)
	}

	// Who may run which agent at which tier with which profile is the
	// Cedar policy's call (enclave.cedar beside enclave.yaml), decided and
	// recorded before the session exists; a denial starts nothing.
	// The launcher is the OS user, as on the session record. (An enclave
	// run inside a sandbox is the agent's own program with the agent's
	// state, not a boundary; the sandbox is.)
	launcher := authz.Principal{Type: authz.User, ID: currentUser()}
	rd, err := review.AuthorizeRun(ctx, st.log, review.RunRequest{
		Repo: top, Who: launcher, Argv: argv, Profile: prof.Name, Task: f.task.val, Tier: f.tier.val,
	})
	if err != nil {
		if errors.Is(err, review.ErrDenied) {
			return nil, withHint(err, "the decision is on the audit record (enclave audit export -kind authz -decision deny); the policies are the built-in ones and "+filepath.Join(top, authz.FileName))
		}
		return nil, err
	}

	started := time.Now()
	res, err := session.Run(ctx, session.Options{
		Gateway: gw,
		Argv:    argv, Dir: dir, Repo: repo, User: currentUser(), Policy: pol, Profile: prof,
		Task: f.task.val, Tier: rd.Tier,
		// The same Cedar policies decide every egress flow and model
		// call enclave.yaml allows (they can only narrow it).
		Authz:   rd.Engine,
		Environ: e.environ(), StateDir: st.dir, Store: st.store, Audit: st.log,
		Mounts: mounts, Env: f.setEnv,
		Stdin: stdin, Stdout: stdout, Stderr: stderr, TTY: tty, Signals: sigs,
		CheckpointEvery: checkpointOption(f.checkpointEvery),
		Started: func(s *store.Session, ws *workspace.Workspace) {
			// The decision was recorded before the session existed; this
			// puts it on the session's own record too.
			if lerr := review.LinkRun(ctx, st.log, s.ID, launcher, rd); lerr != nil {
				fmt.Fprintf(e.Stderr, "enclave: warning: %s\n", scrub(lerr.Error()))
			}
			if !f.quiet {
				e.printBanner(s, ws, pol, prof)
			}
		},
		Notify: func(line string) {
			if !f.quiet {
				fmt.Fprintf(e.Stderr, "enclave:   %s\n", line)
			}
		},
	})
	if res != nil && !f.quiet {
		e.printSummary(res, time.Since(started))
	}
	if cerr := st.checkpoint(context.WithoutCancel(ctx)); cerr != nil && err == nil {
		err = fmt.Errorf("sign the audit checkpoint: %w", cerr)
	}
	var le *sandbox.LayerError
	if errors.As(err, &le) {
		hint := "run \"enclave doctor\" to see which layers this machine has"
		switch le.Layer {
		case sandbox.LayerLandlock, sandbox.LayerSeccomp, sandbox.LayerCgroups:
			hint += "; --degrade " + le.Layer + " runs without it, if you accept that"
		default:
			hint += "; enclave cannot run without " + le.Layer
		}
		return res, withHint(err, hint)
	}
	return res, err
}

// applyRunFlags adds the command line's additions to the profile.
func applyRunFlags(prof *policy.Profile, f *runFlags) ([]sandbox.Mount, error) {
	var mounts []sandbox.Mount
	for _, l := range []struct {
		vals []string
		rw   bool
	}{{f.ro, false}, {f.rw, true}} {
		for _, v := range l.vals {
			src, dst, _ := strings.Cut(v, ":")
			src = expandHome(src)
			abs, err := filepath.Abs(src)
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(abs); err != nil {
				return nil, fmt.Errorf("mount %s: %w", v, err)
			}
			if dst == "" {
				dst = abs
			}
			mounts = append(mounts, sandbox.Mount{Source: abs, Target: filepath.Clean(dst), Writable: l.rw})
			warnUnwritable(abs, l.rw)
		}
	}
	for _, h := range f.allowHost {
		rule := policy.HostRule{Host: h}
		if host, port, ok := strings.Cut(h, ":"); ok && !strings.Contains(port, ":") {
			p, err := strconv.Atoi(port)
			if err != nil || p < 1 || p > 65535 {
				return nil, usagef("-allow-host %q: the port must be a number from 1 to 65535", h)
			}
			rule = policy.HostRule{Host: host, Ports: []int{p}}
		}
		prof.Network.Allow = append([]policy.HostRule{rule}, prof.Network.Allow...)
	}
	prof.Env.Allow = append(prof.Env.Allow, f.pass...)
	for _, name := range f.pass {
		if !prof.Env.Allows(name) {
			return nil, withHint(fmt.Errorf("-pass %s: enclave never passes this variable from its environment (it looks like a secret, a host socket, a loader setting or one enclave sets itself)", name),
				"if the agent really needs it, set it explicitly with --env NAME=value, so the choice shows on the command line")
		}
	}
	for _, kv := range f.setEnv {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return nil, usagef("-env %q: write NAME=value", kv)
		}
	}
	prof.Degrade = append(prof.Degrade, f.degrade...)
	return mounts, nil
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[1:])
		}
	}
	return p
}

func fileOr(x any, def *os.File) *os.File {
	if f, ok := x.(*os.File); ok {
		return f
	}
	return def
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

func (e *Env) printBanner(s *store.Session, ws *workspace.Workspace, pol *policy.Policy, prof *policy.Profile) {
	w := e.Stderr
	src := pol.Source
	if pol.Hash != "" && len(pol.Hash) >= 12 {
		src += " " + pol.Hash[:12]
	}
	fmt.Fprintf(w, "enclave: session %s started\n", s.ID)
	fmt.Fprintf(w, "enclave:   workspace %s (copy of %s, branch %s)\n", session.WorkspaceDir, ws.Source, ws.Branch)
	fmt.Fprintf(w, "enclave:   policy %s, profile %s; network: %s\n", src, prof.Name, describeNetwork(&prof.Network))
	for _, warn := range ws.Warnings {
		fmt.Fprintf(w, "enclave: warning: %s\n", warn)
	}
}

func describeNetwork(n *policy.Network) string {
	if len(n.Allow) == 0 {
		return "nothing allowed"
	}
	var hosts []string
	for _, r := range n.Allow {
		hosts = append(hosts, r.Host)
	}
	if len(hosts) > 4 {
		hosts = append(hosts[:4], fmt.Sprintf("and %d more", len(hosts)-4))
	}
	return "only " + strings.Join(hosts, ", ")
}

func (e *Env) printSummary(res *session.Result, took time.Duration) {
	w := e.Stderr
	s := res.Session
	fmt.Fprintf(w, "enclave: session %s ended: exit %d after %s\n", s.ID, res.ExitCode, took.Round(10*time.Millisecond))
	if len(res.Blocked) == 0 {
		fmt.Fprintf(w, "enclave:   blocked: nothing\n")
	} else {
		fmt.Fprintf(w, "enclave:   blocked: %d\n", s.Blocked)
		// Resolvers retry; show each distinct attempt once, with a count.
		type key struct{ kind, what string }
		var order []key
		count := map[key]int{}
		reason := map[key]string{}
		for _, b := range res.Blocked {
			k := key{b.Kind, b.What}
			if count[k] == 0 {
				order = append(order, k)
				reason[k] = b.Reason
			}
			count[k]++
		}
		for i, k := range order {
			if i == 6 {
				fmt.Fprintf(w, "enclave:     ... and more: enclave log %s\n", s.ID)
				break
			}
			times := ""
			if count[k] > 1 {
				times = fmt.Sprintf(" (%d times)", count[k])
			}
			fmt.Fprintf(w, "enclave:     %-6s %s%s: %s\n", k.kind, safeText(k.what), times, safeText(reason[k]))
		}
	}
	fmt.Fprintf(w, "enclave:   egress: %d flows, %s out, %s in\n", res.Flows, humanBytes(s.BytesUp), humanBytes(s.BytesDown))
	for _, m := range res.Models {
		fmt.Fprintf(w, "enclave:   model %s (%s at %s): %d requests, %d refused, %s out, %s in, %d+%d tokens, %d redactions; see: enclave data %s\n",
			m.Model, m.Provider, m.Upstream, m.Requests, m.Refused, humanBytes(m.RequestBytes), humanBytes(m.ResponseBytes),
			m.InputTokens, m.OutputTokens, m.Redactions, s.ID)
	}
	if res.Change != nil {
		c := res.Change
		fmt.Fprintf(w, "enclave:   files changed: %d (+%d -%d); see: enclave diff %s\n", len(c.Files), c.Insertions, c.Deletions, s.ID)
	}
	if len(res.Status.Degraded) > 0 {
		fmt.Fprintf(w, "enclave:   warning: ran without %s\n", strings.Join(res.Status.Degraded, ", "))
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

var _ io.Writer = (*os.File)(nil)

// trustRepoPolicy checks that the user accepted what a repository's policy
// file grants, recording the acceptance by the file's hash.
func (e *Env) trustRepoPolicy(stateDir string, pol *policy.Policy, prof *policy.Profile, accept bool) error {
	grants := prof.Grants()
	if len(grants) == 0 {
		return nil
	}
	if ok, err := trusted(stateDir, pol.Hash); ok || err != nil {
		return err
	}
	if !accept {
		var b strings.Builder
		fmt.Fprintf(&b, "%s (sha256 %s) grants the agent more than the defaults:", pol.Source, clip(pol.Hash, 12))
		for _, g := range grants {
			fmt.Fprintf(&b, "\n    %s", g)
		}
		return withHint(errors.New(b.String()), "read it, then run again with --trust-policy to trust this exact content (any edit asks again)")
	}
	if err := trust(stateDir, pol.Hash, pol.Source); err != nil {
		return err
	}
	fmt.Fprintf(e.Stderr, "enclave: trusted %s (sha256 %s)\n", pol.Source, clip(pol.Hash, 12))
	return nil
}

// trustRepoGovernance checks that the user accepted the repository's
// review configuration and Cedar policies (when it has any), recording the
// acceptance by a hash of both files' names and contents.
func (e *Env) trustRepoGovernance(stateDir, top string, accept bool) error {
	h := sha256.New()
	var present []string
	for _, name := range []string{authz.FileName, review.ConfigFile} {
		b, err := os.ReadFile(filepath.Join(top, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		present = append(present, name)
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	if len(present) == 0 {
		return nil
	}
	sum := "governance:" + hex.EncodeToString(h.Sum(nil))
	if ok, err := trusted(stateDir, sum); ok || err != nil {
		return err
	}
	files := strings.Join(present, " and ")
	if !accept {
		return withHint(fmt.Errorf("%s in %s decide who may approve and merge agents' changes (sha256 %s) and have not been trusted as they are", files, top, clip(strings.TrimPrefix(sum, "governance:"), 12)),
			"read them, then run again with --trust-policy to trust this exact content (any edit asks again)")
	}
	if err := trust(stateDir, sum, top); err != nil {
		return err
	}
	fmt.Fprintf(e.Stderr, "enclave: trusted %s in %s (sha256 %s)\n", files, top, clip(strings.TrimPrefix(sum, "governance:"), 12))
	return nil
}

// trusted reports whether the state directory's trusted-policies file
// lists hash (one "HASH SOURCE" line per trusted content).
func trusted(stateDir, hash string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, "trusted-policies"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if h, _, _ := strings.Cut(line, " "); h == hash {
			return true, nil
		}
	}
	return false, nil
}

// trust adds hash, with where its content came from, to trusted-policies.
func trust(stateDir, hash, source string) error {
	f, err := os.OpenFile(filepath.Join(stateDir, "trusted-policies"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "%s %s\n", hash, source)
	return f.Close()
}

func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// warnUnwritable says when a read-write mount will not be writable by the
// agent: as root, the agent is an unprivileged host uid.
func warnUnwritable(path string, rw bool) {
	if !rw || os.Geteuid() != 0 {
		return
	}
	uid, _, err := sandbox.HostIDs()
	if err != nil {
		return
	}
	if fi, err := os.Stat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && fi.Mode().Perm()&0o002 == 0 {
			fmt.Fprintf(os.Stderr, "enclave: warning: --rw %s: the agent runs as host uid %d, which cannot write there; chown it to %d if it should\n", path, uid, uid)
		}
	}
}

// coveredBy reports whether path is already inside a --ro or --rw source.
func coveredBy(path string, lists ...[]string) bool {
	for _, l := range lists {
		for _, v := range l {
			src, _, _ := strings.Cut(v, ":")
			if abs, err := filepath.Abs(expandHome(src)); err == nil && within(realPath(path), realPath(abs)) {
				return true
			}
		}
	}
	return false
}

// checkpointOption maps the --checkpoint-every flag (0 never) to
// session.Options.CheckpointEvery (negative never).
func checkpointOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
