package gateway

import "context"

// Authorization is SessionConfig.Authorize's answer.
type Authorization struct {
	Allow bool
	// Policies are the ids of the policies that decided; Reason says why
	// for the agent and the record.
	Policies []string
	Reason   string
}

// ModelCheck is what SessionConfig.Authorize is asked about: a call the
// gateway's own checks (sanctioned model, budgets, secrets,
// classification clearance) allowed.
type ModelCheck struct {
	// Call is the call so far: family, endpoint, provider, model,
	// clearance. Authorize must not modify or retain it.
	Call *Call
	// Level is the most sensitive classification level of workspace
	// content the prompt carries as forwarded (redacted content does not
	// count), "" for none; Rank its index in the levels, -1 for none.
	Level string
	Rank  int
}

// RuleAuthz is the rule of a call SessionConfig.Authorize refused.
const RuleAuthz = "model.authz"

// authorize asks SessionConfig.Authorize about an allowed call; it returns
// "" when the call may go, else the reason to refuse it. The deciding
// policies are put on c either way.
func (s *Session) authorize(ctx context.Context, c *Call, level int) string {
	if s.authz == nil {
		return ""
	}
	q := ModelCheck{Call: c, Rank: -1}
	if level >= 0 && level < len(s.g.levels) {
		q.Level, q.Rank = s.g.levels[level], level
	}
	a, err := s.authz(ctx, q)
	c.Policies = a.Policies
	switch {
	case err != nil:
		return "the authorisation policy could not decide, so the call is refused: " + err.Error()
	case !a.Allow:
		if a.Reason == "" {
			return "the authorisation policy refuses this call"
		}
		return a.Reason
	}
	return ""
}

// AuthorizeFunc is the type of SessionConfig.Authorize.
type AuthorizeFunc func(ctx context.Context, q ModelCheck) (Authorization, error)

// listable returns the filter of a model listing under
// SessionConfig.Authorize: a model is listed only if a call to it (with
// no classified content) would be authorised; an error hides it. nil
// without Authorize.
func (s *Session) listable(ctx context.Context, rt route) func(id string) bool {
	if s.authz == nil {
		return nil
	}
	return func(id string) bool {
		p, _ := s.g.resolve(rt.fam, id)
		if p == nil {
			return false
		}
		c := &Call{Session: s.id, Family: rt.fam, Endpoint: rt.ep, Provider: p.Name, Model: id, Clearance: s.g.levels[p.clearance]}
		a, err := s.authz(ctx, ModelCheck{Call: c, Rank: -1})
		return err == nil && a.Allow
	}
}
