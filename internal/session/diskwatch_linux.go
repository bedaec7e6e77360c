package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// diskWatch enforces limits.disk on the workspace copy. The copy lives on
// the host's file system, where enclave has no quota to set, so growth is
// measured: inotify reports each write, create, move and delete under the
// copy as it happens and the watcher keeps a running count of the bytes
// allocated to every file, so a writer is stopped within milliseconds of
// crossing the limit, not at the next walk. What inotify does not report
// is caught later: every deletedInterval the files the sandbox's processes
// hold open after deleting them (a file unlinked while open grows unseen by
// any walk) are added up, and every walkInterval the whole copy is walked
// again (writes through a shared mapping, a queue overflow, a directory it
// could not watch).
//
// The copy is the agent's: every path is resolved from a descriptor of the
// copy's root without following a symlink (a directory the agent swapped
// for a link to your HOME is not entered, watched or measured).
type diskWatch struct {
	root   string
	rootfd int // O_PATH descriptor of root, -1 if it could not be opened
	max    int64
	fd     int            // inotify instance, -1 when only walking
	dirs   map[int]string // watch descriptor → directory, relative to root
	files  map[string]int64
	total  int64  // bytes allocated to files now
	base   int64  // bytes allocated when the watch started
	walk   int64  // treeSize when the watch started (files and directories), for the backstop
	dev    uint64 // the copy's file system
	warn   string
	mu     sync.Mutex // total, files and dirs once run has started
	// deleted is signalled when a file of the copy is deleted: it may
	// still be open, and grow where no event reports it.
	deleted chan struct{}
}

const (
	// deletedInterval is how often open, deleted files are counted.
	deletedInterval = 250 * time.Millisecond
	// heldInterval is how often they are counted while there are some
	// (and at once when a file of the copy is deleted).
	heldInterval = 10 * time.Millisecond
	// walkInterval is how often the copy is walked while inotify works;
	// without it, every deletedInterval.
	walkInterval = 2 * time.Second
)

// watchMask has no IN_DONT_FOLLOW: watches are added through
// /proc/self/fd/N of a directory opened without following links, a magic
// link that must be followed to reach it.
const watchMask = unix.IN_MODIFY | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
	unix.IN_DELETE | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// newDiskWatch measures the copy and watches every directory in it. Call
// it before the agent starts, so the baseline holds none of its writes. If
// inotify is unavailable the watch still works, by walking alone, and
// Warning says so.
func newDiskWatch(root string, max int64) *diskWatch {
	d := &diskWatch{root: root, max: max, fd: -1, rootfd: -1, deleted: make(chan struct{}, 1)}
	if fd, err := openRoot(root); err == nil {
		d.rootfd = fd
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		d.warn = fmt.Sprintf("inotify unavailable (%v): limits.disk is checked every %s only", err, deletedInterval)
	} else {
		d.fd = fd
	}
	var st unix.Stat_t
	if unix.Stat(root, &st) == nil {
		d.dev = st.Dev
	}
	// One walk gives both baselines: the files' bytes for the event
	// count, and with the directories' the walk's for the backstop.
	dirBytes := d.rescan()
	d.base = d.total
	d.walk = d.total + dirBytes
	return d
}

// Warning is why the watch is weaker than it should be, or "".
func (d *diskWatch) Warning() string { return d.warn }

// rescan forgets everything and measures the copy again, re-adding
// watches (inotify keeps one watch per inode, so re-adding is harmless).
// It returns the bytes of the directories themselves.
func (d *diskWatch) rescan() int64 {
	d.dirs = map[int]string{}
	d.files = map[string]int64{}
	d.total = 0
	return d.addTree("")
}

// addTree watches dir (relative to root) and everything below it, and
// counts its files. A file already counted is counted again at its
// current size, never twice. It returns the bytes of the directories.
func (d *diskWatch) addTree(rel string) (dirBytes int64) {
	fd, err := openBeneath(d.rootfd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return 0 // gone, or not a directory reachable without a link
	}
	walkAt(fd, rel, func(r string, dirfd int, st *unix.Stat_t) {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			d.setSize(r, st.Blocks*512)
			return
		}
		dirBytes += st.Blocks * 512
		if d.fd < 0 {
			return
		}
		wd, err := unix.InotifyAddWatch(d.fd, fmt.Sprintf("/proc/self/fd/%d", dirfd), watchMask)
		if err != nil {
			if d.warn == "" {
				d.warn = fmt.Sprintf("cannot watch %s (%v): growth there is seen by the walk every %s only", r, err, walkInterval)
			}
			return
		}
		d.dirs[wd] = r
	})
	return dirBytes
}

// setFile updates the count for one file from its current allocation.
func (d *diskWatch) setFile(rel string) {
	n := int64(0)
	if fd, err := openBeneath(d.rootfd, rel, unix.O_PATH|unix.O_NOFOLLOW); err == nil {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			n = st.Blocks * 512
		}
		unix.Close(fd)
	}
	d.setSize(rel, n)
}

func (d *diskWatch) setSize(rel string, n int64) {
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
			if ev.Mask&unix.IN_DELETE != 0 {
				select {
				case d.deleted <- struct{}{}:
				default:
				}
			}
		}
	}
}

// run enforces the limit until ctx ends or stop closes, calling over once
// when the copy has grown past the limit. The inotify events are read on
// a thread of their own, blocked in poll(2) rather than parked in the Go
// scheduler, so a writer is stopped as soon as the kernel gives that
// thread a CPU.
//
// pids lists the sandbox's processes, for the open deleted files.
func (d *diskWatch) run(ctx context.Context, stop <-chan struct{}, pids func() []int, over func(grown int64)) {
	if d.rootfd >= 0 {
		defer unix.Close(d.rootfd)
	}
	var once sync.Once
	fired := make(chan struct{})
	fire := func(g int64) {
		once.Do(func() {
			over(g)
			close(fired)
		})
	}
	if d.fd >= 0 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err == nil {
			done := make(chan struct{})
			go func() {
				defer close(done)
				d.readLoop(p[0], fire)
			}()
			defer func() {
				unix.Write(p[1], []byte{0}) // wake the reader
				<-done
				unix.Close(p[0])
				unix.Close(p[1])
				unix.Close(d.fd)
			}()
		}
	}
	walkEvery := walkInterval
	if d.fd < 0 {
		walkEvery = deletedInterval
	}
	t := time.NewTimer(deletedInterval)
	defer t.Stop()
	walked, lastWalk := d.walk, time.Now() // the last walk's total
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-fired:
			return
		case <-d.deleted:
		case <-t.C:
		}
		if time.Since(lastWalk) >= walkEvery {
			// A fresh walk, whatever inotify said.
			walked, lastWalk = sizeBelow(d.rootfd), time.Now()
		}
		// Growth no event and no walk sees, on top of the larger of
		// the two counts.
		held := openDeleted(pids(), d.dev)
		if g := max(walked-d.walk, d.grownNow()) + held; g > d.max {
			fire(g)
			return
		}
		// While deleted files are held open, nothing but this scan sees
		// them grow: look often.
		next := deletedInterval
		if held > 0 {
			next = heldInterval
		}
		t.Reset(next)
	}
}

// grownNow is grown, read safely while the reader thread updates it.
func (d *diskWatch) grownNow() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total - d.base
}

// openDeleted adds up the blocks of regular files on file system dev that
// the given processes hold open after every name of them was deleted,
// each file once.
func openDeleted(pids []int, dev uint64) int64 {
	seen := map[uint64]bool{}
	var n int64
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or not ours to look at (the init)
		}
		for _, fd := range fds {
			var st unix.Stat_t
			if unix.Stat(dir+fd.Name(), &st) != nil {
				continue
			}
			if st.Dev != dev || st.Nlink != 0 || st.Mode&unix.S_IFMT != unix.S_IFREG || seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
			n += st.Blocks * 512
		}
	}
	return n
}

// descendants lists pid and every process below it.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(out[i]) + "/task")
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(out[i]) + "/task/" + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// readLoop applies inotify events as they come until wake is readable,
// inotify fails (the walk goes on alone) or the limit is crossed.
func (d *diskWatch) readLoop(wake int, fire func(int64)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 64<<10)
	fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return
		}
	read:
		for {
			n, err := unix.Read(d.fd, buf)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				break read
			case err != nil || n <= 0:
				return
			}
			d.mu.Lock()
			d.handle(buf[:n])
			g := d.grown()
			d.mu.Unlock()
			if g > d.max {
				fire(g)
				return
			}
		}
	}
}

// openRoot opens dir to resolve paths beneath it (O_PATH, not through a
// symlink).
func openRoot(dir string) (int, error) {
	return unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// openBeneath opens rel below the directory rootfd (rel "" is that
// directory) without following any symlink on the way, the last component
// included unless flags hold O_PATH|O_NOFOLLOW (then a link is opened as
// itself).
func openBeneath(rootfd int, rel string, flags int) (int, error) {
	if rootfd < 0 {
		return -1, unix.EBADF
	}
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(rootfd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// walkAt calls visit for the directory open as fd (named rel) and every
// entry below it, depth first, never following a symlink: each directory
// is opened relative to its parent with O_NOFOLLOW. For a directory, dirfd
// is its own descriptor (valid during the call); for anything else it is
// the parent's. walkAt closes fd.
func walkAt(fd int, rel string, visit func(rel string, dirfd int, st *unix.Stat_t)) {
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	visit(rel, fd, &st)
	names, _ := f.Readdirnames(-1)
	for _, name := range names {
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			visit(r, fd, &st)
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		walkAt(cfd, r, visit)
	}
}

// treeSize is the bytes allocated to everything under dir (directories
// included), counted by blocks so sparse files count for what they hold
// on disk, never following a symlink.
func treeSize(dir string) int64 {
	rfd, err := openRoot(dir)
	if err != nil {
		return 0
	}
	defer unix.Close(rfd)
	return sizeBelow(rfd)
}

// sizeBelow is treeSize of the directory rootfd.
func sizeBelow(rootfd int) int64 {
	fd, err := openBeneath(rootfd, "", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return 0
	}
	var n int64
	walkAt(fd, "", func(_ string, _ int, st *unix.Stat_t) { n += st.Blocks * 512 })
	return n
}

// DiskLimitProbe says how limits.disk will be enforced on this machine:
// ok when inotify works (a writer is stopped within milliseconds), else
// by periodic walks only.
func DiskLimitProbe() (ok bool, detail string) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return false, fmt.Sprintf("no inotify (%v): workspace growth is measured every %s", err, deletedInterval)
	}
	unix.Close(fd)
	watches := "unknown"
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_watches"); err == nil {
		watches = strings.TrimSpace(string(b))
	}
	return true, fmt.Sprintf("workspace growth watched with inotify (up to %s directories per user)", watches)
}
