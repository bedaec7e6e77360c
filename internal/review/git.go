package review

// Two kinds of git run, as in internal/workspace, never mixed:
//
//   - shadowGit reads enclave's shadow repository (written by enclave only):
//     no system or global config, an empty HOME, hooks and fsmonitor off,
//     no transports. It only reads refs and objects.
//   - userGit runs in the user's own repository with the user's own
//     configuration (signing, identity, safe.directory), but with an
//     allowlisted environment: no inherited GIT_* variable can redirect it,
//     and it never prompts or opens an editor.
//
// The agent's copy (work/ and its .git) is never an argument, a working
// directory, or a configuration source of either.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

var shadowConfig = []string{
	"core.hooksPath=/dev/null",
	"core.fsmonitor=false",
	"core.untrackedCache=false",
	"core.attributesFile=/dev/null",
	"core.excludesFile=/dev/null",
	"core.pager=cat",
	"gc.auto=0",
	"maintenance.auto=false",
	"protocol.allow=never",
	"credential.helper=",
}

func baseEnv(path string) []string {
	return []string{
		"PATH=" + path,
		"LC_ALL=C", "LANG=C",
		"GIT_TERMINAL_PROMPT=0", "GIT_PAGER=cat", "PAGER=cat",
		"GIT_EDITOR=true", "EDITOR=true", "VISUAL=true",
		"GIT_ASKPASS=/bin/false", "SSH_ASKPASS=/bin/false",
		"GIT_NO_REPLACE_OBJECTS=1", "GIT_ADVICE=0",
	}
}

// Git runs git for review. Environ is the launcher's environment; only
// what git needs to find the user's configuration and signing tools is
// taken from it.
type Git struct {
	Environ []string
	// Home is an empty directory used as HOME for shadow runs; "" makes
	// one under the system temporary directory per run.
	Home string
}

func (g *Git) lookup(k string) (string, bool) {
	for _, kv := range g.Environ {
		if key, v, ok := strings.Cut(kv, "="); ok && key == k {
			return v, true
		}
	}
	return "", false
}

func (g *Git) path() string {
	if p, ok := g.lookup("PATH"); ok && p != "" {
		return p
	}
	return "/usr/local/bin:/usr/bin:/bin"
}

// userKeys are taken from the launcher's environment for userGit: the
// user's config locations and what commit signing needs (gpg-agent,
// ssh-agent for SSH signing).
var userKeys = []string{"HOME", "XDG_CONFIG_HOME", "USER", "LOGNAME", "GNUPGHOME", "GPG_TTY", "SSH_AUTH_SOCK", "TZ"}

func (g *Git) userEnv() []string {
	env := baseEnv(g.path())
	for _, k := range userKeys {
		if v, ok := g.lookup(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	msg := strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, strings.TrimSpace(e.stderr))
	if len(msg) > 2000 {
		msg = msg[:2000] + "..."
	}
	return fmt.Sprintf("git %s: %v: %s", strings.Join(e.args, " "), e.err, msg)
}

func (e *gitError) Unwrap() error { return e.err }

func run(ctx context.Context, dir string, env, config, args []string, stdin io.Reader) ([]byte, error) {
	argv := make([]string, 0, 2*len(config)+len(args))
	for _, c := range config {
		argv = append(argv, "-c", c)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "git", argv...)
	cmd.Dir, cmd.Env, cmd.Stdin = dir, env, stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), &gitError{args: args, err: err, stderr: errb.String()}
	}
	return out.Bytes(), nil
}

// shadow runs git on the shadow repository gitDir.
func (g *Git) shadow(ctx context.Context, gitDir string, args ...string) ([]byte, error) {
	home := g.Home
	if home == "" {
		h, err := os.MkdirTemp("", "enclave-review-home-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(h)
		home = h
	}
	env := append(baseEnv(g.path()),
		"HOME="+home, "XDG_CONFIG_HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_DIR="+gitDir,
	)
	return run(ctx, "/", env, shadowConfig, args, nil)
}

// user runs git in the user's repository at dir.
func (g *Git) user(ctx context.Context, dir string, stdin io.Reader, args ...string) ([]byte, error) {
	return run(ctx, dir, g.userEnv(), nil, append([]string{"-C", dir}, args...), stdin)
}

var hexID = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// ShadowHead returns the commit refs/heads/enclave/<session> points at in
// the shadow repository.
func (g *Git) ShadowHead(ctx context.Context, gitDir, session string) (string, error) {
	out, err := g.shadow(ctx, gitDir, "rev-parse", "--verify", "--quiet", "refs/heads/enclave/"+session+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("read the session branch in %s: %w", gitDir, err)
	}
	id := strings.TrimSpace(string(out))
	if !hexID.MatchString(id) {
		return "", fmt.Errorf("read the session branch in %s: unexpected output %q", gitDir, id)
	}
	return id, nil
}

// ShadowTree returns the tree id of commit in the shadow repository.
func (g *Git) ShadowTree(ctx context.Context, gitDir, commit string) (string, error) {
	out, err := g.shadow(ctx, gitDir, "rev-parse", "--verify", "--quiet", commit+"^{tree}")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// NotesRef holds attestations in the user's repository.
const NotesRef = "refs/notes/enclave"

// Note returns the enclave note on commit in the user's repository, or nil
// when there is none.
func (g *Git) Note(ctx context.Context, repo, commit string) ([]byte, error) {
	out, err := g.user(ctx, repo, nil, "notes", "--ref="+NotesRef, "show", commit)
	if err != nil {
		var ge *gitError
		if errors.As(err, &ge) && strings.Contains(ge.stderr, "no note found") {
			return nil, nil
		}
		return nil, err
	}
	return out, nil
}

// ResolveCommit resolves a commit name in the user's repository.
func (g *Git) ResolveCommit(ctx context.Context, repo, name string) (string, error) {
	if strings.HasPrefix(name, "-") {
		return "", fmt.Errorf("commit %q: a name cannot start with '-'", name)
	}
	out, err := g.user(ctx, repo, nil, "rev-parse", "--verify", "--quiet", "--end-of-options", name+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("no commit %q in %s", name, repo)
	}
	return strings.TrimSpace(string(out)), nil
}

// TopLevel returns the top level of the git work tree containing dir.
func (g *Git) TopLevel(ctx context.Context, dir string) (string, error) {
	out, err := g.user(ctx, dir, nil, "rev-parse", "--show-toplevel")
	if err != nil {
		return "", err
	}
	return filepath.Clean(strings.TrimSpace(string(out))), nil
}
