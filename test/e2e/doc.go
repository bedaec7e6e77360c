// Package e2e holds end-to-end tests that run real agent CLIs (Claude Code
// and Codex CLI) inside `enclave run` against a scripted fake model on
// loopback, using the shared harness in ../shared/realclients beside the
// repository checkout.
//
// The agent reaches the fake model through enclave's egress proxy: the runs
// allow exactly the fake model's loopback port (--allow-host
// 127.0.0.1:PORT, which the defaults refuse) and nothing else, so the
// hostile scenario's "sink" on another port of the same host must be
// refused. The model gateway path (enclave reading provider variables from
// its own environment) is tested in test/gateway; here those variables are
// set inside with --env and the runs say --gateway off.
//
// The tests judge containment from outside the sandbox: the fake model's
// request log (did a planted secret reach the model or the exfiltration
// sink?), the host file system (was anything written outside the session
// copy, or in the user's checkout?) and enclave's own audit log (was the
// denied flow and every command recorded, and does the log verify?). They
// never trust what the agent says about itself. Bare runs of the same
// agents without enclave show the detectors fire when nothing contains the
// agent.
//
// # Running
//
//	go test -v ./test/e2e            # about 30 s with the agents cached
//	go test -short ./test/e2e        # skips
//
// The test binary is enclave itself (a copy named "enclave"), so no build
// step is needed; ENCLAVE_E2E_BIN=/path/to/enclave tests a built binary
// instead. ENCLAVE_REALCLIENTS names the harness directory when it is not
// at ../shared/realclients. The agents are installed from npm into the
// harness cache ($TMPDIR/realclients-cache) on first use, about 700 MB.
//
// The tests skip, with the reason, when the harness is not there, when
// -short is given, or when the machine lacks a sandbox layer.
//
// # Mounts
//
// The harness runs "$WRAP AGENT ARGS" with AGENT under its npm cache in
// /tmp; the cache is mounted read-only at the same path inside, so AGENT
// runs unchanged. (Until the sandbox allowed mounts beneath the /tmp it
// builds, this took a wrapper that mounted the cache elsewhere and rewrote
// AGENT's path.) Codex needs a writable CODEX_HOME holding the config.toml
// the harness writes: that directory is mounted read-write as the agent's
// ~/.codex. As root, enclave runs the agent as an unprivileged host uid, so
// the test hands the directory to that uid first; enclave never makes the
// agent root over host files, so a root-owned --rw directory is not
// writable inside.
package e2e
