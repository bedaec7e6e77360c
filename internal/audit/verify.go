package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Problem classifies what verification found wrong.
type Problem string

// Problems, as reported in VerifyError.Problem.
const (
	// ProblemEdited: a record's bytes changed after it was written (its
	// hash no longer matches the stored tree or a signed checkpoint).
	ProblemEdited Problem = "edited"
	// ProblemMissing: a record in the middle of the log is gone.
	ProblemMissing Problem = "missing"
	// ProblemReordered: a record sits at another position than the one it
	// was written at.
	ProblemReordered Problem = "reordered"
	// ProblemTruncated: the log ends before a checkpoint's size.
	ProblemTruncated Problem = "truncated"
	// ProblemBadSignature: a checkpoint's signature by a trusted key does
	// not verify (the checkpoint text was altered).
	ProblemBadSignature Problem = "bad-signature"
	// ProblemUnknownKey: a checkpoint is not signed by any trusted key.
	ProblemUnknownKey Problem = "unknown-key"
	// ProblemWrongLog: a checkpoint names another log (origin).
	ProblemWrongLog Problem = "wrong-log"
	// ProblemMalformed: a checkpoint does not parse.
	ProblemMalformed Problem = "malformed"
	// ProblemFork: two checkpoints are not consistent with one another.
	ProblemFork Problem = "fork"
	// ProblemUnsigned: records follow the newest checkpoint. Every batch
	// Enclave commits carries its own signed head checkpoint, so these
	// were added outside Enclave (forged) or the head was removed.
	ProblemUnsigned Problem = "unsigned"
	// ProblemIndex: a record's query columns (session, kind, decision,
	// time) disagree with its signed event, so filtered reads would lie.
	ProblemIndex Problem = "index"
)

// ErrIntegrity is wrapped by every *VerifyError: the log was tampered with
// or damaged, as opposed to being unreadable.
var ErrIntegrity = errors.New("audit log integrity")

// VerifyError reports the first integrity problem found.
type VerifyError struct {
	// Seq is the first bad record, or -1 when the problem is not tied to
	// one record (a checkpoint's signature, say).
	Seq int64
	// Checkpoint is the tree size of the checkpoint involved, or 0.
	Checkpoint int64
	Problem    Problem
	// Detail says what exactly is wrong, for a human.
	Detail string
}

func (e *VerifyError) Error() string {
	switch {
	case e.Seq >= 0:
		return fmt.Sprintf("record %d: %s: %s", e.Seq, e.Problem, e.Detail)
	case e.Checkpoint > 0:
		return fmt.Sprintf("checkpoint of size %d: %s: %s", e.Checkpoint, e.Problem, e.Detail)
	default:
		return fmt.Sprintf("%s: %s", e.Problem, e.Detail)
	}
}

// Unwrap makes errors.Is(err, ErrIntegrity) true.
func (e *VerifyError) Unwrap() error { return ErrIntegrity }

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Verifier holds the trusted public keys (and origin). Required.
	Verifier *Verifier
	// Published are checkpoints kept outside the store (a file, a git ref,
	// another machine). They are checked like stored ones; one that signs
	// more records than the store holds reveals truncation, one that
	// disagrees with the stored records reveals a rewrite.
	Published [][]byte
}

// Report summarises a successful verification.
type Report struct {
	// Records is the number of records verified.
	Records int64
	// Checkpoints is the number of distinct checkpoints verified.
	Checkpoints int
	// Latest is the largest verified checkpoint (it covers every record),
	// or nil for an empty log without checkpoints.
	Latest *Checkpoint
}

func unsignedError(signed, size int64) *VerifyError {
	return &VerifyError{Seq: signed, Checkpoint: signed, Problem: ProblemUnsigned,
		Detail: fmt.Sprintf("records %d..%d are covered by no signed checkpoint (added outside Enclave, or the head checkpoint was removed)", signed, size-1)}
}

// Verify recomputes the whole Merkle tree from the stored records, checks
// every stored hash, every checkpoint's signature and its root against the
// recomputed tree, and each checkpoint's consistency with the next. It
// returns a *VerifyError for the first problem, and a plain error if the
// store cannot be read.
func Verify(ctx context.Context, st store.Store, opts VerifyOptions) (*Report, error) {
	if opts.Verifier == nil {
		return nil, errors.New("verify: no verifier (public key) given")
	}
	// Checkpoints first, then the record count: records are only ever
	// appended, so a checkpoint read first that exceeds the count read
	// after it means truncation. If records were appended in between (a
	// live log), their head checkpoint was committed with them: read the
	// checkpoints again and take those the counted records reach.
	stored, err := st.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	size, err := st.RecordCount(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if len(stored) == 0 || stored[len(stored)-1].Size < size {
		again, err := st.Checkpoints(ctx)
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		for _, c := range again {
			if c.Size <= size && !slices.ContainsFunc(stored, func(o store.Checkpoint) bool { return o.Head == c.Head && o.ID == c.ID && o.Size == c.Size }) {
				stored = append(stored, c)
			}
		}
	}
	var cps []*Checkpoint
	for _, sc := range stored {
		name := fmt.Sprintf("stored checkpoint #%d", sc.ID)
		if sc.Head {
			name = "head checkpoint"
		}
		cp, err := opts.Verifier.OpenCheckpoint(sc.Note)
		if err != nil {
			ve := err.(*VerifyError)
			ve.Checkpoint = sc.Size
			ve.Detail = name + ": " + ve.Detail
			return nil, ve
		}
		if cp.Tree.N != sc.Size {
			return nil, &VerifyError{Seq: -1, Checkpoint: cp.Tree.N, Problem: ProblemIndex,
				Detail: fmt.Sprintf("%s is filed under size %d but signs size %d", name, sc.Size, cp.Tree.N)}
		}
		cps = append(cps, cp)
	}
	for i, msg := range opts.Published {
		cp, err := opts.Verifier.OpenCheckpoint(msg)
		if err != nil {
			ve := err.(*VerifyError)
			ve.Detail = fmt.Sprintf("published checkpoint %d: %s", i+1, ve.Detail)
			return nil, ve
		}
		cps = append(cps, cp)
	}
	slices.SortStableFunc(cps, func(a, b *Checkpoint) int { return cmpInt(a.Tree.N, b.Tree.N) })
	for i := 1; i < len(cps); i++ {
		if a, b := cps[i-1], cps[i]; a.Tree.N == b.Tree.N && a.Tree.Hash != b.Tree.Hash {
			return nil, &VerifyError{Seq: -1, Checkpoint: a.Tree.N, Problem: ProblemFork,
				Detail: "two validly signed checkpoints of the same size have different roots"}
		}
	}
	cps = slices.CompactFunc(cps, func(a, b *Checkpoint) bool { return a.Tree == b.Tree })

	if err := verifyRecords(ctx, st, size, cps); err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return nil, ve
		}
		return nil, fmt.Errorf("verify: %w", err)
	}
	// Every checkpoint root matched the tree recomputed from the records,
	// so consecutive checkpoints are consistent by construction; check it
	// again the way a remote auditor would, with tlog consistency proofs
	// over the stored hashes.
	for i := 1; i < len(cps); i++ {
		a, b := cps[i-1], cps[i]
		p, err := tlog.ProveTree(b.Tree.N, a.Tree.N, st)
		if err != nil {
			return nil, fmt.Errorf("verify: consistency proof %d -> %d: %w", a.Tree.N, b.Tree.N, err)
		}
		if err := tlog.CheckTree(p, b.Tree.N, b.Tree.Hash, a.Tree.N, a.Tree.Hash); err != nil {
			return nil, &VerifyError{Seq: -1, Checkpoint: b.Tree.N, Problem: ProblemFork,
				Detail: fmt.Sprintf("not consistent with the checkpoint of size %d: %v", a.Tree.N, err)}
		}
	}
	r := &Report{Records: size, Checkpoints: len(cps)}
	signed := int64(0)
	if len(cps) > 0 {
		r.Latest = cps[len(cps)-1]
		signed = r.Latest.Tree.N
	}
	if signed < size {
		return nil, unsignedError(signed, size)
	}
	return r, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// verifyRecords checks records 0..size-1 against their stored hashes and
// the checkpoints. A long log is cut into segments checked in parallel:
// the checker of a segment starting at a takes the tree nodes left of a
// from the store, and the checker of the segment before it compares those
// very nodes with what it recomputes, so the chain is whole when every
// segment passes. The first failing segment's finding is returned, which
// is the first bad record.
func verifyRecords(ctx context.Context, st store.Store, size int64, cps []*Checkpoint) error {
	workers := 1
	if size >= minParallel {
		workers = min(runtime.GOMAXPROCS(0), 4)
	}
	bounds := make([]int64, workers+1)
	for i := range bounds {
		bounds[i] = size * int64(i) / int64(workers)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		lo, hi := bounds[i], bounds[i+1]
		var mine []*Checkpoint
		good := int64(0)
		for _, cp := range cps {
			if cp.Tree.N <= lo {
				good = cp.Tree.N
			}
			if (i == 0 || cp.Tree.N > lo) && (i == workers-1 || cp.Tree.N <= hi) {
				mine = append(mine, cp)
			}
		}
		c := newChecker(lo, mine)
		c.good = good
		if i > 0 {
			c.fr.fallback = st
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.scan(ctx, st, lo, hi)
			if err == nil {
				if i == workers-1 {
					err = c.finish(size)
				} else {
					err = c.finishAt(hi)
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return ctx.Err()
}

// minParallel is the log size from which verification is parallel.
var minParallel int64 = 100000

// checker recomputes the tree record by record. It keeps only the tree's
// frontier, so memory stays constant however long the log is.
type checker struct {
	next    int64 // the sequence number expected next
	good    int64 // size of the last checkpoint that matched
	fr      frontier
	cps     []*Checkpoint // sorted by size, distinct
	ci      int
	timeBuf []byte
}

func newChecker(from int64, cps []*Checkpoint) *checker {
	c := &checker{next: from, good: from, cps: cps}
	for c.ci < len(cps) && cps[c.ci].Tree.N < from {
		c.ci++
	}
	return c
}

// scan reads the records from seq from on and checks them. Reading (the
// store) and checking (hashing) run in two goroutines, so both cores work.
func (c *checker) scan(ctx context.Context, st store.Store, from, to int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const chunkRecords, chunkBytes = 512, 512 * 512
	// A chunk owns copies of its records' bytes in two arenas, since the
	// store's buffers are only valid during the callback.
	type chunk struct {
		recs   []store.Record
		data   []byte
		hashes []tlog.Hash
	}
	batches := make(chan *chunk, 4)
	free := make(chan *chunk, 6)
	checked := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err == nil {
				for i := range b.recs {
					if err = c.record(&b.recs[i]); err != nil {
						cancel() // stop the reader
						break
					}
				}
			}
			b.recs, b.data, b.hashes = b.recs[:0], b.data[:0], b.hashes[:0]
			select {
			case free <- b:
			default:
			}
		}
		checked <- err
	}()
	var cur *chunk
	readErr := st.Records(ctx, store.Filter{From: from, To: to}, func(r store.Record) error {
		if cur == nil {
			select {
			case cur = <-free:
			default:
				cur = &chunk{recs: make([]store.Record, 0, chunkRecords), data: make([]byte, 0, chunkBytes), hashes: make([]tlog.Hash, 0, 2*chunkRecords)}
			}
		}
		// Arenas grow by reallocation; earlier records keep pointing into
		// the old arrays, which stay valid.
		n := len(cur.data)
		cur.data = append(cur.data, r.Data...)
		r.Data = cur.data[n:len(cur.data):len(cur.data)]
		h := len(cur.hashes)
		cur.hashes = append(cur.hashes, r.Hashes...)
		r.Hashes = cur.hashes[h:len(cur.hashes):len(cur.hashes)]
		cur.recs = append(cur.recs, r)
		if len(cur.recs) == chunkRecords {
			select {
			case batches <- cur:
			case <-ctx.Done():
				return ctx.Err()
			}
			cur = nil
		}
		return nil
	})
	if readErr == nil && cur != nil && len(cur.recs) > 0 {
		batches <- cur
	}
	close(batches)
	if err := <-checked; err != nil {
		return err // the checker's finding explains any reader error
	}
	return readErr
}

func (c *checker) record(r *store.Record) error {
	if err := c.checkpointsAt(); err != nil {
		return err
	}
	seq := r.Seq
	if seq != c.next {
		return &VerifyError{Seq: c.next, Problem: ProblemMissing,
			Detail: fmt.Sprintf("record %d is absent (the next stored record is %d)", c.next, seq)}
	}
	h, err := parseHeaderBytes(r.Data)
	if err != nil {
		return &VerifyError{Seq: seq, Problem: ProblemEdited, Detail: fmt.Sprintf("event bytes no longer parse: %v", err)}
	}
	if h.seq != seq {
		return &VerifyError{Seq: seq, Problem: ProblemReordered,
			Detail: fmt.Sprintf("position %d holds the event written as record %d", seq, h.seq)}
	}
	leaf := tlog.RecordHash(r.Data)
	if len(r.Hashes) == 0 || leaf != r.Hashes[0] {
		return &VerifyError{Seq: seq, Problem: ProblemEdited, Detail: "event bytes do not match the stored leaf hash"}
	}
	hs, err := tlog.StoredHashesForRecordHash(seq, leaf, &c.fr)
	if err != nil {
		return fmt.Errorf("recompute tree at record %d: %w", seq, err)
	}
	if len(hs) != len(r.Hashes) {
		return &VerifyError{Seq: seq, Problem: ProblemEdited,
			Detail: fmt.Sprintf("record carries %d stored tree hashes, want %d", len(r.Hashes), len(hs))}
	}
	for level := range hs {
		if hs[level] != r.Hashes[level] {
			lo := seq >> level << level
			return &VerifyError{Seq: lo, Problem: ProblemEdited,
				Detail: fmt.Sprintf("records %d..%d no longer hash to the stored level-%d tree node (an event was changed together with its leaf hash, or the stored node was changed)", lo, seq, level)}
		}
	}
	base := tlog.StoredHashIndex(0, seq)
	for j, x := range hs {
		c.fr.put(base+int64(j), x)
	}
	c.timeBuf = r.Time.UTC().AppendFormat(c.timeBuf[:0], time.RFC3339Nano)
	switch {
	case r.Session != string(h.session):
		return indexError(seq, "session", r.Session, h.session)
	case r.Kind != string(h.kind):
		return indexError(seq, "kind", r.Kind, h.kind)
	case r.Decision != string(h.decision):
		return indexError(seq, "decision", r.Decision, h.decision)
	case !bytes.Equal(c.timeBuf, h.time):
		return indexError(seq, "time", string(c.timeBuf), h.time)
	}
	c.next++
	return nil
}

func indexError(seq int64, name, col string, ev []byte) error {
	return &VerifyError{Seq: seq, Problem: ProblemIndex,
		Detail: fmt.Sprintf("query column %s is %q but the signed event says %q", name, col, ev)}
}

// checkpointsAt checks the checkpoints whose size is the number of records
// seen so far against the recomputed tree.
func (c *checker) checkpointsAt() error {
	for c.ci < len(c.cps) && c.cps[c.ci].Tree.N == c.next {
		cp := c.cps[c.ci]
		th, err := tlog.TreeHash(c.next, &c.fr)
		if err != nil {
			return fmt.Errorf("recompute tree hash at %d: %w", c.next, err)
		}
		if th != cp.Tree.Hash {
			return &VerifyError{Seq: c.good, Checkpoint: cp.Tree.N, Problem: ProblemEdited,
				Detail: fmt.Sprintf("records %d..%d do not hash to the root signed at size %d (events and stored hashes were rewritten together)", c.good, cp.Tree.N-1, cp.Tree.N)}
		}
		c.good = cp.Tree.N
		c.ci++
	}
	return nil
}

// finishAt checks the end of a segment that stops before the log does.
func (c *checker) finishAt(end int64) error {
	if err := c.checkpointsAt(); err != nil {
		return err
	}
	if c.next != end {
		return &VerifyError{Seq: c.next, Problem: ProblemMissing,
			Detail: fmt.Sprintf("record %d is absent (the next stored record is at or after %d)", c.next, end)}
	}
	return nil
}

// finish checks what remains once all records were read; size is the
// store's record count.
func (c *checker) finish(size int64) error {
	if err := c.checkpointsAt(); err != nil {
		return err
	}
	if c.next != size {
		return &VerifyError{Seq: c.next, Problem: ProblemMissing,
			Detail: fmt.Sprintf("the log claims %d records but only %d could be read in order", size, c.next)}
	}
	if c.ci < len(c.cps) {
		cp := c.cps[len(c.cps)-1]
		return &VerifyError{Seq: c.next, Checkpoint: cp.Tree.N, Problem: ProblemTruncated,
			Detail: fmt.Sprintf("log ends at record %d but a checkpoint signs %d records", c.next, cp.Tree.N)}
	}
	return nil
}
