//go:build linux

package escape

// The host side: a fixture per test (fake HOME full of canary secrets, a
// source repository with planted links, a directory outside the workspace,
// a fresh state directory), a way to run "enclave run" with the probe
// mounted, host listeners that count what reaches them, and the checks
// that judge each attack by evidence outside the sandbox.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/cli"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

const cliEnv = "ENCLAVE_ESCAPE_CLI"

func TestMain(m *testing.M) {
	// The sandbox stages re-execute this binary; they must run first.
	sandbox.MaybeRunInternal()
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case probeArg:
			os.Exit(runProbe(os.Args[2:]))
		case holdArg:
			// A host process holding canaries in argv and environ.
			time.Sleep(time.Hour)
			os.Exit(0)
		}
	}
	if os.Getenv(cliEnv) == "1" {
		// This binary is enclave too, so the suite runs where no Go
		// toolchain or module cache is available (an unprivileged CI user).
		os.Exit(cli.Main(context.Background(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

const holdArg = "__hold"

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// fixture is one test's world on the host.
type fixture struct {
	t       *testing.T
	root    string
	home    string // fake HOME of the enclave process
	proj    string // parent of repo, holds a .env outside the workspace
	repo    string // the user's checkout enclave runs in
	outside string // a host directory outside the workspace
	state   string // ENCLAVE_STATE_DIR
	bin     string // this test binary: enclave and the probe

	canaries map[string]string // what -> secret value planted on the host
	env      []string          // the launcher's environment
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed; enclave's workspace needs it")
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	f := &fixture{
		t: t, root: root, bin: bin,
		home:     filepath.Join(root, "home"),
		proj:     filepath.Join(root, "proj"),
		outside:  filepath.Join(root, "outside"),
		state:    filepath.Join(root, "state"),
		canaries: map[string]string{},
	}
	f.repo = filepath.Join(f.proj, "repo")
	canary := func(what string) string {
		v := "CANARY-" + what + "-" + randHex(8)
		f.canaries[what] = v
		return v
	}
	files := map[string]string{
		"home/.ssh/id_rsa":                    "-----BEGIN OPENSSH PRIVATE KEY-----\n" + canary("ssh-key") + "\n-----END OPENSSH PRIVATE KEY-----\n",
		"home/.ssh/config":                    "Host *\n  IdentityFile ~/.ssh/id_rsa\n",
		"home/.ssh/authorized_keys":           "ssh-ed25519 AAAA original\n",
		"home/.aws/credentials":               "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = " + canary("aws") + "\n",
		"home/.git-credentials":               "https://user:" + canary("git-credentials") + "@git.example.com\n",
		"home/.netrc":                         "machine registry.example.com login u password " + canary("netrc") + "\n",
		"home/.config/gh/hosts.yml":           "git.example.com:\n  oauth_token: " + canary("gh") + "\n",
		"home/.bashrc":                        "# original bashrc\n",
		"home/.profile":                       "# original profile\n",
		"home/.bash_profile":                  "# original bash_profile\n",
		"home/.zshrc":                         "# original zshrc\n",
		"home/.gitconfig":                     "[user]\n\tname = Original\n",
		"proj/.env":                           "API_KEY=" + canary("dotenv-outside") + "\n",
		"outside/target.txt":                  "original " + canary("outside") + "\n",
		"outside/hard-target.txt":             "hard original\n",
		"outside/sub/deep.txt":                "deep original\n",
		"repo/README.md":                      "# demo repo\n",
		"repo/main.go":                        "package main\n\nfunc main() {}\n",
		"repo/.gitignore":                     ".env\n",
		"repo/.env":                           "API_KEY=" + canary("dotenv-ignored") + "\n",
		"repo/enclave-policy-note.txt":        "the user's own file\n",
		"home/.local/share/keyrings/kr.txt":   "keyring " + canary("keyring-file") + "\n",
		"home/.config/enclave/providers.conf": "key " + canary("provider-key") + "\n",
	}
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(strings.Replace(name, "repo/", "proj/repo/", 1)))
		mustWrite(t, p, content)
	}
	os.Chmod(filepath.Join(f.home, ".ssh/id_rsa"), 0o600)
	// Planted links: absolute and relative symlinks out of the repo, a
	// directory link, and a hard link sharing an inode with a host file.
	for name, target := range map[string]string{
		"link-abs":  filepath.Join(f.outside, "target.txt"),
		"link-rel":  "../../outside/target.txt",
		"linkdir":   f.outside,
		"link-ssh":  filepath.Join(f.home, ".ssh/id_rsa"),
		"link-home": f.home,
	} {
		if err := os.Symlink(target, filepath.Join(f.repo, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(f.outside, "hard-target.txt"), filepath.Join(f.repo, "hard.txt")); err != nil {
		t.Fatal(err)
	}
	f.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + f.home,
		"ENCLAVE_STATE_DIR=" + f.state,
		cliEnv + "=1",
		"LANG=C.UTF-8",
		"ANTHROPIC_API_KEY=" + canary("env-anthropic"),
		"OPENAI_API_KEY=" + canary("env-openai"),
		"AWS_SECRET_ACCESS_KEY=" + canary("env-aws"),
		"GITHUB_TOKEN=" + canary("env-github"),
		"DATABASE_URL=postgres://app:" + canary("env-dburl") + "@db.example.com/app",
		"BUILD_NOTE=" + canary("env-innocent-name"),
	}
	f.git("init", "-q", "-b", "main")
	f.git("add", "-A")
	f.git("commit", "-q", "-m", "initial")
	// Untracked (not ignored) files are part of the copy too: a hard link
	// and a symlink to host files that git has never seen.
	mustWrite(t, filepath.Join(f.outside, "hard-untracked-target.txt"), "untracked hard original\n")
	if err := os.Link(filepath.Join(f.outside, "hard-untracked-target.txt"), filepath.Join(f.repo, "hard-untracked.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(f.outside, "target.txt"), filepath.Join(f.repo, "link-untracked")); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustWrite(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) git(args ...string) {
	f.t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = f.repo
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.root, "GIT_CONFIG_NOSYSTEM=1"}
	if out, err := cmd.CombinedOutput(); err != nil {
		f.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// result is one finished enclave run.
type result struct {
	code     int
	stdout   string
	stderr   string
	id       string // session id
	work     string // host path of the session's workspace copy
	took     time.Duration
	timedOut bool
}

type runOpts struct {
	flags   []string      // enclave run flags before "--"
	policy  string        // policy file content; written and passed with --policy
	stdin   *os.File      // nil: /dev/null
	extra   []*os.File    // ExtraFiles of the enclave process (fd 3 on)
	timeout time.Duration // default 60s
	env     []string      // added to the launcher environment
	started func(*exec.Cmd)
}

var sessionRE = regexp.MustCompile(`session (s-[0-9a-z-]+) started`)

// run runs "enclave run" with the probe mounted at /probe/probe and the
// probe arguments as the agent command.
func (f *fixture) run(o runOpts, probe ...string) *result {
	f.t.Helper()
	args := []string{"run", "--tty", "never", "--ro", f.bin + ":/probe/probe"}
	if o.policy != "" {
		p := filepath.Join(f.root, "policy-"+randHex(4)+".yaml")
		mustWrite(f.t, p, o.policy)
		args = append(args, "--policy", p)
	}
	args = append(args, o.flags...)
	args = append(args, "--", "/probe/probe", probeArg)
	args = append(args, probe...)
	timeout := o.timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Dir = f.repo
	cmd.Env = append(append([]string{}, f.env...), o.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if o.stdin != nil {
		cmd.Stdin = o.stdin
	}
	cmd.ExtraFiles = o.extra
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Start()
	if err != nil {
		f.t.Fatalf("start enclave: %v", err)
	}
	if o.started != nil {
		o.started(cmd)
	}
	err = cmd.Wait()
	r := &result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start), timedOut: ctx.Err() != nil}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		f.t.Fatalf("enclave run: %v\n%s", err, r.stderr)
	}
	if m := sessionRE.FindStringSubmatch(r.stderr); m != nil {
		r.id = m[1]
		r.work = filepath.Join(f.state, "sessions", r.id, "work")
	}
	f.t.Logf("enclave run %s: exit %d in %s\n--- probe stdout (not evidence) ---\n%s--- stderr ---\n%s", strings.Join(probe, " "), r.code, r.took.Round(time.Millisecond), clipLog(r.stdout), clipLog(r.stderr))
	if r.timedOut {
		f.t.Fatalf("enclave run did not end within %s", timeout)
	}
	if r.id == "" {
		f.t.Fatalf("enclave run printed no session id; it did not run the probe")
	}
	return r
}

func clipLog(s string) string {
	if len(s) > 6000 {
		return s[:3000] + "\n[...]\n" + s[len(s)-3000:]
	}
	return s
}

// cli runs an enclave command on the host with the fixture's environment.
func (f *fixture) cli(args ...string) (string, error) {
	f.t.Helper()
	cmd := exec.Command(f.bin, args...)
	cmd.Dir = f.repo
	cmd.Env = f.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("enclave %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// event is one audit record as "enclave log --json" prints it.
type event struct {
	Seq      int64           `json:"seq"`
	Kind     string          `json:"kind"`
	Decision string          `json:"decision"`
	Data     json.RawMessage `json:"data"`
}

func (f *fixture) events(id string) []event {
	f.t.Helper()
	out, err := f.cli("log", "--json", id)
	if err != nil {
		f.t.Fatal(err)
	}
	var evs []event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var e event
		if err := dec.Decode(&e); err != nil {
			f.t.Fatalf("enclave log --json: %v", err)
		}
		evs = append(evs, e)
	}
	if len(evs) == 0 {
		f.t.Fatalf("enclave log --json %s printed no events", id)
	}
	return evs
}

// execArgv lists the argv of every exec event of a session.
func (f *fixture) execArgv(id string) [][]string {
	var out [][]string
	for _, e := range f.events(id) {
		if e.Kind != "exec" {
			continue
		}
		var d struct {
			Argv []string `json:"argv"`
		}
		json.Unmarshal(e.Data, &d)
		out = append(out, d.Argv)
	}
	return out
}

func (f *fixture) auditVerify() {
	f.t.Helper()
	if out, err := f.cli("audit", "verify"); err != nil {
		f.t.Fatalf("the audit log no longer verifies: %v\n%s", err, out)
	}
}

// leaks returns every canary found in the session's outputs: the
// workspace copy on the host (files and symlink targets), enclave diff,
// and the audit log.
func (f *fixture) leaks(r *result, extra map[string]string) []string {
	f.t.Helper()
	want := map[string]string{}
	for k, v := range f.canaries {
		want[k] = v
	}
	for k, v := range extra {
		want[k] = v
	}
	var found []string
	check := func(where string, b []byte) {
		for what, v := range want {
			if bytes.Contains(b, []byte(v)) {
				found = append(found, fmt.Sprintf("%s secret in %s", what, where))
			}
		}
	}
	filepath.WalkDir(r.work, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			check(p+" (link target)", []byte(t))
		case d.Type().IsRegular():
			if b, err := os.ReadFile(p); err == nil {
				check(p, b)
			}
		}
		return nil
	})
	if out, err := f.cli("diff", r.id); err == nil {
		check("enclave diff", []byte(out))
	} else {
		f.t.Logf("enclave diff: %v", err)
	}
	if out, err := f.cli("log", "--json", r.id); err == nil {
		check("the audit log", []byte(out))
	}
	sort.Strings(found)
	return found
}

// requireNoLeak fails the test if any planted secret left the host side.
func (f *fixture) requireNoLeak(r *result) {
	f.t.Helper()
	if l := f.leaks(r, nil); len(l) > 0 {
		f.t.Errorf("ESCAPE: secrets reached the sandbox's outputs:\n  %s", strings.Join(l, "\n  "))
	}
}

// requireMarkers fails if the probe left any ESCAPED-* marker, which it
// writes only after an attack succeeded and where nothing else shows it.
func (f *fixture) requireNoMarkers(r *result) {
	f.t.Helper()
	m, _ := filepath.Glob(filepath.Join(r.work, "ESCAPED-*"))
	for _, p := range m {
		f.t.Errorf("ESCAPE: %s succeeded inside the sandbox", strings.TrimPrefix(filepath.Base(p), "ESCAPED-"))
	}
}

// tree is a snapshot of a host directory: path -> mode, size, content hash,
// link target.
type tree map[string]string

func snapshot(t *testing.T, dir string) tree {
	t.Helper()
	s := tree{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			s[p] = "error " + err.Error()
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		v := fmt.Sprintf("%v", fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			v += fmt.Sprintf(" uid %d gid %d", st.Uid, st.Gid)
		}
		s[p] = v
		return nil
	})
	return s
}

// requireSame fails with the differences between two snapshots.
func requireSame(t *testing.T, what string, before, after tree) {
	t.Helper()
	var diff []string
	for p, v := range after {
		if b, ok := before[p]; !ok {
			diff = append(diff, "new: "+p)
		} else if b != v {
			diff = append(diff, "changed: "+p+" ("+b+" => "+v+")")
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			diff = append(diff, "gone: "+p)
		}
	}
	sort.Strings(diff)
	if len(diff) > 0 {
		t.Errorf("ESCAPE: the sandbox changed %s on the host:\n  %s", what, strings.Join(diff, "\n  "))
	}
}

// counter counts what reaches a host listener.
type counter struct {
	name  string
	addr  string
	n     atomic.Int64
	bytes atomic.Int64
}

func (c *counter) requireZero(t *testing.T) {
	t.Helper()
	// Connections still in flight when the session ended get a moment.
	time.Sleep(50 * time.Millisecond)
	if n := c.n.Load(); n != 0 {
		t.Errorf("ESCAPE: the host %s at %s saw %d connections/packets (%d bytes) from the sandbox", c.name, c.addr, n, c.bytes.Load())
	}
}

func listenStream(t *testing.T, network, addr, name string) *counter {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("host listener %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	c := &counter{name: name, addr: ln.Addr().String()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.n.Add(1)
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 4096)
				for {
					n, err := conn.Read(buf)
					c.bytes.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return c
}

func listenPacket(t *testing.T, network, addr, name string) *counter {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("host listener %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	c := &counter{name: name, addr: pc.LocalAddr().String()}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.n.Add(1)
			c.bytes.Add(int64(n))
		}
	}()
	return c
}

// listenHTTP is a host web server that counts requests (and connections).
func listenHTTP(t *testing.T, name string) (*counter, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{name: name, addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			c.bytes.Add(n)
			fmt.Fprintln(w, "host server reached")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				c.n.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c, ln.Addr().(*net.TCPAddr).Port
}

// hold starts a host process with a canary in its argv and environ and
// its working directory in dir; it is killed at cleanup.
func (f *fixture) hold(dir string) (*exec.Cmd, string) {
	f.t.Helper()
	secret := "CANARY-hostproc-" + randHex(8)
	f.canaries["hostproc"] = secret
	cmd := exec.Command(f.bin, holdArg, secret)
	cmd.Env = []string{"HOLD_SECRET=" + secret}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The canary must really be readable on the host, or the checks
	// that it never reaches the sandbox's outputs prove nothing.
	for range 50 {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid)); bytes.Contains(b, []byte(secret)) {
			return cmd, fmt.Sprint(cmd.Process.Pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("the host process %d does not show its canary in /proc", cmd.Process.Pid)
	return nil, ""
}

// alive reports whether pid runs and is neither stopped nor traced.
func procState(pid int) (state string, tracer string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "State:"); ok {
			state = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			tracer = strings.TrimSpace(v)
		}
	}
	return state, tracer, nil
}

// leftovers lists host processes whose argv holds token.
func leftovers(token string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(token)) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

var runAsRoot = os.Geteuid() == 0

// serial runs heavy tests one at a time even under -parallel.
var serial sync.Mutex

// knownBug marks a probe that found a real weakness, reported to the
// package's owner: the suite stays green while it is open, and the skip
// message says exactly what is wrong. Remove the call once it is fixed.
func knownBug(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Skipf("BUG: "+format, args...)
}
