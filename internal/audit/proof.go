package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrNotCovered: no checkpoint covers the record yet (sign one first).
var ErrNotCovered = errors.New("no checkpoint covers the record")

// Proof shows that one event is in the log a signed checkpoint describes.
// Its JSON form is what `enclave audit prove` prints and
// `enclave audit check-proof` reads; it is checkable with only tlog, note
// and the public key:
//
//	leaf hash = tlog.RecordHash([]byte(leaf))
//	tlog.CheckRecord(path, size, root, seq, leaf hash) == nil
//
// where size and root come from the checkpoint after note.Open.
type Proof struct {
	Seq int64 `json:"seq"`
	// Leaf is the event's canonical encoding (itself JSON), as a string.
	Leaf string `json:"leaf"`
	// Checkpoint is the signed checkpoint note the path leads to.
	Checkpoint string `json:"checkpoint"`
	// Path is the tlog.RecordProof: sibling hashes, base64.
	Path []tlog.Hash `json:"path"`
}

// Prove returns an inclusion proof of record seq. With cp nil it proves
// against the largest stored checkpoint (not verified here: the checker
// verifies), and returns an error wrapping ErrNotCovered when none covers
// seq.
func Prove(ctx context.Context, st store.Store, seq int64, cp *Checkpoint) (*Proof, error) {
	if seq < 0 {
		return nil, fmt.Errorf("prove record %d: negative sequence number", seq)
	}
	var note []byte
	var size int64
	if cp != nil {
		note, size = cp.Note, cp.Tree.N
	} else {
		cps, err := st.Checkpoints(ctx)
		if err != nil {
			return nil, fmt.Errorf("prove record %d: %w", seq, err)
		}
		if len(cps) > 0 {
			last := cps[len(cps)-1]
			note, size = last.Note, last.Size
		}
	}
	if seq >= size {
		return nil, fmt.Errorf("prove record %d: checkpoint size %d: %w", seq, size, ErrNotCovered)
	}
	var leaf []byte
	err := st.Records(ctx, store.Filter{From: seq, To: seq + 1}, func(r store.Record) error {
		leaf = bytes.Clone(r.Data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prove record %d: %w", seq, err)
	}
	if leaf == nil {
		return nil, fmt.Errorf("prove record %d: record is not in the store", seq)
	}
	path, err := tlog.ProveRecord(size, seq, st)
	if err != nil {
		return nil, fmt.Errorf("prove record %d in tree of %d: %w", seq, size, err)
	}
	return &Proof{Seq: seq, Leaf: string(leaf), Checkpoint: string(note), Path: path}, nil
}

// CheckProof checks p offline: the checkpoint must verify under v, the
// leaf must be a canonical event that names position p.Seq, and the path
// must lead from its hash to the checkpoint's root. It returns the
// checkpoint and the proven event. Integrity failures are *VerifyError.
func (v *Verifier) CheckProof(p *Proof) (*Checkpoint, *Record, error) {
	cp, err := v.OpenCheckpoint([]byte(p.Checkpoint))
	if err != nil {
		return nil, nil, err
	}
	if p.Seq < 0 || p.Seq >= cp.Tree.N {
		return nil, nil, &VerifyError{Seq: p.Seq, Checkpoint: cp.Tree.N, Problem: ProblemMalformed,
			Detail: fmt.Sprintf("the checkpoint covers records 0..%d", cp.Tree.N-1)}
	}
	seq, ev, err := ParseLeaf([]byte(p.Leaf))
	if err != nil {
		return nil, nil, &VerifyError{Seq: p.Seq, Checkpoint: cp.Tree.N, Problem: ProblemEdited, Detail: err.Error()}
	}
	if seq != p.Seq {
		return nil, nil, &VerifyError{Seq: p.Seq, Checkpoint: cp.Tree.N, Problem: ProblemReordered,
			Detail: fmt.Sprintf("the event was written as record %d", seq)}
	}
	if err := tlog.CheckRecord(p.Path, cp.Tree.N, cp.Tree.Hash, p.Seq, tlog.RecordHash([]byte(p.Leaf))); err != nil {
		return nil, nil, &VerifyError{Seq: p.Seq, Checkpoint: cp.Tree.N, Problem: ProblemEdited,
			Detail: fmt.Sprintf("inclusion proof does not lead to the signed root: %v", err)}
	}
	return cp, &Record{Seq: seq, Event: ev, Leaf: []byte(p.Leaf)}, nil
}
