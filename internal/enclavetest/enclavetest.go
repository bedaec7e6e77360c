// Package enclavetest holds helpers shared by Enclave's end-to-end test
// suites: locating the checkout and the real-agent harness beside it
// (../shared/realclients), and installing the running test binary as the
// enclave command. Only tests import it.
package enclavetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclave-dev/enclave/internal/cli"
	"github.com/enclave-dev/enclave/internal/sandbox"
)

// Main is the TestMain of a suite whose test binary is also enclave: the
// sandbox re-executes /proc/self/exe for its init, which runs first; a copy
// named "enclave" (see InstallSelf) runs the CLI, so the tests drive the
// code a user runs without a Go toolchain at test time; anything else runs
// the tests.
func Main(m *testing.M) {
	if sandbox.MaybeRunInternal() {
		return
	}
	if filepath.Base(os.Args[0]) == "enclave" {
		os.Exit(cli.Main(context.Background(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// RepoRoot finds the enclosing checkout of this module from the working
// directory (go test runs in the package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/enclave-dev/enclave\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/enclave-dev/enclave above the working directory")
		}
		dir = parent
	}
}

// RealClients returns the real-agent harness directory: $ENCLAVE_REALCLIENTS,
// else ../shared/realclients beside the checkout. It skips the test in
// -short mode, when the harness or one of the tools it (and the caller)
// needs is missing, or when this machine lacks a sandbox layer.
func RealClients(t *testing.T, tools ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("real agent CLIs take seconds each; skipped in -short")
	}
	harness := os.Getenv("ENCLAVE_REALCLIENTS")
	if harness == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Skipf("cannot find the repository root to locate ../shared/realclients: %v", err)
		}
		harness = filepath.Join(root, "..", "shared", "realclients")
	}
	if _, err := os.Stat(filepath.Join(harness, "run-claude.sh")); err != nil {
		t.Skipf("real-agent harness not found at %s (set ENCLAVE_REALCLIENTS): %v", harness, err)
	}
	for _, tool := range append([]string{"bash", "python3", "npm", "node", "timeout"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the harness needs %s: %v", tool, err)
		}
	}
	if r := sandbox.Probe(); !r.OK() {
		t.Skipf("this machine lacks a sandbox layer enclave needs: %+v", r.Layers)
	}
	return harness
}

// InstallSelf copies the running test binary to dir/enclave, so that a
// harness can run it as the enclave command (the test's TestMain turns it
// into the CLI).
func InstallSelf(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	enclave := filepath.Join(dir, "enclave")
	if err := CopyFile(self, enclave, 0o755); err != nil {
		t.Fatalf("install this test binary as enclave: %v", err)
	}
	return enclave
}

// CopyFile copies from to a new file to with mode.
func CopyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
