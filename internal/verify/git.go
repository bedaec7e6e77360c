package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// git runs only on the enclave-owned shadow repository and only with
// commands that read objects (ls-tree, cat-file): no work tree, no index,
// no hooks, no filters, no textconv. The environment carries nothing of
// ours but PATH, and no system or global configuration is read; the -c
// settings repeat the workspace package's hardening so that even a
// tampered shadow config could not make these commands run code.
var gitHardening = []string{
	"core.hooksPath=/dev/null",
	"core.fsmonitor=false",
	"core.attributesFile=/dev/null",
	"core.excludesFile=/dev/null",
	"core.pager=cat",
	"core.quotePath=false",
	"diff.external=",
	"gc.auto=0",
	"maintenance.auto=false",
	"protocol.allow=never",
	"credential.helper=",
	"uploadpack.packObjectsHook=",
}

type repo struct {
	gitDir string
	home   string

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func openRepo(ctx context.Context, gitDir string) (*repo, error) {
	fi, err := os.Stat(gitDir)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("verify: shadow repository %q: not a directory", gitDir)
	}
	home, err := os.MkdirTemp("", "enclave-verify-home-")
	if err != nil {
		return nil, err
	}
	r := &repo{gitDir: gitDir, home: home}
	r.cmd = r.command(ctx, "cat-file", "--batch")
	r.stdin, err = r.cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	r.out = bufio.NewReaderSize(stdout, 64<<10)
	if err := r.cmd.Start(); err != nil {
		os.RemoveAll(home)
		return nil, fmt.Errorf("verify: start git: %w", err)
	}
	return r, nil
}

func (r *repo) command(ctx context.Context, args ...string) *exec.Cmd {
	argv := make([]string, 0, 2*len(gitHardening)+len(args))
	for _, c := range gitHardening {
		argv = append(argv, "-c", c)
	}
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "git", argv...)
	cmd.Dir = r.home
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"LC_ALL=C", "LANG=C", "TZ=UTC",
		"HOME=" + r.home, "XDG_CONFIG_HOME=" + r.home,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ATTR_NOSYSTEM=1",
		"GIT_DIR=" + r.gitDir, "GIT_CEILING_DIRECTORIES=/",
		"GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0", "GIT_NO_REPLACE_OBJECTS=1",
		"GIT_PROTOCOL_FROM_USER=0", "GIT_PAGER=cat",
	}
	return cmd
}

func (r *repo) Close() error {
	if r.stdin != nil {
		r.stdin.Close()
	}
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Wait()
	}
	return os.RemoveAll(r.home)
}

// blob reads one object by id; objects larger than max are not read and
// return errTooBig with their size.
func (r *repo) blob(id string, max int64) ([]byte, int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := io.WriteString(r.stdin, id+"\n"); err != nil {
		return nil, 0, fmt.Errorf("git cat-file: %w", err)
	}
	hdr, err := r.out.ReadString('\n')
	if err != nil {
		return nil, 0, fmt.Errorf("git cat-file: %w", err)
	}
	f := strings.Fields(hdr)
	if len(f) != 3 {
		return nil, 0, fmt.Errorf("git cat-file %s: %s", id, strings.TrimSpace(hdr))
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return nil, 0, fmt.Errorf("git cat-file %s: bad size %q", id, f[2])
	}
	// The object must be consumed either way to keep the stream in step.
	if size > max {
		if _, err := io.CopyN(io.Discard, r.out, size+1); err != nil {
			return nil, size, fmt.Errorf("git cat-file: %w", err)
		}
		return nil, size, errTooBig
	}
	buf := make([]byte, size+1)
	if _, err := io.ReadFull(r.out, buf); err != nil {
		return nil, size, fmt.Errorf("git cat-file: %w", err)
	}
	return buf[:size], size, nil
}

var errTooBig = errors.New("object too large")

// entry is one tree entry.
type entry struct {
	mode string // "100644", "100755", "120000", "160000"
	id   string
}

func (r *repo) tree(ctx context.Context, commit string) (map[string]entry, error) {
	cmd := r.command(ctx, "ls-tree", "-r", "-z", "--full-tree", commit)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-tree %s: %v: %s", short(commit), err, scrubLine(clip(strings.TrimSpace(errb.String()), 500)))
	}
	m := map[string]entry{}
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		tab := bytes.IndexByte(rec, '\t')
		if tab < 0 {
			return nil, fmt.Errorf("git ls-tree %s: malformed record", short(commit))
		}
		f := strings.Fields(string(rec[:tab]))
		if len(f) != 3 {
			return nil, fmt.Errorf("git ls-tree %s: malformed record", short(commit))
		}
		m[string(rec[tab+1:])] = entry{mode: f[0], id: f[2]}
	}
	return m, nil
}

// line is one line of a file with its 1-based number.
type line struct {
	N    int
	Text string
}

// fileChange is one changed path with the content the checks read.
type fileChange struct {
	Path    string
	OldPath string // base path it was diffed against ("" if none)
	Status  string // added, modified, deleted
	// Similarity is the percentage of content an added file shares with
	// the deleted file it was paired with (100 for identical content, 0
	// when it was not paired or paired by name alone).
	Similarity int
	OldMode    string
	NewMode    string
	Binary     bool
	Huge       bool
	Old        []byte // base content (nil if none, binary or huge)
	New        []byte // head content
	Added      []line
	Deleted    []line
}

func (f *fileChange) isSymlink() bool { return f.NewMode == "120000" }

// changeSet is the change as the checks see it.
type changeSet struct {
	repo *repo
	// baseID and headID are the commits compared.
	baseID, headID string
	base           map[string]entry
	head           map[string]entry
	files          []*fileChange
	// notes are findings about the change itself (binary, huge files).
	notes []Finding
	max   int64
	// goCache is a fresh host directory for GOCACHE ("" for none).
	goCache string
}

func (c *changeSet) file(p string) *fileChange {
	for _, f := range c.files {
		if f.Path == p {
			return f
		}
	}
	return nil
}

// headText reads a head file for the checks that look beyond the change;
// binary and huge files return nil.
func (c *changeSet) headText(p string) []byte { return c.text(c.head, p) }

func (c *changeSet) baseText(p string) []byte { return c.text(c.base, p) }

// text is the content of p in tree t, nil for a link, a gitlink, a binary
// or unreadable blob, or a path t lacks.
func (c *changeSet) text(t map[string]entry, p string) []byte {
	e, ok := t[p]
	if !ok || e.mode == "120000" || e.mode == "160000" {
		return nil
	}
	b, _, err := c.repo.blob(e.id, c.max)
	if err != nil || isBinary(b) {
		return nil
	}
	return b
}

// lineTexts gives an analyser finding's line text, reading and splitting
// each file once.
type lineTexts struct {
	read  func(path string) []byte
	lines map[string][]string
}

func newLineTexts(read func(path string) []byte) *lineTexts {
	return &lineTexts{read: read, lines: map[string][]string{}}
}

// at is line n (from 1) of p, trimmed; "" when p has no such line.
func (t *lineTexts) at(p string, n int) string {
	ls, ok := t.lines[p]
	if !ok {
		ls = splitLines(t.read(p))
		t.lines[p] = ls
	}
	if n < 1 || n > len(ls) {
		return ""
	}
	return strings.TrimSpace(ls[n-1])
}

// findingKey pairs a head finding with the same finding on the base: the
// rule and the line's text, wherever the line moved.
func findingKey(rule, text string) string { return rule + "\x00" + text }

func loadChange(ctx context.Context, r *repo, base, head string, cfg Config) (*changeSet, error) {
	bt, err := r.tree(ctx, base)
	if err != nil {
		return nil, err
	}
	ht, err := r.tree(ctx, head)
	if err != nil {
		return nil, err
	}
	c := &changeSet{repo: r, baseID: base, headID: head, base: bt, head: ht, max: cfg.MaxFileSize}
	var added, deleted []string
	for p, e := range ht {
		if o, ok := bt[p]; !ok {
			added = append(added, p)
		} else if o != e {
			c.files = append(c.files, &fileChange{Path: p, OldPath: p, Status: "modified", OldMode: o.mode, NewMode: e.mode})
		}
	}
	for p := range bt {
		if _, ok := ht[p]; !ok {
			deleted = append(deleted, p)
		}
	}
	c.pairRenames(added, deleted)
	sortFiles(c.files)
	for _, f := range c.files {
		if err := c.loadContent(f); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *changeSet) loadContent(f *fileChange) error {
	read := func(t map[string]entry, p string) ([]byte, error) {
		e, ok := t[p]
		if !ok || e.mode == "160000" {
			return nil, nil
		}
		b, size, err := c.repo.blob(e.id, c.max)
		if errors.Is(err, errTooBig) {
			f.Huge = true
			if t[p] == c.head[f.Path] {
				c.notes = append(c.notes, Finding{Check: CheckQuality, Rule: "huge-file", File: f.Path,
					Message: fmt.Sprintf("file is %d bytes, over the %d-byte scan limit: not scanned for secrets or code findings", size, c.max)})
			}
			return nil, nil
		}
		return b, err
	}
	var err error
	if f.Status != "added" || f.OldPath != "" {
		op := f.OldPath
		if op == "" {
			op = f.Path
		}
		if f.Old, err = read(c.base, op); err != nil {
			return err
		}
	}
	if f.Status != "deleted" {
		if f.New, err = read(c.head, f.Path); err != nil {
			return err
		}
	}
	if isBinary(f.Old) || isBinary(f.New) {
		f.Binary = true
		if f.Status != "deleted" && isBinary(f.New) {
			c.notes = append(c.notes, Finding{Check: CheckQuality, Rule: "binary-file", File: f.Path,
				Message: "binary file in the change: its content is not scanned"})
		}
		return nil
	}
	if f.Huge {
		return nil
	}
	if f.NewMode == "120000" || f.OldMode == "120000" {
		// A link's target is its content; it is reported by the
		// dangerous-files check, not diffed as text.
		return nil
	}
	oldLines, newLines := splitLines(f.Old), splitLines(f.New)
	f.Added, f.Deleted = diffLines(oldLines, newLines)
	return nil
}

func isBinary(b []byte) bool {
	n := len(b)
	if n > 8000 {
		n = 8000
	}
	return bytes.IndexByte(b[:n], 0) >= 0
}

func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	s := strings.TrimSuffix(string(b), "\n")
	return strings.Split(s, "\n")
}
