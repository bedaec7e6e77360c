//go:build linux

package sandbox

import (
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// openTree clones the mount at spec.Source into a detached tree and sets
// its flags: always nosuid, nodev unless it is a device node, read-only
// unless writable, noexec for a device node or when spec.NoExec is set. mount_setattr only adds flags, so flags the kernel locked
// on the source (in a user namespace) are kept without reading statfs.
func openTree(spec mountSpec) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, spec.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone mount %s: %w", spec.Source, err)
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID)
	if !spec.Dev {
		attr |= unix.MOUNT_ATTR_NODEV
	}
	if spec.Dev || spec.NoExec {
		attr |= unix.MOUNT_ATTR_NOEXEC
	}
	if !spec.Writable {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set flags on mount of %s: %w", spec.Source, err)
	}
	return fd, nil
}

// walkIn opens (creating if missing) the inside path p beneath the
// directory rootfd, one component at a time and never following a
// symlink, so a link in the view cannot make the init create or mount
// something outside it. The last component is created as a file if file
// is set, else as a directory; the result is an O_PATH descriptor.
func walkIn(rootfd int, p string, file bool, mode uint32) (int, error) {
	comps := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	dir, err := unix.Dup(rootfd)
	if err != nil {
		return -1, err
	}
	for i, c := range comps {
		if c == "" || c == "." || c == ".." {
			unix.Close(dir)
			return -1, fmt.Errorf("bad path component in %q", p)
		}
		last := i == len(comps)-1
		switch {
		case last && file:
			var st unix.Stat_t
			if unix.Fstatat(dir, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				break // exists (perhaps on a read-only mount): use it
			}
			fd, err := unix.Openat(dir, c, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
			if err != nil {
				unix.Close(dir)
				return -1, fmt.Errorf("create %s: %w", p, err)
			}
			unix.Close(fd)
		default:
			if err := unix.Mkdirat(dir, c, 0o755); err != nil && err != unix.EEXIST {
				unix.Close(dir)
				return -1, fmt.Errorf("mkdir %s in %s: %w", c, p, err)
			}
			if last {
				unix.Fchmodat(dir, c, mode, 0)
			}
		}
		flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if !(last && file) {
			flags |= unix.O_DIRECTORY
		}
		next, err := unix.Openat(dir, c, flags, 0)
		unix.Close(dir)
		if err != nil {
			return -1, fmt.Errorf("open %s in %s: %w", c, p, err)
		}
		dir = next
	}
	return dir, nil
}

// mountTreeAt moves the detached tree onto the inside path target.
func mountTreeAt(rootfd, tree int, target string, file bool) error {
	fd, err := walkIn(rootfd, target, file, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(tree, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount at %s: %w", target, err)
	}
	return nil
}

// mountFS mounts a new filesystem (tmpfs, proc, devpts) at the inside path.
func mountFS(root string, rootfd int, target, fstype string, flags uintptr, data string) error {
	fd, err := walkIn(rootfd, target, false, 0o755)
	if err != nil {
		return err
	}
	unix.Close(fd)
	// walkIn proved that no component is a symlink; the tree is private
	// to the init and nothing else can change it now.
	if err := unix.Mount(fstype, root+target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, target, err)
	}
	return nil
}
