package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Records calls fn with each record matching f, decoded, in sequence
// order. A stored leaf that is not a canonical event is an error naming
// its sequence number.
func Records(ctx context.Context, st store.Store, f Filter, fn func(Record) error) error {
	return st.Records(ctx, f, func(r store.Record) error {
		seq, ev, err := ParseLeaf(r.Data)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		if seq != r.Seq {
			return &VerifyError{Seq: r.Seq, Problem: ProblemReordered, Detail: fmt.Sprintf("position %d holds the event written as record %d", r.Seq, seq)}
		}
		return fn(Record{Seq: seq, Event: ev, Leaf: bytes.Clone(r.Data)})
	})
}

// ExportRecord is one line of a JSON Lines export: the event, its exact
// leaf bytes, and (when a checkpoint covers it) the inclusion proof.
type ExportRecord struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Session  string          `json:"session"`
	Kind     string          `json:"kind"`
	Actor    string          `json:"actor"`
	Decision string          `json:"decision"`
	Data     json.RawMessage `json:"data"`
	// Leaf is the canonical encoding, the bytes the tree hashes.
	Leaf     string    `json:"leaf"`
	LeafHash tlog.Hash `json:"leaf_hash"`
	// TreeSize, Path and Checkpoint are the proof; absent for records
	// after the checkpoint used.
	TreeSize   int64       `json:"tree_size,omitempty"`
	Path       []tlog.Hash `json:"path,omitempty"`
	Checkpoint string      `json:"checkpoint,omitempty"`
}

// Proof returns the line's inclusion proof, or nil if it has none.
func (e *ExportRecord) Proof() *Proof {
	if e.Checkpoint == "" {
		return nil
	}
	return &Proof{Seq: e.Seq, Leaf: e.Leaf, Checkpoint: e.Checkpoint, Path: e.Path}
}

// ExportOptions configure Export.
type ExportOptions struct {
	// Checkpoint to prove against; nil means the largest stored one.
	Checkpoint *Checkpoint
	// NoProofs leaves the proof fields out (faster).
	NoProofs bool
}

// Export writes the records matching f to w as JSON Lines, one
// ExportRecord per line, and returns how many it wrote.
func Export(ctx context.Context, st store.Store, w io.Writer, f Filter, opts ExportOptions) (int, error) {
	cp := opts.Checkpoint
	if cp == nil && !opts.NoProofs {
		cps, err := st.Checkpoints(ctx)
		if err != nil {
			return 0, fmt.Errorf("export: %w", err)
		}
		if len(cps) > 0 {
			last := cps[len(cps)-1]
			cp = &Checkpoint{Tree: tlog.Tree{N: last.Size}, Note: last.Note}
		}
	}
	hr := &cachedReader{r: st, m: make(map[int64]tlog.Hash)}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	n := 0
	err := Records(ctx, st, f, func(r Record) error {
		line := ExportRecord{
			Seq: r.Seq, Time: r.Event.Time, Session: r.Event.Session, Kind: r.Event.Kind, Actor: r.Event.Actor,
			Decision: r.Event.Decision, Data: r.Event.Data, Leaf: string(r.Leaf), LeafHash: tlog.RecordHash(r.Leaf),
		}
		if !opts.NoProofs && cp != nil && r.Seq < cp.Tree.N {
			p, err := tlog.ProveRecord(cp.Tree.N, r.Seq, hr)
			if err != nil {
				return fmt.Errorf("prove record %d: %w", r.Seq, err)
			}
			line.TreeSize, line.Path, line.Checkpoint = cp.Tree.N, p, string(cp.Note)
		}
		if err := enc.Encode(&line); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	return n, nil
}

// cachedReader remembers hashes already read: proofs of neighbouring
// records share most of their path.
type cachedReader struct {
	r tlog.HashReader
	m map[int64]tlog.Hash
}

func (c *cachedReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var miss []int64
	var at []int
	for i, x := range indexes {
		if h, ok := c.m[x]; ok {
			out[i] = h
		} else {
			miss = append(miss, x)
			at = append(at, i)
		}
	}
	if len(miss) > 0 {
		got, err := c.r.ReadHashes(miss)
		if err != nil {
			return nil, err
		}
		if len(c.m) > 1<<16 {
			clear(c.m)
		}
		for j, i := range at {
			out[i] = got[j]
			c.m[miss[j]] = got[j]
		}
	}
	return out, nil
}

// Follow calls fn with each record matching f, in order, then waits for
// new ones and calls fn with them as they are committed, until ctx ends
// (it then returns ctx.Err()) or fn returns an error (returned as is).
// Records appended by other processes are picked up by polling every poll
// (default 250ms).
func Follow(ctx context.Context, st store.Store, f Filter, poll time.Duration, fn func(Record) error) error {
	return follow(ctx, st, f, poll, nil, fn)
}

// Follow is the package Follow, woken at once by this Log's own commits.
func (l *Log) Follow(ctx context.Context, f Filter, fn func(Record) error) error {
	return follow(ctx, l.st, f, 0, l.changed, fn)
}

var errLimit = errors.New("limit reached")

func follow(ctx context.Context, st store.Store, f Filter, poll time.Duration, changed func() <-chan struct{}, fn func(Record) error) error {
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	limit := f.Limit
	sent := 0
	for {
		var wake <-chan struct{}
		if changed != nil {
			wake = changed() // taken before reading, so no commit is missed
		}
		end, err := st.RecordCount(ctx)
		if err != nil {
			return err
		}
		if limit > 0 {
			f.Limit = limit - sent
		}
		err = Records(ctx, st, f, func(r Record) error {
			f.From = r.Seq + 1
			if err := fn(r); err != nil {
				return err
			}
			if sent++; limit > 0 && sent >= limit {
				return errLimit
			}
			return nil
		})
		if errors.Is(err, errLimit) {
			return nil
		}
		if err != nil {
			return err
		}
		// Records before end that did not match need not be read again.
		f.From = max(f.From, end)
		if f.To > 0 && f.From >= f.To {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
	}
}
