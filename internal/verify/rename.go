package verify

import (
	"path"
	"regexp"
	"sort"
	"strings"
)

// Rename detection pairs each added file with a deleted one so that a
// moved file counts as moved, not as all its lines deleted and added
// again. Pairing goes in the order git's rename detection uses:
//
//  1. identical content (same blob);
//  2. similar content: the share of the larger file's bytes that falls on
//     lines both files hold (a line multiset, so reordering is a move, not
//     an edit) is at least renameThreshold percent, best pairs first;
//  3. the same base name, whatever the content (the diff then shows the
//     edit).
//
// A pair is a rename and its old path is not also reported deleted,
// except a test file whose pairing dropped test declarations: whether the
// tests survived the move is for a human to see.
const renameThreshold = 50

// maxRenamePairs bounds the similarity comparisons (added × deleted); past
// it only identical content and names are paired, as git's
// diff.renameLimit does. Pairs whose sizes differ by more than 2× are not
// compared: they cannot reach renameThreshold.
const maxRenamePairs = 40000

func (c *changeSet) pairRenames(added, deleted []string) {
	sort.Strings(added)
	sort.Strings(deleted)
	bt, ht := c.base, c.head
	pairedOld := map[string]bool{}
	pairs := map[string]*fileChange{} // added path -> change
	renamed := map[string]bool{}      // old path -> not also deleted
	pair := func(newPath, old string, sim int) {
		fc := &fileChange{Path: newPath, Status: "added", NewMode: ht[newPath].mode, OldPath: old, OldMode: bt[old].mode, Similarity: sim}
		pairs[newPath] = fc
		pairedOld[old] = true
		renamed[old] = true
	}
	byID := map[string][]string{}
	for _, p := range deleted {
		byID[bt[p].id] = append(byID[bt[p].id], p)
	}
	for _, p := range added {
		for _, old := range byID[ht[p].id] {
			if !pairedOld[old] {
				pair(p, old, 100)
				break
			}
		}
	}
	// Similar content among what is left.
	var restAdded, restDeleted []string
	for _, p := range added {
		if pairs[p] == nil && isText(ht[p].mode) {
			restAdded = append(restAdded, p)
		}
	}
	for _, p := range deleted {
		if !pairedOld[p] && isText(bt[p].mode) {
			restDeleted = append(restDeleted, p)
		}
	}
	if n := len(restAdded) * len(restDeleted); n > 0 && n <= maxRenamePairs {
		type cand struct {
			newPath, old string
			sim          int
		}
		oldSig := map[string]lineSig{}
		for _, p := range restDeleted {
			if b := c.baseText(p); b != nil {
				oldSig[p] = signature(b)
			}
		}
		var cands []cand
		for _, p := range restAdded {
			b := c.headText(p)
			if b == nil {
				continue
			}
			ns := signature(b)
			for _, old := range restDeleted {
				osig, ok := oldSig[old]
				if !ok {
					continue
				}
				if 2*min(osig.size, ns.size) < max(osig.size, ns.size) {
					continue
				}
				if sim := similarity(osig, ns); sim >= renameThreshold {
					cands = append(cands, cand{p, old, sim})
				}
			}
		}
		// Best score first; ties prefer the same base name, then path
		// order, so the result does not depend on map order.
		sort.SliceStable(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if a.sim != b.sim {
				return a.sim > b.sim
			}
			an, bn := path.Base(a.newPath) == path.Base(a.old), path.Base(b.newPath) == path.Base(b.old)
			if an != bn {
				return an
			}
			if a.newPath != b.newPath {
				return a.newPath < b.newPath
			}
			return a.old < b.old
		})
		for _, k := range cands {
			if pairs[k.newPath] == nil && !pairedOld[k.old] {
				pair(k.newPath, k.old, k.sim)
			}
		}
	}
	byName := map[string]string{}
	for _, p := range deleted {
		if !pairedOld[p] {
			if _, dup := byName[path.Base(p)]; !dup {
				byName[path.Base(p)] = p
			}
		}
	}
	for _, p := range added {
		if pairs[p] != nil {
			continue
		}
		if old, ok := byName[path.Base(p)]; ok && !pairedOld[old] {
			pair(p, old, 0)
		}
	}
	for _, p := range added {
		fc := pairs[p]
		if fc == nil {
			fc = &fileChange{Path: p, Status: "added", NewMode: ht[p].mode}
		} else if fc.Similarity < 100 && isTestSource(fc.OldPath) && c.dropsTests(fc) {
			renamed[fc.OldPath] = false
		}
		c.files = append(c.files, fc)
	}
	for _, p := range deleted {
		if renamed[p] {
			continue
		}
		c.files = append(c.files, &fileChange{Path: p, Status: "deleted", OldMode: bt[p].mode})
	}
}

func isText(mode string) bool { return mode == "100644" || mode == "100755" }

// testDecl matches a line declaring a test in Go, Python, JavaScript and
// TypeScript, or Rust.
var testDecl = regexp.MustCompile(`^\s*(?:func\s+(?:Test|Benchmark|Fuzz|Example)\w*\s*\(|(?:async\s+)?def\s+test\w*\s*\(|(?:it|test|describe)\s*\(|#\[test\])`)

// dropsTests reports whether a paired test file's head holds fewer test
// declarations than its base.
func (c *changeSet) dropsTests(fc *fileChange) bool {
	count := func(b []byte) int {
		n := 0
		for _, l := range splitLines(b) {
			if testDecl.MatchString(l) {
				n++
			}
		}
		return n
	}
	return count(c.headText(fc.Path)) < count(c.baseText(fc.OldPath))
}

// lineSig is a file's lines as a multiset with their byte sizes.
type lineSig struct {
	lines map[string]int
	size  int
}

func signature(b []byte) lineSig {
	s := lineSig{lines: map[string]int{}}
	for _, l := range splitLines(b) {
		l = strings.TrimRight(l, " \t\r")
		s.lines[l]++
		s.size += len(l) + 1
	}
	return s
}

// similarity is the percentage of the larger file's bytes on lines both
// files hold.
func similarity(a, b lineSig) int {
	if a.size == 0 || b.size == 0 {
		return 0
	}
	small, large := a, b
	if len(small.lines) > len(large.lines) {
		small, large = large, small
	}
	common := 0
	for l, n := range small.lines {
		if m := large.lines[l]; m > 0 {
			common += min(n, m) * (len(l) + 1)
		}
	}
	return common * 100 / max(a.size, b.size)
}
