package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
)

const auditUsage = `Usage:
    enclave audit <command> [flags]

Commands:
    verify       recompute the Merkle tree and check every signed checkpoint
    prove        print an inclusion proof of one event against a checkpoint
    check-proof  check an inclusion proof offline, with only the public key
    export       write events as JSON Lines, with their proofs
    checkpoint   sign a checkpoint now and print it (to publish elsewhere)
    key          print the log's public key

Examples:
    enclave audit verify
    enclave audit checkpoint > /mnt/elsewhere/checkpoint.txt
    enclave audit verify -published /mnt/elsewhere/checkpoint.txt
    enclave audit checkpoint -git ~/audit-mirror     # then push refs/enclave/checkpoints anywhere
    enclave audit verify -git ~/audit-mirror
    enclave audit prove 42 > proof.json
    enclave audit check-proof -key audit.pub proof.json
    enclave audit export -session last -kind egress,dns
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
	case "prove":
		return e.auditProve(ctx, args[1:])
	case "check-proof":
		return e.auditCheckProof(ctx, args[1:])
	case "export":
		return e.auditExport(ctx, args[1:])
	case "checkpoint":
		fs := e.newFlagSet("audit checkpoint", "audit checkpoint", `Checkpoint signs the audit log's current tree head now and prints the signed
note. Keep copies elsewhere (another machine, a git ref, a ticket): "enclave
audit verify -published FILE" then catches a history rewritten since.`, "    enclave audit checkpoint > /mnt/elsewhere/checkpoint.txt")
		gitDir := fs.String("git", "", "also publish it as a commit on "+checkpointRef+" in the git repository `dir`")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		st, err := e.openState(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		cp, err := st.log.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if *gitDir != "" {
			if err := publishCheckpointGit(ctx, *gitDir, cp.Note); err != nil {
				return fmt.Errorf("publish checkpoint to %s: %w", *gitDir, err)
			}
		}
		_, err = e.Stdout.Write(cp.Note)
		return err
	case "key":
		fs := e.newFlagSet("audit key", "audit key", `Key prints the audit log's public key: give it to auditors, who verify
checkpoints and proofs with it and nothing else.`, "    enclave audit key > audit.pub")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
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
	var gitDirs listFlag
	fs.Var(&gitDirs, "git", "also check every checkpoint published on "+checkpointRef+" in the git repository `dir` (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := e.verifier(keys)
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
	for _, d := range gitDirs {
		notes, err := readCheckpointsGit(ctx, d)
		if err != nil {
			return fmt.Errorf("read checkpoints from %s: %w", d, err)
		}
		opts.Published = append(opts.Published, notes...)
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
	return nil
}

func (e *Env) auditProve(ctx context.Context, args []string) error {
	fs := e.newFlagSet("audit prove", "audit prove SEQ", `Prove prints, as JSON, an inclusion proof of event SEQ against the newest
signed checkpoint: the event's canonical bytes, the checkpoint note and the
Merkle path. "enclave audit check-proof" or any program using
golang.org/x/mod/sumdb/tlog and note checks it with only the public key.`, "    enclave audit prove 42 > proof.json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("audit prove takes one sequence number")
	}
	seq, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil || seq < 0 {
		return usagef("audit prove: %q is not a sequence number", fs.Arg(0))
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	p, err := audit.Prove(ctx, st.store, seq, nil)
	if errors.Is(err, audit.ErrNotCovered) {
		return withHint(err, "sign one first: enclave audit checkpoint")
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

func (e *Env) auditCheckProof(ctx context.Context, args []string) error {
	fs := e.newFlagSet("audit check-proof", "audit check-proof [flags] [FILE]", `Check-proof checks an inclusion proof written by "enclave audit prove"
(from FILE, or standard input) offline: the checkpoint's signature under the
public key, and the Merkle path from the event to the signed root. It prints
the proven event and exits 0 only if the proof holds.`, "    enclave audit check-proof -key audit.pub proof.json")
	var keys listFlag
	fs.Var(&keys, "key", "trust the public key in `file` (repeatable; default: the state directory's key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var in io.Reader = e.Stdin
	if fs.NArg() == 1 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	} else if fs.NArg() > 1 {
		return usagef("audit check-proof takes at most one FILE")
	}
	var p audit.Proof
	dec := json.NewDecoder(io.LimitReader(in, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("read proof: %w", err)
	}
	v, err := e.verifier(keys)
	if err != nil {
		return err
	}
	cp, rec, err := v.CheckProof(&p)
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		fmt.Fprintf(e.Stdout, "FAIL %s\n", ve.Error())
		return &exitError{1}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "ok: event %d is in the log %q of %d events signed by %s\n", rec.Seq, cp.Origin, cp.Tree.N, strings.Join(v.Keys(), ", "))
	fmt.Fprintf(e.Stdout, "%s %s %s %s %s\n", rec.Event.Time.Format(time.RFC3339Nano), rec.Event.Session, rec.Event.Kind, rec.Event.Decision, rec.Event.Data)
	return nil
}

// verifier builds a verifier from key files, or the state directory's key.
func (e *Env) verifier(keys []string) (*audit.Verifier, error) {
	if len(keys) == 0 {
		dir, err := e.stateDir()
		if err != nil {
			return nil, err
		}
		keys = []string{filepath.Join(dir, keyPublic)}
	}
	var vkeys []string
	for _, k := range keys {
		pub, err := audit.ReadPublicKey(k)
		if err != nil {
			return nil, err
		}
		vkeys = append(vkeys, pub)
	}
	return audit.NewVerifier("", vkeys...)
}

func (e *Env) auditExport(ctx context.Context, args []string) error {
	fs := e.newFlagSet("audit export", "audit export [flags]", `Export writes audit events as JSON Lines, one event per line with its
canonical bytes, leaf hash and inclusion proof against the newest checkpoint.
EVENTS.md in internal/audit documents each kind's fields.`, "    enclave audit export > audit.jsonl\n    enclave audit export -session last -kind egress -decision deny\n    enclave audit export -follow -kind exec")
	session := fs.String("session", "", "only events of session `id` (or \"last\")")
	kind := fs.String("kind", "", "only events of these comma-separated `kinds`")
	decision := fs.String("decision", "", "only events with this `decision` (allow, deny)")
	since := fs.String("since", "", "only events at or after `time` (RFC 3339, or a duration like 1h for that long ago)")
	until := fs.String("until", "", "only events before `time` (RFC 3339)")
	noProofs := fs.Bool("no-proofs", false, "leave out the proofs (faster)")
	follow := fs.Bool("follow", false, "keep streaming new events as they are appended")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	f := audit.Filter{Kinds: kinds(*kind), Decision: *decision}
	if *session != "" {
		s, err := resolveSession(ctx, st.store, *session)
		if err != nil {
			return err
		}
		f.Session = s.ID
	}
	if f.Since, err = parseWhen(*since); err != nil {
		return usagef("-since: %v", err)
	}
	if f.Until, err = parseWhen(*until); err != nil {
		return usagef("-until: %v", err)
	}
	if *follow {
		enc := json.NewEncoder(e.Stdout)
		return audit.Follow(ctx, st.store, f, 250*time.Millisecond, func(r audit.Record) error {
			return enc.Encode(audit.ExportRecord{Seq: r.Seq, Time: r.Event.Time, Session: r.Event.Session, Kind: r.Event.Kind,
				Actor: r.Event.Actor, Decision: r.Event.Decision, Data: r.Event.Data, Leaf: string(r.Leaf)})
		})
	}
	_, err = audit.Export(ctx, st.store, e.Stdout, f, audit.ExportOptions{NoProofs: *noProofs})
	return err
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// checkpointRef is where published checkpoints go in a git repository: a
// chain of commits, each holding one signed checkpoint as the file
// "checkpoint", so the ref can be pushed and mirrored like any branch and a
// rewritten log is caught by any copy of it.
const checkpointRef = "refs/enclave/checkpoints"

// gitPublish runs git in a repository the user named for publishing. It is
// the user's own repository, never an agent's copy; hooks are switched off
// anyway, since publishing runs none.
func gitPublish(ctx context.Context, dir string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "core.hooksPath=/dev/null", "-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=enclave", "GIT_AUTHOR_EMAIL=enclave@localhost",
		"GIT_COMMITTER_NAME=enclave", "GIT_COMMITTER_EMAIL=enclave@localhost")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return bytes.TrimSpace(out), nil
}

func publishCheckpointGit(ctx context.Context, dir string, note []byte) error {
	blob, err := gitPublish(ctx, dir, note, "hash-object", "-w", "--stdin")
	if err != nil {
		return err
	}
	tree, err := gitPublish(ctx, dir, []byte("100644 blob "+string(blob)+"\tcheckpoint\n"), "mktree")
	if err != nil {
		return err
	}
	args := []string{"commit-tree", string(tree), "-m", "enclave audit checkpoint\n\n" + string(note)}
	parent, perr := gitPublish(ctx, dir, nil, "rev-parse", "-q", "--verify", checkpointRef)
	if perr == nil && len(parent) > 0 {
		args = append(args, "-p", string(parent))
	}
	commit, err := gitPublish(ctx, dir, nil, args...)
	if err != nil {
		return err
	}
	old := string(parent)
	if perr != nil || old == "" {
		old = strings.Repeat("0", 40)
	}
	// Compare-and-swap: a concurrent publisher makes this fail, not lose a
	// checkpoint.
	_, err = gitPublish(ctx, dir, nil, "update-ref", checkpointRef, string(commit), old)
	return err
}

func readCheckpointsGit(ctx context.Context, dir string) ([][]byte, error) {
	revs, err := gitPublish(ctx, dir, nil, "rev-list", checkpointRef)
	if err != nil {
		return nil, err
	}
	var notes [][]byte
	for _, rev := range strings.Fields(string(revs)) {
		note, err := gitPublish(ctx, dir, nil, "cat-file", "blob", rev+":checkpoint")
		if err != nil {
			return nil, err
		}
		notes = append(notes, append(note, '\n'))
	}
	return notes, nil
}
