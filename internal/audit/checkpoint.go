package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a signed tree head: the log's size and Merkle root, signed
// by the log key as a note. The note text follows the transparency-log
// checkpoint layout (C2SP tlog-checkpoint) without extension lines:
//
//	<origin>
//	<size in decimal>
//	<root hash in standard base64>
//
// The origin names the log, so a checkpoint of one log cannot pass for
// another's even under the same key.
type Checkpoint struct {
	Origin string
	Tree   tlog.Tree
	// Note is the complete signed note (text and signature lines).
	Note []byte
}

// FormatCheckpoint returns the unsigned checkpoint text for a tree.
func FormatCheckpoint(origin string, t tlog.Tree) []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", origin, t.N, base64.StdEncoding.EncodeToString(t.Hash[:]))
}

// ParseCheckpoint parses checkpoint text (the note text, without
// signatures). It accepts exactly what FormatCheckpoint writes.
func ParseCheckpoint(text []byte) (origin string, t tlog.Tree, err error) {
	lines := strings.SplitAfter(string(text), "\n")
	if len(lines) != 4 || lines[3] != "" {
		return "", t, errors.New("checkpoint: want exactly three newline-terminated lines (origin, size, root)")
	}
	origin = strings.TrimSuffix(lines[0], "\n")
	if err := checkOrigin(origin); err != nil {
		return "", t, fmt.Errorf("checkpoint: %w", err)
	}
	size := strings.TrimSuffix(lines[1], "\n")
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != size {
		return "", t, fmt.Errorf("checkpoint: size %q is not a canonical non-negative decimal", size)
	}
	root := strings.TrimSuffix(lines[2], "\n")
	h, err := base64.StdEncoding.Strict().DecodeString(root)
	if err != nil || len(h) != tlog.HashSize {
		return "", t, fmt.Errorf("checkpoint: root %q is not a base64 %d-byte hash", root, tlog.HashSize)
	}
	return origin, tlog.Tree{N: n, Hash: tlog.Hash(h)}, nil
}

func checkOrigin(o string) error {
	if o == "" {
		return errors.New("origin is empty")
	}
	for _, r := range o {
		if r < 0x21 || r == 0x7f {
			return fmt.Errorf("origin %q has a space or control character", o)
		}
	}
	return nil
}

// signCheckpoint signs the checkpoint text for t.
func signCheckpoint(s note.Signer, origin string, t tlog.Tree) (*Checkpoint, error) {
	msg, err := note.Sign(&note.Note{Text: string(FormatCheckpoint(origin, t))}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint of size %d: %w", t.N, err)
	}
	return &Checkpoint{Origin: origin, Tree: t, Note: msg}, nil
}

// Verifier checks checkpoints and proofs offline with only public keys.
type Verifier struct {
	keys   note.Verifiers
	names  []string
	origin string
}

// NewVerifier returns a Verifier accepting checkpoints signed by any of the
// given public keys (note verifier keys, "name+hash+base64", as
// [GenerateKey] prints). If origin is non-empty, checkpoints for any other
// origin are refused.
func NewVerifier(origin string, vkeys ...string) (*Verifier, error) {
	if len(vkeys) == 0 {
		return nil, errors.New("new verifier: no public key given")
	}
	v := &Verifier{origin: origin}
	var list []note.Verifier
	for i, k := range vkeys {
		nv, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("public key %d (%.40q): %w", i+1, k, err)
		}
		list = append(list, nv)
		v.names = append(v.names, fmt.Sprintf("%s+%08x", nv.Name(), nv.KeyHash()))
	}
	v.keys = note.VerifierList(list...)
	return v, nil
}

// Keys names the accepted keys as "name+hash".
func (v *Verifier) Keys() []string { return append([]string(nil), v.names...) }

// OpenCheckpoint checks a signed checkpoint and parses it. Errors are
// *VerifyError values with Problem ProblemBadSignature, ProblemUnknownKey or
// ProblemMalformed (Seq -1).
func (v *Verifier) OpenCheckpoint(msg []byte) (*Checkpoint, error) {
	bad := func(p Problem, format string, args ...any) error {
		return &VerifyError{Seq: -1, Problem: p, Detail: fmt.Sprintf(format, args...)}
	}
	n, err := note.Open(msg, v.keys)
	if err != nil {
		var unknown *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unknown):
			var who []string
			for _, s := range unknown.Note.UnverifiedSigs {
				who = append(who, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
			}
			return nil, bad(ProblemUnknownKey, "checkpoint is signed only by unknown key(s) %s; trusted: %s", strings.Join(who, ", "), strings.Join(v.names, ", "))
		case errors.As(err, &invalid):
			return nil, bad(ProblemBadSignature, "checkpoint signature by %s+%08x does not verify", invalid.Name, invalid.Hash)
		default:
			return nil, bad(ProblemMalformed, "checkpoint note: %v", err)
		}
	}
	origin, t, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return nil, bad(ProblemMalformed, "%v", err)
	}
	if v.origin != "" && origin != v.origin {
		return nil, bad(ProblemWrongLog, "checkpoint is for log %q, want %q", origin, v.origin)
	}
	return &Checkpoint{Origin: origin, Tree: t, Note: bytes.Clone(msg)}, nil
}

// GenerateKey creates a new log signing key named name. It writes the
// private key (note signer key format) to privPath with mode 0600 and the
// public key to pubPath with mode 0644, creating parent directories 0700,
// refuses to overwrite either file, and returns the public key text.
func GenerateKey(privPath, pubPath, name string) (vkey string, err error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", fmt.Errorf("generate key %q: %w", name, err)
	}
	for _, p := range []string{privPath, pubPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", fmt.Errorf("generate key: %w", err)
		}
	}
	if err := writeNew(privPath, skey+"\n", 0o600); err != nil {
		return "", fmt.Errorf("write private key: %w", err)
	}
	if err := writeNew(pubPath, vkey+"\n", 0o644); err != nil {
		os.Remove(privPath)
		return "", fmt.Errorf("write public key: %w", err)
	}
	return vkey, nil
}

func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// LoadKey reads a private key written by GenerateKey. A key file that
// group or others can access, or that is not a regular file, is refused.
// Errors never include key material.
func LoadKey(privPath string) (*Key, error) {
	f, err := os.Open(privPath)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load private key %q: not a regular file", privPath)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load private key %q: mode %v lets group or others read it; chmod 600 it", privPath, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("load private key %q: %w", privPath, err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("load private key %q: %w", privPath, err)
	}
	return k, nil
}

// ReadPublicKey reads a public key file written by GenerateKey and checks
// that it parses.
func ReadPublicKey(pubPath string) (string, error) {
	b, err := os.ReadFile(pubPath)
	if err != nil {
		return "", fmt.Errorf("read public key: %w", err)
	}
	k := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(k); err != nil {
		return "", fmt.Errorf("read public key %q: %w", pubPath, err)
	}
	return k, nil
}
