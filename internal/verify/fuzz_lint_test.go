package verify

import (
	"strings"
	"testing"
)

// parseBlame(porcelain) = committer time per line; content lines that
// look like headers are content.
func TestParseBlame(t *testing.T) {
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	in := a + " 1 1 2\nauthor x\ncommitter-time 100\nfilename f\n\tline one\n" +
		a + " 2 2\n\t" + b + " 9 9 9\n" +
		b + " 5 3 1\ncommitter-time 200\nfilename f\n\tcommitter-time 999\n"
	got, err := parseBlame(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]int64{1: 100, 2: 100, 3: 200}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("parseBlame: line %d = %d, want %d (all %v)", n, got[n], w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("parseBlame = %v, want %v", got, want)
	}
}

// The blame parser reads git's output about agent-written files; it must
// never panic, whatever the bytes.
func FuzzParseBlame(f *testing.F) {
	f.Add(strings.Repeat("a", 40) + " 1 1 1\ncommitter-time 5\n\tx\n")
	f.Add("\t\n" + strings.Repeat("f", 40) + " x y\ncommitter-time -1\n")
	f.Fuzz(func(t *testing.T, s string) {
		parseBlame(strings.NewReader(s))
	})
}

// The linters' reports come out of a sandbox that ran on the agent's tree:
// parsing them must never panic.
func FuzzLinterReports(f *testing.F) {
	f.Add(`{"errors":[],"results":[{"filename":"a.py","line_number":3,"test_id":"B602","issue_text":"x","issue_severity":"HIGH"}]}`)
	f.Add(`{"comments":[{"file":"a.sh","line":2,"code":2115,"level":"warning","message":"m"}]}`)
	f.Add(`{"results":null,"comments":[{}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, l := range fileLinters {
			l.parse([]byte(s))
		}
		issueAt(gosecIssue{File: s, Line: s, RuleID: s})
	})
}

// kwIndex.present(s) marks exactly the keywords strings.Contains finds.
func FuzzKWIndex(f *testing.F) {
	f.Add("ghp_,xox,key,ke,y,api_key", "my api_key = ghp_xxx and xoxb")
	f.Add("a,aa,aaa,b", "aaab")
	f.Fuzz(func(t *testing.T, kws, s string) {
		words := strings.Split(strings.ToLower(kws), ",")
		var uniq []string
		seenW := map[string]bool{}
		for _, w := range words {
			if w != "" && !seenW[w] {
				seenW[w] = true
				uniq = append(uniq, w)
			}
		}
		k := newKWIndex(uniq)
		s = strings.ToLower(s)
		got := make([]bool, k.n)
		k.present(s, got)
		for i, w := range uniq {
			if got[i] != strings.Contains(s, w) {
				t.Fatalf("present(%q)[%q] = %v, want %v", s, w, got[i], !got[i])
			}
		}
	})
}
