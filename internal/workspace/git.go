package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Two kinds of git invocation exist in this package, and they never mix:
//
//   - userGit runs on the user's own repository, which the user trusts: it
//     keeps the user's configuration (safe.directory, core.fsmonitor, ...)
//     but drops every inherited GIT_* variable, so a GIT_DIR left in
//     enclave's own environment (enclave started from a git hook) cannot
//     redirect it, and never prompts, pages or opens an editor.
//   - shadowGit runs on enclave's shadow repository with the agent's copy as
//     its work tree. Nothing the agent wrote may configure it: no system or
//     global config, an empty HOME, no hooks, no fsmonitor, no filters, no
//     attributes from the agent's tree (see shadowAttributes), no transports.

// gitBinary is the git executable; tests may not change it, it is a var only
// so the lookup happens once.
var gitBinary = "git"

// baseEnv is the environment every git run starts from: PATH only, because
// git needs it to find its helpers, plus settings that make it
// non-interactive and its output stable.
func baseEnv() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"LC_ALL=C",
		"LANG=C",
		"TZ=UTC",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_PAGER=cat",
		"PAGER=cat",
		"GIT_EDITOR=true",
		"EDITOR=true",
		"VISUAL=true",
		"GIT_ASKPASS=/bin/false",
		"SSH_ASKPASS=/bin/false",
		"GIT_OPTIONAL_LOCKS=0",
		"GIT_NO_REPLACE_OBJECTS=1",
		"GIT_ADVICE=0",
	}
	return env
}

// userEnv is baseEnv plus the user's HOME and XDG_CONFIG_HOME so that the
// user's global configuration (safe.directory above all) applies.
func userEnv() []string {
	env := baseEnv()
	for _, k := range []string{"HOME", "XDG_CONFIG_HOME", "USER", "LOGNAME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// shadowConfig is passed with -c to every shadowGit run. The shadow's own
// config file is written by enclave and never touched by the agent, but
// these make each run safe even if it were: each one closes a way the
// agent's files could run code or change what gets recorded.
var shadowConfig = []string{
	"core.hooksPath=/dev/null",
	"core.fsmonitor=false",
	"core.untrackedCache=false",
	"core.symlinks=true",
	"core.fileMode=true",
	"core.trustctime=true",
	"core.checkStat=default",
	"core.autocrlf=false",
	"core.safecrlf=false",
	"core.eol=lf",
	"core.ignoreCase=false",
	"core.precomposeUnicode=false",
	"core.splitIndex=false",
	"core.sparseCheckout=false",
	"core.excludesFile=/dev/null",
	"core.attributesFile=/dev/null",
	"core.pager=cat",
	"core.quotePath=false",
	"index.sparse=false",
	"feature.manyFiles=false",
	"gc.auto=0",
	"maintenance.auto=false",
	"commit.gpgSign=false",
	"tag.gpgSign=false",
	"log.showSignature=false",
	"color.ui=false",
	"diff.external=",
	"diff.noprefix=false",
	"diff.mnemonicPrefix=false",
	"diff.relative=false",
	"diff.renames=true",
	"diff.submodule=short",
	"status.submoduleSummary=false",
	"submodule.recurse=false",
	"protocol.allow=never",
	"uploadpack.packObjectsHook=",
	"credential.helper=",
}

// shadowAttributes is written to the shadow's info/attributes, which takes
// precedence over every .gitattributes in the agent's tree. It switches off
// each attribute that changes content on its way into a blob (text, eol,
// ident, working-tree-encoding, filter) so that the recorded tree is the
// bytes the agent left, and resets diff and merge to git's built-in
// behaviour (no driver the agent names is consulted; none is defined anyway).
const shadowAttributes = `* -text -crlf -eol -ident !filter !working-tree-encoding !diff !merge -export-subst -export-ignore
`

// gitError is returned when a git command fails; it carries git's stderr
// (trimmed) so the caller sees why.
type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	// git's messages quote paths the agent chose: no control characters
	// reach whoever prints this error.
	msg := strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, strings.TrimSpace(e.stderr))
	if len(msg) > 2000 {
		msg = msg[:2000] + "..."
	}
	if msg == "" {
		return fmt.Sprintf("git %s: %v", strings.Join(e.args, " "), e.err)
	}
	return fmt.Sprintf("git %s: %v: %s", strings.Join(e.args, " "), e.err, msg)
}

func (e *gitError) Unwrap() error { return e.err }

// gitCmd describes one git run.
type gitCmd struct {
	dir    string   // working directory ("" = inherit; only used for userGit)
	env    []string // full environment
	config []string // -c settings
	args   []string
	stdin  io.Reader
	stdout io.Writer // nil: captured and returned
}

func (g gitCmd) run(ctx context.Context) ([]byte, error) {
	argv := make([]string, 0, 2*len(g.config)+len(g.args))
	for _, c := range g.config {
		argv = append(argv, "-c", c)
	}
	argv = append(argv, g.args...)
	cmd := exec.CommandContext(ctx, gitBinary, argv...)
	cmd.Dir = g.dir
	cmd.Env = g.env
	cmd.Stdin = g.stdin
	var out, errb bytes.Buffer
	if g.stdout != nil {
		cmd.Stdout = g.stdout
	} else {
		cmd.Stdout = &out
	}
	cmd.Stderr = &limitedBuffer{buf: &errb, max: 64 << 10}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return out.Bytes(), &gitError{args: g.args, err: err, stderr: errb.String()}
	}
	return out.Bytes(), nil
}

// limitedBuffer keeps the first max bytes written and discards the rest, so
// a git run that prints a line per agent file cannot grow our memory.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

// userGit runs git in dir of the user's repository.
func userGit(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return gitCmd{dir: dir, env: userEnv(), args: args}.run(ctx)
}

// shadow is an enclave-owned git directory whose work tree is the agent's
// copy. See the comment at the top of this file.
type shadow struct {
	gitDir   string // absolute path of the shadow git dir
	workTree string // absolute path of the agent's copy ("" for tree-only commands)
	home     string // an empty directory used as HOME
}

func (s shadow) env() []string {
	env := baseEnv()
	env = append(env,
		"HOME="+s.home,
		"XDG_CONFIG_HOME="+s.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ATTR_NOSYSTEM=1",
		"GIT_DIR="+s.gitDir,
		"GIT_INDEX_FILE="+s.gitDir+"/index",
		"GIT_CEILING_DIRECTORIES=/",
		"GIT_PROTOCOL_FROM_USER=0",
	)
	if s.workTree != "" {
		env = append(env, "GIT_WORK_TREE="+s.workTree)
	}
	return env
}

func (s shadow) cmd(args ...string) gitCmd {
	// Run from the empty HOME, never from inside the agent's copy, so
	// nothing is discovered from the current directory.
	return gitCmd{dir: s.home, env: s.env(), config: shadowConfig, args: args}
}

func (s shadow) git(ctx context.Context, args ...string) ([]byte, error) {
	return s.cmd(args...).run(ctx)
}

// copyGit runs git on the agent's copy's own .git, before the agent has
// started (so the directory is still enclave's), with the shadow's hardening.
func copyGit(ctx context.Context, gitDir, workTree, home string, args ...string) ([]byte, error) {
	return shadow{gitDir: gitDir, workTree: workTree, home: home}.git(ctx, args...)
}
