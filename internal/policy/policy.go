// Package policy holds Enclave's policy: the parsed form of enclave.yaml and
// the decisions every other part asks it for.
//
// A Policy is plain data plus pure decision functions: after Load there is no
// I/O, so decisions are cheap to table-test and fuzz. Each decision carries
// the rule that made it and a reason a human can read, because every decision
// ends up in the audit log.
//
// # Loading
//
// [LoadFor] picks the policy for a repository: the --policy file if given,
// else enclave.yaml at the repository root, else the built-in defaults
// ([Default]), which are the same text [InitTemplate] returns for
// `enclave init`. Parsing is strict: unknown or repeated keys, wrong types,
// sizes without units, relative host paths, contradictions (a path both
// read-only and read-write, a method rule on a port that only carries
// tunnels, a rule shadowed by an earlier one, an extends cycle) and settings
// that would hand the agent credentials are errors. Each is an [*Error]
// with file, line, column, the setting's path and a hint; Parse returns up
// to ten of them, in file order, as an [ErrorList].
//
// # Profiles
//
// Every profile is resolved at load time: a profile's parent is the profile
// named by extends, else the built-in default profile. A setting the profile
// writes replaces the parent's value whole (lists and maps are never merged);
// a setting it leaves out is inherited. So the Profiles map always holds
// complete settings and consumers never see a zero limit.
//
// # What the policy does not do
//
// It does not enforce anything: the sandbox, egress proxy and gateway do, and
// each must treat a setting it cannot honour as a reason to stop. A policy
// file that comes with a repository is input from whoever wrote the
// repository; [Profile.Grants] lists what it opens so the CLI can ask.
package policy

import (
	"time"
)

// Policy is one loaded enclave.yaml (or the built-in defaults).
type Policy struct {
	// Source names where the policy came from: a file path or "built-in".
	Source string
	// Hash is the hex SHA-256 of the exact bytes loaded ("" for built-in
	// defaults is never used: the defaults hash their embedded text).
	Hash string
	// Version is the schema version; only 1 exists.
	Version int
	// DefaultProfile names the profile `enclave run` uses without --profile.
	DefaultProfile string
	// Profiles by name, each fully resolved: extends is applied and every
	// setting the file leaves out holds the built-in default. Always holds
	// DefaultProfile.
	Profiles map[string]*Profile

	// Providers are the sanctioned model providers, in file order. Empty
	// means the policy names none; the gateway then sanctions providers
	// configured from the host environment at Classification.Default.
	Providers []Provider
	// Classification labels workspace content for the gateway.
	Classification Classification
	// Gateway holds the model gateway's budgets.
	Gateway Gateway
	// Gates configures the checks a change passes before review. A file
	// without gates: gets the gates' built-in defaults (the zero value).
	Gates Gates
}

// Profile is one complete set of sandbox settings.
type Profile struct {
	Name string
	// Extends names the parent profile, "" for one based directly on the
	// built-in defaults. Informational: the fields below are resolved.
	Extends    string
	Filesystem Filesystem
	Network    Network
	Exec       Exec
	Limits     Limits
	Env        Env
	// Degrade lists protection layers the user accepts running without when
	// the kernel lacks them ("landlock", "seccomp", "cgroups"). Empty means
	// fail closed: a missing layer stops `enclave run`.
	Degrade []string

	// at maps a setting's path within the profile ("filesystem.read_write[1]")
	// to where it was written, so later checks can point at the file.
	at map[string]srcPos
}

// Filesystem settings. ReadOnly and ReadWrite are absolute, clean host
// paths after Load expands "~"; Load refuses "/", kernel filesystems, the
// home directory itself and credential directories (~/.ssh, ~/.aws, ...),
// and system directories for ReadWrite. [Profile.CheckHostPaths] adds the
// checks that need the repository and state paths.
type Filesystem struct {
	// ReadOnly lists extra host paths mounted read-only at the same path.
	ReadOnly []string
	// ReadWrite lists extra host paths mounted read-write at the same path.
	ReadWrite []string
	// Hidden lists workspace globs ([MatchWorkspace]) removed from the
	// agent's copy of the workspace (for example ".env", "secrets/**").
	Hidden []string
}

// Network settings for the egress proxy.
type Network struct {
	// Allow is the host allowlist; first matching rule wins.
	Allow []HostRule
	// ByteBudget caps bytes sent plus received over all flows of a session.
	// Load always sets it (default 64 MiB); Validate rejects 0 or less.
	ByteBudget int64
	// DNS, when true, lets the in-sandbox resolver answer names on the
	// allowlist; names off the list never get an answer either way.
	DNS bool
}

// HostRule allows one host pattern.
type HostRule struct {
	// Host is an exact name ("api.example.com"), a wildcard of one or more
	// labels ("*.example.com", which does not match "example.com"), or an
	// exact IP literal, which is the only way to reach a loopback or private
	// address and is meant for local test servers.
	Host string
	// Ports allowed; empty means 443 and 80.
	Ports []int
	// Methods allowed for plain HTTP; empty means all. CONNECT tunnels are
	// opaque, so method and path rules cannot apply to them: a rule with
	// Methods or Paths set refuses CONNECT unless AllowConnect is true.
	Methods []string
	// Paths are path globs ("/v1/*", "/simple/**") for plain HTTP; empty
	// means all.
	Paths []string
	// AllowConnect permits CONNECT even when Methods or Paths are set.
	AllowConnect bool
	// Line is the line in the policy file, for reasons; 0 for built-ins.
	Line int
}

// Exec settings.
type Exec struct {
	// Allow, when non-empty, lists the only host paths (files or
	// directories) whose programs may be executed, enforced by the kernel
	// (Landlock execute rights). Empty means any program in the view.
	Allow []string
}

// Limits are resource limits. Load always sets every one (from the file or
// the built-in defaults); Validate rejects zero or negative values.
type Limits struct {
	Memory    int64         // bytes of memory (cgroup memory.max, else RLIMIT_DATA)
	Processes int           // tasks (cgroup pids.max, else RLIMIT_NPROC)
	CPUTime   time.Duration // CPU seconds (RLIMIT_CPU)
	FileSize  int64         // bytes per file written (RLIMIT_FSIZE)
	WallTime  time.Duration // the session is killed after this
	Disk      int64         // bytes the workspace may grow by
	TmpSize   int64         // bytes of the private /tmp and HOME tmpfs each
	OpenFiles int           // RLIMIT_NOFILE
}

// Env is the environment allowlist.
type Env struct {
	// Allow lists variable names (or NAME_* prefixes) passed from the
	// launcher's environment. Everything else is dropped, and so are
	// forbidden names even when a prefix matches them (see [Env.Allows]).
	Allow []string
	// Set lists variables set to fixed values inside the sandbox.
	Set map[string]string
}

// Decision is the answer to one question asked of the policy.
type Decision struct {
	Allow bool
	// Rule names the rule that decided, e.g. "network.allow[2]" or
	// "default-deny"; it goes into the audit record.
	Rule string
	// Reason is one sentence a human (or the agent) can act on.
	Reason string
}
