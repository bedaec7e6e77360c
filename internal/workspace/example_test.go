package workspace_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/enclave-dev/enclave/internal/workspace"
)

func Example() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "enclave-example-")
	defer os.RemoveAll(tmp)
	repo := filepath.Join(tmp, "repo")
	os.Mkdir(repo, 0o755)
	os.WriteFile(filepath.Join(repo, "main.go"), []byte("package main\n"), 0o644)
	os.WriteFile(filepath.Join(repo, ".env"), []byte("API_KEY=secret\n"), 0o644)
	for _, args := range [][]string{{"init", "-q"}, {"add", "main.go"}, {"-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-q", "-m", "init"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Println(err, string(out))
			return
		}
	}

	// Before the sandbox starts: the session copy.
	w, err := workspace.Prepare(ctx, workspace.PrepareOptions{
		Source:  repo,
		Dir:     filepath.Join(tmp, "state", "sessions", "s42"),
		Session: "s42",
		Hidden:  []string{".env"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("branch:", w.Branch, "hidden:", w.Hidden)

	// The agent works in w.Copy (here: the example plays the agent).
	os.WriteFile(filepath.Join(w.Copy, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(w.Copy, "README.md"), []byte("# demo\n"), 0o644)

	// After the sandbox is gone: what changed.
	c, err := w.Snapshot(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range c.Files {
		fmt.Printf("%s %s +%d -%d\n", f.Status, f.Path, f.Added, f.Deleted)
	}
	// Output:
	// branch: enclave/s42 hidden: [.env]
	// added README.md +1 -0
	// modified main.go +2 -0
}
