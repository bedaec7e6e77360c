package cli

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/policy"
	"github.com/enclave-dev/enclave/internal/sandbox"
	"github.com/enclave-dev/enclave/internal/session"
)

func (e *Env) initCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("init", "init [flags]", `Init writes enclave.yaml in the current directory: the built-in defaults,
with a comment on every setting and an example for each. It also creates the
audit log's ed25519 signing key in the state directory if there is none, and
prints its public key, which verifies the log's checkpoints; and your own
ed25519 key for signing approvals (see enclave review key).`, "    enclave init\n    enclave init -force")
	force := fs.Bool("force", false, "overwrite an existing enclave.yaml")
	keyOnly := fs.Bool("key-only", false, "only create the signing key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("init takes no arguments")
	}
	if !*keyOnly {
		dir, err := e.dir()
		if err != nil {
			return err
		}
		path := filepath.Join(dir, policy.FileName)
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if *force {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		f, err := os.OpenFile(path, flags, 0o644)
		if errors.Is(err, iofs.ErrExist) {
			return withHint(fmt.Errorf("%s already exists", path), "use -force to overwrite it")
		}
		if err != nil {
			return err
		}
		if _, err := f.Write(policy.InitTemplate()); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(e.Stderr, "enclave: wrote %s\n", path)
	}
	dir, err := e.stateDir()
	if err != nil {
		return err
	}
	if _, err := e.signingKey(dir); err != nil {
		return err
	}
	if err := e.initHumanKey(ctx); err != nil {
		return err
	}
	pub, err := audit.ReadPublicKey(filepath.Join(dir, keyPublic))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "%s\n", pub)
	return nil
}

func (e *Env) doctorCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("doctor", "doctor", `Doctor reports which protection layers work on this machine for the current
user, and what enclave run would do without each. It exits 1 if a layer the
built-in defaults need is missing.`, "    enclave doctor")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("doctor takes no arguments")
	}
	r := sandbox.Probe()
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "LAYER\tSTATUS\tDETAIL\n")
	for _, l := range r.Layers {
		status := "ok"
		if !l.OK {
			status = "MISSING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Layer, status, l.Detail)
	}
	git := "ok"
	if _, err := exec.LookPath("git"); err != nil {
		git = "MISSING"
	}
	fmt.Fprintf(tw, "git\t%s\tneeded for workspace copies and diffs\n", git)
	fmt.Fprintf(tw, "limits\t%s\tresource limits are enforced with %s\n", "ok", r.Limits)
	diskStatus, diskDetail := "ok", ""
	if ok, d := session.DiskLimitProbe(); ok {
		diskDetail = d
	} else {
		diskStatus, diskDetail = "degraded", d
	}
	fmt.Fprintf(tw, "disk\t%s\t%s\n", diskStatus, diskDetail)
	if c := sandbox.Init(); c.Path != "" {
		fmt.Fprintf(tw, "init\tok\tsandboxes start with %s (same build as this binary)\n", c.Path)
	} else {
		fmt.Fprintf(tw, "init\tok\tsandboxes start with this binary, about 1 ms slower than with %s: %s\n", sandbox.InitName, c.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		uid, gid, err := sandbox.HostIDs()
		if err == nil {
			fmt.Fprintf(e.Stdout, "\nRunning as root: agents run as host uid %d, gid %d, never as root.\n", uid, gid)
		}
	}
	if !r.OK() || git != "ok" {
		return &exitError{1}
	}
	return nil
}
