package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/enclave-dev/enclave/internal/egress"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

// SandboxRunner is the [Runner] backed by internal/sandbox: each Run is a
// fresh sandbox with only loopback (no listeners, so no route out, unless
// the spec names registries: then only the runner's own egress proxy
// listens, allowing exactly those hosts and recording every flow), the
// tree mounted writable at /work and owned by the sandbox's unprivileged
// host uid, nothing of the host environment, and limits on wall time and
// memory. The binary must call sandbox.MaybeRunInternal first in main
// (and in TestMain).
type SandboxRunner struct {
	// GOMODCACHE is the host module cache mounted read-only at
	// /gomodcache for Go runs; "" asks `go env GOMODCACHE`. A missing
	// cache is not an error: Go runs then fail to resolve modules, which
	// the checks report as "could not run".
	GOMODCACHE string
	// Degrade is passed to sandbox.Config.Degrade.
	Degrade []string
	Logger  *slog.Logger
	// Resolver and Dial are passed to the egress proxy of runs with a
	// network allowlist; nil means the host's resolver and dialer. Tests
	// point them at a loopback registry.
	Resolver egress.Resolver
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error)
}

// The test run's proxy and DNS answer inside the sandbox at the addresses
// an enclave session uses.
const (
	testProxyAddr = "127.0.0.1:3128"
	testDNSAddr   = "127.0.0.1:53"
	// testByteBudget caps what a test run may move through the proxy.
	testByteBudget = 2 << 30
)

// flowLog is the egress.Recorder of a test run: it keeps every flow for
// the report (which is hashed into the audit log), entered when the proxy
// decides and completed when the flow ends, so a flow cut short by the end
// of the run is still listed.
type flowLog struct {
	mu      sync.Mutex
	flows   []Flow
	byID    map[string]int
	omitted int
}

func (l *flowLog) FlowStart(ctx context.Context, f *egress.Flow) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.flows) >= maxFlows {
		l.omitted++
		return nil
	}
	if l.byID == nil {
		l.byID = map[string]int{}
	}
	l.byID[f.ID] = len(l.flows)
	l.flows = append(l.flows, Flow{Host: f.Host, Port: f.Port, Method: f.Method, Path: clip(f.Path, 200),
		Allowed: f.Decision.Allow, Reason: f.Decision.Reason})
	return nil
}

func (l *flowLog) FlowEnd(ctx context.Context, f *egress.Flow) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.byID[f.ID]
	if !ok {
		return nil
	}
	fl := &l.flows[i]
	fl.Allowed, fl.Reason = f.Decision.Allow, f.Decision.Reason
	fl.BytesUp, fl.BytesDn, fl.Error, fl.Duration = f.BytesUp, f.BytesDown, f.Err, ms(f.Duration)
	return nil
}

func (l *flowLog) DNSQuery(ctx context.Context, q egress.DNSQuery) error { return nil }

// maxFlows bounds the flows a report lists.
const maxFlows = 1000

var _ Runner = (*SandboxRunner)(nil)

// Run runs spec in a new sandbox.
func (r *SandboxRunner) Run(ctx context.Context, spec RunSpec) (RunResult, error) {
	if len(spec.Argv) == 0 || spec.Dir == "" {
		return RunResult{}, errors.New("sandbox run: empty command or directory")
	}
	uid, gid, err := sandbox.HostIDs()
	if err != nil {
		return RunResult{}, fmt.Errorf("sandbox run: %w", err)
	}
	if err := sandbox.ChownTree(spec.Dir, uid, gid); err != nil {
		return RunResult{}, fmt.Errorf("sandbox run: %w", err)
	}
	env := []string{
		"PATH=/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin",
		"HOME=/home/agent", "TMPDIR=/tmp", "LANG=C.UTF-8", "CI=1",
	}
	mounts := []sandbox.Mount{{Source: spec.Dir, Target: "/work", Writable: true}}
	gocache := "/tmp/gocache"
	if spec.Go && spec.GoCache != "" {
		if err := sandbox.ChownTree(spec.GoCache, uid, gid); err != nil {
			return RunResult{}, fmt.Errorf("sandbox run: %w", err)
		}
		mounts = append(mounts, sandbox.Mount{Source: spec.GoCache, Target: "/gocache", Writable: true})
		gocache = "/gocache"
	}
	if spec.Go {
		goroot := goEnv("GOROOT")
		if goroot != "" {
			env[0] = "PATH=" + goroot + "/bin:/usr/local/bin:/usr/bin:/bin"
			if !underSystem(goroot) {
				mounts = append(mounts, sandbox.Mount{Source: goroot, Target: "/goroot"})
				env[0] = "PATH=/goroot/bin:/usr/local/bin:/usr/bin:/bin"
				env = append(env, "GOROOT=/goroot")
			}
		}
		env = append(env, "GOCACHE="+gocache, "GOPATH=/tmp/gopath", "GOFLAGS=-mod=readonly",
			"GOPROXY=off", "GOTOOLCHAIN=local", "GOTELEMETRY=off", "GOENV=off", "GOWORK=off")
		mc := r.GOMODCACHE
		if mc == "" {
			mc = goEnv("GOMODCACHE")
		}
		if fi, err := os.Stat(mc); err == nil && fi.IsDir() && mc != "" {
			mounts = append(mounts, sandbox.Mount{Source: mc, Target: "/gomodcache"})
			env = append(env, "GOMODCACHE=/gomodcache")
		} else {
			env = append(env, "GOMODCACHE=/tmp/gomodcache")
		}
	}
	if spec.Tool != "" {
		mounts = append(mounts, sandbox.Mount{Source: filepath.Dir(spec.Tool), Target: "/enclave-tools"})
		env[0] = strings.Replace(env[0], "PATH=", "PATH=/enclave-tools:", 1)
	}
	var flows *flowLog
	var proxy *egress.Proxy
	var listeners []sandbox.ListenSpec
	if len(spec.Network) > 0 {
		flows = &flowLog{}
		proxy, err = egress.New(egress.Config{
			Network:  &policy.Network{Allow: spec.Network, ByteBudget: testByteBudget, DNS: true},
			Recorder: flows, Resolver: r.Resolver, Dial: r.Dial, Logger: r.Logger,
		})
		if err != nil {
			return RunResult{}, fmt.Errorf("sandbox run: test network proxy: %w", err)
		}
		defer proxy.Close()
		listeners = []sandbox.ListenSpec{{Network: "tcp", Addr: testProxyAddr}, {Network: "udp", Addr: testDNSAddr}, {Network: "tcp", Addr: testDNSAddr}}
		u := "http://" + testProxyAddr
		env = append(env, "HTTP_PROXY="+u, "HTTPS_PROXY="+u, "ALL_PROXY="+u, "http_proxy="+u, "https_proxy="+u, "all_proxy="+u, "NO_PROXY=", "no_proxy=")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return RunResult{}, err
	}
	defer pr.Close()
	out := &tailBuffer{max: OutputTail}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(out, pr)
	}()
	cfg := &sandbox.Config{
		Argv:    spec.Argv,
		Dir:     "/work",
		Env:     env,
		Mounts:  mounts,
		Degrade: r.Degrade,
		Limits: sandbox.Limits{
			Memory:    spec.Memory,
			WallTime:  spec.Timeout,
			Processes: 1024,
			OpenFiles: 4096,
		},
		Listeners: listeners,
		Stdout:    pw,
		Stderr:    pw,
		Logger:    r.Logger,
	}
	start := time.Now()
	sb, err := sandbox.Start(ctx, cfg)
	pw.Close()
	if err != nil {
		wg.Wait()
		return RunResult{}, fmt.Errorf("start sandbox: %w", err)
	}
	if proxy != nil {
		go proxy.Serve(sb.Listener(0))
		go proxy.ServeDNS(sb.PacketConn(1))
		go proxy.ServeDNSTCP(sb.Listener(2))
	}
	code, werr := sb.Wait()
	wg.Wait()
	res := RunResult{ExitCode: code, Duration: time.Since(start), Output: out.Bytes()}
	if proxy != nil {
		proxy.Close() // ends the flows still open, so they are recorded
		flows.mu.Lock()
		res.Flows, res.FlowsOmitted = slices.Clone(flows.flows), flows.omitted
		flows.mu.Unlock()
	}
	if errors.Is(werr, sandbox.ErrWallTime) {
		res.TimedOut = true
		return res, nil
	}
	if werr != nil {
		return res, fmt.Errorf("sandbox: %w", werr)
	}
	return res, nil
}

func underSystem(p string) bool {
	for _, d := range []string{"/usr/", "/opt/"} {
		if strings.HasPrefix(filepath.Clean(p)+"/", d) {
			return true
		}
	}
	return false
}

var goEnvCache sync.Map

func goEnv(k string) string {
	if v, ok := goEnvCache.Load(k); ok {
		return v.(string)
	}
	out, err := exec.Command("go", "env", k).Output()
	v := ""
	if err == nil {
		v = strings.TrimSpace(string(out))
	}
	goEnvCache.Store(k, v)
	return v
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > t.max {
		return append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return append([]byte(nil), t.buf...)
}
