package review

// Attestations: an in-toto Statement v1 in a DSSE envelope.
//
// The Statement JSON is built here following the in-toto attestation spec
// (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)
// rather than with the in-toto Go module, whose v1 types are generated
// protobuf code and would pull google.golang.org/protobuf into enclave for
// four fields. The envelope is go-securesystemslib's dsse package.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/enclave-dev/enclave/internal/audit"
)

// Type URIs.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://github.com/enclave-dev/enclave/attestation/approval/v1"
	PayloadType   = "application/vnd.in-toto+json"
)

// ErrAttestation is wrapped by every verification failure.
var ErrAttestation = errors.New("attestation does not verify")

// Statement is an in-toto Statement v1.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject is one artifact the statement is about.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate is Enclave's approval predicate.
type Predicate struct {
	Session      PredSession      `json:"session"`
	Agent        PredAgent        `json:"agent"`
	Models       []PredModel      `json:"models"`
	Policy       PredPolicy       `json:"policy"`
	Verification PredVerification `json:"verification"`
	Audit        PredAudit        `json:"audit"`
	Approver     PredApprover     `json:"approver"`
	// Decision lists the Cedar policies that allowed the approval.
	Decision []string `json:"decision"`
	Note     string   `json:"note,omitempty"`
	Time     string   `json:"time"`
}

// PredSession describes the session.
type PredSession struct {
	ID                string `json:"id"`
	Task              string `json:"task,omitempty"`
	Tier              string `json:"tier"`
	ApprovalsRequired int    `json:"approvals_required"`
	Launcher          string `json:"launcher"`
	Base              string `json:"base"`
	Head              string `json:"head"`
	Tree              string `json:"tree"`
	Started           string `json:"started"`
	Ended             string `json:"ended,omitempty"`
}

// PredAgent describes the agent.
type PredAgent struct {
	Principal string   `json:"principal"` // Agent::"<session>"
	Command   []string `json:"command"`
	Profile   string   `json:"profile"`
}

// PredModel is one model the agent used, with its provider's agreed terms.
type PredModel struct {
	Provider string         `json:"provider"`
	Model    string         `json:"model"`
	Requests int64          `json:"requests"`
	Terms    map[string]any `json:"terms,omitempty"`
}

// PredPolicy hashes every policy that governed the session and its review.
type PredPolicy struct {
	Source       string `json:"source"`
	SHA256       string `json:"sha256"`
	CedarSHA256  string `json:"cedar_sha256"`
	ReviewSHA256 string `json:"review_config_sha256,omitempty"`
	OwnersSHA256 string `json:"owners_sha256,omitempty"`
}

// PredVerification is the verification gate's result.
type PredVerification struct {
	Result       string `json:"result"` // pass, fail, needs-review, none
	ReportSHA256 string `json:"report_sha256,omitempty"`
}

// PredAudit ties the approval to the audit log: the signed checkpoint of
// the log just before the approval was recorded.
type PredAudit struct {
	Origin     string `json:"origin"`
	Size       int64  `json:"size"`
	Checkpoint string `json:"checkpoint"`
}

// PredApprover is who approved.
type PredApprover struct {
	Name  string `json:"name"`
	Key   string `json:"key"`
	KeyID string `json:"key_id"`
}

type edSigner struct{ s *Signer }

func (e edSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(e.s.key, data), nil
}
func (e edSigner) KeyID() (string, error) { return e.s.KeyID, nil }

type edVerifier struct{ a AllowedSigner }

func (v edVerifier) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(v.a.Key, data, sig) {
		return errors.New("bad ed25519 signature")
	}
	return nil
}
func (v edVerifier) KeyID() (string, error)   { return v.a.KeyID, nil }
func (v edVerifier) Public() crypto.PublicKey { return v.a.Key }

// Sign signs st with s and returns the envelope as compact JSON.
func Sign(ctx context.Context, s *Signer, st *Statement) ([]byte, error) {
	if st.Predicate.Approver.KeyID != s.KeyID || st.Predicate.Approver.Name != s.Name {
		return nil, fmt.Errorf("sign: approver %s %s does not match the signing key %s %s", st.Predicate.Approver.Name, st.Predicate.Approver.KeyID, s.Name, s.KeyID)
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(edSigner{s})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, PayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("sign attestation: %w", err)
	}
	return json.Marshal(env)
}

// Verified is an envelope that verified.
type Verified struct {
	Statement *Statement
	// Signer is the allowed signer whose key signed.
	Signer AllowedSigner
}

// VerifyEnvelope checks one envelope offline: it must be exactly the
// compact JSON Sign writes (so that no other byte string verifies), carry a
// valid signature by one of signers whose name and key id match the
// statement's approver, and be an in-toto Statement v1 with Enclave's
// predicate about commit (when commit is not ""). Every failure wraps
// ErrAttestation.
func VerifyEnvelope(ctx context.Context, data []byte, commit string, signers []AllowedSigner) (*Verified, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrAttestation)
	}
	if _, err := audit.CanonicalJSON(nil, data); err != nil {
		return nil, bad("envelope is not a JSON object: %v", err)
	}
	var env dsse.Envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, bad("envelope: %v", err)
	}
	if again, err := json.Marshal(&env); err != nil || !bytes.Equal(again, data) {
		return nil, bad("envelope is not in canonical form (changed after signing?)")
	}
	if env.PayloadType != PayloadType {
		return nil, bad("payload type %q, want %q", env.PayloadType, PayloadType)
	}
	payload, err := strictB64(env.Payload)
	if err != nil {
		return nil, bad("payload: %v", err)
	}
	if len(env.Signatures) == 0 {
		return nil, bad("no signatures")
	}
	for i, s := range env.Signatures {
		if _, err := strictB64(s.Sig); err != nil {
			return nil, bad("signature %d: %v", i+1, err)
		}
	}
	if len(signers) == 0 {
		return nil, bad("no trusted public keys to check against")
	}
	vs := make([]dsse.Verifier, len(signers))
	for i, a := range signers {
		vs[i] = edVerifier{a}
	}
	ev, err := dsse.NewEnvelopeVerifier(vs...)
	if err != nil {
		return nil, err
	}
	accepted, err := ev.Verify(ctx, &env)
	if err != nil {
		return nil, bad("signature: %v", err)
	}
	if _, err := audit.CanonicalJSON(nil, payload); err != nil {
		return nil, bad("statement is not a JSON object: %v", err)
	}
	var st Statement
	pdec := json.NewDecoder(bytes.NewReader(payload))
	pdec.DisallowUnknownFields()
	if err := pdec.Decode(&st); err != nil {
		return nil, bad("statement: %v", err)
	}
	if st.Type != StatementType || st.PredicateType != PredicateType {
		return nil, bad("statement type %q / predicate %q is not an enclave approval", st.Type, st.PredicateType)
	}
	if commit != "" && !slices.ContainsFunc(st.Subject, func(s Subject) bool { return s.Digest["gitCommit"] == commit }) {
		return nil, bad("statement is about %s, not commit %s", subjects(st.Subject), commit)
	}
	for _, k := range accepted {
		for _, a := range signers {
			if a.KeyID == k.KeyID && a.Name == st.Predicate.Approver.Name && a.KeyID == st.Predicate.Approver.KeyID {
				return &Verified{Statement: &st, Signer: a}, nil
			}
		}
	}
	return nil, bad("signed by a trusted key, but not the one of the approver it names (%s %s)", st.Predicate.Approver.Name, st.Predicate.Approver.KeyID)
}

func subjects(ss []Subject) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name+"@"+s.Digest["gitCommit"])
	}
	return strings.Join(out, ", ")
}

// strictB64 decodes standard base64 and refuses any spelling but the one
// the encoder writes (non-zero padding bits would otherwise let two
// strings decode alike).
func strictB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, errors.New("base64 is not in canonical form")
	}
	return b, nil
}

// VerifyBundle checks a note's content: JSON Lines of envelopes, every one
// of which must verify for commit. It returns them, and an error if any
// fails, if two are by the same person, or if there are fewer distinct
// approvers than the approvals the statements say the tier required.
func VerifyBundle(ctx context.Context, data []byte, commit string, signers []AllowedSigner) ([]*Verified, error) {
	var out []*Verified
	seen := map[string]bool{}
	need := 0
	for i, line := range bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n")) {
		v, err := VerifyEnvelope(ctx, line, commit, signers)
		if err != nil {
			return out, fmt.Errorf("envelope %d: %w", i+1, err)
		}
		if seen[v.Signer.Name] {
			return out, fmt.Errorf("envelope %d: %s approved twice: %w", i+1, v.Signer.Name, ErrAttestation)
		}
		seen[v.Signer.Name] = true
		need = max(need, v.Statement.Predicate.Session.ApprovalsRequired)
		out = append(out, v)
	}
	if len(out) < need {
		return out, fmt.Errorf("%d approvals, the %s tier requires %d: %w", len(out), out[0].Statement.Predicate.Session.Tier, need, ErrAttestation)
	}
	return out, nil
}

// CheckCheckpoint checks the audit checkpoint a verified statement embeds
// against the audit log's public keys (v): its signature, and that its
// origin and tree size are the ones the statement names. It ties the
// approval to a point of a log whose key the verifier trusts; it does not
// prove the approval record itself is in that log (that is enclave audit
// prove). Errors wrap [ErrAttestation].
func CheckCheckpoint(v *audit.Verifier, st *Statement) (*audit.Checkpoint, error) {
	a := st.Predicate.Audit
	if a.Checkpoint == "" {
		return nil, fmt.Errorf("%w: the statement has no audit checkpoint", ErrAttestation)
	}
	cp, err := v.OpenCheckpoint([]byte(a.Checkpoint))
	if err != nil {
		return nil, fmt.Errorf("%w: audit checkpoint: %v", ErrAttestation, err)
	}
	if cp.Origin != a.Origin || cp.Tree.N != a.Size {
		return nil, fmt.Errorf("%w: audit checkpoint is of log %q size %d, the statement says %q size %d", ErrAttestation, cp.Origin, cp.Tree.N, a.Origin, a.Size)
	}
	return cp, nil
}
