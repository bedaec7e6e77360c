package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// systemDirs are in every sandbox's view already.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt", "/etc"}

// agentInstall finds where the agent command lives on the host when that is
// outside the sandbox's view (most agents install under HOME), and returns
// the host path to mount read-only at the same place and the command path
// to run. It mounts as little as works: the binary itself for a native
// executable, or the npm package directory for a script, never HOME, and
// nothing when the command is a system program or a path the user mounts
// anyway. ok is false when there is nothing to do.
func agentInstall(argv0, hostPATH, home string) (mount, command string, ok bool) {
	path := argv0
	if !strings.Contains(argv0, "/") {
		var err error
		if path, err = lookPath(argv0, hostPATH); err != nil {
			return "", "", false
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", false
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", "", false
	}
	for _, d := range systemDirs {
		if within(real, d) {
			return "", "", false
		}
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", "", false
	}
	mount = real
	if isScript(real) {
		// A script needs its package and the packages beside it (npm
		// agents load a platform package installed next to theirs): the
		// node_modules directory it was installed into. Code, not secrets;
		// never a home directory.
		found := false
		for d := filepath.Dir(real); d != "/" && d != "."; d = filepath.Dir(d) {
			if home != "" && (d == home || within(home, d)) {
				break
			}
			if filepath.Base(d) == "node_modules" {
				mount, found = d, true
				break
			}
		}
		if !found {
			return "", "", false
		}
	}
	if home != "" && (mount == home || within(home, mount)) {
		return "", "", false
	}
	return mount, real, true
}

func lookPath(name, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 2)
	n, _ := f.Read(head)
	return bytes.Equal(head[:n], []byte("#!"))
}
