package verify

import "sort"

// maxEditCost bounds the Myers search; beyond it diffLines falls back to
// a multiset comparison (a line counts as added if the base has fewer
// copies of it), which never reports fewer added lines than a real diff
// would have... nearly: it can miss a line moved within the file.
const maxEditCost = 4000

// diffLines returns the lines of b not in a longest common subsequence
// with a (added, numbered in b) and the lines of a not in it (deleted,
// numbered in a).
func diffLines(a, b []string) (added, deleted []line) {
	// Trim the common prefix and suffix: most edits are small.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	a2, b2 := a[pre:len(a)-suf], b[pre:len(b)-suf]
	keepA, keepB, ok := myers(a2, b2)
	if !ok {
		keepA, keepB = multiset(a2, b2)
	}
	for i, s := range b2 {
		if !keepB[i] {
			added = append(added, line{N: pre + i + 1, Text: s})
		}
	}
	for i, s := range a2 {
		if !keepA[i] {
			deleted = append(deleted, line{N: pre + i + 1, Text: s})
		}
	}
	return added, deleted
}

func multiset(a, b []string) (keepA, keepB []bool) {
	keepA, keepB = make([]bool, len(a)), make([]bool, len(b))
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for i, s := range b {
		if count[s] > 0 {
			count[s]--
			keepB[i] = true
		}
	}
	count = map[string]int{}
	for _, s := range b {
		count[s]++
	}
	for i, s := range a {
		if count[s] > 0 {
			count[s]--
			keepA[i] = true
		}
	}
	return keepA, keepB
}

// myers is the O(ND) greedy diff; it reports ok=false when the edit
// distance exceeds maxEditCost.
func myers(a, b []string) (keepA, keepB []bool, ok bool) {
	n, m := len(a), len(b)
	keepA, keepB = make([]bool, n), make([]bool, m)
	if n == 0 || m == 0 {
		return keepA, keepB, true
	}
	max := n + m
	if max > maxEditCost {
		max = maxEditCost
	}
	off := max + 1
	v := make([]int, 2*max+3)
	var trace [][]int
	for d := 0; d <= max; d++ {
		snap := make([]int, len(v))
		copy(snap, v)
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || k != d && v[off+k-1] < v[off+k+1] {
				x = v[off+k+1]
			} else {
				x = v[off+k-1] + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[off+k] = x
			if x >= n && y >= m {
				backtrack(trace, off, n, m, d, a, b, keepA, keepB)
				return keepA, keepB, true
			}
		}
	}
	return nil, nil, false
}

func backtrack(trace [][]int, off, x, y, d int, a, b []string, keepA, keepB []bool) {
	for ; d > 0; d-- {
		v := trace[d]
		k := x - y
		var pk int
		if k == -d || k != d && v[off+k-1] < v[off+k+1] {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := v[off+pk]
		py := px - pk
		for x > px && y > py {
			x--
			y--
			keepA[x], keepB[y] = true, true
		}
		x, y = px, py
	}
	for x > 0 && y > 0 {
		x--
		y--
		keepA[x], keepB[y] = true, true
	}
}

func sortFiles(fs []*fileChange) {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
}
