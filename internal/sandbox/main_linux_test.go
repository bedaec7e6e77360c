//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if MaybeRunInternal() {
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "__sandbox-testprobe" {
		os.Exit(runTestProbe(os.Args[2:]))
	}
	if len(os.Args) > 3 && os.Args[1] == "__sandbox-testrun" {
		// bench/sandbox.sh: one `enclave run`-like start of os.Args[3:]
		// with the workspace os.Args[2] at /work.
		os.Exit(testRun(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// env is one sandbox under test: a host workspace mounted at /work.
type env struct {
	t    *testing.T
	ws   string // host path of the workspace
	cfg  Config
	out  *bytes.Buffer
	logs *syncBuffer
	// closeOut ends output capture; e.out is complete after it.
	closeOut func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// requireSandbox skips when this host cannot create the namespaces.
func requireSandbox(t *testing.T) {
	t.Helper()
	if l := probeUserNS(); !l.OK {
		t.Skipf("no user namespaces on this host: %s", l.Detail)
	}
}

// hostDir makes a temporary directory the sandbox's host uid can use: as
// root the agent is an unprivileged uid, so the tree is chowned to it and
// its parents must be traversable.
func hostDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sbtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if os.Geteuid() == 0 {
		uid, gid, err := HostIDs()
		if err != nil {
			t.Fatal(err)
		}
		if err := ChownTree(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func newEnv(t *testing.T, script string) *env {
	t.Helper()
	requireSandbox(t)
	e := &env{t: t, ws: hostDir(t), out: &bytes.Buffer{}, logs: &syncBuffer{}}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = Config{
		Argv:   []string{"/bin/sh", "-c", script},
		Dir:    "/work",
		Env:    []string{"PATH=/usr/bin:/bin", "HOME=/home/agent"},
		Mounts: []Mount{{Source: e.ws, Target: "/work", Writable: true}, {Source: exe, Target: "/probe/sandbox.test"}},
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Limits: Limits{WallTime: 60 * time.Second},
	}
	return e
}

// run starts the sandbox with stdout/stderr captured and waits.
func (e *env) run() (int, error) {
	e.t.Helper()
	s, err := e.start()
	if err != nil {
		return -1, err
	}
	code, err := s.Wait()
	e.closeOut()
	return code, err
}

func (e *env) start() (*Sandbox, error) {
	e.t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	e.cfg.Stdout, e.cfg.Stderr = w, w
	s, err := Start(context.Background(), &e.cfg)
	if !e.cfg.TTY {
		w.Close() // the sandbox holds its own copy; with a pty the relay writes w
	}
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { e.out.ReadFrom(r); r.Close(); close(done) }()
	var once sync.Once
	e.closeOut = func() {
		once.Do(func() {
			w.Close()
			<-done
		})
	}
	e.t.Cleanup(func() {
		s.Signal(os.Kill)
		s.Wait()
		e.closeOut()
		if e.t.Failed() {
			e.t.Logf("agent output:\n%s\nsandbox log:\n%s", e.out, e.logs)
		}
	})
	return s, nil
}

func (e *env) mustRun(want int) {
	e.t.Helper()
	code, err := e.run()
	if err != nil {
		e.t.Fatalf("sandbox: %v\nlog:\n%s", err, e.logs)
	}
	if code != want {
		e.t.Fatalf("exit code = %d, want %d\noutput: %s\nlog:\n%s", code, want, e.out, e.logs)
	}
}

func (e *env) read(name string) string {
	b, err := os.ReadFile(filepath.Join(e.ws, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func testRun(ws string, argv []string) int {
	s, err := Start(context.Background(), &Config{
		Argv:   argv,
		Env:    []string{"PATH=/usr/bin:/bin", "HOME=/home/agent"},
		Mounts: []Mount{{Source: ws, Target: "/work", Writable: true}},
		Dir:    "/work",
		Stdin:  os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		// bench/sandbox.sh: enclave-init, as a fresh enclave run uses it.
		Exe: os.Getenv("ENCLAVE_BENCH_EXE"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 125
	}
	code, err := s.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// runTestProbe is the in-sandbox half of tests that need raw system calls.
func runTestProbe(args []string) int {
	if len(args) == 0 {
		return 2
	}
	if err := testProbes[args[0]](args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		if errors.Is(err, errProbeEscaped) {
			return 0
		}
		return 1
	}
	return 0
}

var errProbeEscaped = errors.New("escaped")

func TestBasicRun(t *testing.T) {
	e := newEnv(t, `echo hello > /work/out; id -u > /work/uid; cat /etc/hostname > /work/hostname; exit 7`)
	e.mustRun(7)
	if got := e.read("out"); got != "hello\n" {
		t.Errorf("workspace file = %q, want %q", got, "hello\n")
	}
	if got := strings.TrimSpace(e.read("uid")); got != "1000" {
		t.Errorf("uid inside = %q, want 1000", got)
	}
	uid, _, _ := HostIDs()
	fi, err := os.Stat(filepath.Join(e.ws, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if got := int(fi.Sys().(*syscallStat).Uid); got != uid {
		t.Errorf("host owner of a file the agent wrote = %d, want %d", got, uid)
	}
}
