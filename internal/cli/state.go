package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
)

// stateDir is where Enclave keeps its database, keys and session copies:
// $ENCLAVE_STATE_DIR, else $XDG_STATE_HOME/enclave, else
// ~/.local/state/enclave. It is created 0700. The sandbox never mounts it.
func (e *Env) stateDir() (string, error) {
	dir, err := e.stateDirPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create state directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone; tighten it, since
	// it holds the signing key and the session copies.
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("secure state directory: %w", err)
	}
	return dir, nil
}

// stateDirPath is stateDir without creating it.
func (e *Env) stateDirPath() (string, error) {
	dir := e.getenv("ENCLAVE_STATE_DIR")
	if dir == "" {
		if x := e.getenv("XDG_STATE_HOME"); x != "" {
			dir = filepath.Join(x, "enclave")
		} else {
			home := e.getenv("HOME")
			if home == "" {
				var err error
				if home, err = os.UserHomeDir(); err != nil {
					return "", fmt.Errorf("find state directory: %w", err)
				}
			}
			dir = filepath.Join(home, ".local", "state", "enclave")
		}
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("state directory %q is not an absolute path", dir)
	}
	return dir, nil
}

// stateExists reports whether the state directory has been set up (its
// signing key exists), so that opening it creates nothing.
func (e *Env) stateExists() bool {
	dir, err := e.stateDirPath()
	if err != nil {
		return false
	}
	_, err = os.Lstat(filepath.Join(dir, keyPrivate))
	return err == nil
}

// stateOpening is a state being opened while its caller does other work.
type stateOpening struct {
	e     *Env
	ctx   context.Context
	c     chan stateResult // nil when not started early
	taken bool
}

type stateResult struct {
	st  *state
	err error
}

// openStateEarly starts opening a state directory that is already set up
// (opening it then creates nothing), so that the work overlaps the
// caller's. take returns it, opening it only then if it was not set up, so
// that a new state directory is created only when the caller gets that far;
// discard closes it if take was never called.
func (e *Env) openStateEarly(ctx context.Context) *stateOpening {
	p := &stateOpening{e: e, ctx: ctx}
	if e.stateExists() {
		p.c = make(chan stateResult, 1)
		go func() {
			st, err := e.openState(ctx)
			p.c <- stateResult{st, err}
		}()
	}
	return p
}

func (p *stateOpening) take() (*state, error) {
	p.taken = true
	if p.c == nil {
		return p.e.openState(p.ctx)
	}
	r := <-p.c
	return r.st, r.err
}

func (p *stateOpening) discard() {
	if p.taken || p.c == nil {
		return
	}
	if r := <-p.c; r.st != nil {
		r.st.Close()
	}
}

// state is the opened state directory: the store and, for commands that
// write, the audit log.
type state struct {
	dir   string
	store store.Store
	log   *audit.Log // nil when opened read-only
}

const (
	dbName     = "enclave.db"
	keyPrivate = "keys/audit.key"
	keyPublic  = "keys/audit.pub"
)

// openStore opens the state for reading.
func (e *Env) openStore(ctx context.Context) (*state, error) {
	dir, err := e.stateDir()
	if err != nil {
		return nil, err
	}
	st, err := store.OpenSQLite(filepath.Join(dir, dbName))
	if err != nil {
		return nil, fmt.Errorf("open state database: %w", err)
	}
	return &state{dir: dir, store: st}, nil
}

// openState opens the state for writing: the store and the audit log with
// its signing key, which is created on first use.
func (e *Env) openState(ctx context.Context) (*state, error) {
	s, err := e.openStore(ctx)
	if err != nil {
		return nil, err
	}
	key, err := e.signingKey(s.dir)
	if err != nil {
		s.Close()
		return nil, err
	}
	l, err := audit.Open(ctx, s.store, key, audit.Options{})
	if err != nil {
		s.Close()
		return nil, withHint(fmt.Errorf("open audit log: %w", err), "run \"enclave audit verify\" to see what is wrong with the log")
	}
	s.log = l
	return s, nil
}

// signingKey loads the audit signing key, creating it if there is none.
func (e *Env) signingKey(dir string) (*audit.Key, error) {
	priv := filepath.Join(dir, keyPrivate)
	if _, err := os.Lstat(priv); errors.Is(err, fs.ErrNotExist) {
		host, _ := os.Hostname()
		if host == "" {
			host = "localhost"
		}
		name := strings.NewReplacer("+", "-", " ", "-").Replace(currentUser()+"@"+host) + "/enclave-audit"
		if _, err := audit.GenerateKey(priv, filepath.Join(dir, keyPublic), name); err != nil {
			return nil, err
		}
		fmt.Fprintf(e.Stderr, "enclave: created the audit log signing key %s (public key: %s)\n", priv, filepath.Join(dir, keyPublic))
	}
	return audit.LoadKey(priv)
}

// checkpoint signs the audit log's current tree head.
func (s *state) checkpoint(ctx context.Context) error {
	if s.log == nil {
		return nil
	}
	_, err := s.log.Checkpoint(ctx)
	return err
}

func (s *state) Close() error {
	var err error
	if s.log != nil {
		err = s.log.Close()
	}
	if cerr := s.store.Close(); err == nil {
		err = cerr
	}
	return err
}
