// Package storetest is the conformance suite every store.Store passes.
//
// A new backend (PostgreSQL, say) calls [Run] from its own test with a
// constructor that returns a fresh, empty store each time.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/enclave-dev/enclave/internal/store"
	"golang.org/x/mod/sumdb/tlog"
)

// Run runs the conformance suite. newStore must return a fresh, empty store
// on each call; Run closes each store it opens.
func Run(t *testing.T, newStore func() store.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s store.Store)
	}{
		{"AppendRead", testAppendRead},
		{"Filters", testFilters},
		{"AppendRejects", testAppendRejects},
		{"Hashes", testHashes},
		{"ConcurrentAppend", testConcurrentAppend},
		{"Checkpoints", testCheckpoints},
		{"Head", testHead},
		{"Sessions", testSessions},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore()
			defer s.Close()
			tt.f(t, s)
		})
	}
}

var t0 = time.Date(2026, 11, 24, 15, 4, 5, 123456789, time.UTC)

// MakeRecords builds n well-formed records that continue the log in s
// (which must hold start records), with tlog stored hashes computed against
// s. Record i belongs to session "s-<i%3>", has kind "k<i%4>", decision
// "allow" or "deny" by parity, and time t0+i seconds.
func MakeRecords(t testing.TB, s store.Store, start int64, n int) []store.Record {
	t.Helper()
	pending := map[int64]tlog.Hash{}
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		var miss []int64
		for i, x := range idx {
			if h, ok := pending[x]; ok {
				out[i] = h
			} else {
				miss = append(miss, x)
			}
		}
		if len(miss) > 0 {
			got, err := s.ReadHashes(miss)
			if err != nil {
				return nil, err
			}
			j := 0
			for i, x := range idx {
				if _, ok := pending[x]; !ok {
					out[i] = got[j]
					j++
				}
			}
		}
		return out, nil
	})
	recs := make([]store.Record, n)
	for i := range recs {
		seq := start + int64(i)
		data := fmt.Appendf(nil, `{"seq":%d,"payload":"record %d"}`, seq, seq)
		hs, err := tlog.StoredHashes(seq, data, r)
		if err != nil {
			t.Fatalf("tlog.StoredHashes(%d) = %v", seq, err)
		}
		base := tlog.StoredHashIndex(0, seq)
		for j, h := range hs {
			pending[base+int64(j)] = h
		}
		dec := "allow"
		if seq%2 == 1 {
			dec = "deny"
		}
		recs[i] = store.Record{
			Seq: seq, Session: fmt.Sprintf("s-%d", seq%3), Kind: fmt.Sprintf("k%d", seq%4), Decision: dec,
			Time: t0.Add(time.Duration(seq) * time.Second), Data: data, Hashes: hs,
		}
	}
	return recs
}

func readAll(t *testing.T, s store.Store, f store.Filter) []store.Record {
	t.Helper()
	var out []store.Record
	err := s.Records(context.Background(), f, func(r store.Record) error {
		r.Data = bytes.Clone(r.Data)
		r.Hashes = slices.Clone(r.Hashes)
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Records(%+v) = %v", f, err)
	}
	return out
}

func sameRecord(a, b store.Record) bool {
	return a.Seq == b.Seq && a.Session == b.Session && a.Kind == b.Kind && a.Decision == b.Decision &&
		a.Time.Equal(b.Time) && bytes.Equal(a.Data, b.Data) && slices.Equal(a.Hashes, b.Hashes)
}

func testAppendRead(t *testing.T, s store.Store) {
	ctx := context.Background()
	if n, err := s.RecordCount(ctx); err != nil || n != 0 {
		t.Fatalf("RecordCount(empty) = %d, %v, want 0, nil", n, err)
	}
	var want []store.Record
	for _, size := range []int{1, 7, 100, 1} {
		recs := MakeRecords(t, s, int64(len(want)), size)
		if err := s.AppendRecords(ctx, recs, nil); err != nil {
			t.Fatalf("AppendRecords(%d records) = %v", size, err)
		}
		want = append(want, recs...)
	}
	if n, err := s.RecordCount(ctx); err != nil || n != int64(len(want)) {
		t.Fatalf("RecordCount = %d, %v, want %d", n, err, len(want))
	}
	got := readAll(t, s, store.Filter{})
	if len(got) != len(want) {
		t.Fatalf("Records(all) returned %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameRecord(got[i], want[i]) {
			t.Fatalf("Records(all)[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.Records(ctx, store.Filter{}, func(store.Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Records with fn returning an error = %v after %d calls, want stop after 1", err, n)
	}
}

func testFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	all := MakeRecords(t, s, 0, 40)
	if err := s.AppendRecords(ctx, all, nil); err != nil {
		t.Fatalf("AppendRecords = %v", err)
	}
	for _, f := range []store.Filter{
		{From: 10},
		{From: 10, To: 20},
		{Session: "s-1"},
		{Kinds: []string{"k1", "k3"}},
		{Kinds: []string{"nope"}},
		{Decision: "deny"},
		{Since: t0.Add(5 * time.Second), Until: t0.Add(9 * time.Second)},
		{Session: "s-2", Decision: "allow", Limit: 3},
		{Limit: 5, From: 38},
	} {
		var want []int64
		for i := range all {
			if f.Match(&all[i]) {
				want = append(want, all[i].Seq)
				if f.Limit > 0 && len(want) == f.Limit {
					break
				}
			}
		}
		var got []int64
		for _, r := range readAll(t, s, f) {
			got = append(got, r.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Records(%+v) seqs = %v, want %v", f, got, want)
		}
	}
}

func testAppendRejects(t *testing.T, s store.Store) {
	ctx := context.Background()
	good := MakeRecords(t, s, 0, 5)
	if err := s.AppendRecords(ctx, good, nil); err != nil {
		t.Fatalf("AppendRecords = %v", err)
	}
	next := MakeRecords(t, s, 5, 4)
	badHashes := slices.Clone(next)
	badHashes[2].Hashes = badHashes[2].Hashes[:len(badHashes[2].Hashes)-1]
	gap := slices.Clone(next)
	gap[3].Seq = 9
	for _, tt := range []struct {
		name     string
		recs     []store.Record
		conflict bool
	}{
		{"empty", nil, false},
		{"stale start", MakeRecords(t, s, 0, 2)[1:], true},
		{"future start", next[1:], true},
		{"missing hash mid-batch", badHashes, false},
		{"gap mid-batch", gap, false},
	} {
		err := s.AppendRecords(ctx, tt.recs, nil)
		if err == nil {
			t.Errorf("AppendRecords(%s) = nil, want error", tt.name)
			continue
		}
		if got := errors.Is(err, store.ErrConflict); got != tt.conflict {
			t.Errorf("AppendRecords(%s) = %v; errors.Is(ErrConflict) = %v, want %v", tt.name, err, got, tt.conflict)
		}
		if n, _ := s.RecordCount(ctx); n != 5 {
			t.Fatalf("after rejected AppendRecords(%s): RecordCount = %d, want 5 (batch must be all or nothing)", tt.name, n)
		}
	}
	if err := s.AppendRecords(ctx, next, nil); err != nil {
		t.Fatalf("AppendRecords(next) after rejections = %v", err)
	}
}

func testHashes(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 300
	recs := MakeRecords(t, s, 0, n)
	for i := 0; i < n; i += 50 {
		if err := s.AppendRecords(ctx, recs[i:i+50], nil); err != nil {
			t.Fatalf("AppendRecords = %v", err)
		}
	}
	// Every stored hash index of the tree is readable and matches what the
	// records carried.
	var idx []int64
	var want []tlog.Hash
	for _, r := range recs {
		for j, h := range r.Hashes {
			idx = append(idx, tlog.StoredHashIndex(0, r.Seq)+int64(j))
			want = append(want, h)
		}
	}
	if int64(len(idx)) != tlog.StoredHashCount(n) {
		t.Fatalf("records carry %d hashes, tlog.StoredHashCount(%d) = %d", len(idx), n, tlog.StoredHashCount(n))
	}
	slices.Reverse(idx)
	slices.Reverse(want)
	got, err := s.ReadHashes(idx)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReadHashes(all, reversed) = %v, mismatch or error", err)
	}
	if _, err := s.ReadHashes([]int64{tlog.StoredHashCount(n)}); err == nil {
		t.Errorf("ReadHashes(past end) = nil error, want error")
	}
	// The store works as a tlog.HashReader for tree hashes and proofs.
	var leaves []tlog.Hash
	for _, r := range recs {
		leaves = append(leaves, tlog.RecordHash(r.Data))
	}
	th, err := tlog.TreeHash(n, s)
	if err != nil {
		t.Fatalf("tlog.TreeHash(store) = %v", err)
	}
	for _, k := range []int64{0, 1, 127, 128, 299} {
		p, err := tlog.ProveRecord(n, k, s)
		if err != nil {
			t.Fatalf("tlog.ProveRecord(%d, %d) = %v", n, k, err)
		}
		if err := tlog.CheckRecord(p, n, th, k, leaves[k]); err != nil {
			t.Errorf("tlog.CheckRecord(%d) = %v", k, err)
		}
	}
}

func testConcurrentAppend(t *testing.T, s store.Store) {
	// Writers race; losers get ErrConflict and retry with fresh hashes. The
	// log must end up whole, with every record appended exactly once.
	ctx := context.Background()
	const writers, each = 4, 10
	var mu sync.Mutex // serialises hash computation only, not the appends
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				mu.Lock()
				n, err := s.RecordCount(ctx)
				if err != nil {
					mu.Unlock()
					t.Errorf("RecordCount = %v", err)
					return
				}
				recs := MakeRecords(t, s, n, 2)
				mu.Unlock()
				err = s.AppendRecords(ctx, recs, nil)
				switch {
				case err == nil:
					i++
				case errors.Is(err, store.ErrConflict):
				default:
					t.Errorf("AppendRecords = %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := s.RecordCount(ctx); err != nil || n != writers*each*2 {
		t.Fatalf("RecordCount = %d, %v, want %d", n, err, writers*each*2)
	}
	if _, err := tlog.TreeHash(writers*each*2, s); err != nil {
		t.Fatalf("tlog.TreeHash after concurrent appends = %v", err)
	}
}

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := context.Background()
	if cps, err := s.Checkpoints(ctx); err != nil || len(cps) != 0 {
		t.Fatalf("Checkpoints(empty) = %v, %v, want none", cps, err)
	}
	for _, size := range []int64{5, 2, 5, 9} {
		id, err := s.SaveCheckpoint(ctx, store.Checkpoint{Size: size, Time: t0, Note: fmt.Appendf(nil, "note %d\n", size)})
		if err != nil || id <= 0 {
			t.Fatalf("SaveCheckpoint(%d) = %d, %v", size, id, err)
		}
	}
	cps, err := s.Checkpoints(ctx)
	if err != nil {
		t.Fatalf("Checkpoints = %v", err)
	}
	var sizes []int64
	for i, c := range cps {
		sizes = append(sizes, c.Size)
		if string(c.Note) != fmt.Sprintf("note %d\n", c.Size) || !c.Time.Equal(t0) {
			t.Errorf("Checkpoints[%d] = %+v, note or time not kept", i, c)
		}
		if i > 0 && c.Size == cps[i-1].Size && c.ID <= cps[i-1].ID {
			t.Errorf("Checkpoints of equal size not ordered by ID: %d then %d", cps[i-1].ID, c.ID)
		}
	}
	if !slices.Equal(sizes, []int64{2, 5, 5, 9}) {
		t.Errorf("Checkpoints sizes = %v, want [2 5 5 9]", sizes)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	exit := 3
	end := t0.Add(time.Hour)
	a := &store.Session{
		ID: "s-20261124-150405-aaaaaa", User: "alice", Command: []string{"claude", "--flag", "a b"},
		Dir: "/src/repo", Workspace: "/state/ws/a", Branch: "enclave/a", BaseCommit: "abc123",
		PolicySource: "/src/repo/enclave.yaml", PolicyHash: "deadbeef", Profile: "default",
		Started: t0, State: store.StateRunning, Summary: json.RawMessage(`{"k":1}`),
	}
	if err := s.CreateSession(ctx, a); err != nil {
		t.Fatalf("CreateSession = %v", err)
	}
	if err := s.CreateSession(ctx, a); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateSession(again) = %v, want ErrExists", err)
	}
	got, err := s.GetSession(ctx, a.ID)
	if err != nil {
		t.Fatalf("GetSession = %v", err)
	}
	if got.Ended != nil || got.ExitCode != nil {
		t.Errorf("GetSession: Ended, ExitCode = %v, %v, want nil, nil", got.Ended, got.ExitCode)
	}
	checkSession(t, got, a)

	a.Ended, a.ExitCode, a.State = &end, &exit, store.StateExited
	a.Blocked, a.BytesUp, a.BytesDown, a.FilesChanged = 2, 1<<40, 7, 4
	if err := s.UpdateSession(ctx, a); err != nil {
		t.Fatalf("UpdateSession = %v", err)
	}
	got, _ = s.GetSession(ctx, a.ID)
	checkSession(t, got, a)

	if _, err := s.GetSession(ctx, "s-none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSession(missing) = %v, want ErrNotFound", err)
	}
	if err := s.UpdateSession(ctx, &store.Session{ID: "s-none"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateSession(missing) = %v, want ErrNotFound", err)
	}
	if err := s.CreateSession(ctx, &store.Session{ID: "s-x", Summary: json.RawMessage("{")}); err == nil {
		t.Errorf("CreateSession(bad summary JSON) = nil, want error")
	}
	if err := s.CreateSession(ctx, &store.Session{}); err == nil {
		t.Errorf("CreateSession(no ID) = nil, want error")
	}

	for i, u := range []string{"bob", "alice", "bob"} {
		sess := &store.Session{ID: fmt.Sprintf("s-2026112%d-000000-bbbbbb", i+5), User: u, Started: t0.Add(time.Duration(i+1) * time.Minute), State: store.StateRunning}
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatalf("CreateSession(%s) = %v", sess.ID, err)
		}
	}
	ids := func(f store.SessionFilter) []string {
		l, err := s.ListSessions(ctx, f)
		if err != nil {
			t.Fatalf("ListSessions(%+v) = %v", f, err)
		}
		var out []string
		for _, x := range l {
			out = append(out, x.ID)
		}
		return out
	}
	for _, tt := range []struct {
		f    store.SessionFilter
		want []string
	}{
		{store.SessionFilter{}, []string{"s-20261127-000000-bbbbbb", "s-20261126-000000-bbbbbb", "s-20261125-000000-bbbbbb", a.ID}},
		{store.SessionFilter{User: "bob"}, []string{"s-20261127-000000-bbbbbb", "s-20261125-000000-bbbbbb"}},
		{store.SessionFilter{State: store.StateExited}, []string{a.ID}},
		{store.SessionFilter{Limit: 1}, []string{"s-20261127-000000-bbbbbb"}},
	} {
		if got := ids(tt.f); !slices.Equal(got, tt.want) {
			t.Errorf("ListSessions(%+v) = %v, want %v", tt.f, got, tt.want)
		}
	}
}

func checkSession(t *testing.T, got, want *store.Session) {
	t.Helper()
	g, w := *got, *want
	if !g.Started.Equal(w.Started) {
		t.Errorf("session Started = %v, want %v", g.Started, w.Started)
	}
	if (g.Ended == nil) != (w.Ended == nil) || (g.Ended != nil && !g.Ended.Equal(*w.Ended)) {
		t.Errorf("session Ended = %v, want %v", g.Ended, w.Ended)
	}
	if (g.ExitCode == nil) != (w.ExitCode == nil) || (g.ExitCode != nil && *g.ExitCode != *w.ExitCode) {
		t.Errorf("session ExitCode = %v, want %v", g.ExitCode, w.ExitCode)
	}
	if !slices.Equal(g.Command, w.Command) || string(g.Summary) != string(w.Summary) {
		t.Errorf("session Command, Summary = %q, %s, want %q, %s", g.Command, g.Summary, w.Command, w.Summary)
	}
	g.Started, w.Started, g.Ended, w.Ended, g.ExitCode, w.ExitCode = time.Time{}, time.Time{}, nil, nil, nil, nil
	g.Command, w.Command, g.Summary, w.Summary = nil, nil, nil, nil
	if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
		t.Errorf("session = %+v, want %+v", g, w)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := s.RecordCount(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("RecordCount after Close = %v, want ErrClosed", err)
	}
	if err := s.AppendRecords(ctx, []store.Record{{Data: []byte("x"), Hashes: make([]tlog.Hash, 1)}}, nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("AppendRecords after Close = %v, want ErrClosed", err)
	}
	if _, err := s.GetSession(ctx, "x"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("GetSession after Close = %v, want ErrClosed", err)
	}
}

func testHead(t *testing.T, s store.Store) {
	ctx := context.Background()
	head := func(size int64) *store.Checkpoint {
		return &store.Checkpoint{Size: size, Time: t0, Note: fmt.Appendf(nil, "head %d\n", size)}
	}
	wantHead := func(size int64) {
		t.Helper()
		cps, err := s.Checkpoints(ctx)
		if err != nil {
			t.Fatalf("Checkpoints = %v", err)
		}
		var heads []store.Checkpoint
		for _, c := range cps {
			if c.Head {
				heads = append(heads, c)
			}
		}
		if len(heads) != 1 || heads[0].Size != size || string(heads[0].Note) != fmt.Sprintf("head %d\n", size) || heads[0].ID != 0 {
			t.Fatalf("head checkpoints = %+v, want one of size %d", heads, size)
		}
	}
	if err := s.AppendRecords(ctx, MakeRecords(t, s, 0, 3), head(3)); err != nil {
		t.Fatalf("AppendRecords with head = %v", err)
	}
	wantHead(3)
	if _, err := s.SaveCheckpoint(ctx, store.Checkpoint{Size: 3, Time: t0, Note: []byte("retained 3\n")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendRecords(ctx, MakeRecords(t, s, 3, 2), head(5)); err != nil {
		t.Fatalf("AppendRecords with head = %v", err)
	}
	wantHead(5)
	// Rejected batches leave the head alone.
	if err := s.AppendRecords(ctx, MakeRecords(t, s, 5, 2), head(6)); err == nil {
		t.Errorf("AppendRecords(head size 6 for a log of 7) = nil, want error")
	}
	if err := s.AppendRecords(ctx, MakeRecords(t, s, 5, 2)[1:], head(7)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AppendRecords(stale) = %v, want ErrConflict", err)
	}
	wantHead(5)
	// A batch without a head keeps the old one (it then lags the log).
	if err := s.AppendRecords(ctx, MakeRecords(t, s, 5, 1), nil); err != nil {
		t.Fatal(err)
	}
	wantHead(5)
	cps, _ := s.Checkpoints(ctx)
	if len(cps) != 2 || cps[0].Head || !cps[1].Head {
		t.Errorf("Checkpoints = %+v, want the retained one, then the head", cps)
	}
}
