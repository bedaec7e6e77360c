package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Errors returned by Log methods.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("audit log closed")
	// ErrReadOnly: the log was opened without a signing key.
	ErrReadOnly = errors.New("audit log opened read-only (no signing key)")
)

// Key is a log signing key: the note signer and its public (verifier) key.
type Key struct {
	note.Signer
	// Public is the note verifier key, "name+hash+base64".
	Public string
}

// ParseKey parses a note signer key ("PRIVATE+KEY+name+hash+base64") and
// derives its public key. Errors never include key material.
func ParseKey(skey string) (*Key, error) {
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, errors.New("parse signing key: not a note signer key")
	}
	// The signer key is PRIVATE+KEY+<name>+<hash>+base64(alg || seed).
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5) // base64 may hold "+"
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("parse signing key: not an ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, fmt.Errorf("parse signing key: %w", err)
	}
	if v, err := note.NewVerifier(vkey); err != nil || v.KeyHash() != s.KeyHash() {
		return nil, errors.New("parse signing key: derived public key does not match the key hash")
	}
	return &Key{Signer: s, Public: vkey}, nil
}

// Options tune a Log. The zero value is usable.
type Options struct {
	// Origin names the log in its checkpoints; default: the key's name.
	Origin string
	// CheckpointEvery signs a checkpoint once this many events are
	// unsigned; default 1000.
	CheckpointEvery int64
	// CheckpointInterval signs a checkpoint when events have been unsigned
	// this long; default 10s.
	CheckpointInterval time.Duration
	// MaxBatch caps the events committed in one transaction; default 8192.
	MaxBatch int
	// Logger receives diagnostics (never event contents); default: none.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Log is the audit log. Append is safe for concurrent use; every other
// method too.
type Log struct {
	st     store.Store
	key    *Key
	origin string
	opts   Options
	log    *slog.Logger

	mu     sync.RWMutex // guards closed and sends on reqs/cpReqs
	closed bool
	reqs   chan *appendReq
	cpReqs chan *cpReq
	done   chan struct{}
	final  error // the final checkpoint's error, set before done closes

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after each commit

	// Owned by the writer goroutine.
	size       int64
	stale      bool
	fr         frontier
	head       *Checkpoint // signed with the last batch this process committed
	retained   int64       // size of the newest retained checkpoint
	lastCPTime time.Time
	buf        []byte
	recs       []store.Record
}

type appendReq struct {
	body     []byte
	session  string
	kind     string
	decision string
	time     time.Time
	done     chan appendResult
}

type appendResult struct {
	e   Entry
	err error
}

type cpReq struct {
	done chan cpResult
}

type cpResult struct {
	cp  *Checkpoint
	err error
}

// Open opens the audit log kept in st. With a nil key the log is
// read-only: Append and Checkpoint return ErrReadOnly, the rest works.
//
// With a key, Open first checks the end of the log: the newest checkpoint
// must verify under the key and match the stored tree, and no record may
// follow it (every batch is committed with its own signed head checkpoint,
// so even after kill -9 none does). If that fails, Open returns the
// *VerifyError and no Log: fail closed, and run Verify to see the whole
// picture.
func Open(ctx context.Context, st store.Store, key *Key, opts Options) (*Log, error) {
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 10 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 8192
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{
		st:     st,
		key:    key,
		opts:   opts,
		log:    opts.Logger,
		done:   make(chan struct{}),
		notify: make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.fr.fallback = st
	if key == nil {
		l.closed = true // nothing to write; Close is a no-op
		close(l.done)
		return l, nil
	}
	l.origin = opts.Origin
	if l.origin == "" {
		l.origin = key.Name()
	}
	if err := checkOrigin(l.origin); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := l.recover(ctx); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l.reqs = make(chan *appendReq, opts.MaxBatch)
	l.cpReqs = make(chan *cpReq)
	go l.run()
	return l, nil
}

// tailCheck bounds how many of the newest records Open re-hashes.
const tailCheck = 4096

// recover checks the newest checkpoint against the stored tree and the
// newest records against their hashes, and sets up the writer state.
func (l *Log) recover(ctx context.Context) error {
	cps, err := l.st.Checkpoints(ctx)
	if err != nil {
		return err
	}
	size, err := l.st.RecordCount(ctx)
	if err != nil {
		return err
	}
	v, err := NewVerifier(l.origin, l.key.Public)
	if err != nil {
		return err
	}
	l.lastCPTime = l.opts.Now()
	signed := int64(0)
	if len(cps) > 0 {
		last := cps[len(cps)-1]
		cp, err := v.OpenCheckpoint(last.Note)
		if err != nil {
			var ve *VerifyError
			if errors.As(err, &ve) {
				ve.Checkpoint = last.Size
			}
			return err
		}
		if cp.Tree.N > size {
			return &VerifyError{Seq: size, Checkpoint: cp.Tree.N, Problem: ProblemTruncated,
				Detail: fmt.Sprintf("log ends at record %d but the newest checkpoint signs %d records", size, cp.Tree.N)}
		}
		th, err := tlog.TreeHash(cp.Tree.N, l.st)
		if err != nil {
			return fmt.Errorf("read tree at newest checkpoint: %w", err)
		}
		if th != cp.Tree.Hash {
			return &VerifyError{Seq: -1, Checkpoint: cp.Tree.N, Problem: ProblemEdited,
				Detail: "the stored tree does not hash to the newest checkpoint's root; run verify to locate the records"}
		}
		signed = cp.Tree.N
		l.head = cp
		for i := len(cps) - 1; i >= 0; i-- {
			if !cps[i].Head {
				l.retained, l.lastCPTime = cps[i].Size, cps[i].Time
				break
			}
		}
	}
	if size > signed {
		return unsignedError(signed, size)
	}
	// Re-hash the newest records: a torn or damaged tail is reported here,
	// not written on top of.
	if size > 0 {
		from := max(l.retained, size-tailCheck, 0)
		c := newChecker(from, []*Checkpoint{l.head})
		c.good = from
		c.fr.fallback = l.st
		if err := c.scan(ctx, l.st, from, 0); err != nil {
			return err
		}
		if err := c.finish(size); err != nil {
			return err
		}
	}
	l.size = size
	l.fr.reset()
	l.fr.fallback = l.st
	return nil
}

// Append records ev and returns once it is durable. It fails, and the
// caller must then not perform the action it describes, if the event is
// invalid, the log is closed or read-only, or the store cannot write. If
// ctx ends while waiting, Append returns its error; the event may still be
// recorded, since the batch it joined may commit.
func (l *Log) Append(ctx context.Context, ev Event) (Entry, error) {
	if l.key == nil {
		return Entry{}, ErrReadOnly
	}
	r, err := l.newReq(&ev)
	if err != nil {
		return Entry{}, err
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Entry{}, ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.mu.RUnlock()
		return Entry{}, fmt.Errorf("append %s event: %w", ev.Kind, ctx.Err())
	}
	l.mu.RUnlock()
	select {
	case res := <-r.done:
		return res.e, res.err
	case <-ctx.Done():
		return Entry{}, fmt.Errorf("append %s event: %w (it may still be recorded)", ev.Kind, ctx.Err())
	}
}

// AppendAll records evs in order, as Append would one after the other,
// and returns once all are durable. They are queued together, so they
// usually share one commit and one fsync. If any fails it returns the
// first error; the events before it may be recorded.
func (l *Log) AppendAll(ctx context.Context, evs ...Event) ([]Entry, error) {
	if l.key == nil {
		return nil, ErrReadOnly
	}
	reqs := make([]*appendReq, len(evs))
	for i := range evs {
		r, err := l.newReq(&evs[i])
		if err != nil {
			return nil, err
		}
		reqs[i] = r
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	sent := 0
	for _, r := range reqs {
		select {
		case l.reqs <- r:
			sent++
			continue
		case <-ctx.Done():
		}
		break
	}
	l.mu.RUnlock()
	entries := make([]Entry, sent)
	var first error
	for i, r := range reqs[:sent] {
		select {
		case res := <-r.done:
			entries[i] = res.e
			if res.err != nil && first == nil {
				first = res.err
			}
		case <-ctx.Done():
			if first == nil {
				first = fmt.Errorf("append %s event: %w (it may still be recorded)", evs[i].Kind, ctx.Err())
			}
		}
	}
	if first == nil && sent < len(reqs) {
		first = fmt.Errorf("append %s event: %w", evs[sent].Kind, ctx.Err())
	}
	return entries, first
}

// newReq encodes ev (stamped now if it has no time) for the writer.
func (l *Log) newReq(ev *Event) (*appendReq, error) {
	if ev.Time.IsZero() {
		ev.Time = l.opts.Now()
	}
	body, err := encodeBody(ev)
	if err != nil {
		return nil, fmt.Errorf("append %s event: %w", ev.Kind, err)
	}
	return &appendReq{body: body, session: ev.Session, kind: ev.Kind, decision: ev.Decision, time: ev.Time.UTC(), done: make(chan appendResult, 1)}, nil
}

// Checkpoint signs and stores a checkpoint of the log as this process
// last wrote it, unless the newest checkpoint already covers it, and
// returns it.
func (l *Log) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	if l.key == nil {
		return nil, ErrReadOnly
	}
	r := &cpReq{done: make(chan cpResult, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case l.cpReqs <- r:
	case <-ctx.Done():
		l.mu.RUnlock()
		return nil, ctx.Err()
	}
	l.mu.RUnlock()
	select {
	case res := <-r.done:
		return res.cp, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting events, waits for those already accepted, signs a
// final checkpoint and returns its error. It does not close the store.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.mu.Unlock()
	<-l.done
	return l.final
}

// Verify runs [Verify] on the log's store.
func (l *Log) Verify(ctx context.Context, opts VerifyOptions) (*Report, error) {
	return Verify(ctx, l.st, opts)
}

// Prove runs [Prove] on the log's store.
func (l *Log) Prove(ctx context.Context, seq int64, cp *Checkpoint) (*Proof, error) {
	return Prove(ctx, l.st, seq, cp)
}

// Export runs [Export] on the log's store.
func (l *Log) Export(ctx context.Context, w io.Writer, f Filter, opts ExportOptions) (int, error) {
	return Export(ctx, l.st, w, f, opts)
}

// Records runs [Records] on the log's store.
func (l *Log) Records(ctx context.Context, f Filter, fn func(Record) error) error {
	return Records(ctx, l.st, f, fn)
}

// Origin is the name the log signs its checkpoints with.
func (l *Log) Origin() string { return l.origin }

// Store returns the store the log reads and writes.
func (l *Log) Store() store.Store { return l.st }

func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(min(l.opts.CheckpointInterval, time.Second))
	defer tick.Stop()
	batch := make([]*appendReq, 0, l.opts.MaxBatch)
	prev := 0 // size of the previous batch
	for {
		closing := false
		select {
		case r, ok := <-l.reqs:
			if !ok {
				_, l.final = l.checkpoint()
				return
			}
			batch = append(batch[:0], r)
			closing = l.gather(&batch, prev)
			prev = len(batch)
			l.commit(batch)
			clear(batch)
			l.maybeCheckpoint()
			if closing {
				_, l.final = l.checkpoint()
				return
			}
		case r := <-l.cpReqs:
			cp, err := l.checkpoint()
			r.done <- cpResult{cp, err}
		case <-tick.C:
			l.maybeCheckpoint()
		}
	}
}

// groupDelay bounds how long the writer waits for a batch to fill.
const groupDelay = 500 * time.Microsecond

// gather adds the waiting appends to batch and reports whether the queue
// was closed. Under load, producers that were just acknowledged are still
// preparing their next event when the writer comes back, so a batch taken
// at once would be small and the next one large; when the previous batch
// was large and this one is under half its size, gather waits up to
// groupDelay for it to fill. A lone append (previous batch small) never
// waits.
func (l *Log) gather(batch *[]*appendReq, prev int) (closed bool) {
	for len(*batch) < l.opts.MaxBatch {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return true
			}
			*batch = append(*batch, r)
			continue
		default:
		}
		break
	}
	if prev < 32 || len(*batch) >= prev/2 {
		return false
	}
	t := time.NewTimer(groupDelay)
	defer t.Stop()
	for len(*batch) < prev && len(*batch) < l.opts.MaxBatch {
		select {
		case r, ok := <-l.reqs:
			if !ok {
				return true
			}
			*batch = append(*batch, r)
		case <-t.C:
			return false
		}
	}
	return false
}

func (l *Log) reload() error {
	n, err := l.st.RecordCount(context.Background())
	if err != nil {
		return err
	}
	l.size = n
	l.fr.reset()
	l.stale = false
	return nil
}

// commit writes one batch in one transaction and answers its callers.
func (l *Log) commit(batch []*appendReq) {
	ctx := context.Background()
	var err error
	for attempt := 0; attempt < 16; attempt++ {
		if l.stale {
			if err = l.reload(); err != nil {
				break
			}
		}
		saved := l.fr
		var head *Checkpoint
		if err = l.build(batch); err == nil {
			head, err = l.signHead(l.size + int64(len(batch)))
		}
		if err == nil {
			err = l.st.AppendRecords(ctx, l.recs, &store.Checkpoint{Size: head.Tree.N, Time: l.opts.Now(), Note: head.Note})
		}
		if err == nil {
			l.head = head
			for i, r := range batch {
				r.done <- appendResult{e: Entry{Seq: l.recs[i].Seq, Hash: l.recs[i].Hashes[0]}}
			}
			l.size += int64(len(batch))
			l.notifyAll()
			return
		}
		l.fr = saved
		l.stale = true
		if !errors.Is(err, store.ErrConflict) {
			break
		}
		// Another process appended: reload and renumber.
	}
	err = fmt.Errorf("append to audit log: %w", err)
	l.log.Error("audit append failed; events refused", "events", len(batch), "err", err)
	for _, r := range batch {
		r.done <- appendResult{err: err}
	}
}

func (l *Log) build(batch []*appendReq) error {
	need := 0
	for _, r := range batch {
		need += len(leafPrefix) + 20 + len(r.body)
	}
	if cap(l.buf) < need {
		l.buf = make([]byte, 0, need)
	}
	buf := l.buf[:0]
	l.recs = l.recs[:0]
	for i, r := range batch {
		seq := l.size + int64(i)
		start := len(buf)
		buf = appendLeaf(buf, seq, r.body)
		data := buf[start:len(buf):len(buf)]
		hs, err := tlog.StoredHashes(seq, data, &l.fr)
		if err != nil {
			return fmt.Errorf("compute tree hashes for record %d: %w", seq, err)
		}
		base := tlog.StoredHashIndex(0, seq)
		for j, h := range hs {
			l.fr.put(base+int64(j), h)
		}
		l.recs = append(l.recs, store.Record{Seq: seq, Session: r.session, Kind: r.kind, Decision: r.decision, Time: r.time, Data: data, Hashes: hs})
	}
	return nil
}

// signHead signs the tree of the first size records, as it stands on the
// frontier after build.
func (l *Log) signHead(size int64) (*Checkpoint, error) {
	th, err := tlog.TreeHash(size, &l.fr)
	if err != nil {
		return nil, fmt.Errorf("tree hash at %d: %w", size, err)
	}
	return signCheckpoint(l.key, l.origin, tlog.Tree{N: size, Hash: th})
}

func (l *Log) maybeCheckpoint() {
	if l.size <= l.retained {
		return
	}
	if l.size-l.retained < l.opts.CheckpointEvery && l.opts.Now().Sub(l.lastCPTime) < l.opts.CheckpointInterval {
		return
	}
	if _, err := l.checkpoint(); err != nil {
		l.log.Error("audit checkpoint failed", "size", l.size, "err", err)
	}
}

// checkpoint runs in the writer goroutine, which owns the tree state. It
// retains a checkpoint of the log as this process last wrote it: the head
// signed with the last batch, or a fresh signature after a reload.
func (l *Log) checkpoint() (*Checkpoint, error) {
	if l.stale {
		if err := l.reload(); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	cp := l.head
	if cp == nil || cp.Tree.N != l.size {
		var err error
		if cp, err = l.signHead(l.size); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	if l.retained == l.size {
		return cp, nil
	}
	now := l.opts.Now()
	if _, err := l.st.SaveCheckpoint(context.Background(), store.Checkpoint{Size: l.size, Time: now, Note: cp.Note}); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	l.retained, l.lastCPTime = l.size, now
	return cp, nil
}

func (l *Log) notifyAll() {
	l.notifyMu.Lock()
	close(l.notify)
	l.notify = make(chan struct{})
	l.notifyMu.Unlock()
}

// changed returns a channel closed at the next commit by this process.
func (l *Log) changed() <-chan struct{} {
	l.notifyMu.Lock()
	defer l.notifyMu.Unlock()
	return l.notify
}

// frontier holds, per tree level, the newest stored hash at that level:
// exactly the hashes tlog.StoredHashes needs to add the next record and
// tlog.TreeHash needs to hash the current tree. Misses go to fallback (the
// store) when set.
type frontier struct {
	set      [64]bool
	idx      [64]int64
	h        [64]tlog.Hash
	fallback tlog.HashReader
}

func (f *frontier) reset() {
	f.set = [64]bool{}
}

func (f *frontier) put(index int64, h tlog.Hash) {
	level, _ := tlog.SplitStoredHashIndex(index)
	if !f.set[level] || index > f.idx[level] {
		f.set[level], f.idx[level], f.h[level] = true, index, h
	}
}

func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var miss []int64
	var at []int
	for i, x := range indexes {
		level, _ := tlog.SplitStoredHashIndex(x)
		if f.set[level] && f.idx[level] == x {
			out[i] = f.h[level]
		} else {
			miss = append(miss, x)
			at = append(at, i)
		}
	}
	if len(miss) == 0 {
		return out, nil
	}
	if f.fallback == nil {
		return nil, fmt.Errorf("audit: internal error: tree hash %d is not on the frontier", miss[0])
	}
	got, err := f.fallback.ReadHashes(miss)
	if err != nil {
		return nil, err
	}
	if len(got) != len(miss) {
		return nil, fmt.Errorf("audit: internal error: asked for %d hashes, got %d", len(miss), len(got))
	}
	for j, i := range at {
		out[i] = got[j]
		f.put(miss[j], got[j])
	}
	return out, nil
}
