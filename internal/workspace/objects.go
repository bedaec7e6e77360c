package workspace

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1" // #nosec G505 -- git's object ids are SHA-1 in a sha1 repository; not used for security here
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The repositories this package creates (the agent's copy's .git before the
// agent starts, and the shadow) are written by enclave itself where git's
// on-disk format is simple and stable: the layout of a new repository, a
// loose ref, a loose commit object. Each replaces a git process on the
// session's start or end path. Anything that reads trees, the index or the
// work tree is still git's job.

// Object formats (git's extensions.objectFormat).
const (
	formatSHA1   = "sha1"
	formatSHA256 = "sha256"
)

func checkObjectFormat(f string) error {
	switch f {
	case "", formatSHA1, formatSHA256:
		return nil
	}
	return fmt.Errorf("object format %q is not supported (want sha1 or sha256)", f)
}

func newObjectHash(format string) hash.Hash {
	if format == formatSHA256 {
		return sha256.New()
	}
	return sha1.New() // #nosec G401 -- git object id, see the import
}

// repoConfig is the [core] section (and [extensions] for sha256) of a new
// repository, as git init writes it.
func repoConfig(format string, bare bool) string {
	var b strings.Builder
	version := 0
	if format == formatSHA256 {
		version = 1
	}
	fmt.Fprintf(&b, "[core]\n\trepositoryformatversion = %d\n\tfilemode = true\n\tbare = %t\n", version, bare)
	if !bare {
		b.WriteString("\tlogallrefupdates = true\n")
	}
	if format == formatSHA256 {
		b.WriteString("[extensions]\n\tobjectformat = sha256\n")
	}
	return b.String()
}

// configQuote renders v as a quoted git config value.
func configQuote(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(v) + `"`
}

// initRepo creates the git directory gitDir (which must not exist) the way
// `git init --template=` does: HEAD on head (a full ref name), config with
// extra appended, objects and refs, and objects/info/alternates pointing at
// alternate when it is not "".
func initRepo(gitDir, format string, bare bool, head, alternate, extra string) error {
	if err := checkObjectFormat(format); err != nil {
		return err
	}
	if strings.ContainsAny(alternate, "\n\r") || strings.HasPrefix(alternate, `"`) {
		return fmt.Errorf("objects directory %q: a path with a line break or a leading quote cannot be an alternate", alternate)
	}
	if err := os.Mkdir(gitDir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"objects", "objects/info", "objects/pack", "refs", "refs/heads", "refs/tags"} {
		if err := os.Mkdir(filepath.Join(gitDir, d), 0o755); err != nil {
			return err
		}
	}
	files := [][2]string{
		{"HEAD", "ref: " + head + "\n"},
		{"config", repoConfig(format, bare) + extra},
	}
	if alternate != "" {
		files = append(files, [2]string{"objects/info/alternates", alternate + "\n"})
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(gitDir, f[0]), []byte(f[1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeRef sets the loose ref name (a full ref name) of gitDir to id, as
// `git update-ref` does in a files-backend repository that enclave owns:
// a lock file renamed over the ref.
func writeRef(gitDir, name, id string) error {
	if !isHex40(id) {
		return fmt.Errorf("update %s: bad object id %q", name, id)
	}
	if !strings.HasPrefix(name, "refs/") || strings.Contains(name, "..") || strings.ContainsAny(name, "\x00\n\\ ~^:?*[") {
		return fmt.Errorf("update ref: bad name %q", name)
	}
	p := filepath.Join(gitDir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	lock := p + ".lock"
	if err := os.WriteFile(lock, []byte(id+"\n"), 0o644); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	if err := os.Rename(lock, p); err != nil {
		os.Remove(lock)
		return fmt.Errorf("update %s: %w", name, err)
	}
	return nil
}

// writeObject stores a loose object of kind ("commit", ...) and content in
// the objects directory and returns its id. An object already present is
// left alone: the same id is the same content.
func writeObject(objects, format, kind string, content []byte) (string, error) {
	hdr := kind + " " + strconv.Itoa(len(content)) + "\x00"
	h := newObjectHash(format)
	h.Write([]byte(hdr))
	h.Write(content)
	id := hex.EncodeToString(h.Sum(nil))
	dir := filepath.Join(objects, id[:2])
	final := filepath.Join(dir, id[2:])
	if _, err := os.Lstat(final); err == nil {
		return id, nil
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write([]byte(hdr))
	zw.Write(content)
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write object: %w", err)
	}
	tmp, err := os.CreateTemp(objects, "tmp_obj_")
	if err != nil {
		return "", fmt.Errorf("write object: %w", err)
	}
	_, werr := tmp.Write(z.Bytes())
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o444)
	}
	if werr == nil {
		// link, not rename, as git does: an object file is never replaced.
		if werr = os.Link(tmp.Name(), final); errors.Is(werr, fs.ErrExist) {
			werr = nil
		}
	}
	os.Remove(tmp.Name())
	if werr != nil {
		return "", fmt.Errorf("write object %s: %w", id, werr)
	}
	return id, nil
}

// commitObject is the body of a commit object, as `git commit-tree` writes
// it with the given identities, both dated at when (UTC).
func commitObject(tree, parent, author, committer string, when time.Time, msg string) []byte {
	stamp := strconv.FormatInt(when.Unix(), 10) + " +0000"
	var b bytes.Buffer
	b.WriteString("tree " + tree + "\n")
	if parent != "" {
		b.WriteString("parent " + parent + "\n")
	}
	b.WriteString("author " + author + " " + stamp + "\n")
	b.WriteString("committer " + committer + " " + stamp + "\n\n")
	b.WriteString(msg)
	return b.Bytes()
}
