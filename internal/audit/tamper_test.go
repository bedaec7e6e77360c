package audit_test

// These tests play an attacker who can write the SQLite file: they open it
// with plain SQL, outside the store package, change it, and expect Verify
// to name the record and the problem. They depend on the store's schema
// (table records: seq, session, kind, decision, time, data, hashes; table
// checkpoints: id, size, time, note) on purpose: that is what an attacker
// sees.

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite"
)

const tamperN = 300 // events; checkpoints every 100, and 300 at Close

var template struct {
	once  sync.Once
	path  string
	final *audit.Checkpoint
	err   error
}

// buildLog returns the path of a fresh copy of a closed, verifiable log of
// tamperN events, and its final checkpoint. The log is written once (with
// one fsync per event it takes seconds) and copied per test.
func buildLog(t *testing.T) (string, *audit.Checkpoint) {
	t.Helper()
	template.once.Do(func() {
		dir, err := os.MkdirTemp("", "audit-template-")
		if err != nil {
			template.err = err
			return
		}
		template.path = filepath.Join(dir, "enclave.db")
		st, err := store.OpenSQLite(template.path)
		if err != nil {
			template.err = err
			return
		}
		defer st.Close()
		l, err := audit.Open(context.Background(), st, fixedKey(t), audit.Options{CheckpointEvery: 100})
		if err != nil {
			template.err = err
			return
		}
		for i := 0; i < tamperN; i++ {
			if _, err := l.Append(context.Background(), testEvent(i)); err != nil {
				template.err = err
				return
			}
		}
		if template.final, template.err = l.Checkpoint(context.Background()); template.err != nil {
			return
		}
		template.err = l.Close()
	})
	if template.err != nil {
		t.Fatalf("build template log: %v", template.err)
	}
	path := filepath.Join(t.TempDir(), "enclave.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(template.path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path, template.final
}

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	code := m.Run()
	if template.path != "" {
		os.RemoveAll(filepath.Dir(template.path))
	}
	os.Exit(code)
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func execSQL(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func rowData(t *testing.T, db *sql.DB, seq int64) []byte {
	t.Helper()
	var b []byte
	if err := db.QueryRow("SELECT data FROM records WHERE seq = ?", seq).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// rehash recomputes every stored tree hash from the (tampered) events, as
// an attacker covering their tracks would, and returns the new tree.
func rehash(t *testing.T, db *sql.DB) tlog.HashReader {
	t.Helper()
	rows, err := db.Query("SELECT seq, data FROM records ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	var datas [][]byte
	for rows.Next() {
		var seq int64
		var b []byte
		rows.Scan(&seq, &b)
		datas = append(datas, b)
	}
	rows.Close()
	m := map[int64]tlog.Hash{}
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = m[x]
		}
		return out, nil
	})
	for seq, d := range datas {
		hs, err := tlog.StoredHashes(int64(seq), d, r)
		if err != nil {
			t.Fatal(err)
		}
		var blob []byte
		for j, h := range hs {
			m[tlog.StoredHashIndex(0, int64(seq))+int64(j)] = h
			blob = append(blob, h[:]...)
		}
		execSQL(t, db, "UPDATE records SET hashes = ? WHERE seq = ?", blob, seq)
	}
	return r
}

func signNote(t *testing.T, k *audit.Key, text string) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: text}, k)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Run("serial", testVerifyDetectsTampering)
	// Verify cuts long logs into segments checked in parallel; run the
	// same attacks with segments of this small log.
	undo := audit.SetMinParallel(1)
	defer undo()
	t.Run("parallel", testVerifyDetectsTampering)
}

func testVerifyDetectsTampering(t *testing.T) {
	k := fixedKey(t)
	for _, tt := range []struct {
		name      string
		tamper    func(t *testing.T, db *sql.DB, final *audit.Checkpoint)
		published bool // give the final checkpoint as published
		origin    string
		seq       int64
		problem   audit.Problem
		detail    string
	}{
		{
			name: "edit one byte of an event",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				b := rowData(t, db, 150)
				i := strings.Index(string(b), "h150.example")
				b[i] = 'H'
				execSQL(t, db, "UPDATE records SET data = ? WHERE seq = 150", b)
			},
			seq: 150, problem: audit.ProblemEdited, detail: "stored leaf hash",
		},
		{
			name: "edit an event and its leaf hash",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				b := rowData(t, db, 150)
				b[strings.Index(string(b), "h150.example")] = 'H'
				h := tlog.RecordHash(b)
				execSQL(t, db, "UPDATE records SET data = ?, hashes = ? WHERE seq = 150", b, h[:])
			},
			seq: 150, problem: audit.ProblemEdited, detail: "records 150..151",
		},
		{
			name: "edit an event and rewrite the whole stored tree",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				b := rowData(t, db, 150)
				b[strings.Index(string(b), "h150.example")] = 'H'
				execSQL(t, db, "UPDATE records SET data = ? WHERE seq = 150", b)
				rehash(t, db)
			},
			seq: 100, problem: audit.ProblemEdited, detail: "records 100..199 do not hash to the root signed at size 200",
		},
		{
			name: "edit a byte so the event no longer parses",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				b := rowData(t, db, 7)
				b[0] = '['
				execSQL(t, db, "UPDATE records SET data = ? WHERE seq = 7", b)
			},
			seq: 7, problem: audit.ProblemEdited, detail: "no longer parse",
		},
		{
			name: "delete one event",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "DELETE FROM records WHERE seq = 150")
			},
			seq: 150, problem: audit.ProblemMissing,
		},
		{
			name: "delete one event and renumber the rest",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "DELETE FROM records WHERE seq = 150")
				execSQL(t, db, "UPDATE records SET seq = -(seq - 1) WHERE seq > 150")
				execSQL(t, db, "UPDATE records SET seq = -seq WHERE seq < 0")
			},
			seq: 150, problem: audit.ProblemReordered, detail: "written as record 151",
		},
		{
			name: "swap two events",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "UPDATE records SET seq = -1 WHERE seq = 120")
				execSQL(t, db, "UPDATE records SET seq = 120 WHERE seq = 130")
				execSQL(t, db, "UPDATE records SET seq = 130 WHERE seq = -1")
			},
			seq: 120, problem: audit.ProblemReordered, detail: "written as record 130",
		},
		{
			name: "truncate below a checkpoint",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "DELETE FROM records WHERE seq >= 250")
			},
			seq: 250, problem: audit.ProblemTruncated,
		},
		{
			name: "truncate records, retained checkpoints and head",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "DELETE FROM records WHERE seq >= 250")
				execSQL(t, db, "DELETE FROM checkpoints WHERE size > 250")
				execSQL(t, db, "DELETE FROM head")
			},
			seq: 200, problem: audit.ProblemUnsigned, detail: "records 200..249",
		},
		{
			name: "truncate back to a retained checkpoint, caught by a published checkpoint",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "DELETE FROM records WHERE seq >= 200")
				execSQL(t, db, "DELETE FROM checkpoints WHERE size > 200")
				execSQL(t, db, "DELETE FROM head")
			},
			published: true,
			seq:       200, problem: audit.ProblemTruncated,
		},
		{
			name: "append a forged event with consistent hashes",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				ev := testEvent(999)
				leaf, err := audit.EncodeLeaf(tamperN, &ev)
				if err != nil {
					t.Fatal(err)
				}
				// Compute the tree hashes as a forger would.
				var recs []store.Record
				rows, _ := db.Query("SELECT seq, data FROM records ORDER BY seq")
				for rows.Next() {
					var r store.Record
					rows.Scan(&r.Seq, &r.Data)
					recs = append(recs, r)
				}
				rows.Close()
				recs = append(recs, store.Record{Seq: tamperN, Data: leaf})
				var blob []byte
				m := map[int64]tlog.Hash{}
				hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
					out := make([]tlog.Hash, len(idx))
					for i, x := range idx {
						out[i] = m[x]
					}
					return out, nil
				})
				for _, r := range recs {
					hs, _ := tlog.StoredHashes(r.Seq, r.Data, hr)
					for j, h := range hs {
						m[tlog.StoredHashIndex(0, r.Seq)+int64(j)] = h
					}
					if r.Seq == tamperN {
						for _, h := range hs {
							blob = append(blob, h[:]...)
						}
					}
				}
				execSQL(t, db, "INSERT INTO records(seq, session, kind, decision, time, data, hashes) VALUES (?, ?, ?, ?, ?, ?, ?)",
					tamperN, ev.Session, ev.Kind, ev.Decision, ev.Time.UnixNano(), leaf, blob)
			},
			seq: tamperN, problem: audit.ProblemUnsigned,
		},
		{
			name: "rewrite history and checkpoints with the key, caught by a published checkpoint",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				b := rowData(t, db, 42)
				b[strings.Index(string(b), "h42.example")] = 'H'
				execSQL(t, db, "UPDATE records SET data = ? WHERE seq = 42", b)
				rehash(t, db)
				execSQL(t, db, "DELETE FROM checkpoints")
				// The forger holds the key and re-signs the rewritten tree.
				root, err := tlog.TreeHash(tamperN, rehash(t, db))
				if err != nil {
					t.Fatal(err)
				}
				note := signNote(t, k, string(audit.FormatCheckpoint("enclave-test", tlog.Tree{N: tamperN, Hash: root})))
				execSQL(t, db, "UPDATE head SET note = ?", note)
			},
			published: true,
			seq:       -1, problem: audit.ProblemFork,
		},
		{
			name: "replace a checkpoint's root, keeping its signature",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				var note []byte
				db.QueryRow("SELECT note FROM checkpoints WHERE size = 200").Scan(&note)
				lines := strings.SplitN(string(note), "\n", 4)
				lines[2] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
				execSQL(t, db, "UPDATE checkpoints SET note = ? WHERE size = 200", strings.Join(lines, "\n"))
			},
			seq: -1, problem: audit.ProblemBadSignature,
		},
		{
			name: "replace a checkpoint with one signed by another key",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				evil := otherKey(t, "enclave-test") // same name, different key
				execSQL(t, db, "UPDATE checkpoints SET note = ? WHERE size = 100", signNote(t, evil, "enclave-test\n100\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
			},
			seq: -1, problem: audit.ProblemUnknownKey,
		},
		{
			name: "a checkpoint of another log under the same key",
			tamper: func(t *testing.T, db *sql.DB, final *audit.Checkpoint) {
				text := string(audit.FormatCheckpoint("other-log", final.Tree))
				execSQL(t, db, "INSERT INTO checkpoints(size, time, note) VALUES (300, 0, ?)", signNote(t, k, text))
			},
			origin: "enclave-test",
			seq:    -1, problem: audit.ProblemWrongLog,
		},
		{
			name: "a signed checkpoint forking the log",
			tamper: func(t *testing.T, db *sql.DB, final *audit.Checkpoint) {
				tr := final.Tree
				tr.Hash[0] ^= 1
				execSQL(t, db, "INSERT INTO checkpoints(size, time, note) VALUES (300, 0, ?)", signNote(t, k, string(audit.FormatCheckpoint("enclave-test", tr))))
			},
			seq: -1, problem: audit.ProblemFork,
		},
		{
			name: "change a query column",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "UPDATE records SET decision = 'allow' WHERE seq = 99")
			},
			seq: 99, problem: audit.ProblemIndex, detail: "decision",
		},
		{
			name: "corrupt a stored tree node",
			tamper: func(t *testing.T, db *sql.DB, _ *audit.Checkpoint) {
				execSQL(t, db, "UPDATE records SET hashes = substr(hashes, 1, 32) || zeroblob(32) || substr(hashes, 65) WHERE seq = 63")
			},
			seq: 62, problem: audit.ProblemEdited, detail: "level-1",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, final := buildLog(t)
			db := rawDB(t, path)
			tt.tamper(t, db, final)
			db.Close()
			st, err := store.OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			v, err := audit.NewVerifier(tt.origin, k.Public)
			if err != nil {
				t.Fatal(err)
			}
			opts := audit.VerifyOptions{Verifier: v}
			if tt.published {
				opts.Published = [][]byte{final.Note}
			}
			rep, err := audit.Verify(context.Background(), st, opts)
			var ve *audit.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %+v, %v, want *VerifyError", rep, err)
			}
			if !errors.Is(err, audit.ErrIntegrity) {
				t.Errorf("Verify error does not wrap ErrIntegrity")
			}
			if ve.Seq != tt.seq || ve.Problem != tt.problem || !strings.Contains(ve.Detail, tt.detail) {
				t.Errorf("Verify = %q; want seq %d, problem %s, detail containing %q", err, tt.seq, tt.problem, tt.detail)
			}
			t.Logf("Verify: %v", err)
		})
	}
}

func TestVerifyUntamperedAndPublished(t *testing.T) {
	path, final := buildLog(t)
	st, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{Verifier: verifier(t, fixedKey(t)), Published: [][]byte{final.Note}})
	if err != nil || rep.Records != tamperN || rep.Latest.Tree.N != tamperN {
		t.Fatalf("Verify(untouched) = %+v, %v", rep, err)
	}
}

func TestOpenRefusesTornTail(t *testing.T) {
	// A partially written last record (as a torn write would leave it) is
	// reported by Open, which refuses to write on top of it.
	st, path := openSQLite(t)
	k := fixedKey(t)
	l := openLog(t, st, k, audit.Options{CheckpointEvery: 100})
	for i := 0; i < 150; i++ {
		l.Append(context.Background(), testEvent(i))
	}
	// Crash: no Close. Tear the last record.
	st.Close()
	db := rawDB(t, path)
	execSQL(t, db, "UPDATE records SET data = substr(data, 1, 40) WHERE seq = 149")
	db.Close()
	st2, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	_, err = audit.Open(context.Background(), st2, k, audit.Options{})
	var ve *audit.VerifyError
	if !errors.As(err, &ve) || ve.Seq != 149 || ve.Problem != audit.ProblemEdited {
		t.Fatalf("Open on a torn tail = %v, want VerifyError at record 149", err)
	}
	_, err = audit.Verify(context.Background(), st2, audit.VerifyOptions{Verifier: verifier(t, k)})
	if !errors.As(err, &ve) || ve.Seq != 149 {
		t.Fatalf("Verify on a torn tail = %v, want record 149", err)
	}
	if n, _ := st2.RecordCount(context.Background()); n != 150 {
		t.Errorf("refused Open wrote records: count %d, want 150", n)
	}
}

func chmod(path string, mode os.FileMode) error { return os.Chmod(path, mode) }
