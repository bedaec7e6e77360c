//go:build linux

package sandbox

import (
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
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
func applyLandlock(cfg *execConfig) (abi int, scoped bool, err error) {
	abi, err = ll.LandlockGetABIVersion()
	if err != nil {
		return 0, false, fmt.Errorf("landlock is not supported by this kernel or not enabled at boot: %w", err)
	}
	if abi < MinLandlockABI {
		return 0, false, fmt.Errorf("kernel has Landlock ABI %d, need at least %d", abi, MinLandlockABI)
	}
	base := landlockConfigs[min(abi, len(landlockConfigs))-1]
	c := landlock.Config{HandledAccessFS: base.HandledAccessFS, Scoped: base.Scoped}
	handled := uint64(c.HandledAccessFS)

	execAll := uint64(0)
	if len(cfg.ExecAllow) == 0 {
		execAll = ll.AccessFSExecute
	}
	var rules []landlock.Rule
	add := func(p string, access uint64) {
		fi, err := os.Stat(p)
		if err != nil {
			return // not in the view: nothing to grant
		}
		if !fi.IsDir() {
			access &= llFile
		}
		access &= handled
		if access != 0 {
			rules = append(rules, landlock.PathAccess(landlock.AccessFSSet(access), p))
		}
	}
	add("/", ll.AccessFSReadDir)
	for _, p := range cfg.RO {
		add(p, llRead|execAll)
	}
	for _, p := range cfg.RW {
		add(p, llRead|llWrite|execAll)
	}
	add("/proc", llRead|ll.AccessFSWriteFile)
	add("/dev", ll.AccessFSReadDir)
	for _, p := range []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/random", "/dev/urandom"} {
		add(p, llDevFile)
	}
	add("/dev/pts", llDevFile|ll.AccessFSReadDir)
	for _, p := range cfg.ExecAllow {
		add(p, ll.AccessFSExecute)
	}
	if len(cfg.ExecAllow) > 0 {
		for _, p := range elfInterpreters {
			add(p, ll.AccessFSExecute)
		}
	}
	if err := c.Restrict(rules...); err != nil {
		return 0, false, fmt.Errorf("apply landlock ruleset: %w", err)
	}
	return abi, c.Scoped != 0, nil
}
