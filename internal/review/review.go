// Package review is the human end of a session: task tiers, approvals and
// rejections by named people, separation of duties, signed provenance, and
// the merge of an approved change into the user's repository.
//
// # Model
//
// A session's agent leaves a commit (its head) on refs/heads/enclave/<id> in
// enclave's shadow repository (internal/workspace). A human reviews it
// ([Facts] gathers what they need), then approves or rejects. Each action is
// first put to the Cedar decision point (internal/authz) and the decision is
// recorded in the audit log as an "authz" event naming the policies that
// decided it; a denied action is recorded and not performed, and an action
// that cannot be recorded is not performed either.
//
// An approval is an in-toto Statement v1 ([Statement]) whose subject is the
// head commit, signed by the approver's own ed25519 key in a DSSE envelope
// ([Sign]). It is valid only while the shadow branch still points at that
// head: moving the branch invalidates every approval made before. When the
// tier's approvals are in (and each protected path has an owner's
// approval), [Merge] fetches the commit from the shadow repository into the
// user's repository, creates enclave/<id> there (or merges into the target
// branch), and attaches the envelopes as a git note on refs/notes/enclave,
// which [VerifyEnvelope] checks offline with public keys alone; with the
// audit log's public key, [CheckCheckpoint] also checks the log checkpoint
// each approval embeds. With merge.auto, the approval that makes the
// approvals sufficient merges at once ([Reviewer.AutoMerge]).
//
// Before a session exists, [AuthorizeRun] puts Action::"run" to the same
// decision point (who runs which agent, at which tier, with which sandbox
// profile) and records it; [RunProfile] applies a tier's profile.
//
// # Guarantees
//
//   - The agent cannot act as a human: commands refuse inside a session
//     (see [CheckHuman]), the Cedar policies forbid Agent principals every
//     decision, and signing needs the human's private key, which lives in
//     the state directory the sandbox never mounts.
//   - git never runs with the agent's configuration: merge reads the shadow
//     repository (written by enclave only) with a hardened environment, and
//     runs in the user's repository with the user's own configuration; the
//     agent's copy and its .git are never touched.
//   - An attestation fails verification after any change to the commit, the
//     statement, or the signature: the subject digest is the commit id and
//     base64 fields must be canonical, so no two envelopes verify alike.
//
// # Not covered
//
// On one machine, every key in a state directory belongs to whoever owns the
// directory: two people sharing one state directory can sign for each other.
// Real separation of duties needs each approver's key on their own account
// (an existing SSH key, see [LoadSSHKey]) or the team server. Teams in
// CODEOWNERS (@org/team) are matched by name only; there is no directory of
// members.
package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/enclave-dev/enclave/internal/store"
)

// Session states added by review; the core's are store.StateRunning,
// StateExited and StateFailed.
const (
	StateNeedsReview = "needs-review"
	StateApproved    = "approved"
	StateRejected    = "rejected"
	StateMerged      = "merged"
)

// Audit event kinds written by this package.
const (
	KindAuthz   = "authz"
	KindTier    = "review.tier"
	KindApprove = "review.approve"
	KindReject  = "review.reject"
	KindMerge   = "review.merge"
	// KindKey records a new approval signing key in the allowed signers.
	KindKey = "review.key"
)

// Tiers built in; a config may define others.
const (
	TierDocs      = "docs-tests"
	TierRoutine   = "routine"
	TierSensitive = "sensitive"
)

// Verification gates a tier may require.
const (
	GatePass   = "pass"    // verify ran and passed
	GateNoFail = "no-fail" // verify ran and did not fail (pass or needs-review)
	GateNone   = "none"    // no requirement
)

// Merge modes.
const (
	MergeBranch = "branch" // create enclave/<id> in the user's repository
	MergeTarget = "target" // merge into Config.Merge.Target with a merge commit
)

// ConfigFile is the review configuration beside enclave.yaml.
const ConfigFile = "enclave.review.yaml"

// Errors.
var (
	// ErrDenied is wrapped when the policy denies an action.
	ErrDenied = errors.New("not authorised")
	// ErrAgent is wrapped when a command that needs a human runs as, or
	// inside, an agent's session.
	ErrAgent = errors.New("agents cannot act as a human")
	// ErrInvalidConfig is wrapped by every error about enclave.review.yaml.
	ErrInvalidConfig = errors.New("invalid review config")
	// ErrMoved is wrapped when the shadow branch no longer points at the
	// recorded head.
	ErrMoved = errors.New("branch moved")
)

// Tier is one tier's settings.
type Tier struct {
	// Approvals is how many distinct people must approve.
	Approvals int `yaml:"approvals" json:"approvals"`
	// Gate is the verification the tier requires before approval.
	Gate string `yaml:"gate" json:"gate"`
	// SeparationOfDuties forbids the launcher approving their own session.
	SeparationOfDuties bool `yaml:"separation_of_duties" json:"separation_of_duties"`
	// Profile is the enclave.yaml sandbox profile sessions of this tier
	// should run with ("" means the default profile). enclave run applies
	// it once it takes --tier; review only reports it.
	Profile string `yaml:"profile" json:"profile,omitempty"`
	// Merge, when set, overrides the top-level merge section for sessions
	// of this tier; keys it leaves out are inherited from there.
	Merge *TierMerge `yaml:"merge" json:"merge,omitempty"`
}

// TierMerge is a tier's merge settings.
type TierMerge struct {
	Mode   string `yaml:"mode" json:"mode,omitempty"`
	Target string `yaml:"target" json:"target,omitempty"`
	Auto   *bool  `yaml:"auto" json:"auto,omitempty"`
}

// MergeConfig says where an approved change goes.
type MergeConfig struct {
	Mode   string `yaml:"mode" json:"mode"`
	Target string `yaml:"target" json:"target,omitempty"`
	// Auto merges as soon as an approval makes the approvals sufficient,
	// in the name of the person who approved last.
	Auto bool `yaml:"auto" json:"auto,omitempty"`
}

// Config is enclave.review.yaml.
type Config struct {
	Version     int             `yaml:"version"`
	DefaultTier string          `yaml:"default_tier"`
	Tiers       map[string]Tier `yaml:"tiers"`
	// Owners is the CODEOWNERS-style file, relative to the repository top
	// level; "" means the first of CODEOWNERS, .github/CODEOWNERS,
	// docs/CODEOWNERS that exists.
	Owners string      `yaml:"owners"`
	Merge  MergeConfig `yaml:"merge"`

	// Source is the file the config came from, or "built-in".
	Source string `yaml:"-"`
	// Hash is the hex SHA-256 of the file ("" for built-in).
	Hash string `yaml:"-"`
}

// DefaultConfig is used when a repository has no enclave.review.yaml.
func DefaultConfig() *Config {
	return &Config{
		Version:     1,
		DefaultTier: TierRoutine,
		Tiers: map[string]Tier{
			TierDocs:      {Approvals: 1, Gate: GateNone},
			TierRoutine:   {Approvals: 1, Gate: GateNoFail},
			TierSensitive: {Approvals: 2, Gate: GatePass, SeparationOfDuties: true},
		},
		Merge:  MergeConfig{Mode: MergeBranch},
		Source: "built-in",
	}
}

// LoadConfig reads dir/enclave.review.yaml, or returns DefaultConfig when
// there is none. Tiers the file leaves out keep their built-in settings.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig parses review config text; name is used in errors.
func ParseConfig(name string, data []byte) (*Config, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", name, fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	if bytes.Contains(data, []byte("&")) || bytes.Contains(data, []byte("*")) {
		var n yaml.Node
		if err := yaml.Unmarshal(data, &n); err == nil && hasAlias(&n) {
			return nil, bad("YAML anchors and aliases are not supported")
		}
	}
	c := DefaultConfig()
	c.Tiers = map[string]Tier{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw Config
	if err := decodeSafe(dec, &raw); err != nil {
		return nil, bad("%v", err)
	}
	if raw.Version != 1 {
		return nil, bad("version must be 1, not %d", raw.Version)
	}
	for k, v := range DefaultConfig().Tiers {
		c.Tiers[k] = v
	}
	names := make([]string, 0, len(raw.Tiers))
	for k := range raw.Tiers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t := raw.Tiers[k]
		if !validName(k) {
			return nil, bad("tier name %q: use lowercase letters, digits and '-'", k)
		}
		if t.Approvals < 1 || t.Approvals > 10 {
			return nil, bad("tiers.%s.approvals must be 1 to 10, not %d", k, t.Approvals)
		}
		if !slices.Contains([]string{GatePass, GateNoFail, GateNone}, t.Gate) {
			return nil, bad("tiers.%s.gate must be pass, no-fail or none, not %q", k, t.Gate)
		}
		c.Tiers[k] = t
	}
	if raw.DefaultTier != "" {
		c.DefaultTier = raw.DefaultTier
	}
	if _, ok := c.Tiers[c.DefaultTier]; !ok {
		return nil, bad("default_tier %q is not a tier (%s)", c.DefaultTier, strings.Join(c.TierNames(), ", "))
	}
	if raw.Owners != "" {
		if filepath.IsAbs(raw.Owners) || strings.Contains("/"+filepath.ToSlash(raw.Owners)+"/", "/../") {
			return nil, bad("owners must be a path inside the repository, not %q", raw.Owners)
		}
		c.Owners = raw.Owners
	}
	if raw.Merge.Mode != "" {
		c.Merge.Mode = raw.Merge.Mode
	}
	c.Merge.Target = raw.Merge.Target
	c.Merge.Auto = raw.Merge.Auto
	if err := checkMerge("merge", c.Merge); err != nil {
		return nil, bad("%v", err)
	}
	for _, k := range names {
		t := c.Tiers[k]
		if t.Merge == nil {
			continue
		}
		if t.Merge.Mode != "" && t.Merge.Mode != MergeBranch && t.Merge.Mode != MergeTarget {
			return nil, bad("tiers.%s.merge.mode must be branch or target, not %q", k, t.Merge.Mode)
		}
		m := c.MergeFor(k)
		if t.Merge.Target != "" && m.Mode != MergeTarget {
			return nil, bad("tiers.%s.merge.target is set but the tier merges to a branch; add mode: target", k)
		}
		if err := checkMerge("tiers."+k+".merge", m); err != nil {
			return nil, bad("%v", err)
		}
	}
	c.Source, c.Hash = name, sha256Hex(data)
	return c, nil
}

func checkMerge(key string, m MergeConfig) error {
	switch m.Mode {
	case MergeBranch:
	case MergeTarget:
		if m.Target == "" || strings.HasPrefix(m.Target, "-") || strings.ContainsAny(m.Target, " ~^:?*[\\") {
			return fmt.Errorf("%s.target must name a branch when %s.mode is target, not %q", key, key, m.Target)
		}
	default:
		return fmt.Errorf("%s.mode must be branch or target, not %q", key, m.Mode)
	}
	return nil
}

// MergeFor is where and how sessions of tier merge: the top-level merge
// section with the tier's own merge keys over it.
func (c *Config) MergeFor(tier string) MergeConfig {
	m := c.Merge
	t, ok := c.Tiers[tier]
	if !ok || t.Merge == nil {
		return m
	}
	if t.Merge.Mode != "" {
		m.Mode = t.Merge.Mode
		if m.Mode == MergeBranch {
			m.Target = ""
		}
	}
	if t.Merge.Target != "" {
		m.Target = t.Merge.Target
	}
	if t.Merge.Auto != nil {
		m.Auto = *t.Merge.Auto
	}
	return m
}

// TierNames lists the tiers, sorted.
func (c *Config) TierNames() []string {
	out := make([]string, 0, len(c.Tiers))
	for k := range c.Tiers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

func decodeSafe(dec *yaml.Decoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml parser failed: %v", r)
		}
	}()
	return dec.Decode(v)
}

const maxFile = 1 << 20

// readSmall reads a regular file of at most 1 MiB; a FIFO or device planted
// in its place must not hang or flood enclave.
func readSmall(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open %q: %s is not a regular file", path, fi.Mode().Type())
	}
	if fi.Size() > maxFile {
		return nil, fmt.Errorf("open %q: larger than %d bytes", path, maxFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	return data, nil
}

// Approval is one recorded approval, as kept in the session summary.
type Approval struct {
	User string `json:"user"`
	// KeyID is the SSH-style fingerprint of the key that signed.
	KeyID string `json:"key_id"`
	Head  string `json:"head"`
	Time  string `json:"time"`
	Note  string `json:"note,omitempty"`
	// Seq is the audit record holding the envelope.
	Seq int64 `json:"seq"`
	// Envelope is the DSSE envelope, compact JSON.
	Envelope json.RawMessage `json:"envelope"`
}

// Rejection is one recorded rejection.
type Rejection struct {
	User   string `json:"user"`
	Head   string `json:"head"`
	Time   string `json:"time"`
	Reason string `json:"reason"`
	Seq    int64  `json:"seq"`
}

// Merged records a merge.
type Merged struct {
	Commit string `json:"commit"`
	Ref    string `json:"ref"`
	Repo   string `json:"repo"`
	Time   string `json:"time"`
	Seq    int64  `json:"seq"`
}

// Summary is the review part of store.Session.Summary. It is kept under
// the keys "tier", "task" and "review"; other keys of the document belong
// to other packages and are preserved.
type Summary struct {
	Tier       string      `json:"tier,omitempty"`
	Task       string      `json:"task,omitempty"`
	Approvals  []Approval  `json:"approvals,omitempty"`
	Rejections []Rejection `json:"rejections,omitempty"`
	Merged     *Merged     `json:"merged,omitempty"`
}

type reviewPart struct {
	Approvals  []Approval  `json:"approvals,omitempty"`
	Rejections []Rejection `json:"rejections,omitempty"`
	Merged     *Merged     `json:"merged,omitempty"`
}

// ReadSummary decodes the review part of a session's summary. A missing
// or empty summary gives the zero Summary; a malformed one is an error
// (fail closed: approvals are never silently dropped).
func ReadSummary(s *store.Session) (*Summary, error) {
	var out Summary
	if len(bytes.TrimSpace(s.Summary)) == 0 {
		return &out, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(s.Summary, &doc); err != nil {
		return nil, fmt.Errorf("session %s summary: %w", s.ID, err)
	}
	for k, dst := range map[string]any{"tier": &out.Tier, "task": &out.Task} {
		if v, ok := doc[k]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return nil, fmt.Errorf("session %s summary %q: %w", s.ID, k, err)
			}
		}
	}
	if v, ok := doc["review"]; ok {
		var rp reviewPart
		if err := json.Unmarshal(v, &rp); err != nil {
			return nil, fmt.Errorf("session %s summary \"review\": %w", s.ID, err)
		}
		out.Approvals, out.Rejections, out.Merged = rp.Approvals, rp.Rejections, rp.Merged
	}
	return &out, nil
}

// WriteSummary stores sum into s.Summary, keeping other packages' keys.
func WriteSummary(s *store.Session, sum *Summary) error {
	doc := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(s.Summary)) > 0 {
		if err := json.Unmarshal(s.Summary, &doc); err != nil {
			return fmt.Errorf("session %s summary: %w", s.ID, err)
		}
	}
	set := func(k string, v any, empty bool) {
		if empty {
			delete(doc, k)
			return
		}
		b, _ := json.Marshal(v)
		doc[k] = b
	}
	set("tier", sum.Tier, sum.Tier == "")
	set("task", sum.Task, sum.Task == "")
	rp := reviewPart{sum.Approvals, sum.Rejections, sum.Merged}
	set("review", rp, len(rp.Approvals) == 0 && len(rp.Rejections) == 0 && rp.Merged == nil)
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	s.Summary = b
	return nil
}

// TierOf is the session's tier: Summary "tier", else the config default.
func (c *Config) TierOf(sum *Summary) (string, Tier, error) {
	name := sum.Tier
	if name == "" {
		name = c.DefaultTier
	}
	t, ok := c.Tiers[name]
	if !ok {
		return "", Tier{}, fmt.Errorf("tier %q is not defined in %s (tiers: %s): %w", name, c.Source, strings.Join(c.TierNames(), ", "), ErrInvalidConfig)
	}
	return name, t, nil
}
