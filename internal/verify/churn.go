package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Churn is code that does not stay written. The gate measures two kinds
// (REPORT.md defines them for readers of the report):
//
//   - session churn: lines the agent added in one snapshot of the session
//     and then rewrote or deleted in a later one. The session's snapshots
//     are the checkpoints enclave run took while the agent worked
//     (refs/enclave/checkpoints, chained from Base) followed by the commits
//     on Head's first-parent chain after Base in the shadow repository; a
//     session recorded as one snapshot has none to compare, and the report
//     says how many it had.
//   - recent churn: lines of the base that the change deletes or rewrites
//     and that were themselves last changed within ChurnWindow before the
//     base commit (git blame on the base, through the history the shadow
//     repository shares with the user's repository). Reworking code that
//     just landed is the churn signal studies of AI-assisted code report.
//
// Blame is bounded (maxBlameFiles files, blameBudget of wall time); when a
// bound is hit the counts cover the files blamed and churn_partial is set.
// checkpointRef is where enclave run records a session's checkpoints
// (workspace.CheckpointRef; not imported, the gate does not depend on the
// workspace package).
const checkpointRef = "refs/enclave/checkpoints"

const (
	maxBlameFiles = 200
	blameBudget   = 20 * time.Second
)

// churn fills the churn metrics of m.
func churn(ctx context.Context, c *changeSet, cfg Config, m *Metrics) {
	m.ChurnWindowDays = max(0, int(cfg.ChurnWindow/(24*time.Hour)))
	sessionChurn(ctx, c, m)
	recentChurn(ctx, c, cfg, m)
}

// sessionChurn walks the session's snapshots in order and counts deleted
// lines whose text a previous snapshot of the session had added.
func sessionChurn(ctx context.Context, c *changeSet, m *Metrics) {
	out, err := c.repo.output(ctx, "rev-list", "--first-parent", "--reverse", c.baseID+".."+c.headID)
	if err != nil {
		m.ChurnPartial = true
		return
	}
	commits := strings.Fields(string(out))
	// A session's repository also holds the checkpoints enclave run took
	// while the agent worked (refs/enclave/checkpoints, chained from the
	// base): they come before the final snapshot.
	if cp, err := c.repo.output(ctx, "rev-parse", "-q", "--verify", checkpointRef+"^{commit}"); err == nil {
		if chain, err := c.repo.output(ctx, "rev-list", "--first-parent", "--reverse", c.baseID+".."+strings.TrimSpace(string(cp))); err == nil {
			commits = append(strings.Fields(string(chain)), commits...)
		}
	}
	m.SessionSnapshots = len(commits)
	if len(commits) < 2 {
		return
	}
	// added[path][text] counts lines added by earlier snapshots and still
	// present.
	added := map[string]map[string]int{}
	prev := c.base
	for _, id := range commits {
		cur := prev
		if id == c.headID {
			cur = c.head
		} else if cur, err = c.repo.tree(ctx, id); err != nil {
			m.ChurnPartial = true
			return
		}
		for p, e := range cur {
			if prev[p] == e {
				continue
			}
			c.churnDiff(prev, cur, p, p, added, m)
		}
		for p := range prev {
			if _, ok := cur[p]; !ok {
				c.churnDiff(prev, cur, p, p, added, m)
			}
		}
		prev = cur
	}
}

func (c *changeSet) churnDiff(prev, cur map[string]entry, oldPath, newPath string, added map[string]map[string]int, m *Metrics) {
	read := func(t map[string]entry, p string) []string {
		e, ok := t[p]
		if !ok || e.mode == "120000" || e.mode == "160000" {
			return nil
		}
		b, _, err := c.repo.blob(e.id, c.max)
		if err != nil || isBinary(b) {
			return nil
		}
		return splitLines(b)
	}
	a, d := diffLines(read(prev, oldPath), read(cur, newPath))
	seen := added[newPath]
	if seen == nil {
		seen = map[string]int{}
		added[newPath] = seen
	}
	for _, l := range d {
		if seen[l.Text] > 0 {
			seen[l.Text]--
			m.ChurnSessionLines++
		}
	}
	for _, l := range a {
		if strings.TrimSpace(l.Text) != "" {
			seen[l.Text]++
		}
	}
}

// recentChurn blames the base version of each modified or renamed file and
// counts its deleted lines last changed within the window before the base
// commit.
func recentChurn(ctx context.Context, c *changeSet, cfg Config, m *Metrics) {
	if cfg.ChurnWindow <= 0 {
		return
	}
	out, err := c.repo.output(ctx, "show", "-s", "--format=%ct", c.baseID)
	baseTime, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || perr != nil {
		m.ChurnPartial = true
		return
	}
	since := baseTime - int64(cfg.ChurnWindow/time.Second)
	bctx, cancel := context.WithTimeout(ctx, blameBudget)
	defer cancel()
	blamed := 0
	for _, f := range c.files {
		if len(f.Deleted) == 0 || f.Status == "deleted" || f.OldPath == "" || f.Binary || f.Huge {
			continue
		}
		if blamed == maxBlameFiles {
			m.ChurnPartial = true
			return
		}
		blamed++
		times, err := c.repo.blameTimes(bctx, c.baseID, f.OldPath)
		if err != nil {
			m.ChurnPartial = true
			continue
		}
		for _, l := range f.Deleted {
			if t, ok := times[l.N]; ok && t >= since {
				m.ChurnRecentLines++
			}
		}
	}
	if changed := m.LinesDeleted; changed > 0 {
		m.ChurnRecentRatio = float64(m.ChurnRecentLines) / float64(changed)
	}
}

// output runs a read-only git command on the shadow repository.
func (r *repo) output(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", args[0], err, scrubLine(clip(strings.TrimSpace(errb.String()), 300)))
	}
	return out, nil
}

// blameTimes returns, for each line of path at commit, the committer time
// (Unix seconds) of the commit that last changed it. Text conversion is
// off and the hardened command (see git.go) runs no hook or filter: the
// blame reads objects only. A failure (e.g. an unreadable ignore-revs file
// named in the shadow repository's config) marks the churn partial.
func (r *repo) blameTimes(ctx context.Context, commit, path string) (map[int]int64, error) {
	cmd := r.command(ctx, "blame", "--porcelain", "--no-textconv", commit, "--", path)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	times, serr := parseBlame(stdout)
	io.Copy(io.Discard, stdout) // let git finish if parsing stopped early
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("git blame %s: %v: %s", path, err, scrubLine(clip(strings.TrimSpace(errb.String()), 300)))
	}
	return times, serr
}

// parseBlame reads `git blame --porcelain` output: for each line of the
// file, the committer time of the commit that last changed it, keyed by
// the line's number in the blamed version. Content lines start with a tab,
// so file content cannot pass for a header.
func parseBlame(r io.Reader) (map[int]int64, error) {
	times := map[int]int64{}
	commitTime := map[string]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var cur string
	var curLine int
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "\t") {
			times[curLine] = commitTime[cur]
			continue
		}
		f := strings.Fields(l)
		if len(f) >= 3 && isHex40(f[0]) {
			cur = f[0]
			curLine, _ = strconv.Atoi(f[2])
			continue
		}
		if v, ok := strings.CutPrefix(l, "committer-time "); ok {
			t, _ := strconv.ParseInt(v, 10, 64)
			commitTime[cur] = t
		}
	}
	return times, sc.Err()
}
