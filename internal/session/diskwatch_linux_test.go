package session

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDiskWatchStopsAFastWriter writes as fast as it can into a directory
// created after the watch started and checks how far past the limit the
// copy grew before the watch called over.
func TestDiskWatchStopsAFastWriter(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "existing"), bytes.Repeat([]byte("x"), 1<<20), 0o644)
	const limit = 4 << 20
	d := newDiskWatch(root, limit)
	if w := d.Warning(); w != "" {
		t.Logf("warning: %s", w)
	}
	if d.base < 1<<20 {
		t.Fatalf("baseline %d bytes, want the existing MiB counted", d.base)
	}
	var stopped atomic.Bool
	var grownAt atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.run(context.Background(), stop, func() []int { return nil }, func(g int64) {
			grownAt.Store(g)
			stopped.Store(true)
		})
	}()
	dir := filepath.Join(root, "new", "deeper")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("y"), 64<<10)
	written := int64(0)
	deadline := time.Now().Add(10 * time.Second)
	for !stopped.Load() && written < 256<<20 && time.Now().Before(deadline) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		written += int64(len(chunk))
	}
	<-done
	if !stopped.Load() {
		t.Fatalf("wrote %d MiB past a %d MiB limit and the watch never fired", written>>20, limit>>20)
	}
	over := written - limit
	t.Logf("over called at %d bytes grown; the writer had written %d bytes (%d KiB past the limit)", grownAt.Load(), written, over>>10)
	// The writer shares this process and, on a loaded machine, the CPUs:
	// what is checked is that the watch fires long before a 250 ms walk
	// would (which let a writer like this one run 250 MiB past).
	if over > 32<<20 {
		t.Errorf("the writer got %d KiB past the limit before the watch fired; want under 32 MiB", over>>10)
	}
}

// TestDiskWatchCountsDeletes: deleting files gives the room back, and a
// directory tree moved away stops counting.
func TestDiskWatchCountsDeletes(t *testing.T) {
	root := t.TempDir()
	d := newDiskWatch(root, 1<<30)
	os.MkdirAll(filepath.Join(root, "a", "b"), 0o755)
	// Let the watcher see the new directories before files appear in them
	// (addTree rescans a new directory anyway).
	os.WriteFile(filepath.Join(root, "a", "b", "f"), bytes.Repeat([]byte("z"), 1<<20), 0o644)
	os.WriteFile(filepath.Join(root, "g"), bytes.Repeat([]byte("z"), 1<<20), 0o644)
	drain := func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(d.fd, buf)
			if n <= 0 || err != nil {
				return
			}
			d.handle(buf[:n])
		}
	}
	drain()
	if g := d.grown(); g < 2<<20 {
		t.Fatalf("grown = %d after writing 2 MiB", g)
	}
	os.Remove(filepath.Join(root, "g"))
	os.RemoveAll(filepath.Join(root, "a"))
	drain()
	if g := d.grown(); g != 0 {
		t.Fatalf("grown = %d after deleting everything written, want 0", g)
	}
}

// TestDiskWatchNeverFollowsLinks: a link the agent leaves in its copy,
// to a directory or a file outside, is neither measured nor watched, so
// writes out there neither count nor trigger.
func TestDiskWatchNeverFollowsLinks(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "big"), bytes.Repeat([]byte("o"), 2<<20), 0o644)
	if err := os.Symlink(outside, filepath.Join(root, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "big"), filepath.Join(root, "filelink")); err != nil {
		t.Fatal(err)
	}
	d := newDiskWatch(root, 1<<20)
	if d.base >= 1<<20 || d.walk >= 1<<20 {
		t.Fatalf("baseline %d, walk %d: a link's target was measured", d.base, d.walk)
	}
	for _, p := range d.dirs {
		if p != "" {
			t.Errorf("watching %q: only the root is a directory of the copy", p)
		}
	}
	// Growth outside, through the path the link names, is not seen.
	os.WriteFile(filepath.Join(outside, "more"), bytes.Repeat([]byte("o"), 4<<20), 0o644)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(d.fd, buf)
		if n <= 0 || err != nil {
			break
		}
		d.handle(buf[:n])
	}
	d.setFile("dirlink/more")
	d.setFile("filelink")
	if g := d.grown(); g != 0 {
		t.Errorf("grown = %d after writing outside the copy, want 0", g)
	}
	if g := treeSize(root) - d.walk; g != 0 {
		t.Errorf("walk grew by %d after writing outside the copy, want 0", g)
	}
}

// TestDiskWatchSeesDeletedOpenFiles: a file unlinked while open grows where
// no walk and no directory event can see it; the watch counts what the
// sandbox's processes (here, this one) hold open.
func TestDiskWatchSeesDeletedOpenFiles(t *testing.T) {
	root := t.TempDir()
	const limit = 4 << 20
	d := newDiskWatch(root, limit)
	f, err := os.Create(filepath.Join(root, "hidden"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("d"), 8<<20)); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	if n := openDeleted([]int{os.Getpid()}, d.dev); n < 8<<20 {
		t.Fatalf("openDeleted = %d, want the 8 MiB held by a deleted file", n)
	}
	if g := treeSize(root) - d.walk; g >= 1<<20 {
		t.Fatalf("the walk saw %d bytes of a deleted file", g)
	}
	stop := make(chan struct{})
	defer close(stop)
	got := make(chan int64, 1)
	start := time.Now()
	go d.run(context.Background(), stop, func() []int { return descendants(os.Getpid()) }, func(g int64) { got <- g })
	select {
	case g := <-got:
		t.Logf("fired after %v at %d bytes", time.Since(start), g)
	case <-time.After(5 * time.Second):
		t.Fatal("8 MiB in a deleted, open file did not trip a 4 MiB limit")
	}
}
