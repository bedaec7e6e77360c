package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite is the embedded store: one database file (plus its WAL) in a
// private directory. Writes go through a single connection and BEGIN
// IMMEDIATE transactions, so several processes may share one file: each
// write is serialised by SQLite's lock and AppendRecords detects a moved
// log end (ErrConflict). Commits are durable (synchronous=FULL).
type SQLite struct {
	path string
	w    *sql.DB // one connection: every write
	r    *sql.DB // readers (WAL lets them run beside the writer)

	mu     sync.Mutex // serialises transactions on w within this process
	closed atomic.Bool
}

var _ Store = (*SQLite)(nil)

// migrations[i] moves the schema from version i to i+1. Never edit a
// released entry: append a new one.
var migrations = []string{
	`CREATE TABLE records (
		seq      INTEGER PRIMARY KEY,
		session  TEXT    NOT NULL,
		kind     TEXT    NOT NULL,
		decision TEXT    NOT NULL,
		time     INTEGER NOT NULL,
		data     BLOB    NOT NULL,
		hashes   BLOB    NOT NULL
	);
	CREATE INDEX records_session ON records(session, seq);
	CREATE TABLE checkpoints (
		id   INTEGER PRIMARY KEY,
		size INTEGER NOT NULL,
		time INTEGER NOT NULL,
		note BLOB    NOT NULL
	);
	CREATE INDEX checkpoints_size ON checkpoints(size, id);
	CREATE TABLE sessions (
		id            TEXT PRIMARY KEY,
		username      TEXT    NOT NULL,
		command       TEXT    NOT NULL,
		dir           TEXT    NOT NULL,
		workspace     TEXT    NOT NULL,
		branch        TEXT    NOT NULL,
		base_commit   TEXT    NOT NULL,
		policy_source TEXT    NOT NULL,
		policy_hash   TEXT    NOT NULL,
		profile       TEXT    NOT NULL,
		started       INTEGER NOT NULL,
		ended         INTEGER,
		exit_code     INTEGER,
		state         TEXT    NOT NULL,
		blocked       INTEGER NOT NULL,
		bytes_up      INTEGER NOT NULL,
		bytes_down    INTEGER NOT NULL,
		files_changed INTEGER NOT NULL,
		summary       BLOB
	);
	CREATE INDEX sessions_started ON sessions(started, id);`,
	// The head checkpoint, replaced with every batch of records.
	`CREATE TABLE head (
		id   INTEGER PRIMARY KEY CHECK (id = 1),
		size INTEGER NOT NULL,
		time INTEGER NOT NULL,
		note BLOB    NOT NULL
	);`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

// OpenSQLite opens (creating if needed) the database at path. The
// directory is created 0700 and the file 0600; an existing directory or
// file that group or others can write, or a file they can read, is
// refused, because the audit log and session records live here. The schema
// is migrated forward; a database written by a newer build is refused.
func OpenSQLite(path string) (*SQLite, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	} else if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("open store %q: directory %s is writable by group or others (mode %v); chmod 700 it", path, dir, fi.Mode().Perm())
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open store %q: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("open store %q: file is accessible by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	s := &SQLite{path: path}
	if s.w, err = sql.Open("sqlite", dsn); err != nil {
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetConnMaxIdleTime(0)
	// Readers map the file: a full scan (verification) then costs no
	// read syscall per page.
	rq := url.Values{}
	for k, v := range q {
		rq[k] = v
	}
	rq.Add("_pragma", "mmap_size(1073741824)")
	rdsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + rq.Encode()
	if s.r, err = sql.Open("sqlite", rdsn); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	s.r.SetMaxOpenConns(4)
	if err := s.migrate(); err != nil {
		s.w.Close()
		s.r.Close()
		return nil, fmt.Errorf("open store %q: %w", path, err)
	}
	return s, nil
}

// Path returns the database file path.
func (s *SQLite) Path() string { return s.path }

func (s *SQLite) migrate() error {
	ctx := context.Background()
	var mode string
	if err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want wal", mode)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this build's %d; upgrade enclave", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
		// PRAGMA takes no bound parameters; v is an int we control.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	return tx.Commit()
}

func (s *SQLite) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// insertChunk is the number of rows per INSERT statement: fewer statements
// per batch is most of the group-commit speed.
const insertChunk = 64

func (s *SQLite) AppendRecords(ctx context.Context, recs []Record, head *Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return checkBatch(recs, head, 0)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append records: begin: %w", err)
	}
	defer tx.Rollback()
	end, err := recordCount(ctx, tx)
	if err != nil {
		return fmt.Errorf("append records: %w", err)
	}
	if err := checkBatch(recs, head, end); err != nil {
		return err
	}
	var stmtFull *sql.Stmt
	args := make([]any, 0, insertChunk*7)
	var hashBuf []byte
	for len(recs) > 0 {
		n := min(len(recs), insertChunk)
		args = args[:0]
		for i := range recs[:n] {
			r := &recs[i]
			start := len(hashBuf)
			for _, h := range r.Hashes {
				hashBuf = append(hashBuf, h[:]...)
			}
			args = append(args, r.Seq, r.Session, r.Kind, r.Decision, r.Time.UnixNano(), r.Data, hashBuf[start:len(hashBuf):len(hashBuf)])
		}
		var stmt *sql.Stmt
		if n == insertChunk && stmtFull != nil {
			stmt = stmtFull
		} else {
			q := "INSERT INTO records(seq, session, kind, decision, time, data, hashes) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?),", n), ",")
			if stmt, err = tx.PrepareContext(ctx, q); err != nil {
				return fmt.Errorf("append records: prepare: %w", err)
			}
			if n == insertChunk {
				stmtFull = stmt
			} else {
				defer stmt.Close()
			}
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("append records %d..%d: %w", recs[0].Seq, recs[n-1].Seq, err)
		}
		recs = recs[n:]
		hashBuf = hashBuf[:0:0]
	}
	if stmtFull != nil {
		defer stmtFull.Close()
	}
	if head != nil {
		if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO head(id, size, time, note) VALUES (1, ?, ?, ?)", head.Size, head.Time.UnixNano(), head.Note); err != nil {
			return fmt.Errorf("append records: head checkpoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append records: commit: %w", err)
	}
	return nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func recordCount(ctx context.Context, q queryer) (int64, error) {
	var n sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT MAX(seq) FROM records").Scan(&n); err != nil {
		return 0, fmt.Errorf("count records: %w", err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

func (s *SQLite) RecordCount(ctx context.Context) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	return recordCount(ctx, s.r)
}

func (s *SQLite) Records(ctx context.Context, f Filter, fn func(Record) error) error {
	if err := s.check(); err != nil {
		return err
	}
	var where []string
	var args []any
	where = append(where, "seq >= ?")
	args = append(args, max(f.From, 0))
	if f.To > 0 {
		where = append(where, "seq < ?")
		args = append(args, f.To)
	}
	if f.Session != "" {
		where = append(where, "session = ?")
		args = append(args, f.Session)
	}
	if f.Decision != "" {
		where = append(where, "decision = ?")
		args = append(args, f.Decision)
	}
	if len(f.Kinds) > 0 {
		where = append(where, "kind IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.Kinds)), ",")+")")
		for _, k := range f.Kinds {
			args = append(args, k)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		where = append(where, "time < ?")
		args = append(args, f.Until.UnixNano())
	}
	q := "SELECT seq, session, kind, decision, time, data, hashes FROM records WHERE " +
		strings.Join(where, " AND ") + " ORDER BY seq"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read records: %w", err)
	}
	defer rows.Close()
	var r Record
	var t int64
	var data, hb sql.RawBytes // valid until the next row: fn must copy what it keeps
	for rows.Next() {
		if err := rows.Scan(&r.Seq, &r.Session, &r.Kind, &r.Decision, &t, &data, &hb); err != nil {
			return fmt.Errorf("read records: %w", err)
		}
		r.Time = time.Unix(0, t).UTC()
		r.Data = data
		if len(hb)%tlog.HashSize != 0 {
			return fmt.Errorf("read record %d: stored hashes are %d bytes, not a multiple of %d", r.Seq, len(hb), tlog.HashSize)
		}
		r.Hashes = r.Hashes[:0]
		for i := 0; i < len(hb); i += tlog.HashSize {
			r.Hashes = append(r.Hashes, tlog.Hash(hb[i:i+tlog.HashSize]))
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read records: %w", err)
	}
	return nil
}

func (s *SQLite) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(indexes))
	if len(indexes) == 0 {
		return out, nil
	}
	want := make(map[int64][]int, len(indexes)) // seq -> positions in out
	args := make([]any, 0, len(indexes))
	for i, x := range indexes {
		if x < 0 {
			return nil, fmt.Errorf("read stored hash %d: negative index", x)
		}
		seq, _ := RecordForHash(x)
		if _, ok := want[seq]; !ok {
			args = append(args, seq)
		}
		want[seq] = append(want[seq], i)
	}
	q := "SELECT seq, hashes FROM records WHERE seq IN (" + strings.TrimSuffix(strings.Repeat("?,", len(args)), ",") + ")"
	rows, err := s.r.Query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("read stored hashes: %w", err)
	}
	defer rows.Close()
	found := 0
	for rows.Next() {
		var seq int64
		var hb []byte
		if err := rows.Scan(&seq, &hb); err != nil {
			return nil, fmt.Errorf("read stored hashes: %w", err)
		}
		for _, i := range want[seq] {
			_, pos := RecordForHash(indexes[i])
			if (pos+1)*tlog.HashSize > len(hb) {
				return nil, fmt.Errorf("read stored hash %d: record %d holds only %d hashes", indexes[i], seq, len(hb)/tlog.HashSize)
			}
			out[i] = tlog.Hash(hb[pos*tlog.HashSize : (pos+1)*tlog.HashSize])
			found++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stored hashes: %w", err)
	}
	if found != len(indexes) {
		for seq, is := range want {
			var one int
			if err := s.r.QueryRow("SELECT 1 FROM records WHERE seq = ?", seq).Scan(&one); errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("read stored hash %d: record %d is not in the log", indexes[is[0]], seq)
			}
		}
		return nil, fmt.Errorf("read stored hashes: found %d of %d", found, len(indexes))
	}
	return out, nil
}

func (s *SQLite) SaveCheckpoint(ctx context.Context, c Checkpoint) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return 0, err
	}
	res, err := s.w.ExecContext(ctx, "INSERT INTO checkpoints(size, time, note) VALUES (?, ?, ?)", c.Size, c.Time.UnixNano(), c.Note)
	if err != nil {
		return 0, fmt.Errorf("save checkpoint of size %d: %w", c.Size, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("save checkpoint of size %d: %w", c.Size, err)
	}
	return id, nil
}

func (s *SQLite) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, "SELECT id, size, time, note, 0 FROM checkpoints UNION ALL SELECT 0, size, time, note, 1 FROM head")
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var t int64
		if err := rows.Scan(&c.ID, &c.Size, &t, &c.Note, &c.Head); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", err)
		}
		c.Time = time.Unix(0, t).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	sortCheckpoints(out)
	return out, nil
}

const sessionCols = "id, username, command, dir, workspace, branch, base_commit, policy_source, policy_hash, profile, started, ended, exit_code, state, blocked, bytes_up, bytes_down, files_changed, summary"

func sessionArgs(s *Session) ([]any, error) {
	cmd, err := json.Marshal(s.Command)
	if err != nil {
		return nil, err
	}
	var ended, exit any
	if s.Ended != nil {
		ended = s.Ended.UnixNano()
	}
	if s.ExitCode != nil {
		exit = *s.ExitCode
	}
	var summary any
	if s.Summary != nil {
		summary = []byte(s.Summary)
	}
	return []any{s.ID, s.User, string(cmd), s.Dir, s.Workspace, s.Branch, s.BaseCommit, s.PolicySource, s.PolicyHash, s.Profile,
		s.Started.UnixNano(), ended, exit, s.State, s.Blocked, s.BytesUp, s.BytesDown, s.FilesChanged, summary}, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanSession(sc scanner) (*Session, error) {
	var s Session
	var cmd string
	var started int64
	var ended, exit sql.NullInt64
	var summary []byte
	if err := sc.Scan(&s.ID, &s.User, &cmd, &s.Dir, &s.Workspace, &s.Branch, &s.BaseCommit, &s.PolicySource, &s.PolicyHash, &s.Profile,
		&started, &ended, &exit, &s.State, &s.Blocked, &s.BytesUp, &s.BytesDown, &s.FilesChanged, &summary); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(cmd), &s.Command); err != nil {
		return nil, fmt.Errorf("session %s: command column: %w", s.ID, err)
	}
	s.Started = time.Unix(0, started).UTC()
	if ended.Valid {
		t := time.Unix(0, ended.Int64).UTC()
		s.Ended = &t
	}
	if exit.Valid {
		x := int(exit.Int64)
		s.ExitCode = &x
	}
	if summary != nil {
		s.Summary = json.RawMessage(summary)
	}
	return &s, nil
}

func (s *SQLite) CreateSession(ctx context.Context, sess *Session) error {
	if err := validSession(sess); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	args, err := sessionArgs(sess)
	if err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	defer tx.Rollback()
	var one int
	switch err := tx.QueryRowContext(ctx, "SELECT 1 FROM sessions WHERE id = ?", sess.ID).Scan(&one); {
	case err == nil:
		return fmt.Errorf("create session %s: %w", sess.ID, ErrExists)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	q := "INSERT INTO sessions(" + sessionCols + ") VALUES (" + strings.TrimSuffix(strings.Repeat("?,", len(args)), ",") + ")"
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	return nil
}

func (s *SQLite) UpdateSession(ctx context.Context, sess *Session) error {
	if err := validSession(sess); err != nil {
		return fmt.Errorf("update session: %w", err)
	}
	args, err := sessionArgs(sess)
	if err != nil {
		return fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	cols := strings.Split(sessionCols, ", ")[1:]
	q := "UPDATE sessions SET " + strings.Join(cols, " = ?, ") + " = ? WHERE id = ?"
	res, err := s.w.ExecContext(ctx, q, append(args[1:], sess.ID)...)
	if err != nil {
		return fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update session %s: %w", sess.ID, err)
	} else if n == 0 {
		return fmt.Errorf("update session %s: %w", sess.ID, ErrNotFound)
	}
	return nil
}

func (s *SQLite) GetSession(ctx context.Context, id string) (*Session, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	sess, err := scanSession(s.r.QueryRowContext(ctx, "SELECT "+sessionCols+" FROM sessions WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get session %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return sess, nil
}

func (s *SQLite) ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	q := "SELECT " + sessionCols + " FROM sessions WHERE 1=1"
	var args []any
	if f.State != "" {
		q += " AND state = ?"
		args = append(args, f.State)
	}
	if f.User != "" {
		q += " AND username = ?"
		args = append(args, f.User)
	}
	q += " ORDER BY started DESC, id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []*Session
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		out = append(out, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// Close checkpoints the WAL into the main file and closes the database.
func (s *SQLite) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	s.closed.Store(true)
	err1 := s.r.Close()
	err2 := s.w.Close()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("close store %q: %w", s.path, err)
	}
	return nil
}
