package verify

// kwIndex finds which of a rule set's keywords occur in a line in one pass
// (an Aho-Corasick automaton over lowercase bytes), instead of one
// substring search per keyword per rule: with gitleaks' ~220 rules that
// search was most of the scan's time.
type kwIndex struct {
	next [][256]int32 // goto function completed into a DFA
	out  [][]int32    // keyword ids that end at each state
	n    int          // number of keywords
}

// newKWIndex builds the automaton for keywords (already lowercase); id i
// is keywords[i].
func newKWIndex(keywords []string) *kwIndex {
	k := &kwIndex{n: len(keywords)}
	k.next = append(k.next, [256]int32{})
	k.out = append(k.out, nil)
	for i := range k.next[0] {
		k.next[0][i] = -1
	}
	for id, w := range keywords {
		s := int32(0)
		for i := 0; i < len(w); i++ {
			c := w[i]
			if k.next[s][c] <= 0 {
				var row [256]int32
				for j := range row {
					row[j] = -1
				}
				k.next = append(k.next, row)
				k.out = append(k.out, nil)
				k.next[s][c] = int32(len(k.next) - 1)
			}
			s = k.next[s][c]
		}
		k.out[s] = append(k.out[s], int32(id))
	}
	// Breadth-first: fail links, outputs merged along them, and missing
	// transitions filled in from the fail state's.
	fail := make([]int32, len(k.next))
	queue := []int32{}
	for c := 0; c < 256; c++ {
		if t := k.next[0][c]; t > 0 {
			fail[t] = 0
			queue = append(queue, t)
		} else {
			k.next[0][c] = 0
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		k.out[s] = append(k.out[s], k.out[fail[s]]...)
		for c := 0; c < 256; c++ {
			t := k.next[s][c]
			if t < 0 {
				k.next[s][c] = k.next[fail[s]][c]
				continue
			}
			fail[t] = k.next[fail[s]][c]
			queue = append(queue, t)
		}
	}
	return k
}

// present marks in seen (len n) the keywords that occur in s (lowercase).
func (k *kwIndex) present(s string, seen []bool) {
	st := int32(0)
	for i := 0; i < len(s); i++ {
		st = k.next[st][s[i]]
		for _, id := range k.out[st] {
			seen[id] = true
		}
	}
}
