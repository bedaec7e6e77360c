// Package e2e holds end-to-end tests that run real agent CLIs (Claude Code
// and Codex CLI) inside `enclave run` against a scripted fake model on
// loopback, using the shared harness in ../shared/realclients beside the
// repository checkout.
//
// The tests judge containment from outside the sandbox: the fake model's
// request log (did a planted secret reach the model or the exfiltration
// sink?), the host file system (was anything written outside the session
// copy?) and enclave's own audit log (was the denied flow and every command
// recorded?). They never trust what the agent says about itself.
//
// The tests skip, with the reason, when the harness is not there, when
// -short is given, or when the platform is not Linux. The agents are
// installed from npm into the harness cache on first use (about 700 MB).
//
// There is no non-test code here: this file only documents the package.
package e2e
