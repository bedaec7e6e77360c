package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/enclave-dev/enclave/internal/cli"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

// update rewrites the golden sections of testdata/*.txt from the current
// output: go test ./cmd/enclave -run TestScript -update (then review the diff).
var update = flag.Bool("update", false, "rewrite the golden files in testdata/*.txt")

// TestMain makes this test binary the enclave command for the scripts: the
// sandbox re-executes /proc/self/exe with a hidden stage argument, which
// must be handled before testscript looks at os.Args[0], and testscript
// runs copies of the binary named "enclave" as the CLI.
func TestMain(m *testing.M) {
	if sandbox.MaybeRunInternal() {
		return
	}
	testscript.Main(m, map[string]func(){
		"enclave": func() { os.Exit(cli.Main(context.Background(), os.Args[1:])) },
	})
}

// TestScript runs the CLI end to end from testdata/*.txt. Every script gets
// its own state directory outside $WORK (the agent's workspace is a copy of
// the current directory, which must not hold enclave's state).
//
// Conditions: [linux] as usual; [sandbox] when this machine has every layer
// the built-in defaults need (else scripts that run agents skip); [root].
// Commands: "exitcode N CMD ARGS..." runs CMD and checks its exit status is
// exactly N, since "! exec" only checks that it failed.
func TestScript(t *testing.T) {
	sandboxOK := runtime.GOOS == "linux" && sandbox.Probe().OK()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			state, err := os.MkdirTemp("", "enclave-state-")
			if err != nil {
				return err
			}
			env.Defer(func() { os.RemoveAll(state) })
			env.Setenv("ENCLAVE_STATE_DIR", state)
			// Keep testscript's $WORK/.tmp out of the directories the
			// scripts run agents in: they work in $WORK/repo.
			repo := filepath.Join(env.WorkDir, "repo")
			return os.MkdirAll(repo, 0o755)
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "sandbox":
				return sandboxOK, nil
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, errors.New("unknown condition " + cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": cmdExitCode,
		},
	})
}

func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! exitcode")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: exitcode N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %q is not a number", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}
