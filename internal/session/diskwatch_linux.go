package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// diskWatch enforces limits.disk on the workspace copy. The copy lives on
// the host's file system, where enclave has no quota to set, so growth is
// measured: inotify reports each write, create, move and delete under the
// copy as it happens and the watcher keeps a running count of the bytes
// allocated to every file, so a writer is stopped within milliseconds of
// crossing the limit, not at the next walk. A walk of the whole copy every
// diskInterval is the backstop for what inotify does not report (writes
// through a shared mapping, a queue overflow, a directory it could not
// watch).
type diskWatch struct {
	root  string
	max   int64
	fd    int            // inotify instance, -1 when only walking
	dirs  map[int]string // watch descriptor → directory, relative to root
	files map[string]int64
	total int64 // bytes allocated to files now
	base  int64 // bytes allocated when the watch started
	walk  int64 // treeSize when the watch started, for the backstop
	warn  string
}

const watchMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
	unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// newDiskWatch measures the copy and watches every directory in it. Call
// it before the agent starts, so the baseline holds none of its writes. If
// inotify is unavailable the watch still works, by walking alone, and
// Warning says so.
func newDiskWatch(root string, max int64) *diskWatch {
	d := &diskWatch{root: root, max: max, fd: -1}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		d.warn = fmt.Sprintf("inotify unavailable (%v): limits.disk is checked every %s only", err, diskInterval)
	} else {
		d.fd = fd
	}
	d.walk = treeSize(root)
	d.rescan()
	d.base = d.total
	return d
}

// Warning is why the watch is weaker than it should be, or "".
func (d *diskWatch) Warning() string { return d.warn }

// rescan forgets everything and measures the copy again, re-adding
// watches (inotify keeps one watch per inode, so re-adding is harmless).
func (d *diskWatch) rescan() {
	d.dirs = map[int]string{}
	d.files = map[string]int64{}
	d.total = 0
	d.addTree("")
}

// addTree watches dir (relative to root) and everything below it, and
// counts its files. A file already counted is counted again at its
// current size, never twice.
func (d *diskWatch) addTree(rel string) {
	filepath.WalkDir(filepath.Join(d.root, rel), func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		r, _ := filepath.Rel(d.root, p)
		if e.IsDir() {
			if d.fd >= 0 {
				wd, err := unix.InotifyAddWatch(d.fd, p, watchMask)
				if err != nil {
					if d.warn == "" {
						d.warn = fmt.Sprintf("cannot watch %s (%v): growth there is seen by the %s walk only", r, err, diskInterval)
					}
				} else {
					d.dirs[wd] = r
				}
			}
			return nil
		}
		d.setFile(r)
		return nil
	})
}

// setFile updates the count for one file from its current allocation.
func (d *diskWatch) setFile(rel string) {
	var st unix.Stat_t
	n := int64(0)
	if err := unix.Fstatat(unix.AT_FDCWD, filepath.Join(d.root, rel), &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		n = st.Blocks * 512
	}
	d.total += n - d.files[rel]
	if n == 0 {
		delete(d.files, rel)
	} else {
		d.files[rel] = n
	}
}

// dropTree forgets a directory that left (deleted or moved away) and
// every file counted below it.
func (d *diskWatch) dropTree(rel string) {
	prefix := rel + "/"
	for p, n := range d.files {
		if p == rel || strings.HasPrefix(p, prefix) {
			d.total -= n
			delete(d.files, p)
		}
	}
	for wd, p := range d.dirs {
		if p == rel || strings.HasPrefix(p, prefix) {
			delete(d.dirs, wd)
		}
	}
}

// grown is how much the copy has grown since the watch started.
func (d *diskWatch) grown() int64 { return d.total - d.base }

// handle applies one batch of inotify events.
func (d *diskWatch) handle(buf []byte) {
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		size := unix.SizeofInotifyEvent + int(ev.Len)
		if size > len(buf) {
			return
		}
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:size]), "\x00")
		buf = buf[size:]
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			d.rescan() // events were lost: measure everything again
			continue
		}
		dir, ok := d.dirs[int(ev.Wd)]
		if ev.Mask&unix.IN_IGNORED != 0 {
			delete(d.dirs, int(ev.Wd))
			continue
		}
		if !ok || name == "" {
			continue
		}
		rel := filepath.Join(dir, name)
		switch {
		case ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			d.dropTree(rel) // a directory moved over another
			d.addTree(rel)
		case ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
			d.dropTree(rel)
		default:
			d.setFile(rel)
		}
	}
}

// run enforces the limit until ctx ends or stop closes, calling over once
// (and returning) when the copy has grown past the limit.
func (d *diskWatch) run(ctx context.Context, stop <-chan struct{}, over func(grown int64)) {
	events := make(chan []byte, 1)
	if d.fd >= 0 {
		f := os.NewFile(uintptr(d.fd), "inotify") // non-blocking: reads park in the poller
		defer f.Close()
		done := make(chan struct{})
		defer close(done)
		go func() {
			defer close(events)
			for {
				buf := make([]byte, 64<<10)
				n, err := f.Read(buf)
				if err != nil {
					if !errors.Is(err, os.ErrClosed) {
						select {
						case events <- nil: // tell the loop to fall back to walking
						case <-done:
						}
					}
					return
				}
				select {
				case events <- buf[:n]:
				case <-done:
					return
				}
			}
		}()
	}
	t := time.NewTicker(diskInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case buf, ok := <-events:
			if !ok || buf == nil {
				events = nil // inotify failed: the walk goes on alone
				continue
			}
			d.handle(buf)
		case <-t.C:
			// The backstop: a fresh walk, whatever inotify said.
			if g := treeSize(d.root) - d.walk; g > d.max {
				over(g)
				return
			}
		}
		if g := d.grown(); g > d.max {
			over(g)
			return
		}
	}
}
