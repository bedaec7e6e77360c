// Package cli implements the enclave command line: one Run function per
// subcommand, each with its own flag.FlagSet, dispatched by a switch. Tests
// drive commands in-process through Main.
//
// Results go to stdout, diagnostics to stderr. Errors print as
// "enclave: error: ..." with an optional "enclave: hint: ...", and only
// Main turns them into an exit code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set with -ldflags "-X github.com/enclave-dev/enclave/internal/cli.version=v1.2.3".
var version = ""

// Env is what a command sees of the outside world, so tests can run
// commands in-process with their own streams, directory and environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Dir is the working directory; "" means the process's.
	Dir string
	// Getenv reads the launcher's environment; nil means os.Getenv.
	Getenv func(string) string
	// Environ is the launcher's whole environment; nil means os.Environ().
	Environ func() []string
}

func (e *Env) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

func (e *Env) environ() []string {
	if e.Environ != nil {
		return e.Environ()
	}
	return os.Environ()
}

func (e *Env) dir() (string, error) {
	if e.Dir != "" {
		return e.Dir, nil
	}
	return os.Getwd()
}

// usageError is an error in how the command was called; Main prints the
// command's usage hint after it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// hintError carries a hint line printed after the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, hint string) error { return &hintError{err, hint} }

// exitError asks Main to exit with a code without printing an error,
// for example to pass an agent's exit status through.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const usage = `enclave runs AI coding agents in a least-privilege sandbox, sends their
network traffic through a logging allowlist proxy, and keeps a tamper-evident
record of everything they did.

Usage:
    enclave <command> [flags] [arguments]

Sessions:
    run       run an agent in a new sandboxed session: enclave run -- claude
    demo      run a built-in scripted agent against a scratch repo, to see it work
    sessions  list sessions
    log       show the timeline of a session
    diff      show what a session changed against its base commit
    verify    run the verification gate on a session's change (exit 0 pass, 1 fail, 3 needs-review)
    data      show where a session's data went: models, hosts, bytes, tokens, blocks

Review:
    review    show a session for a decision: task, models, data, blocks, verification, diff
    approve   sign and record your approval of a session (enclave approve -m NOTE SESSION)
    reject    record a rejection with its reason (enclave reject -m REASON SESSION)
    merge     bring an approved change into your repository with its attestation
    attest    verify a commit's signed approvals offline: enclave attest verify COMMIT
    policy    run authorisation policy unit tests: enclave policy test FILE

Setup and checks:
    init      write a commented enclave.yaml and create the audit signing key
    doctor    report which protection layers work on this machine
    audit     verify, prove and export the audit log
    version   print the version

Examples:
    enclave demo
    enclave run -- claude
    enclave run --policy strict.yaml -- codex exec "fix the failing test"
    enclave sessions
    enclave log last
    enclave diff last

Run "enclave <command> -h" for a command's flags.
`

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string) int {
	env := &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	return env.Main(ctx, args)
}

// Main runs the command line with this environment.
func (e *Env) Main(ctx context.Context, args []string) int {
	err := e.Run(ctx, args)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(e.Stderr, "enclave: error: %s\n", scrub(err.Error()))
	var he *hintError
	if errors.As(err, &he) {
		fmt.Fprintf(e.Stderr, "enclave: hint: %s\n", scrub(he.hint))
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.Stderr, "enclave: hint: run \"enclave help\" for usage\n")
		return 2
	}
	return 1
}

// Run dispatches one command.
func (e *Env) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, usage)
		return &exitError{2}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return e.runCmd(ctx, rest)
	case "demo":
		return e.demoCmd(ctx, rest)
	case "sessions":
		return e.sessionsCmd(ctx, rest)
	case "log":
		return e.logCmd(ctx, rest)
	case "data":
		return e.dataCmd(ctx, rest)
	case "diff":
		return e.diffCmd(ctx, rest)
	case "verify":
		return e.verifyCmd(ctx, rest)
	case "init":
		return e.initCmd(ctx, rest)
	case "doctor":
		return e.doctorCmd(ctx, rest)
	case "audit":
		return e.auditCmd(ctx, rest)
	case "review":
		return e.reviewCmd(ctx, rest)
	case "approve":
		return e.approveCmd(ctx, rest)
	case "reject":
		return e.rejectCmd(ctx, rest)
	case "merge":
		return e.mergeCmd(ctx, rest)
	case "attest":
		return e.attestCmd(ctx, rest)
	case "policy":
		return e.policyCmd(ctx, rest)
	case "version", "--version":
		fmt.Fprintf(e.Stdout, "enclave %s\n", Version())
		return nil
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			return e.Run(ctx, []string{rest[0], "-h"})
		}
		fmt.Fprint(e.Stdout, usage)
		return nil
	}
	if strings.HasPrefix(cmd, "__") {
		// Internal subcommands are dispatched before Main by the sandbox
		// package; reaching here means they were called the wrong way.
		return usagef("%s is for internal use only", cmd)
	}
	return usagef("unknown command %q", cmd)
}

// Version reports the module version, or the -ldflags override.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// flagSet is a command's flags. Parse errors go through Main like every
// other error (scrubbed, exit 2), never printed by the flag package itself.
type flagSet struct {
	*flag.FlagSet
	usage func()
}

// Parse parses args; -h prints the command's usage.
func (fs *flagSet) Parse(args []string) error {
	err := fs.FlagSet.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.usage()
		return err
	case err != nil:
		return usagef("%v", err)
	}
	return nil
}

// newFlagSet makes a command's flag set with a usage function that prints
// the synopsis, a description, flags and examples.
func (e *Env) newFlagSet(name, synopsis, about, examples string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	usage := func() {
		w := e.Stderr
		fmt.Fprintf(w, "Usage:\n    enclave %s\n\n%s\n", synopsis, strings.TrimSpace(about))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
		if examples != "" {
			fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(examples, "\n"))
		}
	}
	return &flagSet{FlagSet: fs, usage: usage}
}

// onceString is a flag that may be given at most once: for security
// settings, a second value silently winning would be a trap.
type onceString struct {
	val string
	set bool
}

func (o *onceString) String() string { return o.val }
func (o *onceString) Set(s string) error {
	if o.set {
		return errors.New("given twice; give it once")
	}
	o.val, o.set = s, true
	return nil
}

// listFlag collects repeated values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
