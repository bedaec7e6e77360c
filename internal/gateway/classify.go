package gateway

import (
	"fmt"
	"slices"
	"strings"
)

// ClassifiedFile is a workspace file with a classification level, passed by
// the integrator at session start.
type ClassifiedFile struct {
	Path    string
	Level   string
	Content []byte
}

// Fingerprinting parameters (winnowing, Schleimer, Wilkerson and Aiken,
// SIGMOD 2003). Text is normalised (lowercased, all whitespace removed,
// identifiers optionally replaced), hashed in k-grams of characters, and
// the minimum hash of every window of w consecutive k-grams is kept. Any
// run of at least k+w-1 normalised characters shared with a file is
// guaranteed to share a fingerprint; a prompt is a hit for a file when it
// shares at least minMatches distinct fingerprints spanning two or more of
// the file's lines.
const (
	fpK          = 24
	fpW          = 12
	minMatches   = 4
	maxFileBytes = 4 << 20
	// maxOccurrences caps the lines posted for one fingerprint in one file.
	maxOccurrences = 16
)

// Index holds the fingerprints of a session's classified files.
type Index struct {
	files     []indexedFile
	post      map[uint64][]posting
	identNorm bool
	common    int // fingerprints dropped as boilerplate
}

type indexedFile struct {
	path  string
	level int
}

type posting struct {
	file int32
	line int32 // 1-based line in the file
}

// buildIndex fingerprints files. Unknown levels are an error; files above
// maxFileBytes are fingerprinted on their first maxFileBytes.
func (g *Gateway) buildIndex(files []ClassifiedFile) (*Index, error) {
	ix := &Index{post: map[uint64][]posting{}, identNorm: g.cfg.NormalizeIdentifiers}
	for i, f := range files {
		lv := slices.Index(g.levels, f.Level)
		if lv < 0 {
			return nil, fmt.Errorf("%w: classified file %q: level %q is not one of %s", ErrConfig, f.Path, f.Level, strings.Join(g.levels, ", "))
		}
		ix.add(f.Path, lv, f.Content)
		_ = i
	}
	ix.dropBoilerplate()
	return ix, nil
}

// dropBoilerplate forgets fingerprints shared by many classified files
// (licence headers, generated preambles, common idioms): they say nothing
// about which file an excerpt came from and cause false positives, as
// MOSS ignores code common to all submissions.
func (ix *Index) dropBoilerplate() {
	limit := max(3, len(ix.files)/10+1)
	for h, ps := range ix.post {
		files, last := 0, int32(-1)
		for _, p := range ps { // postings are grouped by file
			if p.file != last {
				files++
				last = p.file
			}
		}
		if files >= limit {
			delete(ix.post, h)
			ix.common++
		}
	}
}

// NewIndex fingerprints files with the given level names, outside a
// gateway (for measurements and tests).
func NewIndex(levels []string, identNorm bool, files []ClassifiedFile) (*Index, error) {
	g := &Gateway{levels: levels, cfg: Config{NormalizeIdentifiers: identNorm}}
	return g.buildIndex(files)
}

func (ix *Index) add(path string, level int, content []byte) {
	if len(content) > maxFileBytes {
		content = content[:maxFileBytes]
	}
	fi := int32(len(ix.files))
	ix.files = append(ix.files, indexedFile{path, level})
	n := normalize(string(content), ix.identNorm)
	hashes := kgrams(n.text)
	selected := map[uint64]bool{}
	winnowHashes(hashes, func(h uint64, _ int) { selected[h] = true })
	// Post every line where a selected k-gram occurs, not only the one
	// where winnowing picked it: a file that repeats a phrase (an error
	// string, an identifier) would otherwise map an excerpt of its first
	// use to a later line whenever the surrounding text (line numbers a
	// tool adds, reformatting) makes a different window pick it.
	type occurrence struct {
		h    uint64
		line int32
	}
	seen := map[occurrence]bool{}
	occ := map[uint64]int{}
	for i, h := range hashes {
		if !selected[h] {
			continue
		}
		o := occurrence{h, n.line[i]}
		if seen[o] || occ[h] >= maxOccurrences {
			continue
		}
		seen[o] = true
		occ[h]++
		ix.post[h] = append(ix.post[h], posting{fi, o.line})
	}
}

// Len reports the number of files indexed.
func (ix *Index) Len() int { return len(ix.files) }

// normText is normalised text with each byte's source line.
type normText struct {
	text []byte
	line []int32 // 1-based line of text[i] in the source
}

// normalize lowercases s and drops whitespace; with identNorm every
// identifier that is not a common keyword becomes "v", so renames do not
// change the text.
func normalize(s string, identNorm bool) normText {
	n := normText{text: make([]byte, 0, len(s)), line: make([]int32, 0, len(s))}
	line := int32(1)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f':
			i++
		case identNorm && isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentPart(s[j]) {
				j++
			}
			w := strings.ToLower(s[i:j])
			if keywords[w] {
				for k := 0; k < len(w); k++ {
					n.text = append(n.text, w[k])
					n.line = append(n.line, line)
				}
			} else {
				n.text = append(n.text, 'v')
				n.line = append(n.line, line)
			}
			i = j
		default:
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			n.text = append(n.text, c)
			n.line = append(n.line, line)
			i++
		}
	}
	return n
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentPart(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// keywords survive identifier normalisation: they carry the structure.
var keywords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`break case chan const continue default defer else fallthrough for func go goto
		if import interface map package range return select struct switch type var nil true false
		def class self lambda yield async await try except finally raise with as from in is not and or pass
		function let new this throw catch typeof instanceof void delete null undefined
		public private protected static final void int long char byte float double boolean string
		while do include define ifdef endif sizeof unsigned signed extern fn impl mut pub use mod match`) {
		keywords[w] = true
	}
}

// winnow calls emit for each selected fingerprint of text with the
// position of its k-gram.
func winnow(text []byte, emit func(h uint64, pos int)) {
	winnowHashes(kgrams(text), emit)
}

// kgrams returns the hash of every k-gram of text (none when text is
// shorter than k).
func kgrams(text []byte) []uint64 {
	if len(text) < fpK {
		return nil
	}
	const base = 1099511628211
	var pow uint64 = 1
	for i := 0; i < fpK-1; i++ {
		pow *= base
	}
	var h uint64
	for i := 0; i < fpK; i++ {
		h = h*base + uint64(text[i])
	}
	nk := len(text) - fpK + 1
	hashes := make([]uint64, nk)
	hashes[0] = mix(h)
	for i := 1; i < nk; i++ {
		h = (h-uint64(text[i-1])*pow)*base + uint64(text[i+fpK-1])
		hashes[i] = mix(h)
	}
	return hashes
}

// winnowHashes calls emit for the minimum of every window of w
// consecutive hashes (the rightmost one on ties), once per run.
func winnowHashes(hashes []uint64, emit func(h uint64, pos int)) {
	nk := len(hashes)
	if nk == 0 {
		return
	}
	if nk <= fpW {
		m := 0
		for i := range hashes {
			if hashes[i] <= hashes[m] {
				m = i
			}
		}
		emit(hashes[m], m)
		return
	}
	last := -1
	for start := 0; start+fpW <= nk; start++ {
		m := start
		for i := start; i < start+fpW; i++ {
			if hashes[i] <= hashes[m] { // rightmost minimum
				m = i
			}
		}
		if m != last {
			emit(hashes[m], m)
			last = m
		}
	}
}

// mix is the splitmix64 finaliser, so the minimum of a window is not biased
// by the low bits of a polynomial hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Match is classified content found in a text.
type Match struct {
	File      int // index into the session's files
	Path      string
	Level     int
	Matched   int // distinct shared fingerprints
	FileStart int // span in the file, 1-based lines
	FileEnd   int
	TextStart int // span in the text, 1-based lines
	TextEnd   int
	// Encoding names the layers the content was found under ("base64",
	// "base64+gzip"); empty when it was found as it is.
	Encoding string
}

// Match returns the classified files text shares content with.
//
// The span in the file is where the shared fingerprints lie. A fingerprint
// that occurs on several lines of a file (a repeated phrase) is placed on
// the occurrence nearest to where the unambiguous fingerprints put the
// excerpt, so a repeat far away does not stretch the span.
func (ix *Index) Match(text string) []Match {
	if ix == nil || len(ix.files) == 0 || len(text) < fpK {
		return nil
	}
	n := normalize(text, ix.identNorm)
	type hit struct {
		textLine int
		lines    []int32 // the file lines this fingerprint occurs on
	}
	type acc struct {
		m    Match
		seen map[uint64]bool
		hits []hit
	}
	var accs map[int32]*acc
	winnow(n.text, func(h uint64, pos int) {
		ps := ix.post[h]
		if len(ps) == 0 {
			return
		}
		if accs == nil {
			accs = map[int32]*acc{}
		}
		tl := int(n.line[pos])
		endLine := int(n.line[min(pos+fpK-1, len(n.line)-1)])
		for i := 0; i < len(ps); {
			f := ps[i].file
			j := i
			for j < len(ps) && ps[j].file == f {
				j++
			}
			a := accs[f]
			if a == nil {
				a = &acc{m: Match{File: int(f), TextStart: tl, TextEnd: endLine}, seen: map[uint64]bool{}}
				accs[f] = a
			}
			if !a.seen[h] {
				a.seen[h] = true
				a.m.Matched++
				lines := make([]int32, 0, j-i)
				for _, p := range ps[i:j] {
					lines = append(lines, p.line)
				}
				a.hits = append(a.hits, hit{tl, lines})
				a.m.TextStart, a.m.TextEnd = min(a.m.TextStart, tl), max(a.m.TextEnd, endLine)
			}
			i = j
		}
	})
	var out []Match
	for fi, a := range accs {
		if a.m.Matched < minMatches {
			continue
		}
		// The offset from text lines to file lines, from the fingerprints
		// that occur once in the file (or from all when none does).
		var offs []int
		for _, h := range a.hits {
			if len(h.lines) == 1 {
				offs = append(offs, int(h.lines[0])-h.textLine)
			}
		}
		if len(offs) == 0 {
			for _, h := range a.hits {
				for _, l := range h.lines {
					offs = append(offs, int(l)-h.textLine)
				}
			}
		}
		slices.Sort(offs)
		off := offs[len(offs)/2]
		lines := map[int]bool{}
		a.m.FileStart, a.m.FileEnd = int(^uint(0)>>1), 0
		for _, h := range a.hits {
			want := h.textLine + off
			best := int(h.lines[0])
			for _, l := range h.lines[1:] {
				if d, bd := abs(int(l)-want), abs(best-want); d < bd || d == bd && int(l) < best {
					best = int(l)
				}
			}
			lines[best] = true
			a.m.FileStart, a.m.FileEnd = min(a.m.FileStart, best), max(a.m.FileEnd, best)
		}
		if len(lines) < 2 {
			continue
		}
		f := ix.files[fi]
		a.m.Path, a.m.Level = f.path, f.level
		out = append(out, a.m)
	}
	slices.SortFunc(out, func(x, y Match) int { return x.File - y.File })
	return out
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
