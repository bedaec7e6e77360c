package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// FileName is the policy file `enclave run` looks for at the repository root.
const FileName = "enclave.yaml"

// SourceBuiltin is Policy.Source for the built-in defaults.
const SourceBuiltin = "built-in"

// template is both the built-in defaults and what `enclave init` writes, so
// the two cannot drift and the defaults go through the same parser.
//
//go:embed enclave.yaml
var template []byte

// InitTemplate returns the commented enclave.yaml that `enclave init`
// writes. Parsed, it is equivalent to the built-in defaults.
func InitTemplate() []byte { return bytes.Clone(template) }

var builtin = sync.OnceValues(func() (*Policy, *rawPolicy) {
	p, raw, err := parse(SourceBuiltin, template, nil, "", errors.New("no home for built-in defaults"))
	if err != nil {
		panic("policy: built-in defaults are invalid (a bug): " + err.Error())
	}
	p.Source = SourceBuiltin
	return p, raw
})

// Default returns the built-in policy, used when a repository has no
// enclave.yaml: nothing reachable on the network, no extra paths, bounded
// resources. Each call returns a fresh copy the caller may change.
func Default() *Policy {
	p, _, err := parse(SourceBuiltin, template, nil, "", errors.New("no home for built-in defaults"))
	if err != nil {
		panic("policy: built-in defaults are invalid (a bug): " + err.Error())
	}
	sum := sha256.Sum256(template)
	p.Source, p.Hash = SourceBuiltin, hex.EncodeToString(sum[:])
	return p
}

// Parse parses and validates policy text. name is used in error messages
// and as Policy.Source; "~" in paths expands to the current user's home
// directory. Settings the text leaves out take the built-in defaults. A
// problem in the text is reported as an ErrorList of *Error, each with line,
// column, setting and hint; errors.Is(err, ErrInvalid) is true for it.
func Parse(name string, data []byte) (*Policy, error) {
	home, homeErr := os.UserHomeDir()
	_, base := builtin()
	p, _, err := parse(name, data, base, home, homeErr)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Source, p.Hash = name, hex.EncodeToString(sum[:])
	return p, nil
}

// Load reads and parses the policy file at path. Only a regular file of at
// most 1 MiB is read: a FIFO or device planted as enclave.yaml must not hang
// or flood enclave.
func Load(path string) (*Policy, error) {
	data, err := readPolicyFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

func readPolicyFile(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer. It has no effect on regular files.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open policy %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat policy %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open policy %q: %s is not a regular file: %w", path, fi.Mode().Type(), ErrInvalid)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %q: %w", path, err)
	}
	return data, nil
}

// LoadFor returns the policy for the repository at dir: the file explicit
// names if it is not "" (from --policy; it must exist), else dir/enclave.yaml
// if that exists, else the built-in defaults. Any other failure to read
// dir/enclave.yaml (permissions, not a regular file) is an error, never a
// silent fallback to the defaults. Every profile is then checked with
// [Profile.CheckHostPaths] against dir itself.
func LoadFor(dir, explicit string) (*Policy, error) {
	path := explicit
	if path == "" {
		path = filepath.Join(dir, FileName)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			return Default(), nil
		}
	}
	p, err := Load(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("policy for %q: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	var errs ErrorList
	for _, name := range p.profileNames() {
		var l ErrorList
		if errors.As(p.Profiles[name].CheckHostPaths(path, abs), &l) {
			errs = append(errs, l...)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

func (p *Policy) profileNames() []string {
	names := make([]string, 0, len(p.Profiles))
	for n := range p.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
