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
