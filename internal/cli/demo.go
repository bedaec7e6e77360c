package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/enclave-dev/enclave/internal/policy"
)

//go:embed demo/agent.sh
var demoAgent []byte

const demoAbout = `Demo shows enclave at work without any AI agent installed. It makes a
scratch git repository, plants a secret outside it and a fake cloud key in
the environment, starts a small docs server on loopback, and runs a scripted
agent (a bash script, printed by -script) that does a small task and also
tries what a prompt-injected agent would: read the secret, read the
environment, send data out through the proxy and through DNS, connect
around the proxy, and write outside its workspace.

Then it prints the session summary, the audit log of the session, the diff,
and what it checked from outside the sandbox.`

func (e *Env) demoCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("demo", "demo [flags]", demoAbout, "    enclave demo\n    enclave demo -clean")
	cleanup := fs.Bool("clean", false, "remove the scratch directory at the end (enclave diff and verify of the session then stop working: its repository borrows the scratch repository's objects)")
	script := fs.Bool("script", false, "print the scripted agent and exit")
	var f runFlags
	fs.Var(&f.degrade, "degrade", "run without protection `layer` (landlock, seccomp, cgroups) if this kernel lacks it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *script {
		_, err := e.Stdout.Write(demoAgent)
		return err
	}
	if fs.NArg() > 0 {
		return usagef("demo takes no arguments")
	}

	scratch, err := os.MkdirTemp("", "enclave-demo-")
	if err != nil {
		return err
	}
	if *cleanup {
		defer os.RemoveAll(scratch)
	}
	// Readable by the sandbox user when enclave runs as root.
	if err := os.Chmod(scratch, 0o755); err != nil {
		return err
	}
	repo := filepath.Join(scratch, "repo")
	secretFile := filepath.Join(scratch, "secrets", "deploy_key")
	outsideFile := filepath.Join(scratch, "outside.txt")
	agentDir := filepath.Join(scratch, "agent")
	secret := "DEMO-SECRET-" + randHex(8)
	envSecret := "DEMO-ENV-SECRET-" + randHex(8)

	if err := makeDemoRepo(ctx, repo); err != nil {
		return fmt.Errorf("demo repository: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(secretFile), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(secretFile, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"+secret+"\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(agentDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(agentDir, "agent.sh"), demoAgent, 0o755); err != nil {
		return err
	}

	docs, err := startDocsServer()
	if err != nil {
		return err
	}
	defer docs.Close()

	w := e.Stdout
	fmt.Fprintf(w, "Enclave demo\n  scratch repository  %s\n  planted secret      %s (outside the workspace)\n  planted env secret  DEMO_CLOUD_KEY in enclave's own environment\n  docs server         %s (allowed by the demo policy)\n\n", repo, secretFile, docs.url)

	sub := *e
	sub.Dir = repo
	sub.Stdin = nil
	sub.Environ = func() []string { return append(e.environ(), "DEMO_CLOUD_KEY="+envSecret) }
	f.ro = listFlag{agentDir + ":/demo"}
	f.tty = onceString{val: "never", set: true}
	argv := []string{"/bin/bash", "/demo/agent.sh", secretFile, outsideFile, docs.url}
	res, err := sub.runSession(ctx, &f, argv, func(p *policy.Profile) {
		p.Network.Allow = append([]policy.HostRule{{Host: "127.0.0.1", Ports: []int{docs.port}}}, p.Network.Allow...)
	})
	if err != nil {
		return err
	}
	id := res.Session.ID

	fmt.Fprintf(w, "\n$ enclave log %s\n", id)
	if err := e.logCmd(ctx, []string{id}); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n$ enclave diff %s\n", id)
	if err := e.diffCmd(ctx, []string{id}); err != nil {
		return err
	}

	fmt.Fprintf(w, "\n$ enclave verify %s\n", id)
	var ee *exitError
	if err := e.verifyCmd(ctx, []string{id}); err != nil && !errors.As(err, &ee) {
		return err
	}

	// The verdict comes from outside the sandbox, never from the agent.
	fmt.Fprintf(w, "\nChecked from outside the sandbox:\n")
	ok := true
	check := func(pass bool, good, bad string) {
		if pass {
			fmt.Fprintf(w, "  ok    %s\n", good)
		} else {
			ok = false
			fmt.Fprintf(w, "  FAIL  %s\n", bad)
		}
	}
	got := docs.received()
	check(!strings.Contains(got, secret) && !strings.Contains(got, envSecret),
		"no secret reached the docs server", "a secret reached the docs server")
	check(docs.count() == 1, "the docs server saw exactly the one allowed request",
		fmt.Sprintf("the docs server saw %d requests, want 1 (the direct connection got through?)", docs.count()))
	_, statErr := os.Lstat(outsideFile)
	check(errors.Is(statErr, os.ErrNotExist), "nothing was written outside the workspace", outsideFile+" exists")
	clean, err := gitClean(ctx, repo)
	check(err == nil && clean, "your checkout is untouched: the change waits on branch "+res.Session.Branch,
		"the user's checkout changed")
	check(res.Session.Blocked >= 3, fmt.Sprintf("%d attempts were blocked and recorded", res.Session.Blocked),
		fmt.Sprintf("only %d attempts were blocked", res.Session.Blocked))
	check(res.Change != nil && len(res.Change.Files) == 2, "the agent's task shows as a 2-file change",
		"the change does not hold the agent's 2 files")
	if !ok {
		return errors.New("demo: containment checks failed")
	}
	fmt.Fprintf(w, "\nNext: enclave sessions; enclave log last; enclave run -- YOUR-AGENT\n")
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func makeDemoRepo(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"README.md": "# greeter\n\nHello wrold: a tiny script that greets you.\n",
		"hello.sh":  "#!/bin/sh\n# hello.sh prints a greeting.\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "."},
		{"-c", "user.name=Enclave Demo", "-c", "user.email=demo@example.com", "commit", "-q", "-m", "Initial commit"},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", args[0], err, out)
		}
	}
	return nil
}

func gitClean(ctx context.Context, dir string) (bool, error) {
	cmd := exec.CommandContext(ctx, "git", "status", "--porcelain")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.Output()
	return len(bytes.TrimSpace(out)) == 0, err
}

// docsServer is the demo's allowed upstream; it remembers what it got.
type docsServer struct {
	srv  *http.Server
	url  string
	port int
	mu   sync.Mutex
	body strings.Builder
	n    int
}

func startDocsServer() (*docsServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &docsServer{port: l.Addr().(*net.TCPAddr).Port}
	d.url = fmt.Sprintf("http://127.0.0.1:%d", d.port)
	d.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		d.mu.Lock()
		d.n++
		fmt.Fprintf(&d.body, "%s %s\n%s\n", r.Method, r.URL, b)
		d.mu.Unlock()
		fmt.Fprintln(w, "Task: fix the typo in README.md and add a greet function to hello.sh.")
	})}
	go d.srv.Serve(l)
	return d, nil
}

func (d *docsServer) received() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.body.String()
}

func (d *docsServer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

func (d *docsServer) Close() error { return d.srv.Close() }
