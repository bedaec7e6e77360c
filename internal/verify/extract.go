package verify

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// extract writes the head tree into dir (which must exist and be empty)
// from the shadow repository's objects. Everything is written beneath dir
// through an os.Root, so no path or symlink in the tree can make a write
// land outside it. Symlinks are created as links (the tests may need
// them) but never followed here; submodules are left out.
func extract(c *changeSet, dir string) error { return extractTree(c, c.head, dir) }

// extractTree writes tree (c.head or c.base) into dir, as extract does.
func extractTree(c *changeSet, tree map[string]entry, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %q: %w", dir, err)
	}
	defer root.Close()
	paths := make([]string, 0, len(tree))
	for p := range tree {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	made := map[string]bool{".": true}
	for _, p := range paths {
		e := tree[p]
		if !validTreePath(p) {
			return fmt.Errorf("tree path %q is not a clean relative path", p)
		}
		if e.mode == "160000" {
			continue
		}
		if err := mkdirs(root, path.Dir(p), made); err != nil {
			return err
		}
		b, _, err := c.repo.blob(e.id, 1<<40)
		if err != nil {
			return fmt.Errorf("read %q: %w", p, err)
		}
		switch e.mode {
		case "120000":
			if err := root.Symlink(string(b), p); err != nil {
				return fmt.Errorf("extract %q: %w", p, err)
			}
		case "100755", "100644":
			perm := os.FileMode(0o644)
			if e.mode == "100755" {
				perm = 0o755
			}
			f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
			if err != nil {
				return fmt.Errorf("extract %q: %w", p, err)
			}
			_, werr := f.Write(b)
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				return fmt.Errorf("extract %q: %w", p, werr)
			}
		default:
			return fmt.Errorf("extract %q: unknown mode %s", p, e.mode)
		}
	}
	return nil
}

func mkdirs(root *os.Root, d string, made map[string]bool) error {
	if made[d] {
		return nil
	}
	if err := mkdirs(root, path.Dir(d), made); err != nil {
		return err
	}
	if err := root.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
		return fmt.Errorf("extract dir %q: %w", d, err)
	}
	made[d] = true
	return nil
}

func validTreePath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." || el == ".git" || el == "" {
			return false
		}
	}
	return true
}
