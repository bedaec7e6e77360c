// Package session runs one agent session end to end: it records the start,
// prepares the workspace copy, starts the egress proxy and the sandbox,
// records every exec and flow, and when the agent exits snapshots the change
// and records the end.
//
// It is the executor seam: today sessions run in a local Linux sandbox; a
// Kubernetes executor would replace the sandbox and proxy wiring here while
// keeping the same record.
//
// # Fail closed
//
// Every event that must be recorded is appended to the audit log and
// acknowledged as durable before the action it describes goes ahead: the
// session does not start if its start cannot be recorded, an exec fails with
// EPERM if it cannot be recorded, and a flow is refused if it cannot be
// recorded. If the audit log fails mid-session the sandbox is killed.
package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/egress"
	"github.com/enclave-dev/enclave/internal/gateway"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/sandbox"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// Inside paths and addresses of every session.
const (
	WorkspaceDir = "/workspace"
	HomeDir      = "/home/agent"
	ProxyAddr    = "127.0.0.1:3128"
	DNSAddr      = "127.0.0.1:53"
	objectsDir   = "/run/enclave/objects"
)

// Listener indexes in the sandbox.Config.
const (
	lnProxy = iota
	lnDNSUDP
	lnDNSTCP
	lnGateway
)

// AuditLog is what a session needs of the audit log: durable appends.
type AuditLog interface {
	Append(ctx context.Context, ev audit.Event) (audit.Entry, error)
}

// Options describe one session.
type Options struct {
	// Argv is the agent command.
	Argv []string
	// Dir is where the user ran enclave: the repository or directory the
	// agent gets a copy of.
	Dir string
	// Repo is workspace.Locate's answer for Dir, if the caller has it
	// (nil: the workspace asks git itself).
	Repo *workspace.Repo
	// User is the human who started the session.
	User string
	// Task and Tier describe the work, for the record and for review; they
	// are kept in the session's summary as "task" and "tier".
	Task, Tier string
	Policy     *policy.Policy
	Profile    *policy.Profile
	// Authz, if set, is the Cedar decision point: the egress proxy and the
	// model gateway put every flow and call enclave.yaml allowed to it as
	// Action::"egress" and Action::"model", and refuse what it denies.
	// nil leaves those decisions to enclave.yaml alone (enclave run always
	// sets it).
	Authz *authz.Engine
	// Environ is the launcher's environment; only what the profile's env
	// allowlist names reaches the agent.
	Environ []string
	// StateDir holds session directories (StateDir/sessions/ID).
	StateDir string
	Store    store.Store
	Audit    AuditLog
	// Mounts are extra mounts from the command line, after the profile's.
	Mounts []sandbox.Mount
	// Env are extra NAME=value entries from the command line.
	Env []string

	Stdin, Stdout, Stderr *os.File
	TTY                   bool
	// Signals, if set, are forwarded to the agent while it runs (the
	// caller subscribes with signal.Notify).
	Signals <-chan os.Signal
	// CheckpointEvery is how often the copy's tree is recorded while the
	// agent works (the sandbox stopped for the moment git reads it), so
	// the gate can see lines the agent wrote and rewrote: 0 means
	// DefaultCheckpointEvery, a negative value never.
	CheckpointEvery time.Duration

	// Gateway says whether the session runs the model gateway; the zero
	// value runs it when a provider is configured.
	Gateway GatewayMode
	// Notify, if set, receives lines the user should read at start (what
	// the model gateway sanctions), after Started.
	Notify func(line string)

	// Started, if set, is called with the session once it is recorded and
	// its workspace is ready, before the agent starts.
	Started func(*store.Session, *workspace.Workspace)
	Logger  *slog.Logger
}

// Blocked is one action the policy refused.
type Blocked struct {
	Kind   string // "egress", "dns", "exec"
	What   string // e.g. "POST exfil.example.com:80/upload"
	Reason string
}

// Result is what a finished session reports.
type Result struct {
	Session  *store.Session
	ExitCode int
	Change   *workspace.Change
	Blocked  []Blocked
	Flows    int
	Status   sandbox.Status
	Duration time.Duration
	// Models are the per-model totals of the model gateway; nil when the
	// session ran without it.
	Models []gateway.ModelUsage
}

// Run runs one session. It returns an error only when the session could
// not run or could not be recorded; the agent's own failure is
// Result.ExitCode.
func Run(ctx context.Context, o Options) (*Result, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(o.Argv) == 0 {
		return nil, errors.New("no agent command given")
	}
	prof := o.Profile
	start := time.Now()

	sess := &store.Session{
		User:         o.User,
		Command:      slices.Clone(o.Argv),
		Dir:          o.Dir,
		PolicySource: o.Policy.Source,
		PolicyHash:   o.Policy.Hash,
		Profile:      prof.Name,
		Started:      start.UTC(),
		State:        store.StateRunning,
	}
	if o.Tier == "" {
		o.Tier = "routine"
	}
	if summary, err := json.Marshal(map[string]string{"task": o.Task, "tier": o.Tier}); err == nil {
		sess.Summary = summary
	}
	for range 5 {
		sess.ID = store.NewSessionID(start)
		err := o.Store.CreateSession(ctx, sess)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("create session: %w", err)
		}
		sess.ID = ""
	}
	if sess.ID == "" {
		return nil, errors.New("create session: could not find a free session id")
	}
	log = log.With("session", sess.ID)
	rec := &recorder{log: o.Audit, session: sess.ID}
	scope := authzScope(o, sess.ID)
	fail := func(err error) (*Result, error) {
		now := time.Now().UTC()
		sess.Ended, sess.State = &now, store.StateFailed
		_ = rec.append(context.WithoutCancel(ctx), "session.end", "", "enclave", map[string]any{
			"error": err.Error(), "state": store.StateFailed,
		})
		_ = o.Store.UpdateSession(context.WithoutCancel(ctx), sess)
		return nil, err
	}

	_, dropped := prof.Env.Filter(o.Environ)
	if err := rec.append(ctx, "session.start", "allow", o.User, map[string]any{
		"user": o.User, "command": o.Argv, "dir": o.Dir, "task": o.Task, "tier": o.Tier,
		"policy":      map[string]any{"source": o.Policy.Source, "sha256": o.Policy.Hash, "profile": prof.Name},
		"env_dropped": dropped, "authz": authzRecord(o, scope),
	}); err != nil {
		return fail(fmt.Errorf("record session start (the session is not run unrecorded): %w", err))
	}

	ws, err := workspace.Prepare(ctx, workspace.PrepareOptions{
		Source:  o.Dir,
		Dir:     filepath.Join(o.StateDir, "sessions", sess.ID),
		Session: sess.ID,
		Hidden:  prof.Filesystem.Hidden,
		Repo:    o.Repo,
		Logger:  log,
	})
	if err != nil {
		return fail(fmt.Errorf("prepare workspace: %w", err))
	}
	sess.Workspace, sess.Branch, sess.BaseCommit = ws.Copy, ws.Branch, ws.Base
	if err := o.Store.UpdateSession(ctx, sess); err != nil {
		return fail(fmt.Errorf("update session: %w", err))
	}
	if err := rec.append(ctx, "workspace", "", "enclave", map[string]any{
		"source": ws.Source, "git": ws.Git, "branch": ws.Branch, "base": ws.Base,
		"user_head": ws.UserHead, "hidden": ws.Hidden, "warnings": ws.Warnings,
	}); err != nil {
		return fail(err)
	}

	gw, err := startGateway(ctx, o, ws.Dir, ws.Copy, sess.ID, rec, scope, log)
	if err != nil {
		return fail(err)
	}
	network := &prof.Network
	if gw != nil {
		// Whatever happens next, the token dies with the session.
		defer gw.sess.End()
		network = gw.network
	}

	cfg, err := sandboxConfig(o, ws, rec, log, gw)
	if err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		uid, gid, err := sandbox.HostIDs()
		if err != nil {
			return fail(err)
		}
		if err := ws.Chown(ctx, uid, gid); err != nil {
			return fail(fmt.Errorf("hand the workspace to the sandbox user: %w", err))
		}
		if gw != nil && len(gw.mounts) > 0 {
			if err := sandbox.ChownTree(filepath.Join(ws.Dir, agentHomeName), uid, gid); err != nil {
				return fail(fmt.Errorf("hand the agent's adapter files to the sandbox user: %w", err))
			}
		}
	}

	proxy, err := newProxy(network, prof.Network.ByteBudget, rec, scope, log)
	if err != nil {
		return fail(fmt.Errorf("start egress proxy: %w", err))
	}
	defer proxy.Close()

	if o.Started != nil {
		o.Started(sess, ws)
	}
	if gw != nil && o.Notify != nil {
		for _, l := range gw.describe {
			o.Notify(l)
		}
	}
	// The disk watch measures its baseline before the agent can write.
	var disk *diskWatch
	if d := prof.Limits.Disk; d > 0 {
		disk = newDiskWatch(ws.Copy, d)
		if w := disk.Warning(); w != "" {
			log.Warn("disk limit", "warning", w)
			if o.Notify != nil {
				o.Notify("warning: " + w)
			}
		}
	}
	sb, err := sandbox.Start(ctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("start sandbox: %w", err))
	}
	rec.kill = func() { _ = sb.Signal(killSignal) }
	stopFwd := make(chan struct{})
	defer close(stopFwd)
	if o.Signals != nil {
		go func() {
			for {
				select {
				case sig := <-o.Signals:
					_ = sb.Signal(sig)
				case <-stopFwd:
					return
				}
			}
		}()
	}
	go proxy.Serve(sb.Listener(lnProxy))
	go proxy.ServeDNS(sb.PacketConn(lnDNSUDP))
	go proxy.ServeDNSTCP(sb.Listener(lnDNSTCP))
	if gw != nil {
		go gw.srv.Serve(sb.Listener(lnGateway))
	}

	status := sb.Status()
	if err := rec.append(ctx, "sandbox", "", "enclave", status); err != nil {
		_ = sb.Signal(killSignal)
		_, _ = sb.Wait()
		return fail(err)
	}

	if every := o.CheckpointEvery; every >= 0 {
		if every == 0 {
			every = DefaultCheckpointEvery
		}
		go checkpoints(ctx, ws, sb.Pid(), every, stopFwd, log, func(commit string, paused time.Duration) {
			_ = rec.append(ctx, "checkpoint", "", "enclave", map[string]any{
				"commit": commit, "paused_ms": paused.Milliseconds(),
			})
		})
	}
	// The disk watch stops as soon as the agent is gone: closing its
	// inotify instance waits for the kernel to retire every watch (an RCU
	// grace period, 5-15 ms here), which then overlaps the snapshot
	// instead of delaying enclave's exit.
	diskStop := make(chan struct{})
	stopDisk := sync.OnceFunc(func() { close(diskStop) })
	defer stopDisk()
	if disk != nil {
		d := disk.max
		initPid := sb.Pid()
		go disk.run(ctx, diskStop, func() []int { return descendants(initPid) }, func(size int64) {
			// Stop the writer first; the record follows.
			_ = sb.Signal(killSignal)
			rec.addBlocked(Blocked{Kind: "limit", What: "workspace disk", Reason: fmt.Sprintf("the workspace grew by %d bytes, over limits.disk %d", size, d)})
			_ = rec.append(context.WithoutCancel(ctx), "limit", "deny", "enclave", map[string]any{
				"limit": "disk", "max": d, "grown": size, "action": "session killed",
			})
		})
	}

	code, waitErr := sb.Wait()
	stopDisk()
	_ = proxy.Close()
	if gw != nil {
		gw.sess.End()
		_ = gw.srv.Close()
	}
	end := time.Now()

	res := &Result{Session: sess, ExitCode: code, Status: status, Duration: end.Sub(start)}
	if gw != nil {
		res.Models = gw.sess.Usage()
	}
	up, down, allowed, denied := proxy.Stats()
	res.Flows = int(allowed + denied)
	res.Blocked = rec.blocked()

	// Snapshot only once every process of the sandbox is gone (Wait
	// guarantees it): from here the copy is untrusted data at rest.
	ectx := context.WithoutCancel(ctx)
	change, snapErr := ws.Snapshot(ectx)
	var final []pending
	if snapErr == nil {
		res.Change = change
		sess.FilesChanged = len(change.Files)
		final = append(final, pending{kind: "diff", actor: "enclave", data: diffData(change)})
	} else {
		log.Error("snapshot", "err", snapErr)
	}

	now := end.UTC()
	sess.Ended, sess.ExitCode = &now, &code
	sess.State = store.StateExited
	if waitErr != nil || snapErr != nil || rec.failed() {
		sess.State = store.StateFailed
	}
	sess.Blocked, sess.BytesUp, sess.BytesDown = len(res.Blocked), up, down
	endData := map[string]any{
		"exit_code": code, "duration_ms": res.Duration.Milliseconds(), "state": sess.State,
		"blocked": len(res.Blocked), "bytes_up": up, "bytes_down": down, "flows": res.Flows,
	}
	if waitErr != nil {
		endData["error"] = waitErr.Error()
	}
	if snapErr != nil {
		endData["snapshot_error"] = snapErr.Error()
	}
	// The change and the end are recorded together: one commit.
	final = append(final, pending{kind: "session.end", actor: "enclave", data: endData})
	if err := rec.appendAll(ectx, final...); err != nil {
		sess.State = store.StateFailed
		_ = o.Store.UpdateSession(ectx, sess)
		return nil, err
	}
	if err := o.Store.UpdateSession(ectx, sess); err != nil {
		return nil, fmt.Errorf("update session: %w", err)
	}
	switch {
	case snapErr != nil:
		return res, fmt.Errorf("snapshot the agent's change: %w", snapErr)
	case waitErr != nil:
		return res, waitErr
	case rec.failed():
		return res, errors.New("the audit log failed during the session; the sandbox was stopped")
	}
	return res, nil
}

func diffData(c *workspace.Change) map[string]any {
	files := make([]map[string]any, 0, len(c.Files))
	for _, f := range c.Files {
		files = append(files, map[string]any{"path": f.Path, "status": f.Status, "added": f.Added, "deleted": f.Deleted})
	}
	return map[string]any{"base": c.Base, "head": c.Head, "files": files}
}

// sandboxConfig maps the profile, workspace and command line onto the
// sandbox.
func sandboxConfig(o Options, ws *workspace.Workspace, rec *recorder, log *slog.Logger, gw *gatewayRun) (*sandbox.Config, error) {
	prof := o.Profile
	mounts := []sandbox.Mount{{Source: ws.Copy, Target: WorkspaceDir, Writable: true}}
	if len(ws.ReadOnlyPaths) > 0 {
		// The copy reaches the user's objects through alternates; the host
		// paths may sit where the sandbox builds its own view (/tmp), so
		// mount them at fixed inside paths and point the copy's alternates
		// there. The copy is still enclave's own at this point: the agent
		// has not run yet.
		var inside []string
		for i, p := range ws.ReadOnlyPaths {
			t := fmt.Sprintf("%s/%d", objectsDir, i)
			mounts = append(mounts, sandbox.Mount{Source: p, Target: t})
			inside = append(inside, t)
		}
		alt := filepath.Join(ws.Copy, ".git", "objects", "info", "alternates")
		if err := writeNoFollow(alt, strings.Join(inside, "\n")+"\n"); err != nil {
			return nil, fmt.Errorf("point the workspace at the shared objects: %w", err)
		}
	}
	for _, p := range prof.Filesystem.ReadOnly {
		mounts = append(mounts, sandbox.Mount{Source: p, Target: p})
	}
	for _, p := range prof.Filesystem.ReadWrite {
		mounts = append(mounts, sandbox.Mount{Source: p, Target: p, Writable: true})
	}
	if gw != nil {
		mounts = append(mounts, gw.mounts...)
	}
	mounts = append(mounts, o.Mounts...)

	dir := WorkspaceDir
	if rel, err := filepath.Rel(ws.Copy, ws.Workdir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		dir = filepath.Join(WorkspaceDir, rel)
	}

	env := prof.Env.Environ(o.Environ)
	proxyURL := "http://" + ProxyAddr
	env = setEnv(env,
		"PATH="+defaultPath(),
		"HOME="+HomeDir, "USER=agent", "LOGNAME=agent", "SHELL=/bin/bash", "TMPDIR=/tmp",
		"HTTP_PROXY="+proxyURL, "HTTPS_PROXY="+proxyURL, "ALL_PROXY="+proxyURL,
		"http_proxy="+proxyURL, "https_proxy="+proxyURL, "all_proxy="+proxyURL,
		"NO_PROXY=", "no_proxy=",
		"ENCLAVE_SESSION="+ws.Session,
	)
	listeners := []sandbox.ListenSpec{
		lnProxy:  {Network: "tcp", Addr: ProxyAddr},
		lnDNSUDP: {Network: "udp", Addr: DNSAddr},
		lnDNSTCP: {Network: "tcp", Addr: DNSAddr},
	}
	if gw != nil {
		// The gateway's variables replace any the profile passed or set:
		// inside, the provider variables point at the gateway and the only
		// key is the session token.
		names := make([]string, 0, len(gw.env))
		for k := range gw.env {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			env = setEnv(env, k+"="+gw.env[k])
		}
		listeners = append(listeners, sandbox.ListenSpec{Network: "tcp", Addr: GatewayAddr})
		// The gateway is on the sandbox's own loopback: clients must not
		// send it through the egress proxy (which would refuse it). It has
		// an address of its own so that NO_PROXY names only it: a policy
		// rule allowing a loopback host (a local test server) still goes
		// through the proxy. The sandbox's loopback holds nothing of the
		// host, so this opens no route out.
		host := strings.Split(GatewayAddr, ":")[0]
		env = setEnv(env, "NO_PROXY="+host, "no_proxy="+host)
	}
	for _, kv := range o.Env {
		name, _, _ := strings.Cut(kv, "=")
		if gw != nil {
			if _, ok := gw.env[name]; ok {
				// The gateway is the only route to a model while it runs; an
				// explicit value would only point the agent at a dead end.
				return nil, fmt.Errorf("--env %s: the model gateway sets it while it runs; drop --env %s, or run with -gateway off", name, name)
			}
		}
		env = setEnv(env, kv)
	}

	l := prof.Limits
	return &sandbox.Config{
		Argv:      o.Argv,
		Dir:       dir,
		Env:       env,
		Mounts:    mounts,
		Home:      HomeDir,
		ExecAllow: prof.Exec.Allow,
		Limits: sandbox.Limits{
			Memory: l.Memory, Processes: l.Processes, CPUTime: l.CPUTime, WallTime: l.WallTime,
			FileSize: l.FileSize, OpenFiles: l.OpenFiles, TmpSize: l.TmpSize,
		},
		Listeners: listeners,
		Stdin:     o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr,
		TTY:     o.TTY,
		Degrade: prof.Degrade,
		OnExec:  rec.exec,
		Logger:  log.With("part", "sandbox"),
	}, nil
}

// defaultPath is the agent's PATH: the usual system directories, plus the
// Go toolchain where the machine has one under /usr/local.
func defaultPath() string {
	p := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if _, err := os.Stat("/usr/local/go/bin"); err == nil {
		p += ":/usr/local/go/bin"
	}
	return p
}

// setEnv sets NAME=value entries in env, replacing earlier ones.
func setEnv(env []string, kvs ...string) []string {
	for _, kv := range kvs {
		name, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		env = append(env, kv)
	}
	return env
}

// writeNoFollow replaces the file at path without following a symlink in
// its last element.
func writeNoFollow(path, content string) error {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|oNoFollow, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// recorder turns sandbox and egress events into audit events, keeping the
// counts the summary needs.
type recorder struct {
	log     AuditLog
	session string
	kill    func()

	mu     sync.Mutex
	block  []Blocked
	nblock int
	broken bool
}

const maxBlockedKept = 100

func (r *recorder) append(ctx context.Context, kind, decision, actor string, data any) error {
	ev, err := r.event(pending{kind: kind, decision: decision, actor: actor, data: data})
	if err != nil {
		return err
	}
	if _, err := r.log.Append(ctx, ev); err != nil {
		return r.broke(fmt.Errorf("record %s event: %w", kind, err))
	}
	return nil
}

// broke marks the log as failed and returns err. An unrecordable action is
// refused by the caller; a log that cannot record at all ends the session.
func (r *recorder) broke(err error) error {
	r.mu.Lock()
	first := !r.broken
	r.broken = true
	kill := r.kill
	r.mu.Unlock()
	if first && kill != nil {
		kill()
	}
	return err
}

// event is the session's audit event for ev.
func (r *recorder) event(ev pending) (audit.Event, error) {
	raw, err := json.Marshal(ev.data)
	if err != nil {
		return audit.Event{}, fmt.Errorf("encode %s event: %w", ev.kind, err)
	}
	return audit.Event{Session: r.session, Kind: ev.kind, Actor: ev.actor, Decision: ev.decision, Data: raw}, nil
}

// pending is an event for append and appendAll.
type pending struct {
	kind, decision, actor string
	data                  any
}

// appendAll records evs in order as append would, in one commit when the
// log can (audit.Log.AppendAll).
func (r *recorder) appendAll(ctx context.Context, evs ...pending) error {
	batch, ok := r.log.(interface {
		AppendAll(context.Context, ...audit.Event) ([]audit.Entry, error)
	})
	if !ok {
		for _, ev := range evs {
			if err := r.append(ctx, ev.kind, ev.decision, ev.actor, ev.data); err != nil {
				return err
			}
		}
		return nil
	}
	aevs := make([]audit.Event, len(evs))
	for i, ev := range evs {
		var err error
		if aevs[i], err = r.event(ev); err != nil {
			return err
		}
	}
	if _, err := batch.AppendAll(ctx, aevs...); err != nil {
		return r.broke(fmt.Errorf("record %s events: %w", evs[0].kind, err))
	}
	return nil
}

func (r *recorder) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken
}

func (r *recorder) blocked() []Blocked {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.block)
}

func (r *recorder) addBlocked(b Blocked) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nblock++
	if len(r.block) < maxBlockedKept {
		r.block = append(r.block, b)
	}
}

func (r *recorder) exec(ev sandbox.ExecEvent) error {
	return r.append(context.Background(), "exec", "allow", "agent", map[string]any{
		"pid": ev.PID, "path": ev.Path, "argv": ev.Argv, "cwd": ev.Cwd, "truncated": ev.Truncated,
	})
}

func decisionWord(d policy.Decision) string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

func (r *recorder) FlowStart(ctx context.Context, f *egress.Flow) error {
	if !f.Decision.Allow {
		what := fmt.Sprintf("%s %s:%d%s", f.Method, f.Host, f.Port, f.Path)
		r.addBlocked(Blocked{Kind: "egress", What: what, Reason: f.Decision.Reason})
	}
	data := map[string]any{
		"flow": f.ID, "host": f.Host, "port": f.Port, "method": f.Method, "path": f.Path,
		"scheme": f.Scheme, "rule": f.Decision.Rule, "reason": f.Decision.Reason, "resolved": f.Resolved,
	}
	if f.Policies != nil {
		// The Cedar policies that decided (enclave.yaml's rule is "rule").
		data["policies"] = f.Policies
	}
	return r.append(ctx, "egress", decisionWord(f.Decision), "agent", data)
}

func (r *recorder) FlowEnd(ctx context.Context, f *egress.Flow) error {
	return r.append(ctx, "egress.end", "", "enclave", map[string]any{
		"flow": f.ID, "host": f.Host, "port": f.Port, "addr": f.Addr,
		"bytes_up": f.BytesUp, "bytes_down": f.BytesDown, "duration_ms": f.Duration.Milliseconds(),
		"error": f.Err, "partial": f.Partial,
	})
}

func (r *recorder) DNSQuery(ctx context.Context, q egress.DNSQuery) error {
	decision := "allow"
	if len(q.Answers) == 0 {
		decision = "deny"
		r.addBlocked(Blocked{Kind: "dns", What: fmt.Sprintf("%s %s", q.Type, q.Name), Reason: q.Reason})
	}
	return r.append(ctx, "dns", decision, "agent", map[string]any{
		"name": q.Name, "type": q.Type, "rcode": q.Rcode, "answers": q.Answers, "reason": q.Reason, "transport": q.Transport,
	})
}
