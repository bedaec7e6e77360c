package verify

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// The OSV database is a directory tree or a .zip of OSV JSON entries
// (https://ossf.github.io/osv-schema/). Only "affected" entries with an
// ecosystem Enclave knows are used. Version matching:
//
//   - Go, npm, crates.io: semantic versioning (golang.org/x/mod/semver,
//     with a "v" added where missing);
//   - PyPI: a PEP 440 subset: epoch, release numbers, a/b/rc
//     pre-releases, .post and .dev; local versions (+...) are ignored;
//     wildcards and arbitrary equality are not supported.
//
// A range event the comparator cannot parse makes the lookup fail with an
// error (reported as a finding), never a silent "not affected".

type osvEntry struct {
	ID        string `json:"id"`
	Withdrawn string `json:"withdrawn"`
	Affected  []struct {
		Package struct {
			Ecosystem string `json:"ecosystem"`
			Name      string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string              `json:"type"`
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
		Versions []string `json:"versions"`
	} `json:"affected"`
}

type osvDB struct {
	byPkg map[string][]*osvEntry // ecosystem + "\x00" + normalised name
}

const maxOSVEntry = 16 << 20

func loadOSV(src string) (*osvDB, error) {
	db := &osvDB{byPkg: map[string][]*osvEntry{}}
	add := func(name string, r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, maxOSVEntry+1))
		if err != nil {
			return fmt.Errorf("osv %s: %w", name, err)
		}
		if len(b) > maxOSVEntry {
			return fmt.Errorf("osv %s: entry larger than %d bytes", name, maxOSVEntry)
		}
		var e osvEntry
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("osv %s: %w", name, err)
		}
		if e.ID == "" {
			return fmt.Errorf("osv %s: entry without id", name)
		}
		if e.Withdrawn != "" {
			return nil
		}
		seen := map[string]bool{}
		for _, a := range e.Affected {
			eco := strings.SplitN(a.Package.Ecosystem, ":", 2)[0]
			k := eco + "\x00" + normName(eco, a.Package.Name)
			if !seen[k] {
				seen[k] = true
				db.byPkg[k] = append(db.byPkg[k], &e)
			}
		}
		return nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("osv database: %w", err)
	}
	if !fi.IsDir() {
		zr, err := zip.OpenReader(src)
		if err != nil {
			return nil, fmt.Errorf("osv database %q: not a directory or zip: %w", src, err)
		}
		defer zr.Close()
		for _, f := range zr.File {
			if !strings.HasSuffix(f.Name, ".json") || f.FileInfo().IsDir() {
				continue
			}
			rc, err := f.Open()
			if err != nil {
				return nil, fmt.Errorf("osv %s: %w", f.Name, err)
			}
			err = add(f.Name, rc)
			rc.Close()
			if err != nil {
				return nil, err
			}
		}
		return db, nil
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return add(p, f)
	})
	if err != nil {
		return nil, fmt.Errorf("osv database: %w", err)
	}
	return db, nil
}

// affected returns the ids of entries affecting name at version.
func (db *osvDB) affected(eco, name, version string) ([]string, error) {
	cmp := comparator(eco)
	var ids []string
	var firstErr error
	for _, e := range db.byPkg[eco+"\x00"+normName(eco, name)] {
		hit := false
		for _, a := range e.Affected {
			aeco := strings.SplitN(a.Package.Ecosystem, ":", 2)[0]
			if aeco != eco || normName(eco, a.Package.Name) != normName(eco, name) {
				continue
			}
			for _, v := range a.Versions {
				if v == version || strings.TrimPrefix(v, "v") == strings.TrimPrefix(version, "v") {
					hit = true
				}
			}
			for _, r := range a.Ranges {
				if r.Type != "SEMVER" && r.Type != "ECOSYSTEM" {
					continue
				}
				in, err := inRange(cmp, version, r.Events)
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", e.ID, err)
					}
					continue
				}
				hit = hit || in
			}
		}
		if hit {
			ids = append(ids, e.ID)
		}
	}
	sort.Strings(ids)
	return ids, firstErr
}

func inRange(cmp func(a, b string) (int, error), v string, events []map[string]string) (bool, error) {
	type ev struct{ kind, ver string }
	var evs []ev
	for _, e := range events {
		for k, x := range e {
			evs = append(evs, ev{k, x})
		}
	}
	var sortErr error
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].ver == "0" {
			return evs[j].ver != "0"
		}
		if evs[j].ver == "0" {
			return false
		}
		c, err := cmp(evs[i].ver, evs[j].ver)
		if err != nil && sortErr == nil {
			sortErr = err
		}
		return c < 0
	})
	if sortErr != nil {
		return false, sortErr
	}
	affected := false
	for _, e := range evs {
		var c int
		if e.ver != "0" {
			var err error
			if c, err = cmp(v, e.ver); err != nil {
				return false, err
			}
		} else {
			c = 1
		}
		switch e.kind {
		case "introduced":
			if c >= 0 {
				affected = true
			}
		case "fixed":
			if c >= 0 {
				affected = false
			}
		case "last_affected":
			if c > 0 {
				affected = false
			}
		case "limit":
		default:
			return false, fmt.Errorf("unknown range event %q", e.kind)
		}
	}
	return affected, nil
}

func comparator(eco string) func(a, b string) (int, error) {
	if eco == EcoPyPI {
		return comparePEP440
	}
	return compareSemver
}

func compareSemver(a, b string) (int, error) {
	va, vb := "v"+strings.TrimPrefix(a, "v"), "v"+strings.TrimPrefix(b, "v")
	if !semver.IsValid(va) {
		return 0, fmt.Errorf("version %q is not semantic versioning", a)
	}
	if !semver.IsValid(vb) {
		return 0, fmt.Errorf("version %q is not semantic versioning", b)
	}
	return semver.Compare(va, vb), nil
}

var pep440 = regexp.MustCompile(`^v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|rc|alpha|beta|c|pre|preview)[-_.]?(\d*))?(?:[-_.]?(?:post|rev|r)[-_.]?(\d*))?(?:[-_.]?dev[-_.]?(\d*))?(?:\+[a-z0-9.]+)?$`)

type pyVersion struct {
	epoch   int
	release []int
	pre     [2]int // phase (-1 none... see key), number
	post    int    // -1 none
	dev     int    // -1 none
}

func parsePEP440(s string) (pyVersion, error) {
	m := pep440.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return pyVersion{}, fmt.Errorf("version %q is not PEP 440", s)
	}
	atoi := func(x string, def int) int {
		if x == "" {
			return def
		}
		n, _ := strconv.Atoi(x)
		return n
	}
	v := pyVersion{epoch: atoi(m[1], 0), post: -1, dev: -1}
	for _, p := range strings.Split(m[2], ".") {
		v.release = append(v.release, atoi(p, 0))
	}
	for len(v.release) > 1 && v.release[len(v.release)-1] == 0 {
		v.release = v.release[:len(v.release)-1]
	}
	v.pre = [2]int{3, 0} // no pre-release sorts after rc
	switch m[3] {
	case "a", "alpha":
		v.pre = [2]int{0, atoi(m[4], 0)}
	case "b", "beta":
		v.pre = [2]int{1, atoi(m[4], 0)}
	case "rc", "c", "pre", "preview":
		v.pre = [2]int{2, atoi(m[4], 0)}
	}
	if strings.Contains(s, "post") || strings.Contains(s, "rev") || regexp.MustCompile(`[-_.]r\d`).MatchString(s) {
		v.post = atoi(m[5], 0)
	}
	if m[6] != "" || strings.Contains(s, "dev") {
		v.dev = atoi(m[6], 0)
		if v.pre[0] == 3 && v.post < 0 {
			v.pre = [2]int{-1, 0} // 1.0.dev0 sorts before 1.0a1
		}
	}
	return v, nil
}

func comparePEP440(a, b string) (int, error) {
	va, err := parsePEP440(a)
	if err != nil {
		return 0, err
	}
	vb, err := parsePEP440(b)
	if err != nil {
		return 0, err
	}
	c := func(x, y int) int {
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	if r := c(va.epoch, vb.epoch); r != 0 {
		return r, nil
	}
	for i := 0; i < max(len(va.release), len(vb.release)); i++ {
		x, y := 0, 0
		if i < len(va.release) {
			x = va.release[i]
		}
		if i < len(vb.release) {
			y = vb.release[i]
		}
		if r := c(x, y); r != 0 {
			return r, nil
		}
	}
	if r := c(va.pre[0], vb.pre[0]); r != 0 {
		return r, nil
	}
	if r := c(va.pre[1], vb.pre[1]); r != 0 {
		return r, nil
	}
	if r := c(va.post, vb.post); r != 0 {
		return r, nil
	}
	// A dev release sorts before the same version without one.
	dx, dy := va.dev, vb.dev
	if dx < 0 {
		dx = 1 << 30
	}
	if dy < 0 {
		dy = 1 << 30
	}
	return c(dx, dy), nil
}
