package review

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// AgentSession reports whether this process runs as, or inside, an agent's
// session, and which one. Two signals, either sufficient:
//
//   - ENCLAVE_SESSION is set: the sandbox sets it for the agent, and a
//     human has no reason to.
//   - The process is in a user namespace other than the initial one
//     (/proc/self/uid_map is not the identity map of all ids): every
//     enclave sandbox is one. This catches an agent that unset the
//     variable. It also refuses humans working inside rootless
//     containers, which is deliberate: their keys would be there too.
//
// Neither signal is the security boundary (an agent could forge both if
// it ran outside a sandbox); the boundary is that signing needs the
// human's private key, which lives in the state directory the sandbox
// never mounts. These checks turn an agent's attempt into a clear refusal
// on the record instead of a missing-key error.
func AgentSession(getenv func(string) string) (session string, inside bool) {
	if s := getenv("ENCLAVE_SESSION"); s != "" {
		return s, true
	}
	if data, err := os.ReadFile("/proc/self/uid_map"); err == nil {
		if f := strings.Fields(string(data)); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295" {
			return "unknown", true
		}
	}
	return "", false
}

// Signer is a human's signing key.
type Signer struct {
	// Name is the person the key belongs to (the OS user name).
	Name string
	key  ed25519.PrivateKey
	// Public is the public key in authorized_keys form ("ssh-ed25519 AAAA...").
	Public string
	// KeyID is the SSH fingerprint of the public key ("SHA256:...").
	KeyID string
	// Path is the private key file.
	Path string
}

func newSigner(name, path string, key ed25519.PrivateKey) (*Signer, error) {
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{
		Name:   name,
		key:    key,
		Public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		KeyID:  ssh.FingerprintSHA256(pub),
		Path:   path,
	}, nil
}

// KeyDir is where human keys live under the state directory.
const KeyDir = "keys"

// AllowedSignersFile lists the public keys attestations are checked
// against, one "name ssh-ed25519 AAAA..." line each (git's
// gpg.ssh.allowedSignersFile format, principals without options).
const AllowedSignersFile = "allowed_signers"

// KeyPath is the private key file of user under stateDir.
func KeyPath(stateDir, user string) string {
	return filepath.Join(stateDir, KeyDir, user+".ed25519")
}

// ErrNoKey is wrapped when a user has no signing key yet.
var ErrNoKey = errors.New("no signing key")

// LoadKey loads user's signing key from stateDir/keys/<user>.ed25519, an
// OpenSSH private key file (unencrypted), or the key file it was linked to
// with [LinkSSHKey]. The file must be owned by the current user and not
// readable by group or others.
func LoadKey(stateDir, user string) (*Signer, error) {
	if err := checkName(user); err != nil {
		return nil, err
	}
	p := KeyPath(stateDir, user)
	if link, err := os.ReadFile(p + ".link"); err == nil {
		p = strings.TrimSpace(string(link))
	}
	return LoadSSHKey(user, p)
}

// LoadSSHKey loads an existing unencrypted OpenSSH ed25519 private key
// (for example ~/.ssh/id_ed25519) as user's signer, the way git signs with
// SSH keys. Encrypted keys are refused with a hint; an ssh-agent signer is
// not supported yet.
func LoadSSHKey(user, path string) (*Signer, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("signing key of %s: %w (%s does not exist)", user, ErrNoKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key of %s: %w", user, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s is readable by others (mode %v); run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	var pme *ssh.PassphraseMissingError
	if errors.As(err, &pme) {
		return nil, fmt.Errorf("signing key %s is encrypted; enclave cannot use encrypted keys yet: make an enclave key with \"enclave review key\"", path)
	}
	if err != nil {
		return nil, fmt.Errorf("parse signing key %s: %w", path, err)
	}
	var key ed25519.PrivateKey
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		key = k
	case *ed25519.PrivateKey:
		key = *k
	default:
		return nil, fmt.Errorf("signing key %s is %T; only ed25519 keys are supported", path, raw)
	}
	return newSigner(user, path, key)
}

// CreateKey makes a new ed25519 key for user at stateDir/keys/<user>.ed25519
// (mode 0600, OpenSSH format, so ssh-keygen -Y and git can use it too),
// writes the public key beside it (.pub), and adds it to the allowed
// signers file. It refuses to overwrite an existing key.
func CreateKey(stateDir, user string) (*Signer, error) {
	if err := checkName(user); err != nil {
		return nil, err
	}
	p := KeyPath(stateDir, user)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, user+"@enclave")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create signing key: %w", err)
	}
	if _, err := f.Write(pemEncode(block.Type, block.Bytes)); err != nil {
		f.Close()
		os.Remove(p)
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	s, err := newSigner(user, p, priv)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p+".pub", []byte(s.Public+" "+user+"@enclave\n"), 0o644); err != nil {
		return nil, err
	}
	if err := AddAllowedSigner(filepath.Join(stateDir, KeyDir, AllowedSignersFile), user, s.Public); err != nil {
		return nil, err
	}
	return s, nil
}

// LinkSSHKey makes user's enclave key an existing SSH key file: LoadKey
// then reads that file. The public key is added to the allowed signers.
func LinkSSHKey(stateDir, user, sshKey string) (*Signer, error) {
	if err := checkName(user); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(sshKey)
	if err != nil {
		return nil, err
	}
	s, err := LoadSSHKey(user, abs)
	if err != nil {
		return nil, err
	}
	p := KeyPath(stateDir, user)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(p); err == nil {
		return nil, fmt.Errorf("%s already has an enclave key at %s; remove it first to link an SSH key", user, p)
	}
	if err := os.WriteFile(p+".link", []byte(abs+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := AddAllowedSigner(filepath.Join(stateDir, KeyDir, AllowedSignersFile), user, s.Public); err != nil {
		return nil, err
	}
	return s, nil
}

func checkName(user string) error {
	if user == "" || len(user) > 64 || strings.HasPrefix(user, ".") || strings.HasPrefix(user, "-") {
		return fmt.Errorf("user name %q cannot name a key file", user)
	}
	for _, r := range user {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r)) {
			return fmt.Errorf("user name %q cannot name a key file", user)
		}
	}
	return nil
}

// AllowedSigner is one trusted public key.
type AllowedSigner struct {
	Name   string
	Key    ed25519.PublicKey
	Public string // authorized_keys form
	KeyID  string
}

// AddAllowedSigner appends "name key" to the allowed signers file unless
// the same line is there.
func AddAllowedSigner(path, name, public string) error {
	line := name + " " + public
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("add to allowed signers: %w", err)
	}
	defer f.Close()
	_, err = f.WriteString(line + "\n")
	return err
}

// ParseAllowedSigners parses "name ssh-ed25519 AAAA... [comment]" lines;
// "#" starts a comment line. Only ed25519 keys are accepted.
func ParseAllowedSigners(name string, data []byte) ([]AllowedSigner, error) {
	var out []AllowedSigner
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		who, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"name ssh-ed25519 AAAA...\"", name, n)
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: public key of %s: %w", name, n, who, err)
		}
		cpk, ok := pk.(ssh.CryptoPublicKey)
		if !ok {
			return nil, fmt.Errorf("%s:%d: key of %s has no crypto key", name, n, who)
		}
		ek, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s:%d: key of %s is %s; only ssh-ed25519 is supported", name, n, who, pk.Type())
		}
		out = append(out, AllowedSigner{
			Name: who, Key: ek,
			Public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))),
			KeyID:  ssh.FingerprintSHA256(pk),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}
