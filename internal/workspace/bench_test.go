package workspace

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Benchmarks run on a generated repository: ENCLAVE_BENCH_FILES files
// (default 2000, 200 with -short) at a path given by ENCLAVE_BENCH_REPO or
// generated in a temp dir. bench/workspace.sh generates 50,000-file
// repositories, with and without a large history, and reports medians.

func benchFiles(b testing.TB) int {
	if s := os.Getenv("ENCLAVE_BENCH_FILES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("ENCLAVE_BENCH_FILES=%q: want a positive integer", s)
		}
		return n
	}
	if testing.Short() {
		return 200
	}
	return 2000
}

// genRepo writes a repository of n files (100 per directory, sizes 200 B
// to 4 KiB, about 2 KiB on average, like source code) and commits it;
// with historyMiB > 0 it first commits and then deletes that many MiB of
// incompressible blobs, so the history is large and the tree is not.
func genRepo(b testing.TB, dir string, n, historyMiB int) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	tgit(b, dir, "init", "-q")
	tgit(b, dir, "config", "user.name", "bench")
	tgit(b, dir, "config", "user.email", "bench@example.com")
	tgit(b, dir, "config", "gc.auto", "0") // no background gc while we measure
	rng := rand.New(rand.NewPCG(1, 2))
	if historyMiB > 0 {
		chunk := make([]byte, 1<<20)
		for i := 0; i < historyMiB; i++ {
			for j := range chunk {
				chunk[j] = byte(rng.Uint32())
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("history-%03d.bin", i)), chunk, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		tgit(b, dir, "add", "-A")
		tgit(b, dir, "commit", "-q", "-m", "large history")
		tgit(b, dir, "rm", "-q", "history-*.bin")
	}
	line := []byte("\tfmt.Println(\"some line of source code\") // padding\n")
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("pkg%03d", i/100), fmt.Sprintf("f%05d.go", i))
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		size := 200 + rng.IntN(3900)
		buf := fmt.Appendf(nil, "package pkg // file %d\n", i)
		for len(buf) < size {
			buf = append(buf, line...)
		}
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	tgit(b, dir, "add", "-A")
	tgit(b, dir, "commit", "-q", "-m", "tree")
	// Packed, as a repository people work in is (the blobs are random,
	// so delta search would only burn time).
	tgit(b, dir, "-c", "pack.window=0", "gc", "-q")
}

func benchRepo(b *testing.B) string {
	if r := os.Getenv("ENCLAVE_BENCH_REPO"); r != "" {
		return r
	}
	testEnv(b)
	dir := filepath.Join(b.TempDir(), "repo")
	genRepo(b, dir, benchFiles(b), 0)
	return dir
}

// TestGenerateBenchRepo is how bench/workspace.sh makes its repositories:
// it only runs with ENCLAVE_BENCH_GEN set to the directory to create.
func TestGenerateBenchRepo(t *testing.T) {
	dir := os.Getenv("ENCLAVE_BENCH_GEN")
	if dir == "" {
		t.Skip("set ENCLAVE_BENCH_GEN=<dir> (and ENCLAVE_BENCH_FILES, ENCLAVE_BENCH_HISTORY_MIB) to generate a benchmark repository")
	}
	hist, _ := strconv.Atoi(os.Getenv("ENCLAVE_BENCH_HISTORY_MIB"))
	genRepo(t, dir, benchFiles(t), hist)
}

func BenchmarkPrepare(b *testing.B) {
	repo := benchRepo(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(b.TempDir(), "s")
		w, err := Prepare(ctx, PrepareOptions{Source: repo, Dir: dir, Session: "bench" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := w.Remove(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkSnapshot(b *testing.B) {
	repo := benchRepo(b)
	ctx := context.Background()
	for _, changed := range []int{0, 10} {
		b.Run(fmt.Sprintf("changed=%d", changed), func(b *testing.B) {
			w, err := Prepare(ctx, PrepareOptions{Source: repo, Dir: filepath.Join(b.TempDir(), "s"), Session: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Remove()
			for i := range changed {
				writeT(b, filepath.Join(w.Copy, fmt.Sprintf("agent/%d.txt", i)), "agent work\n")
			}
			for b.Loop() {
				if _, err := w.Snapshot(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
