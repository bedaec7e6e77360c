//go:build linux

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultRootHostID is the host uid and gid the agent runs as when enclave
// runs as root and root has no range in /etc/subuid (or /etc/subgid). It is
// far above any uid a distribution allocates and must not fall in another
// user's subordinate range, which HostIDs checks.
const DefaultRootHostID = 2_000_000_000

// HostIDs returns the host uid and gid that own the agent's files and
// processes. As an unprivileged user it is the user's own ids (the only
// ones an unprivileged user namespace can map). As root it is the first id
// of root's range in /etc/subuid and /etc/subgid, else
// [DefaultRootHostID]; never 0. The caller makes the workspace owned by
// these ids with [ChownTree].
func HostIDs() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return os.Getuid(), os.Getgid(), nil
	}
	uid, err = rootSubID("/etc/subuid")
	if err != nil {
		return 0, 0, err
	}
	gid, err = rootSubID("/etc/subgid")
	if err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func rootSubID(file string) (int, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return DefaultRootHostID, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	defer f.Close()
	ranges, err := parseSubIDs(f)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", file, err)
	}
	for _, r := range ranges {
		if (r.owner == "root" || r.owner == "0") && r.start > 0 {
			return r.start, nil
		}
	}
	for _, r := range ranges {
		if DefaultRootHostID >= r.start && DefaultRootHostID < r.start+r.count {
			return 0, fmt.Errorf("%s: %s's range %d+%d holds the default sandbox id %d; give root its own range", file, r.owner, r.start, r.count, DefaultRootHostID)
		}
	}
	return DefaultRootHostID, nil
}

type subIDRange struct {
	owner        string
	start, count int
}

func parseSubIDs(r io.Reader) ([]subIDRange, error) {
	var out []subIDRange
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want owner:start:count", n)
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || start < 0 || count <= 0 {
			return nil, fmt.Errorf("line %d: bad range %q", n, line)
		}
		out = append(out, subIDRange{f[0], start, count})
	}
	return out, sc.Err()
}

// ChownTree makes every file beneath root (and root itself) owned by
// uid:gid without following symlinks: it walks by directory descriptors
// opened O_NOFOLLOW and changes links themselves, so a symlink planted in
// the tree, or swapped in during the walk, cannot redirect it outside.
func ChownTree(root string, uid, gid int) error {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("chown tree %q: %w", root, err)
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		unix.Close(fd)
		return fmt.Errorf("chown %q: %w", root, err)
	}
	return chownDir(fd, root, uid, gid, 0)
}

func chownDir(dirfd int, name string, uid, gid, depth int) error {
	d := os.NewFile(uintptr(dirfd), name)
	defer d.Close()
	if depth > 4096 {
		return fmt.Errorf("chown %q: directory tree deeper than 4096", name)
	}
	for {
		ents, err := d.ReadDir(256)
		for _, e := range ents {
			p := name + "/" + e.Name()
			if err := unix.Fchownat(dirfd, e.Name(), uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown %q: %w", p, err)
			}
			if e.Type().IsDir() {
				sub, err := unix.Openat(dirfd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("open %q: %w", p, err)
				}
				if err := chownDir(sub, p, uid, gid, depth+1); err != nil {
					return err
				}
			}
		}
		if err == io.EOF || len(ents) == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read dir %q: %w", name, err)
		}
	}
}
