package workspace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Status is how one path changed between the base and the agent's tree.
type Status string

// Statuses of a FileChange.
const (
	Added       Status = "added"
	Modified    Status = "modified"
	Deleted     Status = "deleted"
	Renamed     Status = "renamed"
	Copied      Status = "copied"
	TypeChanged Status = "type-changed"
)

// FileChange is one changed path.
type FileChange struct {
	// Path is the path in the agent's tree (for Deleted, in the base).
	Path string `json:"path"`
	// OldPath is the base path of a rename or copy.
	OldPath string `json:"old_path,omitempty"`
	Status  Status `json:"status"`
	// Similarity is the rename/copy score in percent.
	Similarity int `json:"similarity,omitempty"`
	// OldMode and NewMode are git modes in octal ("100644", "100755",
	// "120000" for a symlink, "160000" for a submodule); "" when absent.
	OldMode string `json:"old_mode,omitempty"`
	NewMode string `json:"new_mode,omitempty"`
	// Added and Deleted count lines; both are 0 for a binary file.
	Added   int  `json:"added"`
	Deleted int  `json:"deleted"`
	Binary  bool `json:"binary,omitempty"`
}

// Change is what the agent changed: the tree it left against the base.
type Change struct {
	Session string `json:"session"`
	// Base is the base commit (see Workspace.Base); UserHead the user's
	// real HEAD at Prepare.
	Base     string `json:"base"`
	UserHead string `json:"user_head,omitempty"`
	// Head is the commit of the agent's final tree in the shadow
	// repository, parent Base, at refs/heads/enclave/<session>.
	Head  string       `json:"head"`
	Files []FileChange `json:"files"`
	// Insertions and Deletions total the line counts of Files.
	Insertions int `json:"insertions"`
	Deletions  int `json:"deletions"`
	// Skipped lists paths of the copy that are not in Head and why
	// (hidden by policy, nested repository, a name git refuses).
	Skipped []Note    `json:"skipped,omitempty"`
	Created time.Time `json:"created"`

	gitDir string
	home   string
}

// Snapshot records the copy's current tree as a commit in the shadow
// repository and returns what changed against the base. It never uses the
// copy's .git (see the package documentation). Call it only after every
// process of the sandbox has exited: the copy must not change while it is
// read. Calling it again records a new head; the last result is stored and
// returned by LastChange. A Workspace is not safe for concurrent use.
func (w *Workspace) Snapshot(ctx context.Context) (*Change, error) {
	if fi, err := os.Lstat(w.Copy); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("snapshot session %s: copy %s is gone", w.Session, w.Copy)
	}
	start := time.Now()
	c, err := w.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot session %s: %w", w.Session, err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicWrite(filepath.Join(w.Dir, changeName), data); err != nil {
		return nil, fmt.Errorf("snapshot session %s: %w", w.Session, err)
	}
	w.log.Info("workspace snapshot", "head", c.Head, "files", len(c.Files), "skipped", len(c.Skipped), "took", time.Since(start))
	return c, nil
}

func (w *Workspace) snapshot(ctx context.Context) (*Change, error) {
	sh := w.shadow()
	c := &Change{
		Session:  w.Session,
		Base:     w.Base,
		UserHead: w.UserHead,
		gitDir:   sh.gitDir,
		home:     sh.home,
	}
	// Staged without the index filter: the diff against the base is read
	// anyway, and an entry the agent may not contribute can only be one
	// that differs from the base (which was filtered when it was made).
	tree, skipped, err := w.stage(ctx, false)
	if err != nil {
		return nil, err
	}
	if err := c.load(ctx, tree, w.BaseTree); err != nil {
		return nil, err
	}
	var drop []string
	for _, f := range c.Files {
		if f.Status == Deleted {
			continue
		}
		if refuse, note := w.refused(f.Path, f.NewMode == gitlinkMode && f.OldMode != gitlinkMode); refuse {
			drop = append(drop, f.Path)
			skipped = append(skipped, note...)
		}
	}
	if len(drop) > 0 {
		if tree, err = w.unstage(ctx, drop); err != nil {
			return nil, err
		}
		if err := c.load(ctx, tree, w.BaseTree); err != nil {
			return nil, err
		}
	}
	head, err := w.commitTree(tree, w.Base, "enclave: session "+w.Session+"\n\nThe tree the agent left in its copy.\n")
	if err != nil {
		return nil, err
	}
	if err := writeRef(sh.gitDir, "refs/heads/"+w.Branch, head); err != nil {
		return nil, err
	}
	c.Head, c.Skipped, c.Created = head, skipped, time.Now().UTC()
	return c, nil
}

// CheckpointRef is the shadow repository's ref for the session's
// checkpoints: the copy's tree taken while the agent ran, each commit's
// parent the previous checkpoint (the first's, Base). The gate reads the
// chain to see lines the agent wrote and then rewrote (session churn).
const CheckpointRef = "refs/enclave/checkpoints"

// Checkpoint records the copy's current tree as the next commit of the
// checkpoint chain, unless the tree is the last checkpoint's (or Base's),
// and returns the chain's head. The copy must not change while it is read:
// the caller stops every process of the sandbox around the call. The
// branch and the stored change are left alone (Snapshot makes those).
func (w *Workspace) Checkpoint(ctx context.Context) (string, error) {
	sh := w.shadow()
	// The chain's head and tree are kept from the last call: the agent is
	// paused while this runs, so no git process is spent re-reading them.
	parent, parentTree := w.cpHead, w.cpTree
	if parent == "" {
		parent, parentTree = w.Base, w.BaseTree
		if parentTree == "" {
			out, err := sh.git(ctx, "rev-parse", parent+"^{tree}")
			if err != nil {
				return "", fmt.Errorf("checkpoint session %s: %w", w.Session, err)
			}
			parentTree = strings.TrimSpace(string(out))
		}
	}
	tree, _, err := w.stage(ctx, true)
	if err != nil {
		return "", fmt.Errorf("checkpoint session %s: %w", w.Session, err)
	}
	if tree == parentTree {
		return parent, nil
	}
	id, err := w.commitTree(tree, parent, "enclave: checkpoint of session "+w.Session+"\n\nThe copy's tree while the agent ran.\n")
	if err != nil {
		return "", fmt.Errorf("checkpoint session %s: %w", w.Session, err)
	}
	if err := writeRef(sh.gitDir, CheckpointRef, id); err != nil {
		return "", fmt.Errorf("checkpoint session %s: %w", w.Session, err)
	}
	w.cpHead, w.cpTree = id, tree
	return id, nil
}

// LastChange returns the change stored by the last Snapshot.
func (w *Workspace) LastChange() (*Change, error) {
	data, err := os.ReadFile(filepath.Join(w.Dir, changeName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("session %s: %w", w.Session, ErrNoSnapshot)
	}
	if err != nil {
		return nil, err
	}
	var c Change
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("session %s: %s: %w", w.Session, changeName, err)
	}
	if c.Session != w.Session || c.Base != w.Base || !isHex40(c.Head) {
		return nil, fmt.Errorf("session %s: %s does not belong to this workspace", w.Session, changeName)
	}
	sh := w.shadow()
	c.gitDir, c.home = sh.gitDir, sh.home
	return &c, nil
}

// GitDir is the shadow repository holding Base and Head; the merge step
// can fetch refs/heads/enclave/<session> from it into the user's
// repository. Its objects borrow from the user's through alternates.
func (c *Change) GitDir() string { return c.gitDir }

// Patch writes the change as a unified diff for people to read: binary
// files are named but not included, no external diff or textconv runs.
// Names and content are the agent's: a caller printing to a terminal
// should pass w through TerminalSafe.
func (c *Change) Patch(ctx context.Context, w io.Writer) error {
	return c.diff(ctx, w)
}

// BinaryPatch writes the change as a full-index binary patch that
// `git apply --3way` can apply to the user's repository.
func (c *Change) BinaryPatch(ctx context.Context, w io.Writer) error {
	return c.diff(ctx, w, "--binary", "--full-index")
}

func (c *Change) diff(ctx context.Context, w io.Writer, extra ...string) error {
	if c.gitDir == "" {
		return errors.New("patch: change not loaded from a workspace")
	}
	sh := shadow{gitDir: c.gitDir, home: c.home}
	args := []string{"diff", "--no-ext-diff", "--no-textconv", "--no-color", "-M", "--submodule=short", "--no-relative"}
	args = append(args, extra...)
	args = append(args, c.Base, c.Head, "--")
	cmd := sh.cmd(args...)
	cmd.stdout = w
	if _, err := cmd.run(ctx); err != nil {
		return fmt.Errorf("patch session %s: %w", c.Session, err)
	}
	return nil
}

// stage brings the shadow index in line with the copy and writes its tree.
// Paths the agent may not contribute are excluded before git looks at
// them. With filter, the index is then checked entry by entry, and hidden
// paths and new gitlinks are removed from it and reported; without it,
// the caller must check what differs from the base (Snapshot does).
func (w *Workspace) stage(ctx context.Context, filter bool) (string, []Note, error) {
	sh := w.shadow()
	skipped, excludes, err := w.scanCopy()
	if err != nil {
		return "", nil, err
	}
	excl := w.hidden.excludeLines() + excludes
	if err := writeFile(filepath.Join(sh.gitDir, "info", "exclude"), excl); err != nil {
		return "", nil, err
	}
	if _, err := sh.git(ctx, "-c", "advice.addEmbeddedRepo=false", "add", "--all"); err != nil {
		return "", nil, err
	}
	if tree := w.indexTree(); tree != "" {
		// git add found nothing to change (it leaves the index file alone
		// then): the tree is the one last written from it, already
		// filtered.
		return tree, skipped, nil
	}
	if !filter {
		tree, err := sh.git(ctx, "write-tree")
		if err != nil {
			return "", nil, err
		}
		t := strings.TrimSpace(string(tree))
		w.noteIndex(t)
		return t, skipped, nil
	}
	// Authoritative filter: whatever git staged, hidden paths and new
	// gitlinks do not go into the tree.
	out, err := sh.git(ctx, "ls-files", "-z", "--stage")
	if err != nil {
		return "", nil, err
	}
	// The base's gitlinks are read only if the index holds one: most
	// repositories have no submodules, and that saves a git process.
	var baseLinks map[string]bool
	var drop []string
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		if !ok {
			return "", nil, fmt.Errorf("ls-files: malformed record %q", rec)
		}
		p := string(path)
		newLink := false
		if bytes.HasPrefix(meta, []byte(gitlinkMode+" ")) {
			if baseLinks == nil {
				if baseLinks, err = w.baseGitlinks(ctx); err != nil {
					return "", nil, err
				}
			}
			newLink = !baseLinks[p]
		}
		if refuse, note := w.refused(p, newLink); refuse {
			drop = append(drop, p)
			skipped = append(skipped, note...)
		}
	}
	tree, err := w.unstage(ctx, drop)
	return tree, skipped, err
}

// gitlinkMode is the mode of a submodule (gitlink) entry.
const gitlinkMode = "160000"

// refused reports whether path may not go into a recorded tree: a hidden
// path (normally excluded before git saw it, and noted by scanCopy), or a
// gitlink the base does not have (newLink), which is noted here.
func (w *Workspace) refused(path string, newLink bool) (bool, []Note) {
	switch {
	case w.hidden.match(path):
		return true, nil
	case newLink:
		return true, []Note{{Path: path, Reason: "nested git repository not recorded"}}
	}
	return false, nil
}

// unstage removes paths from the shadow index and writes its tree.
func (w *Workspace) unstage(ctx context.Context, paths []string) (string, error) {
	sh := w.shadow()
	if len(paths) > 0 {
		c := sh.cmd("update-index", "-z", "--force-remove", "--stdin")
		c.stdin = strings.NewReader(strings.Join(paths, "\x00") + "\x00")
		if _, err := c.run(ctx); err != nil {
			return "", err
		}
	}
	tree, err := sh.git(ctx, "write-tree")
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(tree))
	w.noteIndex(t)
	return t, nil
}

// indexFile identifies the shadow's index file as it is on disk. git
// writes an index by renaming a new file over it, so a rewrite always
// changes the inode.
type indexFile struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func (w *Workspace) statIndex() (indexFile, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(w.shadow().gitDir, "index"), &st); err != nil {
		return indexFile{}, false
	}
	return indexFile{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}, true
}

// noteIndex records that the shadow index, as it is now, holds tree.
func (w *Workspace) noteIndex(tree string) {
	w.idx, w.idxTree = indexFile{}, ""
	if f, ok := w.statIndex(); ok {
		w.idx, w.idxTree = f, tree
	}
}

// indexTree returns the tree the shadow index holds if it is unchanged
// since noteIndex, else "".
func (w *Workspace) indexTree() string {
	if w.idxTree == "" {
		return ""
	}
	if f, ok := w.statIndex(); ok && f == w.idx {
		return w.idxTree
	}
	return ""
}

// baseGitlinks returns the submodule paths of the base tree (the only
// gitlinks a snapshot may contain).
func (w *Workspace) baseGitlinks(ctx context.Context) (map[string]bool, error) {
	links := map[string]bool{}
	rev := w.Base
	if rev == "" {
		rev = w.UserHead
	}
	if rev == "" {
		return links, nil
	}
	out, err := w.shadow().git(ctx, "ls-tree", "-r", "-z", "--full-tree", rev)
	if err != nil {
		return nil, err
	}
	for _, rec := range bytes.Split(out, []byte{0}) {
		if meta, path, ok := bytes.Cut(rec, []byte{'\t'}); ok && bytes.HasPrefix(meta, []byte(gitlinkMode+" ")) {
			links[string(path)] = true
		}
	}
	return links, nil
}

// scanCopy walks the copy (never following symlinks, never entering the
// copy's own .git) for entries git must not see: nested repositories (a
// directory holding ".git"), names git refuses with an error that would
// stop the snapshot (".GIT", "git~1", a symlinked .gitmodules), and
// returns them as notes and as info/exclude lines.
func (w *Workspace) scanCopy() ([]Note, string, error) {
	var notes []Note
	var excl strings.Builder
	exclude := func(rel, reason string) error {
		notes = append(notes, Note{Path: rel, Reason: reason})
		line, ok := gitignoreLiteral(rel)
		if !ok {
			return fmt.Errorf("path %q cannot be excluded from the snapshot (control characters in its name); remove it from the copy", rel)
		}
		excl.WriteString(line + "\n")
		return nil
	}
	err := filepath.WalkDir(w.Copy, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == w.Copy {
			return nil
		}
		rel := filepath.ToSlash(p[len(w.Copy)+1:])
		if rel == ".git" {
			// Not ours to read. (SkipDir on a file would skip its
			// siblings: the agent may have made .git a file or link.)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if w.hidden.match(rel) {
			notes = append(notes, Note{Path: rel, Reason: "hidden by policy"})
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || d.Type().IsRegular() {
			ensureOwnerReadable(p, d)
		}
		name := d.Name()
		switch {
		case name == ".git":
			parent := filepath.ToSlash(filepath.Dir(rel))
			if err := exclude(parent, "nested git repository not recorded"); err != nil {
				return err
			}
			return filepath.SkipDir
		case isDotGitLike(name):
			if err := exclude(rel, "name refused by git"); err != nil {
				return err
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
		case d.Type()&fs.ModeSymlink != 0 && isDotGitFile(name):
			if err := exclude(rel, "symlinked "+name+" refused by git"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("scan copy: %w", err)
	}
	return notes, excl.String(), nil
}

// ensureOwnerReadable gives the owner read (and, for a directory, search)
// permission on p if the agent took it away, so that a snapshot run as the
// agent's own uid does not fail half way. Git records only the execute bit
// of files, so this does not change the recorded tree. The chmod goes
// through an O_PATH|O_NOFOLLOW fd: if p was swapped for a symlink, the
// link itself is the target, and Linux refuses to chmod links.
func ensureOwnerReadable(p string, d fs.DirEntry) {
	need := fs.FileMode(0o400)
	if d.IsDir() {
		need = 0o500
	}
	fi, err := d.Info()
	if err != nil || fi.Mode().Perm()&need == need {
		return
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || (st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Mode&unix.S_IFMT != unix.S_IFREG) {
		return
	}
	unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), (st.Mode&0o7777)|uint32(need))
}

// isDotGitLike reports names git's verify_path refuses as aliases of .git.
func isDotGitLike(name string) bool {
	trimmed := strings.TrimRight(name, ". ")
	return strings.EqualFold(trimmed, ".git") || strings.EqualFold(name, "git~1")
}

func isDotGitFile(name string) bool {
	n := strings.ToLower(strings.TrimRight(name, ". "))
	return n == ".gitmodules" || n == ".gitattributes" || n == ".gitignore" || n == ".mailmap" ||
		strings.HasPrefix(n, "gi7eba~") || strings.HasPrefix(n, "gitmod~")
}

// gitignoreLiteral renders rel as an anchored gitignore line matching
// exactly that path, escaping the pattern characters.
func gitignoreLiteral(rel string) (string, bool) {
	var b strings.Builder
	b.WriteByte('/')
	for _, r := range rel {
		if r < 0x20 || r == 0x7f {
			return "", false
		}
		switch r {
		case '\\', '*', '?', '[', ']', '!', '#', ' ':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String(), true
}

// load fills Files and the totals with the difference between Base and
// the tree-ish to, from the shadow repository. When baseTree (Base's
// tree, if known) is to, there is none and git is not asked.
func (c *Change) load(ctx context.Context, to, baseTree string) error {
	c.Files, c.Insertions, c.Deletions = []FileChange{}, 0, 0
	if baseTree != "" && to == baseTree {
		return nil
	}
	sh := shadow{gitDir: c.gitDir, home: c.home}
	// One diff-tree prints both: every raw record (each starts with ':'),
	// then every numstat record (each starts with a digit or '-').
	out, err := sh.git(ctx, "diff-tree", "-r", "-z", "-M", "--no-abbrev", "--raw", "--numstat", "--no-ext-diff", "--no-textconv", c.Base, to)
	if err != nil {
		return err
	}
	files, num, err := parseRawPrefix(out)
	if err != nil {
		return err
	}
	stats, err := parseNumstat(num)
	if err != nil {
		return err
	}
	for i := range files {
		f := &files[i]
		if s, ok := stats[f.Path]; ok {
			f.Added, f.Deleted, f.Binary = s.Added, s.Deleted, s.Binary
			c.Insertions += s.Added
			c.Deletions += s.Deleted
		}
	}
	if files != nil {
		c.Files = files
	}
	return nil
}

// parseRaw parses `git diff-tree -r -z --raw` output:
// ":<old mode> <new mode> <old sha> <new sha> <status>[score]\0<path>\0[<path2>\0]".
// The paths are the agent's and may hold any byte but NUL.
func parseRaw(b []byte) ([]FileChange, error) {
	files, rest, err := parseRawPrefix(b)
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("diff-tree raw: malformed record %.40q", rest)
	}
	return files, err
}

// parseRawPrefix parses raw records from the start of b, up to the first
// byte that does not open one, and returns what follows.
func parseRawPrefix(b []byte) ([]FileChange, []byte, error) {
	var out []FileChange
	for len(b) > 0 && b[0] == ':' {
		head, rest, ok := bytes.Cut(b, []byte{0})
		if !ok || len(head) == 0 || head[0] != ':' {
			return nil, nil, fmt.Errorf("diff-tree raw: malformed record %.40q", b)
		}
		fields := strings.Fields(string(head[1:]))
		if len(fields) != 5 {
			return nil, nil, fmt.Errorf("diff-tree raw: %d fields in %.80q, want 5", len(fields), head)
		}
		for _, m := range fields[:2] {
			if len(m) != 6 || strings.Trim(m, "01234567") != "" {
				return nil, nil, fmt.Errorf("diff-tree raw: bad mode %q", m)
			}
		}
		f := FileChange{OldMode: fields[0], NewMode: fields[1]}
		if f.OldMode == "000000" {
			f.OldMode = ""
		}
		if f.NewMode == "000000" {
			f.NewMode = ""
		}
		st := fields[4]
		npaths := 1
		switch st[0] {
		case 'A':
			f.Status = Added
		case 'M':
			f.Status = Modified
		case 'D':
			f.Status = Deleted
		case 'T':
			f.Status = TypeChanged
		case 'R', 'C':
			f.Status = Renamed
			if st[0] == 'C' {
				f.Status = Copied
			}
			npaths = 2
			n, err := strconv.Atoi(st[1:])
			if err != nil || n < 0 || n > 100 {
				return nil, nil, fmt.Errorf("diff-tree raw: bad score in status %q", st)
			}
			f.Similarity = n
		default:
			return nil, nil, fmt.Errorf("diff-tree raw: unknown status %q", st)
		}
		if npaths == 1 && len(st) != 1 {
			return nil, nil, fmt.Errorf("diff-tree raw: bad status %q", st)
		}
		var paths []string
		for range npaths {
			var p []byte
			p, rest, ok = bytes.Cut(rest, []byte{0})
			if !ok || len(p) == 0 {
				return nil, nil, fmt.Errorf("diff-tree raw: missing path after %q", head)
			}
			paths = append(paths, string(p))
		}
		f.Path = paths[len(paths)-1]
		if npaths == 2 {
			f.OldPath = paths[0]
		}
		out = append(out, f)
		b = rest
	}
	return out, b, nil
}

type numstat struct {
	Added, Deleted int
	Binary         bool
}

// parseNumstat parses `git diff-tree -r -z --numstat` output into counts by
// (new) path: "<added>\t<deleted>\t<path>\0", or for a rename
// "<added>\t<deleted>\t\0<old>\0<new>\0"; binary files count "-".
func parseNumstat(b []byte) (map[string]numstat, error) {
	out := map[string]numstat{}
	for len(b) > 0 {
		rec, rest, ok := bytes.Cut(b, []byte{0})
		if !ok {
			return nil, fmt.Errorf("numstat: unterminated record %.40q", b)
		}
		a, rec2, ok1 := bytes.Cut(rec, []byte{'\t'})
		d, path, ok2 := bytes.Cut(rec2, []byte{'\t'})
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("numstat: malformed record %.80q", rec)
		}
		var s numstat
		if string(a) == "-" && string(d) == "-" {
			s.Binary = true
		} else {
			var err1, err2 error
			s.Added, err1 = strconv.Atoi(string(a))
			s.Deleted, err2 = strconv.Atoi(string(d))
			if err1 != nil || err2 != nil || s.Added < 0 || s.Deleted < 0 {
				return nil, fmt.Errorf("numstat: bad counts in %.80q", rec)
			}
		}
		p := string(path)
		if len(path) == 0 {
			// Rename or copy: old and new path follow.
			var old, nw []byte
			old, rest, ok1 = bytes.Cut(rest, []byte{0})
			nw, rest, ok2 = bytes.Cut(rest, []byte{0})
			if !ok1 || !ok2 || len(old) == 0 || len(nw) == 0 {
				return nil, fmt.Errorf("numstat: rename without both paths")
			}
			p = string(nw)
		}
		out[p] = s
		b = rest
	}
	return out, nil
}

// TerminalSafe wraps w so that control characters other than newline and
// tab (escape sequences an agent could plant in a file name or content to
// rewrite the reviewer's terminal) are written as '?'.
func TerminalSafe(w io.Writer) io.Writer { return &termSafe{w: w} }

type termSafe struct{ w io.Writer }

func (t *termSafe) Write(p []byte) (int, error) {
	buf := make([]byte, len(p))
	for i, c := range p {
		switch {
		case (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f:
			c = '?'
		case c == 0xc2 && i+1 < len(p) && p[i+1] >= 0x80 && p[i+1] <= 0x9f:
			// U+0080..U+009F, the C1 controls (CSI is U+009B), in UTF-8.
			c = '?'
		case c >= 0x80 && c <= 0x9f && i > 0 && p[i-1] == 0xc2:
			c = '?'
		}
		buf[i] = c
	}
	if _, err := t.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
