//go:build linux

package sandbox

import (
	"fmt"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// landlockConfigs[i] is Landlock ABI i+1 as go-landlock defines it. ABIs
// above the last entry are used as the last entry: only rights this code
// knows how to grant are handled, so a newer kernel cannot silently deny
// something the view allows.
var landlockConfigs = []landlock.Config{landlock.V1, landlock.V2, landlock.V3, landlock.V4, landlock.V5, landlock.V6, landlock.V7}

const (
	llRead  = ll.AccessFSReadFile | ll.AccessFSReadDir
	llWrite = ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo |
		ll.AccessFSMakeSym | ll.AccessFSRefer
	llDevFile = ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSIoctlDev
	llFile    = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate | ll.AccessFSIoctlDev
)

// elfInterpreters get the execute right whenever ExecAllow is set: the
// kernel opens a dynamic binary's interpreter for execution too.
var elfInterpreters = []string{"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-musl-x86_64.so.1"}

// applyLandlock restricts filesystem access (and, at ABI 6 and above,
// abstract unix sockets and signals) to mirror the view. Network rights
// are not handled: the network namespace already holds only loopback.
//
// It restricts the calling thread only, on purpose: the init forks the
// agent from one locked OS thread, and only that thread's domain is
// inherited; the init itself stays unrestricted. (go-landlock's Restrict
// syncs all threads.) The caller has set no_new_privs on this thread.
func applyLandlock(cfg *execConfig) (abi int, scoped bool, err error) {
	abi, err = ll.LandlockGetABIVersion()
	if err != nil {
		return 0, false, fmt.Errorf("landlock is not supported by this kernel or not enabled at boot: %w", err)
	}
	if abi < MinLandlockABI {
		return 0, false, fmt.Errorf("kernel has Landlock ABI %d, need at least %d", abi, MinLandlockABI)
	}
	base := landlockConfigs[min(abi, len(landlockConfigs))-1]
	attr := ll.RulesetAttr{HandledAccessFS: uint64(base.HandledAccessFS), Scoped: uint64(base.Scoped)}
	handled := attr.HandledAccessFS
	ruleset, err := ll.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return 0, false, fmt.Errorf("create landlock ruleset: %w", err)
	}
	defer unix.Close(ruleset)

	execAll := uint64(0)
	if len(cfg.ExecAllow) == 0 {
		execAll = ll.AccessFSExecute
	}
	add := func(p string, access uint64) error {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil // not in the view: nothing to grant
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("landlock rule for %s: %w", p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			access &= llFile
		}
		access &= handled
		if access == 0 {
			return nil
		}
		if err := ll.LandlockAddPathBeneathRule(ruleset, &ll.PathBeneathAttr{AllowedAccess: access, ParentFd: fd}, 0); err != nil {
			return fmt.Errorf("landlock rule for %s: %w", p, err)
		}
		return nil
	}
	type rule struct {
		path   string
		access uint64
	}
	rules := []rule{{"/", ll.AccessFSReadDir}, {"/proc", llRead | ll.AccessFSWriteFile}, {"/dev", ll.AccessFSReadDir}, {"/dev/pts", llDevFile | ll.AccessFSReadDir}}
	for _, p := range cfg.RO {
		rules = append(rules, rule{p, llRead | execAll})
	}
	for _, p := range cfg.RW {
		rules = append(rules, rule{p, llRead | llWrite | execAll})
	}
	for _, p := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/random", "/dev/urandom"} {
		rules = append(rules, rule{p, llDevFile})
	}
	for _, p := range cfg.ExecAllow {
		rules = append(rules, rule{p, ll.AccessFSExecute})
	}
	if len(cfg.ExecAllow) > 0 {
		for _, p := range elfInterpreters {
			rules = append(rules, rule{p, ll.AccessFSExecute})
		}
	}
	for _, r := range rules {
		if err := add(r.path, r.access); err != nil {
			return 0, false, err
		}
	}
	if err := ll.LandlockRestrictSelf(ruleset, 0); err != nil {
		return 0, false, fmt.Errorf("enforce landlock ruleset: %w", err)
	}
	return abi, attr.Scoped != 0, nil
}
