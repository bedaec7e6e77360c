package workspace

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// This file holds the only code that reads the user's tree and writes the
// agent's copy file by file. Every path is resolved with openat2 and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS relative to a directory fd, so no
// symlink is ever followed, on either side, in any path component: a
// symlink is copied as a symlink, and a symlink standing where a directory
// is needed is replaced, not traversed.

// Note records something Prepare skipped or changed, for the caller to show.
type Note struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// dirTree is an open directory that paths are resolved beneath.
type dirTree struct {
	fd   int
	path string
}

func openTree(path string) (*dirTree, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &dirTree{fd: fd, path: path}, nil
}

func (t *dirTree) close() { unix.Close(t.fd) }

const resolveStrict = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openat2(dirfd int, rel string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
			Mode:    uint64(mode),
			Resolve: resolveStrict,
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// parent opens the directory holding rel (which must be clean and
// relative) without following symlinks, and returns its fd and rel's last
// element. With create, missing directories are made and anything that is
// not a directory where one is needed (a file, a symlink) is removed first.
func (t *dirTree) parent(rel string, create bool) (int, string, error) {
	dir, base := filepath.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	cur, err := unix.Dup(t.fd)
	if err != nil {
		return -1, "", err
	}
	if dir == "" {
		return cur, base, nil
	}
	for _, comp := range strings.Split(dir, "/") {
		next, err := openat2(cur, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil && create {
			switch err {
			case unix.ENOENT:
			case unix.ENOTDIR, unix.ELOOP, unix.EXDEV:
				// A file or symlink is in the way: replace it.
				if uerr := unix.Unlinkat(cur, comp, 0); uerr != nil {
					unix.Close(cur)
					return -1, "", fmt.Errorf("replace %q with a directory: %w", comp, uerr)
				}
			default:
				unix.Close(cur)
				return -1, "", err
			}
			if merr := unix.Mkdirat(cur, comp, 0o755); merr != nil && merr != unix.EEXIST {
				unix.Close(cur)
				return -1, "", merr
			}
			next, err = openat2(cur, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
		}
		unix.Close(cur)
		if err != nil {
			return -1, "", err
		}
		cur = next
	}
	return cur, base, nil
}

// lstat stats rel without following any symlink.
func (t *dirTree) lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	pfd, base, err := t.parent(rel, false)
	if err != nil {
		return st, err
	}
	defer unix.Close(pfd)
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// remove deletes rel (a whole subtree if it is a directory) without
// following symlinks. A missing rel is not an error.
func (t *dirTree) remove(rel string) error {
	pfd, base, err := t.parent(rel, false)
	if err != nil {
		if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP || err == unix.EXDEV {
			// Nothing is at rel unless a symlink is followed, and we
			// never follow one.
			return nil
		}
		return err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(pfd, base, 0)
	}
	// os.RemoveAll removes with openat/unlinkat and O_NOFOLLOW below the
	// named directory; the directory itself is reached through our
	// parent fd via /proc, so no path component is re-resolved.
	return os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base))
}

// copyEntry copies one entry rel from src to dst, replacing whatever dst
// has at rel. Regular files keep their permission bits minus setuid, setgid
// and sticky; symlinks are recreated with the same target text; a directory
// is created (its contents are the caller's business). Other types are not
// copied and reported with a note.
func copyEntry(src, dst *dirTree, rel string) (*Note, error) {
	spfd, base, err := src.parent(rel, false)
	if err != nil {
		return nil, fmt.Errorf("open parent of %q in %s: %w", rel, src.path, err)
	}
	defer unix.Close(spfd)
	var st unix.Stat_t
	if err := unix.Fstatat(spfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("stat %q in %s: %w", rel, src.path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK, unix.S_IFDIR:
	default:
		return &Note{Path: rel, Reason: fmt.Sprintf("not copied: %s", fileType(st.Mode))}, nil
	}
	if err := dst.remove(rel); err != nil {
		return nil, fmt.Errorf("clear %q in the copy: %w", rel, err)
	}
	dpfd, dbase, err := dst.parent(rel, true)
	if err != nil {
		return nil, fmt.Errorf("create parent of %q in the copy: %w", rel, err)
	}
	defer unix.Close(dpfd)
	perm := uint32(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		// The owner must be able to create entries in it and the agent to
		// work in it; other bits are kept.
		if err := unix.Mkdirat(dpfd, dbase, perm|0o700); err != nil && err != unix.EEXIST {
			return nil, fmt.Errorf("mkdir %q in the copy: %w", rel, err)
		}
		return nil, nil
	case unix.S_IFLNK:
		target, err := readlinkat(spfd, base)
		if err != nil {
			return nil, fmt.Errorf("readlink %q in %s: %w", rel, src.path, err)
		}
		if err := unix.Symlinkat(target, dpfd, dbase); err != nil {
			return nil, fmt.Errorf("symlink %q in the copy: %w", rel, err)
		}
		return nil, nil
	}
	in, err := openat2(spfd, base, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %q in %s: %w", rel, src.path, err)
	}
	inf := os.NewFile(uintptr(in), rel)
	defer inf.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(in, &fst); err != nil || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		// Swapped between the stat and the open: refuse rather than guess.
		return nil, fmt.Errorf("open %q in %s: no longer a regular file", rel, src.path)
	}
	out, err := openat2(dpfd, dbase, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, perm)
	if err != nil {
		return nil, fmt.Errorf("create %q in the copy: %w", rel, err)
	}
	outf := os.NewFile(uintptr(out), rel)
	if _, err := io.Copy(outf, inf); err != nil {
		outf.Close()
		return nil, fmt.Errorf("copy %q: %w", rel, err)
	}
	// The umask may have narrowed perm; set it exactly (never setuid/setgid).
	if err := outf.Chmod(os.FileMode(perm)); err != nil {
		outf.Close()
		return nil, fmt.Errorf("chmod %q in the copy: %w", rel, err)
	}
	if err := outf.Close(); err != nil {
		return nil, fmt.Errorf("write %q in the copy: %w", rel, err)
	}
	return nil, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for n := 256; n <= 1<<16; n *= 4 {
		buf := make([]byte, n)
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if k < n {
			return string(buf[:k]), nil
		}
	}
	return "", errors.New("symlink target too long")
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "named pipe"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFREG:
		return "regular file"
	}
	return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
}

// copyDir copies the directory tree src into dst (which exists and is
// empty), never following a symlink. Entries that hidden matches are not
// copied and are returned as hiddenPaths; nested ".git" directories are not
// copied (a plain directory's nested repositories become plain files in the
// copy) and are noted.
func copyDir(src, dst string, hidden *matcher) (notes []Note, hiddenPaths []string, err error) {
	st, err := openTree(src)
	if err != nil {
		return nil, nil, err
	}
	defer st.close()
	dt, err := openTree(dst)
	if err != nil {
		return nil, nil, err
	}
	defer dt.close()
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, werr error) error {
		if werr != nil {
			return fmt.Errorf("walk %s: %w", p, werr)
		}
		if p == src {
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if hidden.match(rel) {
			hiddenPaths = append(hiddenPaths, rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() == ".git" {
			notes = append(notes, Note{Path: rel, Reason: "nested git directory not copied"})
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n, err := copyEntry(st, dt, rel)
		if err != nil {
			return err
		}
		if n != nil {
			notes = append(notes, *n)
		}
		return nil
	})
	return notes, hiddenPaths, err
}
