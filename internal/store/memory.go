package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// Memory is an in-memory Store for tests. It keeps the same contracts as
// the SQLite store, durability aside.
type Memory struct {
	mu       sync.RWMutex
	closed   bool
	records  []Record
	cps      []Checkpoint
	head     *Checkpoint
	sessions map[string]*Session
	// FailAppend, when set, is returned by AppendRecords without writing;
	// tests use it to play an unavailable database.
	FailAppend func() error
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{sessions: make(map[string]*Session)}
}

func (m *Memory) AppendRecords(ctx context.Context, recs []Record, head *Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.FailAppend != nil {
		if err := m.FailAppend(); err != nil {
			return err
		}
	}
	if err := checkBatch(recs, head, int64(len(m.records))); err != nil {
		return err
	}
	if head != nil {
		h := *head
		h.ID, h.Head, h.Note = 0, true, append([]byte(nil), head.Note...)
		m.head = &h
	}
	for _, r := range recs {
		r.Data = append([]byte(nil), r.Data...)
		r.Hashes = append([]tlog.Hash(nil), r.Hashes...)
		m.records = append(m.records, r)
	}
	return nil
}

func (m *Memory) RecordCount(ctx context.Context) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	return int64(len(m.records)), nil
}

func (m *Memory) Records(ctx context.Context, f Filter, fn func(Record) error) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	recs := m.records // append-only: the prefix never changes
	m.mu.RUnlock()
	n := 0
	for i := max(f.From, 0); i < int64(len(recs)); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		r := recs[i]
		if !f.Match(&r) {
			continue
		}
		r.Data = append([]byte(nil), r.Data...)
		r.Hashes = append([]tlog.Hash(nil), r.Hashes...)
		if err := fn(r); err != nil {
			return err
		}
		n++
		if f.Limit > 0 && n >= f.Limit {
			break
		}
	}
	return nil
}

func (m *Memory) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		seq, pos := RecordForHash(x)
		if x < 0 || seq >= int64(len(m.records)) || pos >= len(m.records[seq].Hashes) {
			return nil, fmt.Errorf("read stored hash %d: not in log of %d records", x, len(m.records))
		}
		out[i] = m.records[seq].Hashes[pos]
	}
	return out, nil
}

func (m *Memory) SaveCheckpoint(ctx context.Context, c Checkpoint) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	c.ID = int64(len(m.cps)) + 1
	c.Head = false
	c.Note = append([]byte(nil), c.Note...)
	m.cps = append(m.cps, c)
	return c.ID, nil
}

func (m *Memory) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	out := make([]Checkpoint, 0, len(m.cps)+1)
	for _, c := range m.cps {
		c.Note = append([]byte(nil), c.Note...)
		out = append(out, c)
	}
	if m.head != nil {
		h := *m.head
		h.Note = append([]byte(nil), h.Note...)
		out = append(out, h)
	}
	sortCheckpoints(out)
	return out, nil
}

func (m *Memory) CreateSession(ctx context.Context, s *Session) error {
	if err := validSession(s); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.sessions[s.ID]; ok {
		return fmt.Errorf("create session %s: %w", s.ID, ErrExists)
	}
	m.sessions[s.ID] = cloneSession(s)
	return nil
}

func (m *Memory) UpdateSession(ctx context.Context, s *Session) error {
	if err := validSession(s); err != nil {
		return fmt.Errorf("update session: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.sessions[s.ID]; !ok {
		return fmt.Errorf("update session %s: %w", s.ID, ErrNotFound)
	}
	m.sessions[s.ID] = cloneSession(s)
	return nil
}

func (m *Memory) GetSession(ctx context.Context, id string) (*Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	s, ok := m.sessions[id]
	if !ok {
		return nil, fmt.Errorf("get session %s: %w", id, ErrNotFound)
	}
	return cloneSession(s), nil
}

func (m *Memory) ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	var out []*Session
	for _, s := range m.sessions {
		if f.Match(s) {
			out = append(out, cloneSession(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return sessionNewer(out[i], out[j]) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// sessionNewer orders sessions newest first: by start time, then ID.
func sessionNewer(a, b *Session) bool {
	if !a.Started.Equal(b.Started) {
		return a.Started.After(b.Started)
	}
	return strings.Compare(a.ID, b.ID) > 0
}

func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
