package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func() store.Store { return store.NewMemory() })
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func() store.Store {
		s, err := store.OpenSQLite(filepath.Join(t.TempDir(), "state", "enclave.db"))
		if err != nil {
			t.Fatalf("OpenSQLite = %v", err)
		}
		return s
	})
}

func TestSQLitePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "enclave.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite = %v", err)
	}
	ctx := context.Background()
	if err := s.AppendRecords(ctx, storetest.MakeRecords(t, s, 0, 3), nil); err != nil {
		t.Fatalf("AppendRecords = %v", err)
	}
	for _, p := range []string{dir, path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode = %v, want no group or other access", p, fi.Mode().Perm())
		}
	}
	s.Close()

	// Reopening keeps the data (migrations are idempotent).
	s, err = store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("reopen = %v", err)
	}
	if n, err := s.RecordCount(ctx); err != nil || n != 3 {
		t.Fatalf("RecordCount after reopen = %d, %v, want 3", n, err)
	}
	s.Close()

	for _, tt := range []struct {
		name    string
		chmod   string
		mode    os.FileMode
		wantErr string
	}{
		{"world-readable file", path, 0o644, "accessible by group or others"},
		{"group-writable dir", dir, 0o770, "writable by group or others"},
	} {
		if err := os.Chmod(tt.chmod, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := store.OpenSQLite(path)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenSQLite(%s) = %v, want error naming the path and %q", tt.name, err, tt.wantErr)
		}
		os.Chmod(path, 0o600)
		os.Chmod(dir, 0o700)
	}
}

func TestSQLiteNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enclave.db")
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Simulate a database written by a future build.
	if err := store.SetSchemaVersionForTest(path, store.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenSQLite(path); err == nil || !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("OpenSQLite(newer schema) = %v, want refusal", err)
	}
}

func TestNewSessionID(t *testing.T) {
	a := store.NewSessionID(time.Date(2026, 11, 24, 15, 4, 5, 0, time.UTC))
	if !strings.HasPrefix(a, "s-20261124-150405-") || len(a) != len("s-20261124-150405-abcdef") {
		t.Errorf("NewSessionID = %q, want s-20261124-150405-xxxxxx", a)
	}
	if b := store.NewSessionID(time.Date(2026, 11, 24, 15, 4, 5, 0, time.UTC)); a == b {
		t.Errorf("NewSessionID twice = %q, %q, want distinct", a, b)
	}
}
