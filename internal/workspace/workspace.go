// Package workspace prepares the agent's session copy of a repository and
// computes, after the session, what the agent changed.
//
// # Model
//
// [Prepare] makes a session directory (enclave-owned, under the state
// directory) holding:
//
//	work/         the agent's copy: the only thing the sandbox mounts read-write
//	shadow.git/   enclave's shadow repository (the agent never sees it)
//	home/         an empty HOME for git runs on the shadow
//	workspace.json, change.json   what Open and Change reload
//
// If the source is inside a git work tree, the copy is what `git clone
// --shared --no-checkout` of the repository's top level would make (origin,
// its branches and tags), written by enclave directly: objects are reached
// through objects/info/alternates, neither copied nor hard-linked (a hard
// link would let the agent rewrite the user's object files in place), so
// preparing costs one checkout of the current tree, not the history. The
// user's objects directories are listed in [Workspace.ReadOnlyPaths]; the
// sandbox must mount them read-only at the same path. The copy is on
// branch enclave/<session>.
//
// The agent sees exactly the user's working tree: tracked files as in the
// index or work tree, uncommitted modifications and deletions, staged files,
// and untracked files that are not ignored. Ignored files (build output,
// usually .env) are not copied. When the work tree differs from HEAD, the
// base is a synthetic commit on top of HEAD holding the uncommitted state,
// so the diff shows only the agent's work; [Workspace.UserHead] keeps the
// real HEAD. A plain directory is copied file by file and gets a fresh
// repository whose first commit is the base.
//
// Hidden paths (policy filesystem.hidden) are removed from the copy and
// excluded from every snapshot, so they never show as agent deletions and
// the agent cannot write them into the user's repository through the diff.
// A hidden file that is committed in the repository's history stays
// readable through git objects; Prepare warns about it.
//
// # The agent's .git is hostile
//
// After the sandbox starts, nothing under work/ is trusted: its .git config
// can name hooks, fsmonitor, filters and diff drivers, its .gitattributes
// can ask for conversions, and any file can be a symlink. [Workspace.Snapshot]
// therefore never runs git with the copy's .git: it runs git with
// GIT_DIR=shadow.git, GIT_WORK_TREE=work, no system or global config, an
// empty HOME, hooks and fsmonitor off, and info/attributes that switch off
// every content conversion and driver. Symlinks are recorded as symlinks,
// nested repositories are skipped and reported, and Snapshot must only be
// called once every process of the sandbox is gone. Enclave's own code in
// this package never follows a symlink inside the copy or the user's tree:
// files are opened with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH).
//
// # Cost
//
// Prepare costs: one git process that locates the repository, one that
// checks out the current tree (the dominant term: it writes every file
// once) while two more read the user's uncommitted state and refs, a stat
// walk, and hashing only the files that differ from HEAD. The new
// repositories' layout, their refs and the commits enclave records are
// written without git (objects.go). It does not read, copy or link the
// history: bench/workspace.sh checks this by timing two repositories with
// the same 50,000-file tree, one with hundreds of MiB of extra history, and
// comparing with a tar copy of the tree and a full clone. Snapshot costs a
// stat walk of the copy plus hashing what the agent changed: git add, then
// write-tree only if add changed the index, and diff-tree only if the tree
// differs from the base. Parallel checkout (checkout.workers) was several
// times slower on the 2-core test machine, so checkout is serial.
//
// # What is not covered
//
// The checkout still writes every file of the current tree, so Prepare is
// linear in the size of the tree at HEAD (not of the history). Submodule
// contents and Git LFS objects are not fetched: submodules appear as empty
// directories and LFS files as pointer files. Files the agent made
// unreadable make Snapshot fail (fail closed) rather than be left out.
package workspace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrBadSession is returned for a session id that cannot name a branch
	// and a directory safely.
	ErrBadSession = errors.New("bad session id")
	// ErrExists is returned when the session directory already has content.
	ErrExists = errors.New("session directory is not empty")
	// ErrOverlap is returned when the session directory and the source
	// contain one another.
	ErrOverlap = errors.New("session directory and source overlap")
	// ErrNotPrepared is returned by Open for a directory without a
	// prepared workspace.
	ErrNotPrepared = errors.New("no prepared workspace")
	// ErrNoSnapshot is returned by LastChange before any Snapshot.
	ErrNoSnapshot = errors.New("no snapshot taken")
)

// Names inside the session directory.
const (
	copyName     = "work"
	shadowName   = "shadow.git"
	homeName     = "home"
	metaName     = "workspace.json"
	changeName   = "change.json"
	branchPrefix = "enclave/"
)

// PrepareOptions configure Prepare.
type PrepareOptions struct {
	// Source is the directory the user ran enclave in: inside a git work
	// tree the whole repository (from its top level) is copied; otherwise
	// Source itself is.
	Source string
	// Dir is the session directory, owned by enclave and never mounted
	// into the sandbox, e.g. <state>/sessions/<id>. It is created (mode
	// 0700) and must not exist or be empty.
	Dir string
	// Session is the session id; the branch is enclave/<Session>. Letters,
	// digits, '.', '_' and '-', starting with a letter or digit, at most
	// 64 characters.
	Session string
	// Hidden are repository-relative globs removed from the copy (policy
	// filesystem.hidden); see the package documentation for the syntax.
	Hidden []string
	// Repo is Locate's answer for Source, when the caller already asked
	// (it saves a git process); nil, or an answer for another directory,
	// and Prepare asks itself.
	Repo *Repo
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

// Workspace is a prepared session copy. Its exported fields are stored in
// the session directory and reloaded by Open.
type Workspace struct {
	Session string `json:"session"`
	// Dir is the session directory.
	Dir string `json:"dir"`
	// Copy is the agent's copy, to be mounted read-write in the sandbox.
	Copy string `json:"copy"`
	// Workdir is where the agent starts: the copy of Source (Copy itself,
	// or a subdirectory when Source was below the repository's top level).
	Workdir string `json:"workdir"`
	// Branch is the branch checked out in the copy: enclave/<Session>.
	Branch string `json:"branch"`
	// Source is the repository top level or plain directory copied.
	Source string `json:"source"`
	// Git is true when Source is a git work tree.
	Git bool `json:"git"`
	// UserHead is the user's HEAD commit at Prepare ("" when not a git
	// repository or HEAD is unborn).
	UserHead string `json:"user_head,omitempty"`
	// Base is the commit the agent's work is diffed against: UserHead when
	// the user's work tree was clean, else a synthetic commit holding the
	// uncommitted state (with UserHead as parent when there is one).
	Base string `json:"base"`
	// BaseTree is Base's tree ("" in workspaces prepared before it was
	// stored).
	BaseTree string `json:"base_tree,omitempty"`
	// ObjectFormat is the repository's hash: "sha1" or "sha256" ("" is
	// sha1).
	ObjectFormat string `json:"object_format,omitempty"`
	// ReadOnlyPaths are host paths the sandbox must mount read-only at the
	// same path for git in the copy to work (the user's objects
	// directories, reached through alternates).
	ReadOnlyPaths []string `json:"read_only_paths,omitempty"`
	// Hide holds the hidden-path patterns applied.
	Hide []string `json:"hide,omitempty"`
	// Hidden lists the paths removed because a pattern matched them (for a
	// directory, only the directory).
	Hidden []string `json:"hidden,omitempty"`
	// Notes lists things skipped while copying (devices, sockets, nested
	// repositories).
	Notes []Note `json:"notes,omitempty"`
	// Warnings are things the user should know, e.g. a hidden path that is
	// committed and so readable from git objects.
	Warnings []string `json:"warnings,omitempty"`
	// Created is when Prepare finished.
	Created time.Time `json:"created"`

	log *slog.Logger
	// overlaid is set while preparing when the copy differs from the
	// checkout of UserHead (uncommitted changes copied, hidden paths
	// removed).
	overlaid bool
	// cpHead and cpTree are the checkpoint chain's head and its tree
	// (set by Checkpoint in this process).
	cpHead, cpTree string
	// headTree is UserHead's tree (set while preparing).
	headTree string
	// idx and idxTree: the shadow index file as last written by this
	// process and the tree it holds (see noteIndex).
	idx     indexFile
	idxTree string
	hidden  *matcher
}

// validSessionChars reports whether id matches
// ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ (written out: a regexp compiled at
// package initialisation would cost every enclave process, the sandbox's
// init included, a third of a millisecond).
func validSessionChars(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

func checkSession(id string) error {
	if !validSessionChars(id) || strings.Contains(id, "..") || strings.HasSuffix(id, ".lock") || strings.HasSuffix(id, ".") {
		return fmt.Errorf("%w %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..' or a '.lock' ending", ErrBadSession, id)
	}
	return nil
}

// Prepare makes the session copy described in the package documentation.
// On error the session directory is removed again if Prepare created it.
func Prepare(ctx context.Context, opts PrepareOptions) (*Workspace, error) {
	if err := checkSession(opts.Session); err != nil {
		return nil, err
	}
	hidden, err := newMatcher(opts.Hidden)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("session", opts.Session)
	if opts.Source == "" || opts.Dir == "" {
		return nil, errors.New("prepare workspace: Source and Dir are required")
	}
	src, err := filepath.Abs(opts.Source)
	if err != nil {
		return nil, fmt.Errorf("prepare workspace: source %q: %w", opts.Source, err)
	}
	// The source is named by the user: resolving its symlinks is fine.
	if src, err = filepath.EvalSymlinks(src); err != nil {
		return nil, fmt.Errorf("prepare workspace: source: %w", err)
	}
	if fi, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("prepare workspace: source: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("prepare workspace: source %q is not a directory", src)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("prepare workspace: dir %q: %w", opts.Dir, err)
	}
	repo := opts.Repo
	if repo == nil || repo.Dir != src {
		if repo, err = Locate(ctx, src); err != nil {
			return nil, fmt.Errorf("prepare workspace: %w", err)
		}
	}
	root := src
	if repo.Top != "" {
		root = repo.Top
	}
	// Checked before anything is created, and again on the resolved path.
	if rdir := resolveExisting(dir); within(rdir, root) || within(root, rdir) {
		return nil, fmt.Errorf("prepare workspace: %w: %s and %s", ErrOverlap, dir, root)
	}
	if err := makeSessionDir(dir); err != nil {
		return nil, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return nil, fmt.Errorf("prepare workspace: dir: %w", err)
	}
	w := &Workspace{
		Session: opts.Session,
		Dir:     dir,
		Copy:    filepath.Join(dir, copyName),
		Branch:  branchPrefix + opts.Session,
		Hide:    append([]string(nil), opts.Hidden...),
		log:     log,
		hidden:  hidden,
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, homeName), 0o500); err != nil {
		return nil, fmt.Errorf("prepare workspace: %w", err)
	}
	start := time.Now()
	if repo.Top != "" {
		err = w.prepareGit(ctx, src, repo)
	} else {
		err = w.preparePlain(ctx, src)
	}
	if err != nil {
		return nil, fmt.Errorf("prepare workspace for %s: %w", src, err)
	}
	w.Created = time.Now().UTC()
	if err := w.save(); err != nil {
		return nil, err
	}
	for _, warn := range w.Warnings {
		log.Warn("workspace", "warning", warn)
	}
	log.Info("workspace prepared", "source", w.Source, "git", w.Git, "base", w.Base,
		"hidden", len(w.Hidden), "notes", len(w.Notes), "took", time.Since(start))
	ok = true
	return w, nil
}

func makeSessionDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("prepare workspace: %w", err)
	}
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		ents, rerr := os.ReadDir(dir)
		if rerr != nil {
			return fmt.Errorf("prepare workspace: %w", rerr)
		}
		if len(ents) > 0 {
			return fmt.Errorf("prepare workspace: %w: %s", ErrExists, dir)
		}
		return os.Chmod(dir, 0o700)
	}
	if err != nil {
		return fmt.Errorf("prepare workspace: %w", err)
	}
	return nil
}

// resolveExisting resolves the symlinks of the longest existing prefix of
// p and appends the rest.
func resolveExisting(p string) string {
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// within reports whether p is root or below it.
func within(p, root string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, "../")
}

// Repo is where a directory sits in git, as Locate found it.
type Repo struct {
	// Dir is the directory asked about (absolute, symlinks resolved).
	Dir string
	// Top is the work tree's top level (symlinks resolved); "" when Dir
	// is not inside a git work tree, and then the other fields are "".
	Top string
	// CommonDir is the repository's common git directory.
	CommonDir string
	// Head and HeadTree are HEAD's commit and its tree; "" when HEAD is
	// unborn.
	Head, HeadTree string
	// HeadRef is the branch HEAD is on ("refs/heads/main"); "" when HEAD
	// is detached or unborn.
	HeadRef string
	// ObjectFormat is "sha1" or "sha256".
	ObjectFormat string
}

// Locate asks git, in one process, where dir sits: the work tree's top
// level, the common git directory, the object format, HEAD's commit, tree
// and branch. A directory outside any work tree gives a Repo with Top "".
// Any other git failure (dubious ownership, a broken repository) is an
// error: enclave does not silently treat a repository it cannot read as a
// plain directory.
func Locate(ctx context.Context, dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	r := &Repo{Dir: abs}
	args := []string{"rev-parse", "--path-format=absolute", "--is-inside-work-tree", "--git-common-dir", "--show-toplevel", "--show-object-format"}
	out, err := userGit(ctx, abs, append(args, "HEAD^{commit}", "HEAD^{tree}", "--symbolic-full-name", "HEAD")...)
	var ge *gitError
	if errors.As(err, &ge) && !strings.Contains(ge.stderr, "not a git repository") && !strings.Contains(ge.stderr, "must be run in a work tree") {
		// No commit yet (or a path that makes HEAD^{commit} ambiguous):
		// ask again without it.
		out, err = userGit(ctx, abs, args...)
	}
	if err != nil {
		switch {
		case errors.As(err, &ge) && strings.Contains(ge.stderr, "not a git repository"):
			return r, nil
		case errors.As(err, &ge) && strings.Contains(ge.stderr, "must be run in a work tree"):
			return nil, fmt.Errorf("%s is inside a git directory, not a work tree", abs)
		}
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) == 7 {
		r.Head, r.HeadTree, r.HeadRef = lines[4], lines[5], lines[6]
		lines = lines[:4]
		if !isHex40(r.Head) || !isHex40(r.HeadTree) {
			return nil, fmt.Errorf("git rev-parse in %s: unexpected commit %q and tree %q", abs, r.Head, r.HeadTree)
		}
		if !strings.HasPrefix(r.HeadRef, "refs/heads/") {
			r.HeadRef = "" // detached ("HEAD")
		}
	}
	if len(lines) != 4 {
		return nil, fmt.Errorf("git rev-parse in %s: unexpected output %q", abs, out)
	}
	if lines[0] != "true" {
		return nil, fmt.Errorf("%s is inside a git directory, not a work tree", abs)
	}
	r.ObjectFormat = lines[3]
	if err := checkObjectFormat(r.ObjectFormat); err != nil {
		return nil, fmt.Errorf("repository %s: %w", lines[2], err)
	}
	if r.Top, err = filepath.EvalSymlinks(lines[2]); err != nil {
		return nil, err
	}
	r.CommonDir = lines[1]
	return r, nil
}

func (w *Workspace) shadow() shadow {
	return shadow{gitDir: filepath.Join(w.Dir, shadowName), workTree: w.Copy, home: filepath.Join(w.Dir, homeName)}
}

func (w *Workspace) copyGitDir() string { return filepath.Join(w.Copy, ".git") }

func (w *Workspace) prepareGit(ctx context.Context, src string, repo *Repo) error {
	top := repo.Top
	w.Git = true
	w.Source = top
	if within(w.Dir, top) || within(top, w.Dir) {
		return fmt.Errorf("%w: %s and %s", ErrOverlap, w.Dir, top)
	}
	rel, err := filepath.Rel(top, src)
	if err != nil {
		return err
	}
	w.Workdir = filepath.Join(w.Copy, rel)
	objects := filepath.Join(repo.CommonDir, "objects")
	if w.ReadOnlyPaths, err = alternatesChain(objects); err != nil {
		return err
	}
	w.UserHead, w.headTree, w.ObjectFormat = repo.Head, repo.HeadTree, repo.ObjectFormat

	// The user's uncommitted state and refs are read while the copy is
	// written: three git processes on the critical path become one.
	status := goUserGit(ctx, top, "status", "--porcelain=v2", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules=none")
	var refs <-chan gitResult
	if w.UserHead != "" {
		refs = goUserGit(ctx, top, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")
	}

	// The copy's .git is what `git clone --shared --no-checkout` makes,
	// written directly: origin is the user's repository, whose objects
	// are reached through alternates (neither copied nor hard-linked: a
	// hard link would let the agent rewrite the user's object files).
	if err := os.Mkdir(w.Copy, 0o755); err != nil {
		return err
	}
	origin := "[remote \"origin\"]\n\turl = " + configQuote(top) + "\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
	if err := initRepo(w.copyGitDir(), w.ObjectFormat, false, "refs/heads/"+w.Branch, objects, origin); err != nil {
		return fmt.Errorf("create the copy's repository: %w", err)
	}
	if w.UserHead != "" {
		if err := writeRef(w.copyGitDir(), "refs/heads/"+w.Branch, w.UserHead); err != nil {
			return err
		}
		// Check out blob bytes exactly: the user's .gitattributes must not
		// turn on eol conversion here (the shadow switches it off too, and
		// the two must agree), and filters are not defined anyway.
		attrs := filepath.Join(w.copyGitDir(), "info", "attributes")
		if err := writeFile(attrs, shadowAttributes); err != nil {
			return err
		}
		home := filepath.Join(w.Dir, homeName)
		if _, err := copyGit(ctx, w.copyGitDir(), w.Copy, home, "-c", "checkout.workers=1", "read-tree", "--reset", "-u", w.UserHead); err != nil {
			return err
		}
		if err := os.Remove(attrs); err != nil {
			return err
		}
		r := <-refs
		if r.err != nil {
			return r.err
		}
		if err := w.writeOriginRefs(r.out, repo.HeadRef); err != nil {
			return err
		}
	}

	// Paths hidden right after the checkout are committed at HEAD.
	dt, err := openTree(w.Copy)
	if err != nil {
		return err
	}
	defer dt.close()
	tracked, err := w.removeHidden(dt)
	if err != nil {
		return err
	}
	w.overlaid = len(tracked) > 0
	for _, p := range tracked {
		w.Warnings = append(w.Warnings, fmt.Sprintf("hidden path %q is committed in the repository: it is removed from the copy but its content stays readable through git objects", p))
	}

	st := <-status
	if st.err != nil {
		return st.err
	}
	if err := w.overlayUncommitted(top, dt, st.out); err != nil {
		return err
	}
	if err := w.makeBase(ctx); err != nil {
		return err
	}
	// The agent starts where the user was, even if that directory has no
	// tracked or copied files (an ignored or empty directory).
	if rel != "." {
		pfd, _, err := dt.parent(filepath.ToSlash(rel)+"/.", true)
		if err != nil {
			return fmt.Errorf("create workdir %q in the copy: %w", rel, err)
		}
		unix.Close(pfd)
	}
	return nil
}

type gitResult struct {
	out []byte
	err error
}

// goUserGit starts userGit in the background; its result arrives on the
// channel (buffered: nobody has to read it).
func goUserGit(ctx context.Context, dir string, args ...string) <-chan gitResult {
	c := make(chan gitResult, 1)
	go func() {
		out, err := userGit(ctx, dir, args...)
		c <- gitResult{out, err}
	}()
	return c
}

// writeOriginRefs gives the copy the user's branches as origin's
// remote-tracking branches, the user's tags, and origin/HEAD on the branch
// the user is on, as a clone would: refs is for-each-ref's
// "<id> <name>" lines.
func (w *Workspace) writeOriginRefs(refs []byte, headRef string) error {
	var packed strings.Builder
	for _, line := range strings.Split(string(refs), "\n") {
		if line == "" {
			continue
		}
		id, name, ok := strings.Cut(line, " ")
		if !ok || !isHex40(id) {
			return fmt.Errorf("git for-each-ref: unexpected line %q", line)
		}
		if b, ok := strings.CutPrefix(name, "refs/heads/"); ok {
			name = "refs/remotes/origin/" + b
		} else if !strings.HasPrefix(name, "refs/tags/") {
			continue
		}
		packed.WriteString(id + " " + name + "\n")
	}
	gitDir := w.copyGitDir()
	if err := os.WriteFile(filepath.Join(gitDir, "packed-refs"), []byte(packed.String()), 0o644); err != nil {
		return err
	}
	if b, ok := strings.CutPrefix(headRef, "refs/heads/"); ok {
		p := filepath.Join(gitDir, "refs", "remotes", "origin", "HEAD")
		if err := writeFile(p, "ref: refs/remotes/origin/"+b+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// overlayUncommitted makes the copy match the user's work tree: staged and
// unstaged changes, deletions, and untracked files that are not ignored.
// status is `git status --porcelain=v2 -z --untracked-files=all
// --no-renames` of the user's repository.
func (w *Workspace) overlayUncommitted(top string, dt *dirTree, status []byte) error {
	paths, err := parseStatus(status)
	if err != nil {
		return err
	}
	st, err := openTree(top)
	if err != nil {
		return err
	}
	defer st.close()
	for _, rel := range paths {
		if strings.HasSuffix(rel, "/") {
			w.Notes = append(w.Notes, Note{Path: strings.TrimSuffix(rel, "/"), Reason: "nested git repository not copied"})
			continue
		}
		if w.hidden.match(rel) {
			w.Hidden = appendUnique(w.Hidden, rel)
			continue
		}
		sst, err := st.lstat(rel)
		if err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP {
				// Deleted in the user's work tree (or only reachable
				// through a symlink, which is not the same file).
				w.overlaid = true
				if err := dt.remove(rel); err != nil {
					return fmt.Errorf("remove %q from the copy: %w", rel, err)
				}
				continue
			}
			return fmt.Errorf("stat %q in %s: %w", rel, top, err)
		}
		if sst.Mode&unix.S_IFMT == unix.S_IFDIR {
			w.Notes = append(w.Notes, Note{Path: rel, Reason: "submodule contents not copied"})
			continue
		}
		w.overlaid = true
		n, err := copyEntry(st, dt, rel)
		if err != nil {
			return err
		}
		if n != nil {
			w.Notes = append(w.Notes, *n)
		}
	}
	return nil
}

// parseStatus returns, once each and in order, the paths `git status
// --porcelain=v2 -z` reports as changed in the index or the work tree,
// unmerged, or untracked (a nested repository as "dir/"). A rename record
// gives both of its paths.
func parseStatus(b []byte) ([]string, error) {
	var paths []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	recs := bytes.Split(b, []byte{0})
	for i := 0; i < len(recs); i++ {
		rec := string(recs[i])
		if rec == "" {
			continue
		}
		// Fields before the path: "1" has 8, "2" 9 (then the original
		// path as the next record), "u" 10, "?" and "!" none.
		fields := 0
		switch rec[0] {
		case '#', '!':
			continue
		case '?':
			fields = 1
		case '1':
			fields = 8
		case '2':
			fields = 9
		case 'u':
			fields = 10
		default:
			return nil, fmt.Errorf("git status: unexpected record %q", rec)
		}
		parts := strings.SplitN(rec, " ", fields+1)
		if len(parts) != fields+1 {
			return nil, fmt.Errorf("git status: malformed record %q", rec)
		}
		add(parts[fields])
		if rec[0] == '2' {
			if i++; i >= len(recs) || len(recs[i]) == 0 {
				return nil, fmt.Errorf("git status: rename record %q without its original path", rec)
			}
			add(string(recs[i]))
		}
	}
	return paths, nil
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// removeHidden deletes every path of the copy matched by a hidden pattern
// (never descending into the copy's root .git) and returns the paths
// removed.
func (w *Workspace) removeHidden(dt *dirTree) ([]string, error) {
	if len(w.hidden.pats) == 0 {
		return nil, nil
	}
	var removed []string
	err := filepath.WalkDir(w.Copy, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == w.Copy {
			return nil
		}
		rel := filepath.ToSlash(p[len(w.Copy)+1:])
		if rel == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if w.hidden.match(rel) {
			removed = append(removed, rel)
			if err := dt.remove(rel); err != nil {
				return fmt.Errorf("remove hidden %q: %w", rel, err)
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	for _, r := range removed {
		w.Hidden = appendUnique(w.Hidden, r)
	}
	return removed, err
}

func (w *Workspace) preparePlain(ctx context.Context, src string) error {
	w.Source = src
	w.Workdir = w.Copy
	if within(w.Dir, src) || within(src, w.Dir) {
		return fmt.Errorf("%w: %s and %s", ErrOverlap, w.Dir, src)
	}
	if err := os.Mkdir(w.Copy, 0o755); err != nil {
		return err
	}
	notes, hidden, err := copyDir(src, w.Copy, w.hidden)
	if err != nil {
		return err
	}
	w.Notes = append(w.Notes, notes...)
	w.Hidden = append(w.Hidden, hidden...)
	if err := initRepo(w.copyGitDir(), "", false, "refs/heads/"+w.Branch, "", ""); err != nil {
		return fmt.Errorf("create the copy's repository: %w", err)
	}
	return w.makeBase(ctx)
}

// makeBase creates the shadow repository, records the copy's current state
// as the base commit, and gives the copy's own repository the same commit
// and index so that the agent's `git status` starts clean.
func (w *Workspace) makeBase(ctx context.Context) error {
	sh := w.shadow()
	alternate := ""
	if len(w.ReadOnlyPaths) > 0 {
		alternate = w.ReadOnlyPaths[0]
	}
	if err := initRepo(sh.gitDir, w.ObjectFormat, true, "refs/heads/master", alternate, ""); err != nil {
		return fmt.Errorf("create the shadow repository: %w", err)
	}
	if err := writeFile(filepath.Join(sh.gitDir, "info", "attributes"), shadowAttributes); err != nil {
		return err
	}
	copyIndex := filepath.Join(w.copyGitDir(), "index")
	if _, err := os.Lstat(copyIndex); err == nil {
		// The copy's index was written by our checkout, before the agent
		// ran: reusing its stat data means only changed files are hashed.
		if err := copyFile(copyIndex, filepath.Join(sh.gitDir, "index")); err != nil {
			return err
		}
	}
	if w.UserHead != "" && !w.overlaid && len(w.Notes) == 0 && len(w.Hidden) == 0 {
		// The copy is exactly the checkout of the user's HEAD: nothing was
		// overlaid, removed or left out, and the index is the checkout's.
		// Unless the copy holds something the snapshot would exclude, the
		// base is HEAD itself and git need not read the tree again.
		skipped, excludes, err := w.scanCopy()
		if err != nil {
			return err
		}
		if len(skipped) == 0 && excludes == "" {
			w.Base, w.BaseTree = w.UserHead, w.headTree
			w.noteIndex(w.BaseTree)
			return w.setShadowRefs()
		}
	}
	tree, skipped, err := w.stage(ctx, true)
	if err != nil {
		return err
	}
	w.Notes = append(w.Notes, skipped...)
	w.Base, w.BaseTree = w.UserHead, tree
	if w.UserHead == "" || w.headTree != tree {
		msg := "enclave: base of session " + w.Session + "\n\nThe state of " + w.Source + " when the session started.\n"
		if w.Base, err = w.commitTree(tree, w.UserHead, msg); err != nil {
			return err
		}
	}
	if err := w.setShadowRefs(); err != nil {
		return err
	}
	if w.Base == w.UserHead {
		return nil // the copy's branch and index already match
	}
	// Give the copy the new objects (only the few the base needed: the
	// rest is shared through alternates) and point its branch at the base.
	if err := copyObjects(filepath.Join(sh.gitDir, "objects"), filepath.Join(w.copyGitDir(), "objects")); err != nil {
		return err
	}
	if err := writeRef(w.copyGitDir(), "refs/heads/"+w.Branch, w.Base); err != nil {
		return err
	}
	return copyFile(filepath.Join(sh.gitDir, "index"), copyIndex)
}

// setShadowRefs points the shadow's base ref and branch at Base.
func (w *Workspace) setShadowRefs() error {
	gitDir := w.shadow().gitDir
	for _, ref := range []string{"refs/enclave/base", "refs/heads/" + w.Branch} {
		if err := writeRef(gitDir, ref, w.Base); err != nil {
			return err
		}
	}
	return nil
}

// commitTree writes a commit of tree with parent (none when "") to the
// shadow, authored by the session, and returns its id.
func (w *Workspace) commitTree(tree, parent, msg string) (string, error) {
	if !isHex40(tree) {
		return "", fmt.Errorf("commit: bad tree id %q", tree)
	}
	body := commitObject(tree, parent, "enclave session "+w.Session+" <enclave@localhost>", "enclave <enclave@localhost>", time.Now(), msg)
	return writeObject(filepath.Join(w.shadow().gitDir, "objects"), w.ObjectFormat, "commit", body)
}

// alternatesChain returns objects and every objects directory it borrows
// from through objects/info/alternates, recursively, as git would.
func alternatesChain(objects string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var visit func(dir string, depth int) error
	visit = func(dir string, depth int) error {
		dir = filepath.Clean(dir)
		if seen[dir] || depth > 5 {
			return nil
		}
		seen[dir] = true
		out = append(out, dir)
		data, err := os.ReadFile(filepath.Join(dir, "info", "alternates"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, "\"") {
				return fmt.Errorf("quoted alternates path in %s is not supported", dir)
			}
			if !filepath.IsAbs(line) {
				line = filepath.Join(dir, line)
			}
			if err := visit(line, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(objects, 0)
}

// copyObjects copies loose objects and packs from src into dst (both
// objects directories), skipping objects dst already has.
func copyObjects(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "info" {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if _, err := os.Lstat(target); err == nil {
			return nil
		}
		return copyFile(p, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".enclave-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

func (w *Workspace) save() error {
	data, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	return atomicWrite(filepath.Join(w.Dir, metaName), data)
}

func atomicWrite(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Open loads the workspace prepared in session directory dir, so that
// Snapshot, LastChange and Patch work after the session (and enclave)
// ended. It works after RemoveCopy too, for everything but Snapshot.
func Open(dir string, logger *slog.Logger) (*Workspace, error) {
	data, err := os.ReadFile(filepath.Join(dir, metaName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open workspace %s: %w", dir, ErrNotPrepared)
	}
	if err != nil {
		return nil, fmt.Errorf("open workspace: %w", err)
	}
	var w Workspace
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("open workspace %s: %s: %w", dir, metaName, err)
	}
	if err := checkSession(w.Session); err != nil {
		return nil, fmt.Errorf("open workspace %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	// The stored paths must be the ones this directory implies: a moved
	// state directory is followed, a metadata file pointing elsewhere is
	// not.
	rel, err := filepath.Rel(w.Copy, w.Workdir)
	if err != nil || w.Workdir == "" || !within(w.Workdir, w.Copy) {
		rel = "."
	}
	w.Dir = abs
	w.Copy = filepath.Join(abs, copyName)
	w.Workdir = filepath.Join(w.Copy, rel)
	if w.Branch != branchPrefix+w.Session {
		return nil, fmt.Errorf("open workspace %s: branch %q does not match session %q", dir, w.Branch, w.Session)
	}
	if !isHex40(w.Base) {
		return nil, fmt.Errorf("open workspace %s: bad base commit %q", dir, w.Base)
	}
	if w.hidden, err = newMatcher(w.Hide); err != nil {
		return nil, fmt.Errorf("open workspace %s: %w", dir, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w.log = logger.With("session", w.Session)
	return &w, nil
}

func isHex40(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Chown gives the copy (the .git inside included) to uid:gid, for when
// enclave runs as root and the sandbox maps the agent to an unprivileged
// host uid. It never follows a symlink: links themselves are chowned. Call
// it after Prepare and before the sandbox starts. Changing owners changes
// every file's ctime, so the shadow index is refreshed here (reading the
// tree once) to keep Snapshot proportional to what the agent changed.
func (w *Workspace) Chown(ctx context.Context, uid, gid int) error {
	err := filepath.WalkDir(w.Copy, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := unix.Fchownat(unix.AT_FDCWD, p, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &fs.PathError{Op: "lchown", Path: p, Err: err}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chown workspace copy: %w", err)
	}
	sh := w.shadow()
	tree := w.indexTree()
	// Exit status 1 only means "some entries need updating"; -q keeps going.
	if _, err := sh.git(ctx, "update-index", "-q", "--refresh"); err != nil {
		var ge *gitError
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ge) || !errors.As(ge.err, &ee) || ee.ExitCode() != 1 {
			return fmt.Errorf("chown workspace copy: refresh index: %w", err)
		}
	}
	if tree != "" {
		w.noteIndex(tree) // refreshed stat data, the same entries
	}
	idx := filepath.Join(w.copyGitDir(), "index")
	if _, err := os.Lstat(idx); err == nil {
		if err := copyFile(filepath.Join(sh.gitDir, "index"), idx); err != nil {
			return fmt.Errorf("chown workspace copy: %w", err)
		}
		if err := os.Lchown(idx, uid, gid); err != nil {
			return fmt.Errorf("chown workspace copy: %w", err)
		}
	}
	for _, p := range w.ReadOnlyPaths {
		if why := unreadableBy(p, uid, gid); why != "" {
			warn := fmt.Sprintf("git in the copy will fail for uid %d: %s; its history is shared from %s", uid, why, p)
			w.Warnings = appendUnique(w.Warnings, warn)
			w.log.Warn("workspace", "warning", warn)
		}
	}
	return w.save()
}

// unreadableBy says why uid:gid (with no supplementary groups and no ACLs
// considered) cannot read the objects directory p, or "" if it can.
func unreadableBy(p string, uid, gid int) string {
	allowed := func(st *unix.Stat_t, bits uint32) bool {
		switch {
		case int(st.Uid) == uid:
			return st.Mode&(bits<<6) == bits<<6
		case int(st.Gid) == gid:
			return st.Mode&(bits<<3) == bits<<3
		}
		return st.Mode&bits == bits
	}
	var st unix.Stat_t
	for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
		if err := unix.Stat(dir, &st); err != nil {
			return err.Error()
		}
		if !allowed(&st, 1) {
			return fmt.Sprintf("it cannot enter %s", dir)
		}
		if dir == "/" {
			break
		}
	}
	if err := unix.Stat(p, &st); err != nil {
		return err.Error()
	}
	if !allowed(&st, 5) {
		return fmt.Sprintf("it cannot read %s", p)
	}
	return ""
}

// RemoveCopy deletes the agent's copy but keeps the shadow repository and
// the stored change, so `enclave diff` keeps working. Symlinks are removed,
// never followed; directories the agent made unwritable are made writable
// first (without following symlinks) so removal does not stop half way.
func (w *Workspace) RemoveCopy() error {
	if err := removeTree(w.Copy); err != nil {
		return fmt.Errorf("remove workspace copy: %w", err)
	}
	return nil
}

// Remove deletes the whole session directory: copy, shadow, stored change.
func (w *Workspace) Remove() error {
	if err := removeTree(w.Copy); err != nil {
		return fmt.Errorf("remove workspace: %w", err)
	}
	if err := os.RemoveAll(w.Dir); err != nil {
		return fmt.Errorf("remove workspace: %w", err)
	}
	return nil
}

func removeTree(path string) error {
	err := os.RemoveAll(path)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	// Make every directory owner-writable, through an O_PATH fd opened
	// with O_NOFOLLOW so that a symlink is never what gets chmod'ed.
	// WalkDir visits a directory before reading it, so each one is made
	// readable before the walk needs to list it.
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if d == nil || !d.IsDir() {
			return nil
		}
		fd, oerr := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return nil
		}
		defer unix.Close(fd)
		unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), 0o700)
		return nil
	})
	return os.RemoveAll(path)
}
