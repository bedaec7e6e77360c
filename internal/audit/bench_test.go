package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// benchEvent is a typical egress record (~330 bytes encoded).
func benchEvent(i int) audit.Event {
	ev, _ := audit.NewEvent("s-20261124-150405-a1b2c3", audit.KindEgress, "agent", audit.DecisionAllow, audit.EgressData{
		Proto: "connect", Host: "api.example.com", Port: 443, Addr: "192.0.2.10:443", Rule: "network.allow[2]",
		Reason: "api.example.com:443 is allowed", BytesUp: int64(i), BytesDown: 4096, DurationMS: 12,
	})
	ev.Time = baseTime
	return ev
}

func benchAppend(b *testing.B, parallel bool) {
	st, _ := openSQLite(b)
	l := openLog(b, st, fixedKey(b), audit.Options{})
	defer l.Close()
	ctx := context.Background()
	ev := benchEvent(1)
	b.ResetTimer()
	if parallel {
		// Group commit batches the appends that wait together: many
		// concurrent producers (egress flows, exec records) each waiting
		// for their own acknowledgement.
		b.SetParallelism(256)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Append(ctx, ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for i := 0; i < b.N; i++ {
			if _, err := l.Append(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendGroupCommit: durable appends/s, many waiting producers.
func BenchmarkAppendGroupCommit(b *testing.B) { benchAppend(b, true) }

// BenchmarkAppendFsyncEach: one producer, so every event is its own
// transaction and fsync.
func BenchmarkAppendFsyncEach(b *testing.B) { benchAppend(b, false) }

// bigLog returns a SQLite log of n events with checkpoints every 100,000,
// built straight through the store (building it through Append would
// benchmark Append again). It is cached in the temp dir between runs.
func bigLog(b *testing.B, n int) (*store.SQLite, *audit.Key) {
	b.Helper()
	k := fixedKey(b)
	dir := filepath.Join(os.TempDir(), "enclave-audit-bench-"+strconv.Itoa(n))
	path := filepath.Join(dir, "enclave.db")
	if _, err := os.Stat(path + ".done"); err != nil {
		os.RemoveAll(dir)
		st, err := store.OpenSQLite(path)
		if err != nil {
			b.Fatal(err)
		}
		fr := map[int64]tlog.Hash{}
		r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for i, x := range idx {
				h, ok := fr[x]
				if !ok {
					return nil, fmt.Errorf("missing %d", x)
				}
				out[i] = h
			}
			return out, nil
		})
		ctx := context.Background()
		const batch = 10000
		for start := 0; start < n; start += batch {
			recs := make([]store.Record, 0, batch)
			for seq := int64(start); seq < int64(min(start+batch, n)); seq++ {
				ev := benchEvent(int(seq))
				leaf, err := audit.EncodeLeaf(seq, &ev)
				if err != nil {
					b.Fatal(err)
				}
				hs, err := tlog.StoredHashes(seq, leaf, r)
				if err != nil {
					b.Fatal(err)
				}
				for j, h := range hs {
					fr[tlog.StoredHashIndex(0, seq)+int64(j)] = h
				}
				recs = append(recs, store.Record{Seq: seq, Session: ev.Session, Kind: ev.Kind, Decision: ev.Decision, Time: ev.Time, Data: leaf, Hashes: hs})
			}
			if err := st.AppendRecords(ctx, recs, nil); err != nil {
				b.Fatal(err)
			}
			if size := int64(start + len(recs)); size%100000 == 0 || size == int64(n) {
				th, err := tlog.TreeHash(size, r)
				if err != nil {
					b.Fatal(err)
				}
				msg, err := note.Sign(&note.Note{Text: string(audit.FormatCheckpoint(k.Name(), tlog.Tree{N: size, Hash: th}))}, k)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.SaveCheckpoint(ctx, store.Checkpoint{Size: size, Time: baseTime, Note: msg}); err != nil {
					b.Fatal(err)
				}
			}
			// Keep only the frontier the next records need.
			clear(fr)
			size := int64(start + len(recs))
			for level := 0; ; level++ {
				m := size>>level - 1
				if size>>level == 0 {
					break
				}
				idx := tlog.StoredHashIndex(level, m)
				h, err := st.ReadHashes([]int64{idx})
				if err != nil {
					b.Fatal(err)
				}
				fr[idx] = h[0]
			}
		}
		st.Close()
		os.WriteFile(path+".done", nil, 0o600)
	}
	st, err := store.OpenSQLite(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st, k
}

// BenchmarkVerify1M: full verification of a log of 1,000,000 events.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1000000
	st, k := bigLog(b, n)
	v := verifier(b, k)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := audit.Verify(context.Background(), st, audit.VerifyOptions{Verifier: v})
		if err != nil || rep.Records != n {
			b.Fatalf("Verify = %+v, %v", rep, err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
}

// BenchmarkProve: inclusion proof generation against the newest checkpoint
// of a 1,000,000-event log.
func BenchmarkProve(b *testing.B) {
	st, _ := bigLog(b, 1000000)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := audit.Prove(ctx, st, int64(i*7919%1000000), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckProof: offline proof check (signature, leaf, path).
func BenchmarkCheckProof(b *testing.B) {
	st, k := bigLog(b, 1000000)
	p, err := audit.Prove(context.Background(), st, 123457, nil)
	if err != nil {
		b.Fatal(err)
	}
	v := verifier(b, k)
	raw, _ := json.Marshal(p)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var q audit.Proof
		if err := json.Unmarshal(raw, &q); err != nil {
			b.Fatal(err)
		}
		if _, _, err := v.CheckProof(&q); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeLeaf: canonical encoding of a typical event.
func BenchmarkEncodeLeaf(b *testing.B) {
	ev := benchEvent(1)
	for i := 0; i < b.N; i++ {
		if _, err := audit.EncodeLeaf(int64(i), &ev); err != nil {
			b.Fatal(err)
		}
	}
}
