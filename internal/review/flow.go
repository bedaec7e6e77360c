package review

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/session"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// VerifyReportName is the verification report in the session directory,
// written by `enclave verify`.
const VerifyReportName = "verify.json"

// Reviewer performs review actions against one state directory.
type Reviewer struct {
	Store store.Store
	// Log records every decision and action; nil makes every action fail.
	Log      *audit.Log
	StateDir string
	Git      *Git
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (r *Reviewer) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Reviewer) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Report is what review needs of the verification report.
type Report struct {
	Schema   string   `json:"schema"`
	Head     string   `json:"head"`
	Result   string   `json:"result"`
	Reasons  []string `json:"reasons"`
	Findings []struct {
		Check   string `json:"check"`
		Rule    string `json:"rule"`
		File    string `json:"file"`
		Line    int    `json:"line"`
		Message string `json:"message"`
		Action  string `json:"action"`
	} `json:"findings"`
}

// Case is everything known about a session for review.
type Case struct {
	Session   *store.Session
	Summary   *Summary
	Workspace *workspace.Workspace
	Change    *workspace.Change
	// Repo is the user's repository (the workspace source).
	Repo string
	// Head is where the shadow branch points now; Moved is true when it is
	// not the head recorded when the session ended.
	Head  string
	Moved bool
	Tree  string

	Config *Config
	// Merge is where and how this session merges: Config.MergeFor its tier.
	Merge    MergeConfig
	Owners   *Owners
	Engine   *authz.Engine
	TierName string
	Tier     Tier

	Paths     []string
	Protected []string

	// Verify is the verification result for the current head: "pass",
	// "fail", "needs-review", or "none" when there is no report, it is
	// about another head, or it does not match the SHA-256 recorded in
	// the audit log. VerifyNote says why when "none".
	Verify       string
	VerifyNote   string
	Report       *Report
	ReportSHA256 string

	Data *session.DataFlow
}

// Open gathers the case for session s.
func (r *Reviewer) Open(ctx context.Context, s *store.Session) (*Case, error) {
	c := &Case{Session: s}
	var err error
	if c.Summary, err = ReadSummary(s); err != nil {
		return nil, err
	}
	dir := filepath.Join(r.StateDir, "sessions", s.ID)
	if c.Workspace, err = workspace.Open(dir, r.Logger); err != nil {
		return nil, fmt.Errorf("open workspace of %s: %w", s.ID, err)
	}
	if c.Change, err = c.Workspace.LastChange(); err != nil {
		if s.State == store.StateRunning {
			return nil, fmt.Errorf("session %s is still running; review it after the agent exits", s.ID)
		}
		return nil, fmt.Errorf("change of %s: %w", s.ID, err)
	}
	c.Repo = c.Workspace.Source
	if c.Head, err = r.Git.ShadowHead(ctx, c.Change.GitDir(), s.ID); err != nil {
		return nil, err
	}
	c.Moved = c.Head != c.Change.Head
	if c.Tree, err = r.Git.ShadowTree(ctx, c.Change.GitDir(), c.Head); err != nil {
		return nil, err
	}
	if c.Config, err = LoadConfig(c.Repo); err != nil {
		return nil, err
	}
	if c.Owners, err = LoadOwners(c.Repo, c.Config); err != nil {
		return nil, err
	}
	if c.Engine, err = authz.Load(c.Repo); err != nil {
		return nil, err
	}
	if c.TierName, c.Tier, err = c.Config.TierOf(c.Summary); err != nil {
		return nil, err
	}
	c.Merge = c.Config.MergeFor(c.TierName)
	for _, f := range c.Change.Files {
		c.Paths = append(c.Paths, f.Path)
		if f.OldPath != "" {
			c.Paths = append(c.Paths, f.OldPath)
		}
	}
	slices.Sort(c.Paths)
	c.Paths = slices.Compact(c.Paths)
	c.Protected = c.Owners.Protected(c.Paths)
	if err := r.readVerify(ctx, c, dir); err != nil {
		return nil, err
	}
	var evs []audit.Event
	f := audit.Filter{Session: s.ID, Kinds: []string{"gateway", "model.call", "egress", "egress.end", "dns"}}
	if err := audit.Records(ctx, r.Store, f, func(rec audit.Record) error {
		evs = append(evs, rec.Event)
		return nil
	}); err != nil {
		return nil, err
	}
	if c.Data, err = session.Data(s.ID, evs); err != nil {
		return nil, err
	}
	return c, nil
}

// readVerify loads the report and checks it against the audit log: a
// report counts only if its exact bytes are the ones the last "verify"
// event of the session recorded, and it is about the current head.
func (r *Reviewer) readVerify(ctx context.Context, c *Case, dir string) error {
	c.Verify = "none"
	data, err := readSmall(filepath.Join(dir, VerifyReportName))
	if errors.Is(err, fs.ErrNotExist) {
		c.VerifyNote = "not verified: run enclave verify " + c.Session.ID
		return nil
	}
	if err != nil {
		return err
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		c.VerifyNote = "the verification report is not valid JSON: " + err.Error()
		return nil
	}
	c.Report = &rep
	c.ReportSHA256 = sha256Hex(data)
	var recorded string
	if err := audit.Records(ctx, r.Store, audit.Filter{Session: c.Session.ID, Kinds: []string{"verify"}}, func(rec audit.Record) error {
		var d struct {
			SHA string `json:"report_sha256"`
		}
		if json.Unmarshal(rec.Event.Data, &d) == nil {
			recorded = d.SHA
		}
		return nil
	}); err != nil {
		return err
	}
	switch {
	case recorded == "":
		c.VerifyNote = "the verification report is not on the audit record; run enclave verify again"
	case recorded != c.ReportSHA256:
		c.VerifyNote = "the verification report differs from the one on the audit record (changed after verify?); run enclave verify again"
	case rep.Head != c.Head:
		c.VerifyNote = fmt.Sprintf("the verification report is about %.12s, the branch is at %.12s; run enclave verify again", rep.Head, c.Head)
	case rep.Result != "pass" && rep.Result != "fail" && rep.Result != "needs-review":
		c.VerifyNote = fmt.Sprintf("the verification report has unknown result %q", rep.Result)
	default:
		c.Verify = rep.Result
	}
	return nil
}

// HeadCurrent reports whether the branch is where the session left it.
func (c *Case) HeadCurrent() bool { return !c.Moved && c.Head == c.Change.Head }

// ValidApprovals are the approvals of the current head, one per person
// (the latest), in the order given.
func (c *Case) ValidApprovals() []Approval {
	var out []Approval
	if !c.HeadCurrent() {
		return nil
	}
	seen := map[string]int{}
	for _, a := range c.Summary.Approvals {
		if a.Head != c.Head {
			continue
		}
		if i, ok := seen[a.User]; ok {
			out[i] = a
			continue
		}
		seen[a.User] = len(out)
		out = append(out, a)
	}
	return out
}

// Rejected reports whether someone rejected the current head.
func (c *Case) Rejected() bool {
	return slices.ContainsFunc(c.Summary.Rejections, func(x Rejection) bool { return x.Head == c.Head })
}

// UnapprovedProtected lists protected paths no valid approval by an owner
// covers.
func (c *Case) UnapprovedProtected() []string {
	out := []string{}
	for _, p := range c.Protected {
		if !slices.ContainsFunc(c.ValidApprovals(), func(a Approval) bool { return c.Owners.Owns(a.User, p) }) {
			out = append(out, p)
		}
	}
	return out
}

// State is the review state the case is in.
func (c *Case) State() string {
	switch {
	case c.Summary.Merged != nil:
		return StateMerged
	case c.Rejected():
		return StateRejected
	case len(c.ValidApprovals()) >= c.Tier.Approvals && len(c.UnapprovedProtected()) == 0:
		return StateApproved
	}
	return StateNeedsReview
}

func (c *Case) resource() authz.Resource {
	return authz.Resource{
		Session: c.Session.ID, Task: c.Summary.Task, Tier: c.TierName, Launcher: c.Session.User,
		Paths: c.Paths, ProtectedPaths: c.Protected,
		ApprovalsRequired: c.Tier.Approvals, Gate: c.Tier.Gate, SeparationOfDuties: c.Tier.SeparationOfDuties,
		Agent: agentName(c.Session.Command), Command: strings.Join(c.Session.Command, " "), Profile: c.Session.Profile,
	}
}

func agentName(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return filepath.Base(argv[0])
}

// Decide asks the policy and records the decision in the audit log. A
// decision that cannot be recorded is an error, and the action must not
// be performed.
func (r *Reviewer) Decide(ctx context.Context, c *Case, who authz.Principal, action string, actx map[string]any) (authz.Decision, error) {
	d := c.Engine.Decide(authz.Request{Principal: who, Action: action, Resource: c.resource(), Context: actx})
	if who.Type != authz.User && (action == authz.ActionApprove || action == authz.ActionReject || action == authz.ActionMerge || action == authz.ActionTier) && d.Allow {
		// Belt and braces: the built-in forbid already covers this.
		d = authz.Decision{Allow: false, Reason: "agents never decide: " + d.Reason}
	}
	res := c.resource()
	data := map[string]any{
		"principal": who.String(), "action": action, "resource": "Session::\"" + c.Session.ID + "\"",
		"allow": d.Allow, "policies": nonNil(d.Policies), "reason": d.Reason, "context": actx,
		"resource_attrs": map[string]any{
			"tier": res.Tier, "launcher": res.Launcher, "protected_paths": nonNil(res.ProtectedPaths),
			"approvals_required": res.ApprovalsRequired, "gate": res.Gate, "separation_of_duties": res.SeparationOfDuties,
		},
		"head": c.Head, "policy_sha256": c.Engine.Hash, "policy_files": c.Engine.Files,
	}
	if len(d.Errors) > 0 {
		data["errors"] = d.Errors
	}
	decision := audit.DecisionDeny
	if d.Allow {
		decision = audit.DecisionAllow
	}
	if err := r.append(ctx, c.Session.ID, KindAuthz, actorOf(who), decision, data); err != nil {
		return authz.Decision{}, err
	}
	return d, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func actorOf(p authz.Principal) string {
	if p.Type == authz.Agent {
		return "agent"
	}
	return p.ID
}

func (r *Reviewer) append(ctx context.Context, sess, kind, actor, decision string, data any) error {
	_, err := r.appendSeq(ctx, sess, kind, actor, decision, data)
	return err
}

func (r *Reviewer) appendSeq(ctx context.Context, sess, kind, actor, decision string, data any) (int64, error) {
	if r.Log == nil {
		return 0, errors.New("no audit log open: review actions are never performed unrecorded")
	}
	ev, err := audit.NewEvent(sess, kind, actor, decision, data)
	if err != nil {
		return 0, err
	}
	ev.Time = r.now()
	e, err := r.Log.Append(ctx, ev)
	if err != nil {
		return 0, fmt.Errorf("record %s in the audit log: %w", kind, err)
	}
	return e.Seq, nil
}

func denied(d authz.Decision) error {
	return fmt.Errorf("%w: %s", ErrDenied, d.Reason)
}

// SetTier declares the session's tier (and task). The launcher may only
// make it stricter (policy "launcher-cannot-lower-tier"), and no tier
// changes once a current approval exists.
func (r *Reviewer) SetTier(ctx context.Context, who authz.Principal, s *store.Session, tier, task string) (*Case, error) {
	c, err := r.Open(ctx, s)
	if err != nil {
		return nil, err
	}
	if _, ok := c.Config.Tiers[tier]; !ok {
		return nil, fmt.Errorf("tier %q is not defined (tiers: %s)", tier, strings.Join(c.Config.TierNames(), ", "))
	}
	d, err := r.Decide(ctx, c, who, authz.ActionTier, map[string]any{
		"lowers": Laxer(c.Config.Tiers[tier], c.Tier), "new_tier": tier, "approved": len(c.ValidApprovals()) > 0,
	})
	if err != nil {
		return nil, err
	}
	if !d.Allow {
		return c, denied(d)
	}
	if len(c.ValidApprovals()) > 0 || c.Summary.Merged != nil {
		return c, fmt.Errorf("%w: %s already has approvals of its head; the tier cannot change under them", ErrDenied, s.ID)
	}
	prev := c.Summary.Tier
	c.Summary.Tier = tier
	if task != "" {
		c.Summary.Task = task
	}
	if err := r.append(ctx, s.ID, KindTier, actorOf(who), "", map[string]any{"tier": tier, "previous": prev, "task": c.Summary.Task}); err != nil {
		return nil, err
	}
	c.TierName, c.Tier = tier, c.Config.Tiers[tier]
	c.Merge = c.Config.MergeFor(tier)
	return c, r.save(ctx, c)
}

// AuthorizeVerify puts Action::"verify" on session s to the policy for who
// and records the decision; it returns an error wrapping [ErrDenied],
// naming the deciding policy, when the policy denies. Verification must
// not run unless it returns nil.
func (r *Reviewer) AuthorizeVerify(ctx context.Context, who authz.Principal, s *store.Session) (authz.Decision, error) {
	c, err := r.Open(ctx, s)
	if err != nil {
		return authz.Decision{}, err
	}
	d, err := r.Decide(ctx, c, who, authz.ActionVerify, map[string]any{"head_current": c.HeadCurrent()})
	if err != nil {
		return d, err
	}
	if !d.Allow {
		return d, denied(d)
	}
	return d, nil
}

var gateRank = map[string]int{GateNone: 0, GateNoFail: 1, GatePass: 2}

// Laxer reports whether tier a asks less than tier b in any respect:
// fewer approvals, a weaker verification gate, or no separation of duties
// where b has it.
func Laxer(a, b Tier) bool {
	return a.Approvals < b.Approvals || gateRank[a.Gate] < gateRank[b.Gate] || (b.SeparationOfDuties && !a.SeparationOfDuties)
}

func (r *Reviewer) save(ctx context.Context, c *Case) error {
	if err := WriteSummary(c.Session, c.Summary); err != nil {
		return err
	}
	if c.Session.State != store.StateRunning {
		c.Session.State = c.State()
	}
	return r.Store.UpdateSession(ctx, c.Session)
}

// ApproveOptions are the inputs of Approve.
type ApproveOptions struct {
	Note string
	// Signer returns the approver's key, which must be who's; it is
	// called only once the policy allowed the approval, so a refused
	// attempt creates no key.
	Signer func() (*Signer, error)
}

// Approve records who's approval of the session's current head, signed
// with opts.Signer, after the policy allows it. It returns the envelope.
func (r *Reviewer) Approve(ctx context.Context, who authz.Principal, s *store.Session, opts ApproveOptions) (*Case, []byte, error) {
	c, err := r.Open(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	owns := slices.ContainsFunc(c.Protected, func(p string) bool { return c.Owners.Owns(who.ID, p) })
	d, err := r.Decide(ctx, c, who, authz.ActionApprove, map[string]any{
		"verify": c.Verify, "head_current": c.HeadCurrent(), "owns_protected": owns,
	})
	if err != nil {
		return nil, nil, err
	}
	if !d.Allow {
		return c, nil, denied(d)
	}
	if c.Summary.Merged != nil {
		return c, nil, fmt.Errorf("session %s is already merged", s.ID)
	}
	if opts.Signer == nil {
		return c, nil, fmt.Errorf("approval by %s needs %s's signing key: %w", who.ID, who.ID, ErrNoKey)
	}
	signer, err := opts.Signer()
	if err != nil {
		return c, nil, err
	}
	if signer.Name != who.ID {
		return c, nil, fmt.Errorf("approval by %s cannot be signed with the key of %s", who.ID, signer.Name)
	}
	cp, err := r.Log.Checkpoint(ctx)
	if err != nil {
		return c, nil, fmt.Errorf("sign an audit checkpoint: %w", err)
	}
	_, tree, err := audit.ParseCheckpoint(noteText(cp.Note))
	if err != nil {
		return c, nil, fmt.Errorf("audit checkpoint: %w", err)
	}
	st := r.statement(c, signer, opts.Note, d, cp, tree.N)
	env, err := Sign(ctx, signer, st)
	if err != nil {
		return c, nil, err
	}
	seq, err := r.appendSeq(ctx, s.ID, KindApprove, who.ID, "approve", map[string]any{
		"head": c.Head, "note": opts.Note, "key_id": signer.KeyID, "envelope": json.RawMessage(env),
		"envelope_sha256": sha256Hex(env), "tier": c.TierName,
	})
	if err != nil {
		return c, nil, err
	}
	c.Summary.Approvals = append(c.Summary.Approvals, Approval{
		User: who.ID, KeyID: signer.KeyID, Head: c.Head, Time: st.Predicate.Time, Note: opts.Note, Seq: seq, Envelope: env,
	})
	if err := r.save(ctx, c); err != nil {
		return c, nil, err
	}
	return c, env, nil
}

// noteText is the text part of a signed note (before the blank line).
func noteText(note []byte) []byte {
	if i := bytes.Index(note, []byte("\n\n")); i >= 0 {
		return note[:i+1]
	}
	return note
}

func (r *Reviewer) statement(c *Case, signer *Signer, note string, d authz.Decision, cp *audit.Checkpoint, size int64) *Statement {
	s := c.Session
	ps := PredSession{
		ID: s.ID, Task: c.Summary.Task, Tier: c.TierName, ApprovalsRequired: c.Tier.Approvals,
		Launcher: s.User, Base: c.Change.Base, Head: c.Head, Tree: c.Tree,
		Started: s.Started.UTC().Format(time.RFC3339),
	}
	if s.Ended != nil {
		ps.Ended = s.Ended.UTC().Format(time.RFC3339)
	}
	var models []PredModel
	for _, m := range c.Data.Models {
		pm := PredModel{Provider: m.Provider, Model: m.Model, Requests: m.Requests}
		if m.Terms != nil {
			pm.Terms = map[string]any{"trains_on_inputs": m.Terms.TrainsOnInputs, "retention": m.Terms.Retention, "region": m.Terms.Region}
		}
		models = append(models, pm)
	}
	if models == nil {
		models = []PredModel{}
	}
	return &Statement{
		Type: StatementType,
		Subject: []Subject{{
			Name:   "git+enclave:" + s.ID + "@refs/heads/enclave/" + s.ID,
			Digest: map[string]string{"gitCommit": c.Head},
		}},
		PredicateType: PredicateType,
		Predicate: Predicate{
			Session: ps,
			Agent:   PredAgent{Principal: authz.Principal{Type: authz.Agent, ID: s.ID}.String(), Command: s.Command, Profile: s.Profile},
			Models:  models,
			Policy: PredPolicy{
				Source: s.PolicySource, SHA256: s.PolicyHash, CedarSHA256: c.Engine.Hash,
				ReviewSHA256: c.Config.Hash, OwnersSHA256: c.Owners.Hash,
			},
			Verification: PredVerification{Result: c.Verify, ReportSHA256: c.ReportSHA256},
			Audit:        PredAudit{Origin: cp.Origin, Size: size, Checkpoint: string(cp.Note)},
			Approver:     PredApprover{Name: signer.Name, Key: signer.Public, KeyID: signer.KeyID},
			Decision:     nonNil(d.Policies),
			Note:         note,
			Time:         r.now().Format(time.RFC3339),
		},
	}
}

// Reject records who's rejection of the current head.
func (r *Reviewer) Reject(ctx context.Context, who authz.Principal, s *store.Session, reason string) (*Case, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, errors.New("a rejection needs a reason")
	}
	c, err := r.Open(ctx, s)
	if err != nil {
		return nil, err
	}
	d, err := r.Decide(ctx, c, who, authz.ActionReject, map[string]any{"head_current": c.HeadCurrent()})
	if err != nil {
		return nil, err
	}
	if !d.Allow {
		return c, denied(d)
	}
	if c.Summary.Merged != nil {
		return c, fmt.Errorf("session %s is already merged", s.ID)
	}
	seq, err := r.appendSeq(ctx, s.ID, KindReject, who.ID, "reject", map[string]any{"head": c.Head, "reason": reason})
	if err != nil {
		return nil, err
	}
	c.Summary.Rejections = append(c.Summary.Rejections, Rejection{User: who.ID, Head: c.Head, Time: r.now().Format(time.RFC3339), Reason: reason, Seq: seq})
	return c, r.save(ctx, c)
}

// AllowedSigners loads the state directory's allowed signers file.
func AllowedSigners(stateDir string) ([]AllowedSigner, error) {
	p := filepath.Join(stateDir, KeyDir, AllowedSignersFile)
	data, err := readSmall(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseAllowedSigners(p, data)
}

// MergeResult says what Merge did.
type MergeResult struct {
	Commit string // the agent's head, now in the user's repository
	Ref    string // the branch created or updated
	Merge  string // the merge commit, in target mode
	Noop   bool   // everything was already in place
}

// Merge brings the approved head into the user's repository.
func (r *Reviewer) Merge(ctx context.Context, who authz.Principal, s *store.Session) (*Case, *MergeResult, error) {
	c, err := r.Open(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	if !c.Workspace.Git {
		return c, nil, fmt.Errorf("%s is not a git repository; nothing to merge into (use enclave diff %s)", c.Repo, s.ID)
	}
	signers, err := AllowedSigners(r.StateDir)
	if err != nil {
		return c, nil, err
	}
	// Count only approvals whose envelopes verify now: the summary is a
	// cache, the signatures are the evidence.
	var valid []Approval
	for _, a := range c.ValidApprovals() {
		v, err := VerifyEnvelope(ctx, a.Envelope, c.Head, signers)
		if err != nil {
			r.logger().Warn("approval does not verify", "session", s.ID, "user", a.User, "err", err)
			continue
		}
		if v.Signer.Name != a.User {
			continue
		}
		valid = append(valid, a)
	}
	c.Summary.Approvals = slices.DeleteFunc(slices.Clone(c.Summary.Approvals), func(a Approval) bool {
		return a.Head == c.Head && !slices.ContainsFunc(valid, func(v Approval) bool { return v.Seq == a.Seq })
	})
	if c.Summary.Merged != nil && c.Summary.Merged.Commit == c.Head {
		res, err := r.ensureMerged(ctx, c, valid)
		if err != nil {
			return c, nil, err
		}
		if res.Noop {
			return c, res, nil
		}
	}
	d, err := r.Decide(ctx, c, who, authz.ActionMerge, map[string]any{
		"approvals": len(valid), "rejected": c.Rejected(), "unapproved_protected_paths": c.UnapprovedProtected(),
		"head_current": c.HeadCurrent(),
	})
	if err != nil {
		return c, nil, err
	}
	if !d.Allow {
		return c, nil, denied(d)
	}
	res, err := r.ensureMerged(ctx, c, valid)
	if err != nil {
		return c, nil, err
	}
	seq, err := r.appendSeq(ctx, s.ID, KindMerge, who.ID, "merge", map[string]any{
		"commit": res.Commit, "ref": res.Ref, "merge_commit": res.Merge, "repo": c.Repo, "notes_ref": NotesRef,
		"approvals": len(valid), "noop": res.Noop,
	})
	if err != nil {
		return c, nil, err
	}
	c.Summary.Merged = &Merged{Commit: res.Commit, Ref: res.Ref, Repo: c.Repo, Time: r.now().Format(time.RFC3339), Seq: seq}
	return c, res, r.save(ctx, c)
}

// ensureMerged makes the user's repository hold the head on the branch
// and the note; each step is skipped when already done.
func (r *Reviewer) ensureMerged(ctx context.Context, c *Case, approvals []Approval) (*MergeResult, error) {
	g, repo, id := r.Git, c.Repo, c.Session.ID
	res := &MergeResult{Commit: c.Head, Ref: "refs/heads/enclave/" + id}
	changed := false
	if _, err := g.ResolveCommit(ctx, repo, c.Head); err != nil {
		// Fetch from enclave's shadow repository: objects only. The
		// shadow's upload-pack runs with a hardened command line; nothing
		// of the agent's copy is involved.
		tmp := "refs/enclave/incoming/" + id
		up := "git -c core.hooksPath=/dev/null -c core.fsmonitor=false upload-pack"
		if _, err := g.user(ctx, repo, nil, "fetch", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head",
			"--upload-pack="+up, "--end-of-options", c.Change.GitDir(), "+refs/heads/enclave/"+id+":"+tmp); err != nil {
			return nil, fmt.Errorf("fetch the change into %s: %w", repo, err)
		}
		got, err := g.ResolveCommit(ctx, repo, tmp)
		_, _ = g.user(ctx, repo, nil, "update-ref", "-d", tmp)
		if err != nil {
			return nil, err
		}
		if got != c.Head {
			return nil, fmt.Errorf("%w: the shadow branch moved to %s during the merge (approved %s)", ErrMoved, got, c.Head)
		}
		changed = true
	}
	cur, err := g.user(ctx, repo, nil, "rev-parse", "--verify", "--quiet", res.Ref)
	switch {
	case err != nil: // no branch yet: create it, refusing if one appears meanwhile
		if _, err := g.user(ctx, repo, nil, "update-ref", "-m", "enclave merge "+id, res.Ref, c.Head, ""); err != nil {
			return nil, fmt.Errorf("create %s: %w", res.Ref, err)
		}
		changed = true
	case strings.TrimSpace(string(cur)) != c.Head:
		return nil, fmt.Errorf("%s already exists in %s at %s, not at the approved %s; rename or delete it first", res.Ref, repo, strings.TrimSpace(string(cur)), c.Head)
	}
	if c.Merge.Mode == MergeTarget {
		m, did, err := r.mergeTarget(ctx, c)
		if err != nil {
			return nil, err
		}
		res.Merge, changed = m, changed || did
	}
	var bundle bytes.Buffer
	for _, a := range approvals {
		bundle.Write(a.Envelope)
		bundle.WriteByte('\n')
	}
	have, err := g.Note(ctx, repo, c.Head)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(have, bundle.Bytes()) {
		if _, err := g.user(ctx, repo, &bundle, "notes", "--ref="+NotesRef, "add", "-f", "-F", "-", c.Head); err != nil {
			return nil, fmt.Errorf("attach the attestation note: %w", err)
		}
		changed = true
	}
	res.Noop = !changed
	return res, nil
}

// AutoMerge merges the session when enclave.review.yaml says merge.auto
// (tiers.<tier>.merge.auto, else the top-level merge.auto) and the approvals are now sufficient (state approved); who is the person
// whose action completed them, and the merge decision is put to the policy
// in their name like any merge. It returns nil, nil when auto merge is off
// or the session is not (yet) approved; a merged session is a no-op.
func (r *Reviewer) AutoMerge(ctx context.Context, who authz.Principal, c *Case) (*MergeResult, error) {
	if c == nil || !c.Merge.Auto || c.State() != StateApproved {
		return nil, nil
	}
	_, res, err := r.Merge(ctx, who, c.Session)
	if err != nil {
		return nil, fmt.Errorf("automatic merge (merge.auto for tier %s in %s): %w", c.TierName, c.Config.Source, err)
	}
	return res, nil
}

// mergeTarget merges the head into the configured target branch without
// touching any work tree: merge-tree computes the result, commit-tree
// makes the merge commit with the user's identity and signing settings,
// and update-ref moves the branch only from the value read. A target
// checked out in a work tree is refused (moving it underneath would make
// the work tree look like it reverted the change).
func (r *Reviewer) mergeTarget(ctx context.Context, c *Case) (string, bool, error) {
	g, repo := r.Git, c.Repo
	target := "refs/heads/" + c.Merge.Target
	old, err := g.ResolveCommit(ctx, repo, target)
	if err != nil {
		return "", false, fmt.Errorf("merge target %s: %w", target, err)
	}
	if _, err := g.user(ctx, repo, nil, "merge-base", "--is-ancestor", c.Head, old); err == nil {
		return "", false, nil // already merged
	}
	wt, err := g.user(ctx, repo, nil, "worktree", "list", "--porcelain")
	if err != nil {
		return "", false, err
	}
	if slices.Contains(strings.Split(string(wt), "\n"), "branch "+target) {
		return "", false, fmt.Errorf("%s is checked out; merge enclave/%s yourself (git merge enclave/%s) or set merge.mode: branch", c.Merge.Target, c.Session.ID, c.Session.ID)
	}
	out, err := g.user(ctx, repo, nil, "merge-tree", "--write-tree", "--no-messages", old, c.Head)
	if err != nil {
		return "", false, fmt.Errorf("merge enclave/%s into %s: conflicts; merge it yourself: %w", c.Session.ID, c.Merge.Target, err)
	}
	tree := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	args := []string{"commit-tree", tree, "-p", old, "-p", c.Head, "-m", fmt.Sprintf("Merge enclave session %s\n\nEnclave-Session: %s\nEnclave-Attested-Commit: %s", c.Session.ID, c.Session.ID, c.Head)}
	if sign, _ := g.user(ctx, repo, nil, "config", "--bool", "commit.gpgSign"); strings.TrimSpace(string(sign)) == "true" {
		args = append(args, "-S")
	}
	mc, err := g.user(ctx, repo, nil, args...)
	if err != nil {
		return "", false, fmt.Errorf("make the merge commit: %w", err)
	}
	m := strings.TrimSpace(string(mc))
	if _, err := g.user(ctx, repo, nil, "update-ref", "-m", "enclave merge "+c.Session.ID, target, m, old); err != nil {
		return "", false, fmt.Errorf("update %s: %w", target, err)
	}
	return m, true, nil
}

// VerifyCommit checks the attestation note on commit in the user's
// repository at repo against signers.
func VerifyCommit(ctx context.Context, g *Git, repo, commit string, signers []AllowedSigner) (string, []*Verified, error) {
	id, err := g.ResolveCommit(ctx, repo, commit)
	if err != nil {
		return "", nil, err
	}
	note, err := g.Note(ctx, repo, id)
	if err != nil {
		return id, nil, err
	}
	if len(note) == 0 {
		return id, nil, fmt.Errorf("commit %s has no enclave attestation (no note on %s): %w", id, NotesRef, ErrAttestation)
	}
	vs, err := VerifyBundle(ctx, note, id, signers)
	return id, vs, err
}
