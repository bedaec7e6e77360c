// Package escape is enclave's escape test suite: end-to-end probes that run
// inside "enclave run" and try to break out, each judged from outside the
// sandbox by evidence the agent cannot forge (canary secrets absent from
// the workspace copy, the diff and the audit log; host files unchanged;
// host listeners that counted nothing; host processes still alive).
//
// The test binary is enclave itself (with ENCLAVE_ESCAPE_CLI=1) and the
// probe (argv[1] "__probe", mounted read-only at /probe/probe), so the
// compiled suite runs without a Go toolchain, as root and as an ordinary
// user. README.md lists every probe, the attack and the evidence.
package escape
