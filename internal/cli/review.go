package cli

// Review commands: review, approve, reject, merge, attest, policy. The
// logic lives in internal/review and internal/authz; this file parses
// flags, finds who is acting, and prints.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/review"
	"github.com/enclave-dev/enclave/internal/store"
	"github.com/enclave-dev/enclave/internal/workspace"
)

// testUserEnv names the acting user in test binaries only (go test), so
// one test can play two people; a real enclave binary ignores it, since
// the acting human is the OS user.
const testUserEnv = "ENCLAVE_TEST_USER"

// principal is who runs this command: the agent of a session when run as
// or inside one, else the OS user.
func (e *Env) principal() authz.Principal {
	if s, inside := review.AgentSession(e.getenv); inside {
		return authz.Principal{Type: authz.Agent, ID: s}
	}
	name := currentUser()
	if testing.Testing() {
		if u := e.getenv(testUserEnv); u != "" {
			name = u
		}
	}
	return authz.Principal{Type: authz.User, ID: name}
}

func (e *Env) reviewer(st *state) *review.Reviewer {
	return &review.Reviewer{Store: st.store, Log: st.log, StateDir: st.dir, Git: &review.Git{Environ: e.environ()}}
}

// authorizeVerify asks the Cedar policy whether the caller may run the
// verification gate on s, on the record; a denial stops verify.
func (e *Env) authorizeVerify(ctx context.Context, st *state, s *store.Session) error {
	if _, err := e.reviewer(st).AuthorizeVerify(ctx, e.principal(), s); err != nil {
		if errors.Is(err, review.ErrDenied) {
			return withHint(err, "the decision is on the audit record (enclave log --kind authz "+s.ID+"); the policies are the built-in ones and enclave.cedar beside enclave.yaml")
		}
		return fmt.Errorf("authorise verify: %w", err)
	}
	return nil
}

// humanOnly refuses commands that need a person when run by an agent,
// after the refusal is on the record where possible.
func (e *Env) humanOnly(who authz.Principal, what string) error {
	if who.Type == authz.User {
		return nil
	}
	return withHint(fmt.Errorf("%s: %w (running inside session %s)", what, review.ErrAgent, who.ID), "approvals, rejections and merges are made by a person, outside the sandbox")
}

func (e *Env) reviewCmd(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "key":
			return e.reviewKeyCmd(ctx, args[1:])
		case "tier":
			return e.reviewTierCmd(ctx, args[1:])
		}
	}
	fs := e.newFlagSet("review", "review [flags] SESSION\n    enclave review key [--ssh FILE]\n    enclave review tier SESSION TIER [--task TEXT]",
		`Review shows one session for a decision: the task and tier, the agent's
command, the models it used and where its data went, what was blocked, the
verification result and findings, who approved or rejected so far, and the
diff. On a terminal the output is coloured and paged with $PAGER.

"review key" creates your signing key (or links an existing unencrypted
ed25519 SSH key) and adds its public half to the allowed signers file.
"review tier" declares a session's tier and task.`,
		"    enclave review last\n    enclave review key\n    enclave review tier last sensitive --task \"rotate session keys\"")
	jsonOut := fs.Bool("json", false, "print the facts as JSON (no diff)")
	noPager := fs.Bool("no-pager", false, "do not page the output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, true)
	if err != nil {
		return err
	}
	defer st.Close()
	who := e.principal()
	r := e.reviewer(st)
	c, err := r.Open(ctx, s)
	if err != nil {
		return err
	}
	d, err := r.Decide(ctx, c, who, authz.ActionReview, map[string]any{})
	if err != nil {
		return err
	}
	if !d.Allow {
		return fmt.Errorf("%w: %s", review.ErrDenied, d.Reason)
	}
	if *jsonOut {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reviewJSON(c))
	}
	var buf bytes.Buffer
	tty := isTTY(e.Stdout)
	color := tty && e.getenv("NO_COLOR") == ""
	if err := writeReview(ctx, &buf, c, color); err != nil {
		return err
	}
	if tty && !*noPager {
		return e.page(ctx, buf.Bytes())
	}
	_, err = e.Stdout.Write(buf.Bytes())
	return err
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// page sends text through $PAGER (default "less -R"); without a usable
// pager it prints directly.
func (e *Env) page(ctx context.Context, text []byte) error {
	pager := e.getenv("PAGER")
	if pager == "" {
		pager = "less -R"
	}
	f := strings.Fields(pager)
	if _, err := exec.LookPath(f[0]); err != nil {
		_, err := e.Stdout.Write(text)
		return err
	}
	cmd := exec.CommandContext(ctx, f[0], f[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(text), e.Stdout, e.Stderr
	cmd.Env = append(e.environ(), "LESS=FRX")
	return cmd.Run()
}

func reviewJSON(c *review.Case) map[string]any {
	m := map[string]any{
		"session": c.Session.ID, "state": c.State(), "task": c.Summary.Task, "tier": c.TierName,
		"tier_settings": c.Tier, "launcher": c.Session.User, "command": c.Session.Command,
		"head": c.Head, "recorded_head": c.Change.Head, "branch_moved": !c.HeadCurrent(),
		"paths": c.Paths, "protected_paths": c.Protected, "unapproved_protected_paths": c.UnapprovedProtected(),
		"verify": c.Verify, "verify_note": c.VerifyNote, "report_sha256": c.ReportSHA256,
		"approvals": approvalsJSON(c.ValidApprovals()), "rejected": c.Rejected(),
		"data": c.Data, "policy_sha256": c.Engine.Hash, "merge": c.Merge,
	}
	if c.Report != nil {
		m["findings"] = c.Report.Findings
	}
	if c.Summary.Merged != nil {
		m["merged"] = c.Summary.Merged
	}
	return m
}

// mergeText says where an approved change of the case's tier goes.
func mergeText(m review.MergeConfig) string {
	where := "to branch enclave/<session>"
	if m.Mode == review.MergeTarget {
		where = "into " + m.Target
	}
	if m.Auto {
		return where + ", automatically on the approval that completes the approvals"
	}
	return where + ", by enclave merge"
}

func approvalsJSON(as []review.Approval) []map[string]any {
	out := []map[string]any{}
	for _, a := range as {
		out = append(out, map[string]any{"user": a.User, "key_id": a.KeyID, "head": a.Head, "time": a.Time, "note": a.Note})
	}
	return out
}

const (
	ansiBold  = "\x1b[1m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiYel   = "\x1b[33m"
	ansiCyan  = "\x1b[36m"
	ansiReset = "\x1b[0m"
)

func writeReview(ctx context.Context, w io.Writer, c *review.Case, color bool) error {
	paint := func(code, s string) string {
		if !color {
			return s
		}
		return code + s + ansiReset
	}
	s := c.Session
	task := c.Summary.Task
	if task == "" {
		task = "(not declared: enclave review tier " + s.ID + " TIER --task TEXT)"
	}
	fmt.Fprintf(w, "%s %s  %s\n", paint(ansiBold, "session"), s.ID, paint(ansiBold, c.State()))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  task\t%s\n", safeText(task))
	fmt.Fprintf(tw, "  tier\t%s: %d approval(s), verification %s, separation of duties %v\n", c.TierName, c.Tier.Approvals, c.Tier.Gate, c.Tier.SeparationOfDuties)
	fmt.Fprintf(tw, "  merge\t%s\n", safeText(mergeText(c.Merge)))
	fmt.Fprintf(tw, "  launched by\t%s at %s\n", safeText(s.User), s.Started.Local().Format("2006-01-02 15:04"))
	fmt.Fprintf(tw, "  agent\t%s\n", safeText(clip(strings.Join(s.Command, " "), 100)))
	fmt.Fprintf(tw, "  policy\t%s %.12s, profile %s; authz %.12s\n", safeText(s.PolicySource), s.PolicyHash, s.Profile, c.Engine.Hash)
	head := fmt.Sprintf("%.12s", c.Head)
	if !c.HeadCurrent() {
		head += paint(ansiRed, fmt.Sprintf(" (MOVED: the session left %.12s; approvals of the old head no longer count)", c.Change.Head))
	}
	fmt.Fprintf(tw, "  head\t%s (base %.12s)\n", head, c.Change.Base)
	tw.Flush()

	fmt.Fprintf(w, "\n%s\n", paint(ansiBold, "models and data"))
	if len(c.Data.Models) == 0 {
		fmt.Fprintln(w, "  no model calls through the gateway")
	}
	for _, m := range c.Data.Models {
		terms := "terms not recorded"
		if m.Terms != nil {
			terms = fmt.Sprintf("trains on inputs: %v, retention %s, region %s", m.Terms.TrainsOnInputs, m.Terms.Retention, m.Terms.Region)
		}
		fmt.Fprintf(w, "  %s/%s: %d requests, %s sent, %s received (%s)\n", safeText(m.Provider), safeText(m.Model), m.Requests, humanBytes(m.RequestBytes), humanBytes(m.ResponseBytes), safeText(terms))
	}
	for _, h := range c.Data.Hosts {
		b, _ := json.Marshal(h)
		var hm map[string]any
		_ = json.Unmarshal(b, &hm)
		fmt.Fprintf(w, "  host %v: %v flows, %v bytes up, %v bytes down\n", safeText(fmt.Sprint(hm["host"])), hm["flows"], hm["bytes_up"], hm["bytes_down"])
	}
	if len(c.Data.Blocked) > 0 {
		fmt.Fprintf(w, "\n%s\n", paint(ansiBold, "blocked"))
		for _, b := range c.Data.Blocked {
			fmt.Fprintf(w, "  %s %s x%d: %s\n", b.Kind, safeText(b.What), b.Count, safeText(b.Reason))
		}
	}

	fmt.Fprintf(w, "\n%s\n", paint(ansiBold, "verification"))
	switch c.Verify {
	case "pass":
		fmt.Fprintf(w, "  %s (report sha256 %.12s)\n", paint(ansiGreen, "pass"), c.ReportSHA256)
	case "fail":
		fmt.Fprintf(w, "  %s (report sha256 %.12s)\n", paint(ansiRed, "FAIL"), c.ReportSHA256)
	case "needs-review":
		fmt.Fprintf(w, "  %s (report sha256 %.12s)\n", paint(ansiYel, "needs review"), c.ReportSHA256)
	default:
		fmt.Fprintf(w, "  %s: %s\n", paint(ansiYel, "none"), c.VerifyNote)
	}
	if c.Report != nil && c.Verify != "none" {
		for _, f := range c.Report.Findings {
			loc := f.File
			if f.Line > 0 {
				loc += fmt.Sprintf(":%d", f.Line)
			}
			fmt.Fprintf(w, "  %s %s/%s %s: %s\n", f.Action, f.Check, f.Rule, safeText(loc), safeText(f.Message))
		}
	}

	fmt.Fprintf(w, "\n%s\n", paint(ansiBold, "approvals"))
	for _, p := range c.Protected {
		owners, _ := c.Owners.OwnersOf(p)
		if len(owners) == 0 {
			// An enclave governance file no owners rule names: nobody may
			// approve an agent's change to it.
			fmt.Fprintf(w, "  protected %s: governs enclave and has no owner in %s; make this change yourself, or name its owners there\n", safeText(p), safeText(c.Owners.Source))
			continue
		}
		fmt.Fprintf(w, "  protected %s: owners %s\n", safeText(p), safeText(strings.Join(owners, ", ")))
	}
	va := c.ValidApprovals()
	for _, a := range va {
		fmt.Fprintf(w, "  %s %s at %s %s\n", paint(ansiGreen, "approved by"), safeText(a.User), a.Time, safeText(a.Note))
	}
	for _, r := range c.Summary.Rejections {
		if r.Head == c.Head {
			fmt.Fprintf(w, "  %s %s at %s: %s\n", paint(ansiRed, "rejected by"), safeText(r.User), r.Time, safeText(r.Reason))
		}
	}
	fmt.Fprintf(w, "  %d of %d approvals", len(va), c.Tier.Approvals)
	if u := c.UnapprovedProtected(); len(u) > 0 {
		fmt.Fprintf(w, "; protected paths waiting for an owner: %s", safeText(strings.Join(u, ", ")))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "\n%s\n", paint(ansiBold, "diff"))
	if err := writeStat(w, c.Change); err != nil {
		return err
	}
	var patch bytes.Buffer
	if err := c.Change.Patch(ctx, &patch); err != nil {
		return err
	}
	// The patch is the agent's text: control and format characters are
	// neutralised before any colour of ours is added.
	var safe bytes.Buffer
	if _, err := workspace.TerminalSafe(&safe).Write(escapeFormat(patch.Bytes())); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(safe.String(), "\n") {
		switch {
		case !color || line == "":
		case strings.HasPrefix(line, "+++") || strings.HasPrefix(line, "---") || strings.HasPrefix(line, "diff "):
			line = ansiBold + strings.TrimSuffix(line, "\n") + ansiReset + "\n"
		case strings.HasPrefix(line, "+"):
			line = ansiGreen + strings.TrimSuffix(line, "\n") + ansiReset + "\n"
		case strings.HasPrefix(line, "-"):
			line = ansiRed + strings.TrimSuffix(line, "\n") + ansiReset + "\n"
		case strings.HasPrefix(line, "@@"):
			line = ansiCyan + strings.TrimSuffix(line, "\n") + ansiReset + "\n"
		}
		io.WriteString(w, line)
	}
	return nil
}

func (e *Env) reviewKeyCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("review key", "review key [--ssh FILE]", `Key creates your ed25519 signing key in the state directory
(keys/<user>.ed25519, OpenSSH format, mode 0600) and adds the public key to
keys/allowed_signers, which "enclave attest verify" trusts. With --ssh, an
existing unencrypted ed25519 SSH key is used instead. Prints the public key.`, "    enclave review key\n    enclave review key --ssh ~/.ssh/id_ed25519")
	sshKey := fs.String("ssh", "", "use the existing SSH private key `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("review key takes no arguments")
	}
	who := e.principal()
	if err := e.humanOnly(who, "review key"); err != nil {
		return err
	}
	st, err := e.openState(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	dir := st.dir
	if s, err := review.LoadKey(dir, who.ID); err == nil {
		fmt.Fprintf(e.Stdout, "%s %s\n", who.ID, s.Public)
		fmt.Fprintf(e.Stderr, "enclave: %s already has a signing key: %s\n", who.ID, s.Path)
		return nil
	} else if !errors.Is(err, review.ErrNoKey) {
		return err
	}
	var s *review.Signer
	how := "created by enclave review key"
	if *sshKey != "" {
		s, err = review.LinkSSHKey(dir, who.ID, *sshKey)
		how = "SSH key linked by enclave review key --ssh"
	} else {
		s, err = review.CreateKey(dir, who.ID)
	}
	if err != nil {
		return err
	}
	if err := recordKey(ctx, st, who.ID, s, how); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "%s %s\n", who.ID, s.Public)
	fmt.Fprintf(e.Stderr, "enclave: signing key of %s: %s (%s)\n", who.ID, s.Path, s.KeyID)
	return nil
}

// initHumanKey is enclave init's part for review: the acting person's
// approval signing key, created when there is none (inside an agent's
// session there is no person, so nothing is made). It reports on stderr;
// stdout stays the audit log's public key.
func (e *Env) initHumanKey(ctx context.Context) error {
	who := e.principal()
	if who.Type != authz.User {
		return nil
	}
	st, err := e.openState(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	s, created, err := ensureKey(ctx, st, who.ID, "created by enclave init")
	switch {
	case err != nil:
		return fmt.Errorf("the approval signing key of %s: %w", who.ID, err)
	case created:
		fmt.Fprintf(e.Stderr, "enclave: created the approval signing key of %s: %s (%s); enclave review key --ssh FILE uses an SSH key instead\n", who.ID, s.Path, s.KeyID)
	default:
		fmt.Fprintf(e.Stderr, "enclave: approvals by %s are signed with %s (%s)\n", who.ID, s.Path, s.KeyID)
	}
	return nil
}

// signer loads the acting user's key, creating one on first use.
func (e *Env) signer(ctx context.Context, st *state, user string) (*review.Signer, error) {
	s, created, err := ensureKey(ctx, st, user, "created on first approval")
	if created {
		fmt.Fprintf(e.Stderr, "enclave: created the signing key of %s: %s (%s)\n", user, s.Path, s.KeyID)
	}
	return s, err
}

// ensureKey returns user's signing key, creating one if there is none and
// putting it on the audit record (how says what made it).
func ensureKey(ctx context.Context, st *state, user, how string) (s *review.Signer, created bool, err error) {
	s, err = review.LoadKey(st.dir, user)
	if !errors.Is(err, review.ErrNoKey) {
		return s, false, err
	}
	if s, err = review.CreateKey(st.dir, user); err != nil {
		return nil, false, err
	}
	return s, true, recordKey(ctx, st, user, s, how)
}

// recordKey puts a key added to the allowed signers on the audit record:
// who added which key, and how.
func recordKey(ctx context.Context, st *state, user string, s *review.Signer, how string) error {
	if st.log == nil {
		return errors.New("bug: the audit log is not open to record a new signing key")
	}
	ev, err := audit.NewEvent("", review.KindKey, user, "", map[string]any{
		"user": user, "key_id": s.KeyID, "public": s.Public, "path": s.Path, "how": how,
	})
	if err != nil {
		return err
	}
	ev.Time = time.Now().UTC()
	if _, err := st.log.Append(ctx, ev); err != nil {
		return fmt.Errorf("record the new signing key of %s (%s) in the audit log: %w", user, s.KeyID, err)
	}
	return st.checkpoint(ctx)
}

func (e *Env) reviewTierCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("review tier", "review tier [--task TEXT] SESSION TIER", `Tier declares a session's tier (from enclave.review.yaml; built in: docs-tests,
routine, sensitive) and optionally its task. The launcher may make it
stricter, not laxer (lowering it takes another person); no tier changes once
approvals exist.`, "    enclave review tier last sensitive --task \"rotate session keys\"")
	task := fs.String("task", "", "the task the agent was given")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("review tier takes SESSION and TIER")
	}
	st, s, err := e.openSession(ctx, fs.Arg(0), true)
	if err != nil {
		return err
	}
	defer st.Close()
	c, err := e.reviewer(st).SetTier(ctx, e.principal(), s, fs.Arg(1), *task)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "%s: tier %s (%d approval(s), verification %s)\n", s.ID, c.TierName, c.Tier.Approvals, c.Tier.Gate)
	return nil
}

func (e *Env) approveCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("approve", "approve [-m NOTE] SESSION", `Approve signs and records your approval of the session's current head: an
in-toto statement (session, agent, models and their terms, policy hashes,
verification report hash, audit checkpoint, you) in a DSSE envelope signed
with your key. The policy decides first (enclave.cedar and the built-in
rules: agents never approve, separation of duties, owners of protected
paths, the verification gate); every decision is on the audit record. An
approval counts only while the session's branch stays at that head. With
merge: {auto: true} in enclave.review.yaml (for every tier, or one tier's
tiers.<tier>.merge), the approval that makes the approvals sufficient also
merges (as enclave merge, in your name).`, "    enclave approve last\n    enclave approve -m \"checked the migration\" s-20261124-150405-a1b2c3")
	note := fs.String("m", "", "a `note` recorded with the approval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, true)
	if err != nil {
		return err
	}
	defer st.Close()
	who := e.principal()
	signer := func() (*review.Signer, error) { return e.signer(ctx, st, who.ID) }
	r := e.reviewer(st)
	c, _, err := r.Approve(ctx, who, s, review.ApproveOptions{Note: *note, Signer: signer})
	if err != nil {
		if who.Type != authz.User {
			return e.humanOnly(who, "approve")
		}
		return err
	}
	fmt.Fprintf(e.Stdout, "%s: approved %.12s by %s (%d of %d); state %s\n", s.ID, c.Head, who.ID, len(c.ValidApprovals()), c.Tier.Approvals, c.State())
	res, err := r.AutoMerge(ctx, who, c)
	if err != nil {
		// The approval stands (it is recorded); the merge can be retried.
		cerr := st.checkpoint(ctx)
		return withHint(errors.Join(err, cerr), "the approval is recorded; fix the cause, then run enclave merge "+s.ID)
	}
	if res != nil {
		printMerge(e.Stdout, s.ID, res)
	}
	return st.checkpoint(ctx)
}

func printMerge(w io.Writer, id string, res *review.MergeResult) {
	if res.Noop {
		fmt.Fprintf(w, "%s: already merged: %s at %.12s\n", id, res.Ref, res.Commit)
		return
	}
	fmt.Fprintf(w, "%s: merged %.12s as %s", id, res.Commit, res.Ref)
	if res.Merge != "" {
		fmt.Fprintf(w, " and into the target (merge commit %.12s)", res.Merge)
	}
	fmt.Fprintf(w, "; attestation in %s\n", review.NotesRef)
}

func (e *Env) rejectCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("reject", "reject -m REASON SESSION", `Reject records that the session's current head must not be merged, and why.`, "    enclave reject -m \"touches the billing schema\" last")
	reason := fs.String("m", "", "the `reason` (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("reject takes one SESSION")
	}
	if strings.TrimSpace(*reason) == "" {
		return usagef("reject needs a reason: -m REASON")
	}
	st, s, err := e.openSession(ctx, fs.Arg(0), true)
	if err != nil {
		return err
	}
	defer st.Close()
	who := e.principal()
	c, err := e.reviewer(st).Reject(ctx, who, s, *reason)
	if err != nil {
		if who.Type != authz.User {
			return e.humanOnly(who, "reject")
		}
		return err
	}
	fmt.Fprintf(e.Stdout, "%s: rejected %.12s by %s; state %s\n", s.ID, c.Head, who.ID, c.State())
	return st.checkpoint(ctx)
}

func (e *Env) mergeCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("merge", "merge SESSION", `Merge brings an approved session's change into your repository: it fetches
the agent's commit from enclave's shadow repository (objects only; nothing
from the agent's copy runs), creates the branch enclave/<session> (or,
with merge.mode: target in enclave.review.yaml, or a tier's
tiers.<tier>.merge, merges into the target branch with your git identity
and signing), and attaches the signed
approvals as a git note on refs/notes/enclave. Running it again is a no-op.`, "    enclave merge last\n    git log --notes=enclave enclave/<session>")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, true)
	if err != nil {
		return err
	}
	defer st.Close()
	who := e.principal()
	_, res, err := e.reviewer(st).Merge(ctx, who, s)
	if err != nil {
		if who.Type != authz.User {
			return e.humanOnly(who, "merge")
		}
		return err
	}
	printMerge(e.Stdout, s.ID, res)
	return st.checkpoint(ctx)
}

func (e *Env) attestCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(e.Stderr, "Usage:\n    enclave attest verify [flags] COMMIT\n")
			return nil
		}
		return usagef("usage: enclave attest verify [flags] COMMIT")
	}
	fs := e.newFlagSet("attest verify", "attest verify [flags] COMMIT", `Verify checks the enclave attestations attached to COMMIT (the note on
refs/notes/enclave in the repository) offline, with public keys alone: every
envelope must be signed by a key in the allowed signers file under the name
of the approver it names, be about exactly this commit, and together they
must reach the approvals the tier required. With --log-key, the audit
checkpoint each attestation embeds must also be signed by that audit log
key and match the log origin and size the statement names. Exit 0 when all
verify.`, "    enclave attest verify enclave/s-20261124-150405-a1b2c3\n    enclave attest verify --keys team_signers --envelope att.json 3f2c...")
	keys := fs.String("keys", "", "allowed signers `file` (default: keys/allowed_signers in the state directory)")
	repo := fs.String("repo", "", "the repository `dir` (default: the current directory)")
	envFile := fs.String("envelope", "", "check this envelope `file` (JSON Lines) instead of the git note; COMMIT must then be a full commit id")
	jsonOut := fs.Bool("json", false, "print the verified statements as JSON")
	var logKeys listFlag
	fs.Var(&logKeys, "log-key", "also check each attestation's audit checkpoint against the audit log's public key `file` (enclave audit key; repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("attest verify takes one COMMIT")
	}
	kf := *keys
	if kf == "" {
		dir, err := e.stateDir()
		if err != nil {
			return err
		}
		kf = filepath.Join(dir, review.KeyDir, review.AllowedSignersFile)
	}
	kdata, err := os.ReadFile(kf)
	if err != nil {
		return withHint(fmt.Errorf("read allowed signers: %w", err), "give the team's public keys with --keys FILE (lines of \"name ssh-ed25519 AAAA...\")")
	}
	signers, err := review.ParseAllowedSigners(kf, kdata)
	if err != nil {
		return err
	}
	var (
		commit string
		vs     []*review.Verified
	)
	if *envFile != "" {
		data, err := os.ReadFile(*envFile)
		if err != nil {
			return err
		}
		commit = fs.Arg(0)
		vs, err = review.VerifyBundle(ctx, data, commit, signers)
		if err != nil {
			return err
		}
	} else {
		dir := *repo
		if dir == "" {
			if dir, err = e.dir(); err != nil {
				return err
			}
		}
		commit, vs, err = review.VerifyCommit(ctx, &review.Git{Environ: e.environ()}, dir, fs.Arg(0), signers)
		if err != nil {
			return err
		}
	}
	var cps []string
	if len(logKeys) > 0 {
		lv, err := e.verifier(logKeys)
		if err != nil {
			return err
		}
		for _, v := range vs {
			cp, err := review.CheckCheckpoint(lv, v.Statement)
			if err != nil {
				return fmt.Errorf("approval by %s: %w", safeText(v.Signer.Name), err)
			}
			cps = append(cps, fmt.Sprintf("audit log %q at size %d signed by %s", cp.Origin, cp.Tree.N, strings.Join(lv.Keys(), ", ")))
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(e.Stdout)
		for _, v := range vs {
			if err := enc.Encode(v.Statement); err != nil {
				return err
			}
		}
		return nil
	}
	for i, v := range vs {
		p := v.Statement.Predicate
		fmt.Fprintf(e.Stdout, "ok: %s approved by %s (%s) at %s: session %s, tier %s, verification %s\n",
			commit, safeText(v.Signer.Name), v.Signer.KeyID, p.Time, p.Session.ID, p.Session.Tier, p.Verification.Result)
		models := []string{}
		for _, m := range p.Models {
			models = append(models, fmt.Sprintf("%s/%s (%d calls)", m.Provider, m.Model, m.Requests))
		}
		if len(models) == 0 {
			models = append(models, "none")
		}
		fmt.Fprintf(e.Stdout, "    agent %s; models %s; approval allowed by %s\n",
			safeText(clip(strings.Join(p.Agent.Command, " "), 80)), safeText(strings.Join(models, ", ")), safeText(strings.Join(p.Decision, ", ")))
		if cps != nil {
			fmt.Fprintf(e.Stdout, "ok:   checkpoint: %s\n", safeText(cps[i]))
		}
	}
	return nil
}

func (e *Env) policyCmd(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "test" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(e.Stderr, "Usage:\n    enclave policy test [--policy FILE] TESTFILE\n")
			return nil
		}
		return usagef("usage: enclave policy test [--policy FILE] TESTFILE")
	}
	fs := e.newFlagSet("policy test", "policy test [--policy FILE] TESTFILE", `Test runs authorisation policy unit tests: TESTFILE is YAML with a list of
tests, each a principal (User:<name> or Agent:<session>), an action (run,
verify, review, tier, approve, reject, merge, egress, model), a resource
(session, tier, launcher, agent, command, profile, paths, protected_paths,
approvals_required, gate, separation_of_duties; or host: name:port for
egress; or model: provider/model with family and clearance for model), a
context, the expected decision (allow or deny), and optionally the policy
ids that must decide it. The policies are the
built-in ones plus enclave.cedar at the repository top level (or --policy).`, "    enclave policy test policy_test.yaml")
	pol := fs.String("policy", "", "Cedar policy `file` to add to the built-in policies (default: enclave.cedar of this repository)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("policy test takes one TESTFILE")
	}
	var eng *authz.Engine
	var err error
	if *pol != "" {
		data, rerr := os.ReadFile(*pol)
		if rerr != nil {
			return rerr
		}
		eng, err = authz.New(authz.Source{Name: *pol, Data: data})
	} else {
		dir, derr := e.dir()
		if derr != nil {
			return derr
		}
		if top, terr := (&review.Git{Environ: e.environ()}).TopLevel(ctx, dir); terr == nil {
			dir = top
		}
		eng, err = authz.Load(dir)
	}
	if err != nil {
		return err
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	tf, err := authz.ParseTests(fs.Arg(0), data)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range eng.Run(tf) {
		if r.Pass {
			fmt.Fprintf(e.Stdout, "ok    %s:%d %s\n", fs.Arg(0), r.Line, safeText(r.Name))
			continue
		}
		failed++
		fmt.Fprintf(e.Stdout, "FAIL  %s:%d %s: %s\n", fs.Arg(0), r.Line, safeText(r.Name), safeText(r.Problem))
	}
	fmt.Fprintf(e.Stdout, "%d tests, %d failed (policies: %s, sha256 %.12s)\n", len(tf.Tests), failed, strings.Join(eng.Files, ", "), eng.Hash)
	if failed > 0 {
		return &exitError{1}
	}
	return nil
}

// SessionMatch is the filter the sessions command can apply for the team
// lead's view: state (running, exited, failed, needs-review, approved,
// rejected, merged), agent (the command's program name), tier. A session
// that exited without review data counts as needs-review.
func SessionMatch(s *store.Session, state, agent, tier string) bool {
	sum, err := review.ReadSummary(s)
	if err != nil {
		return state == "" && agent == "" && tier == ""
	}
	if state != "" && sessionState(s) != state && s.State != state {
		return false
	}
	if agent != "" && (len(s.Command) == 0 || filepath.Base(s.Command[0]) != agent) {
		return false
	}
	if tier != "" {
		t := sum.Tier
		if t == "" {
			t = review.TierRoutine
		}
		if t != tier {
			return false
		}
	}
	return true
}

// reviewStatus returns the sessions table's compact review status of a
// session: the verification result, approvals of its latest approved head
// against the tier's requirement and who gave them, a rejection, the merge.
// It reads the session's summary, its verification report and its
// repository's review config (cached per repository); enclave review and
// approve make the full checks (report on the audit record, about the
// current head, signatures).
func reviewStatus(stateDir string) func(*store.Session) string {
	configs := map[string]*review.Config{}
	required := func(s *store.Session, sum *review.Summary) int {
		ws, err := workspace.Open(filepath.Join(stateDir, "sessions", s.ID), nil)
		if err != nil {
			return 0
		}
		c, ok := configs[ws.Source]
		if !ok {
			c, _ = review.LoadConfig(ws.Source)
			configs[ws.Source] = c
		}
		if c == nil {
			return 0
		}
		_, t, err := c.TierOf(sum)
		if err != nil {
			return 0
		}
		return t.Approvals
	}
	return func(s *store.Session) string {
		if s.State == store.StateRunning {
			return "-"
		}
		sum, err := review.ReadSummary(s)
		if err != nil {
			return "summary unreadable"
		}
		if sum.Merged != nil {
			return "merged to " + strings.TrimPrefix(sum.Merged.Ref, "refs/heads/")
		}
		parts := []string{"not verified"}
		if data, err := os.ReadFile(filepath.Join(stateDir, "sessions", s.ID, review.VerifyReportName)); err == nil {
			var r struct {
				Result string `json:"result"`
			}
			if json.Unmarshal(data, &r) == nil && r.Result != "" {
				parts[0] = "verify " + r.Result
			}
		}
		if s.FilesChanged == 0 && len(sum.Approvals) == 0 {
			return parts[0]
		}
		var who []string
		if n := len(sum.Approvals); n > 0 {
			head := sum.Approvals[n-1].Head
			for _, a := range sum.Approvals {
				if a.Head == head && !slices.Contains(who, a.User) {
					who = append(who, a.User)
				}
			}
		}
		approvals := fmt.Sprintf("%d approvals", len(who))
		if req := required(s, sum); req > 0 {
			approvals = fmt.Sprintf("%d/%d approvals", len(who), req)
		}
		if len(who) > 0 {
			approvals += " (" + strings.Join(who, ", ") + ")"
		}
		parts = append(parts, approvals)
		if n := len(sum.Rejections); n > 0 {
			parts = append(parts, "rejected by "+sum.Rejections[n-1].User)
		}
		return strings.Join(parts, ", ")
	}
}

// sessionState maps the core's "exited" to "needs-review" for display.
func sessionState(s *store.Session) string {
	if s.State == store.StateExited && s.FilesChanged > 0 {
		// An exited session with a change waits for a human; one that
		// changed nothing has nothing to review.
		return review.StateNeedsReview
	}
	return s.State
}
