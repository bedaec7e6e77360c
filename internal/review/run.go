package review

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/authz"
)

// RunSession is the resource id of a session that does not exist yet:
// the run decision is made before enclave run creates it.
const RunSession = "new"

// Appender is what AuthorizeRun needs of the audit log (*audit.Log).
type Appender interface {
	Append(ctx context.Context, ev audit.Event) (audit.Entry, error)
}

// RunRequest is what `enclave run` asks before it starts a session.
type RunRequest struct {
	// Repo is the repository top level (or directory) the agent gets a
	// copy of; enclave.cedar and enclave.review.yaml are read there.
	Repo    string
	Who     authz.Principal
	Argv    []string
	Profile string
	Task    string
	// Tier is the tier asked for; "" means the config's default tier.
	Tier string
}

// RunDecision is AuthorizeRun's answer.
type RunDecision struct {
	authz.Decision
	// Tier is the tier the session runs at (RunRequest.Tier, or the
	// default tier); Seq the audit record of the decision.
	Tier string
	Seq  int64
	// Engine is the policy set that decided; the session's egress proxy
	// and model gateway put their decisions to it too (session.Options.Authz).
	Engine *authz.Engine
}

// AuthorizeRun puts Action::"run" to the policy (built-in policies plus
// Repo/enclave.cedar) for a session not yet created, and records the
// decision in the audit log as an "authz" event with no session, naming
// the policies that decided. It returns an error wrapping [ErrDenied],
// whose text names the deciding policy, when the policy denies; an error
// when the tier is not defined or the decision cannot be recorded (the
// session must then not start).
func AuthorizeRun(ctx context.Context, log Appender, req RunRequest) (*RunDecision, error) {
	if log == nil {
		return nil, fmt.Errorf("no audit log open: a session is never started unrecorded")
	}
	if len(req.Argv) == 0 {
		return nil, fmt.Errorf("authorise run: no agent command")
	}
	cfg, err := LoadConfig(req.Repo)
	if err != nil {
		return nil, err
	}
	eng, err := authz.Load(req.Repo)
	if err != nil {
		return nil, err
	}
	name, tier, err := cfg.TierOf(&Summary{Tier: req.Tier})
	if err != nil {
		return nil, err
	}
	res := authz.Resource{
		Session: RunSession, Task: req.Task, Tier: name, Launcher: req.Who.ID,
		ApprovalsRequired: tier.Approvals, Gate: tier.Gate, SeparationOfDuties: tier.SeparationOfDuties,
		Agent: filepath.Base(req.Argv[0]), Command: strings.Join(req.Argv, " "), Profile: req.Profile,
	}
	d := eng.Decide(authz.Request{Principal: req.Who, Action: authz.ActionRun, Resource: res})
	data := map[string]any{
		"principal": req.Who.String(), "action": authz.ActionRun, "resource": "Session::\"" + RunSession + "\"",
		"allow": d.Allow, "policies": nonNil(d.Policies), "reason": d.Reason,
		"resource_attrs": map[string]any{
			"tier": res.Tier, "task": res.Task, "launcher": res.Launcher, "agent": res.Agent, "command": req.Argv,
			"profile": res.Profile, "approvals_required": res.ApprovalsRequired, "gate": res.Gate,
			"separation_of_duties": res.SeparationOfDuties,
		},
		"repo": req.Repo, "policy_sha256": eng.Hash, "policy_files": eng.Files, "review_config": cfg.Source,
	}
	if len(d.Errors) > 0 {
		data["errors"] = d.Errors
	}
	decision := audit.DecisionDeny
	if d.Allow {
		decision = audit.DecisionAllow
	}
	ev, err := audit.NewEvent("", KindAuthz, actorOf(req.Who), decision, data)
	if err != nil {
		return nil, err
	}
	ev.Time = time.Now().UTC()
	e, err := log.Append(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("record the run decision in the audit log (the session is not started unrecorded): %w", err)
	}
	out := &RunDecision{Decision: d, Tier: name, Seq: e.Seq, Engine: eng}
	if !d.Allow {
		return out, denied(d)
	}
	return out, nil
}

// RunProfile is the sandbox profile a session of tier (in repo's
// enclave.review.yaml; "" means the default tier) runs with, given the
// profile asked for on the command line ("" when none) and the policy's
// default. A tier that names a profile fixes it: asking for another one is
// an error, so a launcher cannot pair a strict tier with a lax sandbox.
func RunProfile(repo, tier, asked, def string) (string, error) {
	cfg, err := LoadConfig(repo)
	if err != nil {
		return "", err
	}
	name, t, err := cfg.TierOf(&Summary{Tier: tier})
	if err != nil {
		return "", err
	}
	switch {
	case t.Profile == "" && asked == "":
		return def, nil
	case t.Profile == "":
		return asked, nil
	case asked == "" || asked == t.Profile:
		return t.Profile, nil
	}
	return "", fmt.Errorf("profile %q: tier %s runs with profile %q (tiers.%s.profile in %s): %w", asked, name, t.Profile, name, cfg.Source, ErrDenied)
}

// LinkRun records the run decision again under the session it allowed, once
// the session exists, so the session's own record shows who was allowed to
// start it and by which policies (DecidedSeq points at the decision).
func LinkRun(ctx context.Context, log Appender, session string, who authz.Principal, d *RunDecision) error {
	ev, err := audit.NewEvent(session, KindAuthz, actorOf(who), audit.DecisionAllow, map[string]any{
		"principal": who.String(), "action": authz.ActionRun, "resource": "Session::\"" + session + "\"",
		"allow": d.Allow, "policies": nonNil(d.Policies), "reason": d.Reason, "tier": d.Tier, "decided_seq": d.Seq,
	})
	if err != nil {
		return err
	}
	ev.Time = time.Now().UTC()
	if _, err := log.Append(ctx, ev); err != nil {
		return fmt.Errorf("record the run decision for %s: %w", session, err)
	}
	return nil
}
