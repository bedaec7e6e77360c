package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enclave-dev/enclave/internal/audit"
)

const auditUsage = `Usage:
    enclave audit <command> [flags]

Commands:
    verify       recompute the Merkle tree and check every signed checkpoint
    key          print the log's public key

Examples:
    enclave audit verify
    enclave audit key > audit.pub
`

func (e *Env) auditCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		fmt.Fprint(e.Stderr, auditUsage)
		if len(args) == 0 {
			return &exitError{2}
		}
		return nil
	}
	switch args[0] {
	case "verify":
		return e.auditVerify(ctx, args[1:])
	case "key":
		dir, err := e.stateDir()
		if err != nil {
			return err
		}
		pub, err := audit.ReadPublicKey(filepath.Join(dir, keyPublic))
		if err != nil {
			return withHint(err, "the key is created by enclave init or the first enclave run")
		}
		fmt.Fprintln(e.Stdout, pub)
		return nil
	}
	return usagef("unknown audit command %q", args[0])
}

func (e *Env) auditVerify(ctx context.Context, args []string) error {
	fs := e.newFlagSet("audit verify", "audit verify [flags]", `Verify recomputes the audit log's Merkle tree from every stored event, checks
each stored hash and each checkpoint's signature and consistency with the
next, and reports the first bad record by sequence number with what is wrong.
It exits 0 only when everything holds.`, "    enclave audit verify\n    enclave audit verify -key audit.pub -published checkpoint.txt")
	var keys, published listFlag
	fs.Var(&keys, "key", "trust the public key in `file` (repeatable; default: the state directory's key)")
	fs.Var(&published, "published", "also check the checkpoint in `file` published elsewhere (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if len(keys) == 0 {
		keys = listFlag{filepath.Join(st.dir, keyPublic)}
	}
	var vkeys []string
	for _, k := range keys {
		pub, err := audit.ReadPublicKey(k)
		if err != nil {
			return err
		}
		vkeys = append(vkeys, pub)
	}
	v, err := audit.NewVerifier("", vkeys...)
	if err != nil {
		return err
	}
	opts := audit.VerifyOptions{Verifier: v}
	for _, p := range published {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		opts.Published = append(opts.Published, b)
	}
	rep, err := audit.Verify(ctx, st.store, opts)
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		fmt.Fprintf(e.Stdout, "FAIL %s\n", ve.Error())
		return &exitError{1}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "ok: %d events, %d checkpoints verified", rep.Records, rep.Checkpoints)
	if rep.Latest != nil {
		fmt.Fprintf(e.Stdout, "; latest signs %d events", rep.Latest.Tree.N)
	}
	fmt.Fprintln(e.Stdout)
	if rep.Unsigned > 0 {
		fmt.Fprintf(e.Stdout, "warning: %d events after the latest checkpoint are not signed yet\n", rep.Unsigned)
	}
	return nil
}
