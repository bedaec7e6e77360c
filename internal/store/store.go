// Package store persists Enclave's state: the audit log's records, tree
// hashes and signed checkpoints, and the sessions table.
//
// Everything goes through the [Store] interface, so the rest of Enclave never
// sees SQL. Two implementations live here: [OpenSQLite], the embedded default
// (pure Go, WAL, synchronous=FULL, one writer), and [NewMemory], for tests.
// A PostgreSQL store for the team server will implement the same interface
// and must pass the same conformance suite, storetest.Run.
//
// # Audit records
//
// The store does not interpret audit records: a [Record] is the canonical
// event bytes (the Merkle leaf) plus a few columns copied out for filtering,
// and the tree hashes that appending this record adds to the log
// (golang.org/x/mod/sumdb/tlog.StoredHashes). Record n adds the stored hashes
// of every tree node that record n completes, that is node (level L,
// index n>>L) for L = 0 and every L for which the low L bits of n are all
// ones. Keeping them with the record lets one row per event serve both
// reads and [Store.ReadHashes], which makes a Store a tlog.HashReader.
//
// The store guarantees atomicity and order: [Store.AppendRecords] writes a
// whole batch or nothing, only at the current end of the log, and returns
// only once the batch is durable. The batch carries the signed checkpoint
// of the log it produces (the head), stored in the same transaction, so no
// acknowledged record is ever left without a signature over it. It does not guarantee integrity against
// someone who can write the database file; that is the audit package's job
// (signed checkpoints and verification).
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Errors returned by every Store; wrap-compatible with errors.Is.
var (
	// ErrNotFound: no session with that ID.
	ErrNotFound = errors.New("not found")
	// ErrExists: a session with that ID already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: AppendRecords was asked to write at a sequence number
	// that is not the current end of the log (another writer got there
	// first, or the caller's view is stale). Nothing was written.
	ErrConflict = errors.New("append conflict: log end moved")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// Store is the persistence seam. Implementations are safe for concurrent
// use by multiple goroutines.
type Store interface {
	// AppendRecords appends recs atomically, in one transaction: either all
	// records and their hashes are stored and durable when it returns nil,
	// or none is. recs must be non-empty, recs[0].Seq must equal
	// RecordCount, sequence numbers must be consecutive, and each record
	// must carry exactly the number of stored hashes record Seq adds
	// (see [HashesAdded]). If head is non-nil it must have Size equal to
	// the log size after the batch; it replaces the stored head checkpoint
	// in the same transaction. A batch not starting at the end of the log
	// fails with an error wrapping ErrConflict; other malformed batches
	// fail with a descriptive error. The store keeps the slices it is given
	// only for the duration of the call.
	AppendRecords(ctx context.Context, recs []Record, head *Checkpoint) error

	// RecordCount returns the number of records, which is one more than the
	// highest sequence number stored (0 for an empty log).
	RecordCount(ctx context.Context) (int64, error)

	// Records calls fn for each record matching f, in increasing sequence
	// order, and stops at the first error fn returns, which it returns.
	// fn must not call back into the store's write methods; the Record it
	// receives, Data and Hashes included, is valid only during the call:
	// copy what you keep.
	Records(ctx context.Context, f Filter, fn func(Record) error) error

	// ReadHashes returns the stored hashes at the given tlog stored-hash
	// indexes, in the same order. It implements tlog.HashReader. Asking for
	// a hash the log does not hold is an error.
	ReadHashes(indexes []int64) ([]tlog.Hash, error)

	// SaveCheckpoint stores a signed checkpoint and returns its ID. The
	// store does not check signatures.
	SaveCheckpoint(ctx context.Context, c Checkpoint) (int64, error)

	// Checkpoints returns every stored checkpoint ordered by Size, then ID,
	// and the head checkpoint (Head true, ID 0) after those of its size.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)

	// CreateSession stores a new session; ErrExists if the ID is taken.
	CreateSession(ctx context.Context, s *Session) error
	// UpdateSession replaces a stored session; ErrNotFound if absent.
	UpdateSession(ctx context.Context, s *Session) error
	// GetSession returns one session; ErrNotFound if absent.
	GetSession(ctx context.Context, id string) (*Session, error)
	// ListSessions returns sessions matching f, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error)

	// Close releases the store; further calls return ErrClosed.
	Close() error
}

// Record is one audit log entry as stored.
type Record struct {
	// Seq is the record's position in the log, from 0 (the tlog record
	// index).
	Seq int64
	// Session, Kind, Decision and Time are copied out of the event for
	// filtering. They are not covered by the Merkle tree: Data is.
	Session  string
	Kind     string
	Decision string
	Time     time.Time
	// Data is the canonical event encoding: the exact bytes hashed as the
	// Merkle leaf.
	Data []byte
	// Hashes are the tlog stored hashes this record adds, in stored-hash
	// index order, starting at tlog.StoredHashIndex(0, Seq).
	Hashes []tlog.Hash
}

// HashesAdded is the number of stored hashes record n adds to a tlog tree:
// one for the leaf plus one per trailing one bit of n.
func HashesAdded(n int64) int {
	return 1 + bits.TrailingZeros64(^uint64(n))
}

// RecordForHash maps a tlog stored-hash index to the record that added it
// and the hash's position within that record's Hashes.
func RecordForHash(index int64) (seq int64, pos int) {
	level, n := tlog.SplitStoredHashIndex(index)
	return (n+1)<<level - 1, level
}

// Filter selects records. The zero Filter selects every record.
type Filter struct {
	// From is the first sequence number included.
	From int64
	// To, when positive, is the first sequence number excluded.
	To int64
	// Session, when set, selects one session's records.
	Session string
	// Kinds, when non-empty, selects records of these kinds.
	Kinds []string
	// Decision, when set, selects records with this decision.
	Decision string
	// Since and Until, when non-zero, select Time >= Since and Time < Until.
	Since, Until time.Time
	// Limit, when positive, caps the number of records returned.
	Limit int
}

// Match reports whether r passes the filter; implementations that cannot
// push a condition down to their query language use it.
func (f *Filter) Match(r *Record) bool {
	if r.Seq < f.From || (f.To > 0 && r.Seq >= f.To) {
		return false
	}
	if f.Session != "" && r.Session != f.Session {
		return false
	}
	if f.Decision != "" && r.Decision != f.Decision {
		return false
	}
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.Time.Before(f.Until) {
		return false
	}
	if len(f.Kinds) > 0 {
		for _, k := range f.Kinds {
			if r.Kind == k {
				return true
			}
		}
		return false
	}
	return true
}

// Checkpoint is a signed tree head as stored.
type Checkpoint struct {
	// ID is assigned by SaveCheckpoint; 0 for the head.
	ID int64
	// Head marks the head checkpoint: the one written with the last batch
	// of records, replaced by the next.
	Head bool
	// Size is the tree size the checkpoint signs (copied out of Note).
	Size int64
	// Time is when the checkpoint was saved (not signed).
	Time time.Time
	// Note is the signed note text, verbatim.
	Note []byte
}

// Session states used by the core. The field is a free string so later
// issues can add states ("needs-review", "approved", ...).
const (
	StateRunning = "running"
	StateExited  = "exited"
	StateFailed  = "failed"
)

// Session is one agent run.
type Session struct {
	// ID is short and sortable by start time; see [NewSessionID].
	ID           string
	User         string
	Command      []string
	Dir          string // the source repository or directory
	Workspace    string // the session copy the agent works in
	Branch       string
	BaseCommit   string
	PolicySource string
	PolicyHash   string
	Profile      string
	Started      time.Time
	Ended        *time.Time
	ExitCode     *int
	State        string
	Blocked      int
	BytesUp      int64
	BytesDown    int64
	FilesChanged int
	// Summary holds later fields as a JSON document; nil or valid JSON.
	Summary json.RawMessage
}

// SessionFilter selects sessions. The zero value selects all.
type SessionFilter struct {
	State string
	User  string
	// Limit, when positive, caps the number returned (newest first).
	Limit int
}

// Match reports whether s passes the filter.
func (f *SessionFilter) Match(s *Session) bool {
	return (f.State == "" || s.State == f.State) && (f.User == "" || s.User == f.User)
}

// NewSessionID returns an ID of the form "s-20261124-150405-a1b2c3": the
// UTC start time to the second, then 24 random bits. IDs sort by start
// time; two sessions started in the same second collide with probability
// 2^-24, and CreateSession reports ErrExists so the caller can draw again.
func NewSessionID(t time.Time) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("store: crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return "s-" + t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// checkBatch validates the shape of an AppendRecords batch against the
// current end of the log.
func checkBatch(recs []Record, head *Checkpoint, end int64) error {
	if len(recs) == 0 {
		return errors.New("append records: empty batch")
	}
	if head != nil && head.Size != recs[len(recs)-1].Seq+1 {
		return fmt.Errorf("append records: head checkpoint has size %d, batch ends the log at %d", head.Size, recs[len(recs)-1].Seq+1)
	}
	if head != nil && len(head.Note) == 0 {
		return errors.New("append records: head checkpoint has no note")
	}
	if recs[0].Seq != end {
		return fmt.Errorf("append records at seq %d, log ends at %d: %w", recs[0].Seq, end, ErrConflict)
	}
	for i := range recs {
		r := &recs[i]
		if r.Seq != end+int64(i) {
			return fmt.Errorf("append records: record %d of batch has seq %d, want %d", i, r.Seq, end+int64(i))
		}
		if want := HashesAdded(r.Seq); len(r.Hashes) != want {
			return fmt.Errorf("append records: record %d carries %d stored hashes, want %d", r.Seq, len(r.Hashes), want)
		}
		if len(r.Data) == 0 {
			return fmt.Errorf("append records: record %d has no data", r.Seq)
		}
	}
	return nil
}

// sortCheckpoints orders by size, then retained before head, then ID.
func sortCheckpoints(cps []Checkpoint) {
	sort.SliceStable(cps, func(i, j int) bool {
		a, b := cps[i], cps[j]
		if a.Size != b.Size {
			return a.Size < b.Size
		}
		if a.Head != b.Head {
			return b.Head
		}
		return a.ID < b.ID
	})
}

func validSession(s *Session) error {
	if s == nil || s.ID == "" {
		return errors.New("session has no ID")
	}
	if len(s.Summary) > 0 && !json.Valid(s.Summary) {
		return fmt.Errorf("session %s: summary is not valid JSON", s.ID)
	}
	return nil
}

func cloneSession(s *Session) *Session {
	c := *s
	c.Command = append([]string(nil), s.Command...)
	if s.Ended != nil {
		t := *s.Ended
		c.Ended = &t
	}
	if s.ExitCode != nil {
		x := *s.ExitCode
		c.ExitCode = &x
	}
	if s.Summary != nil {
		c.Summary = append(json.RawMessage(nil), s.Summary...)
	}
	return &c
}
