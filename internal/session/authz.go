package session

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/enclave-dev/enclave/internal/authz"
	"github.com/enclave-dev/enclave/internal/egress"
	"github.com/enclave-dev/enclave/internal/gateway"
	"github.com/enclave-dev/enclave/internal/policy"
)

// This file wires the Cedar decision point (internal/authz) into the two
// hot paths of a running session: the egress proxy asks it about every
// flow enclave.yaml's network allowlist allowed, the model gateway about
// every call its own checks allowed. Both can only narrow; a decision
// that errors denies (authz.Engine.Decide), and so does a panic in the
// engine. Decisions are cached per distinct request for the session
// (authz.Scope).

// authzScope is the session's Cedar scope, nil when Options.Authz is nil.
func authzScope(o Options, id string) *authz.Scope {
	if o.Authz == nil {
		return nil
	}
	agent := ""
	if len(o.Argv) > 0 {
		agent = filepath.Base(o.Argv[0])
	}
	return o.Authz.ForSession(authz.SessionFacts{
		Session: id, Tier: o.Tier, Profile: o.Profile.Name, Agent: agent, Launcher: o.User,
	})
}

// decide runs f, turning a panic into an error (which denies).
func decide(f func() authz.Decision) (d authz.Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("authorisation engine failed: %v", r)
		}
	}()
	return f(), nil
}

// newProxy is the session's egress proxy: network is the allowlist (the
// profile's, less the provider hosts the gateway took over), every flow
// goes to rec, and what the allowlist allows is put to scope.
func newProxy(network *policy.Network, budget int64, rec *recorder, scope *authz.Scope, log *slog.Logger) (*egress.Proxy, error) {
	return egress.New(egress.Config{
		Network:    network,
		Recorder:   rec,
		ByteBudget: budget,
		Logger:     log.With("part", "egress"),
		Authorize:  egressAuthorizer(scope),
	})
}

// egressAuthorizer is the proxy's egress.Config.Authorize.
func egressAuthorizer(sc *authz.Scope) func(context.Context, *egress.Flow) (egress.Authorization, error) {
	if sc == nil {
		return nil
	}
	return func(_ context.Context, f *egress.Flow) (egress.Authorization, error) {
		d, err := decide(func() authz.Decision {
			return sc.Egress(authz.EgressQuery{Host: f.Host, Port: f.Port, Method: f.Method, Path: f.Path, Scheme: f.Scheme, Rule: f.Decision.Rule})
		})
		if err != nil {
			return egress.Authorization{}, err
		}
		return egress.Authorization{Allow: d.Allow, Policies: d.Policies, Reason: d.Reason}, nil
	}
}

// modelAuthorizer is the gateway's SessionConfig.Authorize.
func modelAuthorizer(sc *authz.Scope) gateway.AuthorizeFunc {
	if sc == nil {
		return nil
	}
	return func(_ context.Context, q gateway.ModelCheck) (gateway.Authorization, error) {
		c := q.Call
		level := q.Level
		if level == "" {
			level = "none"
		}
		d, err := decide(func() authz.Decision {
			return sc.Model(authz.ModelQuery{
				Provider: c.Provider, Model: c.Model, Family: string(c.Family), Endpoint: string(c.Endpoint),
				Clearance: c.Clearance, Classification: level, Rank: q.Rank,
			})
		})
		if err != nil {
			return gateway.Authorization{}, err
		}
		return gateway.Authorization{Allow: d.Allow, Policies: d.Policies, Reason: d.Reason}, nil
	}
}

// authzRecord describes the scope for the session's start record.
func authzRecord(o Options, sc *authz.Scope) map[string]any {
	if sc == nil {
		return map[string]any{"enabled": false}
	}
	return map[string]any{
		"enabled": true, "policy_sha256": o.Authz.Hash, "policy_files": o.Authz.Files,
		"principal": authz.Principal{Type: authz.Agent, ID: sc.Facts().Session}.String(),
		"facts":     sc.Facts(),
	}
}
