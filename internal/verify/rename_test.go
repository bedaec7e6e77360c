package verify

import (
	"strings"
	"testing"
)

// A moved file is one change, not an addition plus a deletion; a moved
// test is not a deleted test unless its content changed too.
func TestRenames(t *testing.T) {
	body := "package p\n\n" + strings.Repeat("// line of an unchanged file\n", 40)
	test := "package p\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) {\n\tif 1+1 != 2 {\n\t\tt.Fatal(\"math\")\n\t}\n}\n"
	base := map[string]string{"go.mod": goMod, "old/doc.go": body, "old/x_test.go": test, "a/y_test.go": test + "// y\n"}
	edits := map[string]string{
		"old/doc.go": "", "new/doc.go": body, // moved as is
		"old/x_test.go": "", "new/x_test.go": test, // moved as is
		"a/y_test.go": "", "b/y_test.go": "package p\n", // same name, tests gone
	}
	r := runFixture(t, newFixture(t, base, edits), offline())
	if got := r.Metrics.FilesChanged; got != 4 {
		t.Errorf("FilesChanged = %d, want 4 (three moves and the deleted test)", got)
	}
	// Only y_test.go's 11 lines count, twice: once in the diff against
	// its namesake, once as the deleted test. The moved files' 53 do not.
	if got := r.Metrics.LinesDeleted; got > 22 {
		t.Errorf("LinesDeleted = %d, want only the y_test.go lines", got)
	}
	var deleted []string
	for _, f := range r.Findings {
		if f.Rule == "deleted-test" {
			deleted = append(deleted, f.File)
		}
	}
	if strings.Join(deleted, ",") != "a/y_test.go" {
		t.Errorf("deleted-test findings on %v, want [a/y_test.go]", deleted)
	}
}

// A file moved and edited a little is paired with its old path by
// content, whatever its new name; unrelated files are not paired; a test
// that lost a test function on the way is still flagged.
func TestRenameSimilarity(t *testing.T) {
	var body strings.Builder
	body.WriteString("package p\n\n")
	for i := 0; i < 40; i++ {
		body.WriteString("// unchanged line number " + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + "\n")
	}
	old := body.String()
	moved := strings.Replace(old, "package p\n", "package q\n", 1) + "// one more line\n"
	test := "package p\n\nimport \"testing\"\n\nfunc TestA(t *testing.T) {\n\tcheck(t, 1)\n}\n\nfunc TestB(t *testing.T) {\n\tcheck(t, 2)\n}\n\nfunc check(t *testing.T, n int) {\n\tif n == 0 {\n\t\tt.Fatal(\"zero\")\n\t}\n}\n"
	lostB := strings.Replace(test, "func TestB(t *testing.T) {\n\tcheck(t, 2)\n}\n\n", "", 1)
	base := map[string]string{"go.mod": goMod, "lib/engine.go": old, "lib/engine_test.go": test, "gone.txt": "alpha\nbeta\ngamma\n"}
	edits := map[string]string{
		"lib/engine.go": "", "core/motor.go": moved, // renamed and edited
		"lib/engine_test.go": "", "core/motor_test.go": lostB, // renamed, TestB gone
		"gone.txt": "", "fresh.txt": "one\ntwo\nthree\n", // unrelated
	}
	r := runFixture(t, newFixture(t, base, edits), offline())
	m := r.Metrics
	if m.FilesRenamed != 2 {
		t.Errorf("FilesRenamed = %d, want 2 (motor.go, motor_test.go)", m.FilesRenamed)
	}
	// motor.go: package line and the extra line added, package line
	// deleted; motor_test.go: 4 lines of TestB deleted; fresh.txt 3 added,
	// gone.txt 3 deleted; the deleted test file counts its 18 lines again.
	if m.LinesAdded != 2+3 {
		t.Errorf("LinesAdded = %d, want 5", m.LinesAdded)
	}
	if want := 1 + 4 + 3 + strings.Count(test, "\n"); m.LinesDeleted != want {
		t.Errorf("LinesDeleted = %d, want %d", m.LinesDeleted, want)
	}
	if want := 41 + strings.Count(lostB, "\n"); m.LinesMoved != want {
		t.Errorf("LinesMoved = %d, want %d (unchanged lines of the renamed files)", m.LinesMoved, want)
	}
	var deleted []string
	for _, f := range r.Findings {
		if f.Rule == "deleted-test" {
			deleted = append(deleted, f.File)
		}
	}
	if strings.Join(deleted, ",") != "lib/engine_test.go" {
		t.Errorf("deleted-test findings on %v, want [lib/engine_test.go]", deleted)
	}
}

// similarity(a, b) = percent of the larger file's bytes on shared lines.
func TestSimilarity(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"a\nb\nc\n", "a\nb\nc\n", 100},
		{"a\nb\nc\n", "c\nb\na\n", 100}, // reordered lines moved
		{"a\nb\nc\nd\n", "a\nb\n", 50},
		{"a\nb\n", "x\ny\n", 0},
		{"", "a\n", 0},
		{"aaaa\nb\n", "aaaa\nc\n", 71}, // 5 of 7 bytes
	} {
		if got := similarity(signature([]byte(tt.a)), signature([]byte(tt.b))); got != tt.want {
			t.Errorf("similarity(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// Code moved from one file to another keeps its existing static findings
// off the agent's account; the same code added a second time does not.
func TestStaticMovedCode(t *testing.T) {
	tlsLine := "var cfg = &tls.Config{InsecureSkipVerify: true}\n"
	old := "package a\n\nimport \"crypto/tls\"\n\n" + tlsLine
	fresh := "package b\n\nimport (\n\t\"crypto/tls\"\n\t\"fmt\"\n)\n\n// Print prints.\nfunc Print() { fmt.Println(cfg) }\n\n" + tlsLine
	for _, tt := range []struct {
		name  string
		edits map[string]string
		want  int
	}{
		{"moved", map[string]string{"a/a.go": "", "b/b.go": fresh}, 0},
		{"copied", map[string]string{"b/b.go": fresh}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runFixture(t, newFixture(t, map[string]string{"go.mod": goMod, "a/a.go": old}, tt.edits), offline())
			n := 0
			for _, f := range r.Findings {
				if f.Rule == "insecure-tls" {
					n++
				}
			}
			if n != tt.want {
				t.Errorf("insecure-tls findings = %d, want %d; findings %+v", n, tt.want, r.Findings)
			}
		})
	}
}
