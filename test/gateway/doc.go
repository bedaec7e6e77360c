// Package gateway holds end-to-end tests of the model gateway inside
// `enclave run`: the real agent CLIs of ../shared/realclients (Claude Code,
// Codex CLI, Gemini CLI, OpenCode) run in the sandbox, enclave reads the
// harness's provider variables (ANTHROPIC_BASE_URL, OPENAI_BASE_URL,
// GOOGLE_GEMINI_BASE_URL and their keys) from its own environment as the
// gateway's upstream, and the agent reaches the scripted fake model only
// through the gateway, holding a session token instead of the key.
//
// The tests judge from outside: the fake model's request log (what the
// upstream received), files the agent wrote into its session copy (its
// environment and HOME, read on the host), what the agent printed, and the
// audit log (`enclave log --json`, `enclave data --json`).
//
//   - TestAgentsThroughGateway: each agent completes a task through the
//     gateway; Codex and OpenCode (on its anthropic and its openai provider)
//     are configured only by the standard variables (the harness's VIA_ENV=1),
//     which the test checks on the harness's command line and by the API the
//     upstream saw.
//   - TestSecretRedactedKeyNeverInside: a planted AWS key reaches the upstream
//     redacted, also when the agent prints it base64-encoded; the provider
//     key is nowhere inside nor in the log; a direct call to the upstream is
//     refused by the egress proxy and recorded.
//   - TestUnsanctionedModel: a model the policy does not list is refused,
//     recorded as a deny, and never reaches the upstream (all four agents; the
//     policy's provider points at the live fake model, so an allowed call would).
//   - TestRestrictedExcerptRefused: 30 lines of a file labelled restricted,
//     read by the agent (shell, Claude's Read tool, reformatted, base64- or
//     gzip+base64-encoded or hex-dumped on the way), make the gateway refuse the request
//     carrying them when the provider is cleared only to internal; the
//     record names the file and the span (lines 1-30, starting by line 9);
//     the refused request reaches the gateway once (no agent retries it).
//   - TestUnsanctionedModel also checks that no agent retries a refusal.
//   - TestRestrictedExcerptRedacted: the same with classification.action
//     redact: the request goes on with a placeholder instead of the lines.
//   - TestStickySensitivity: after a session sent confidential content to a
//     cleared model, a later conversation on a weaker model is refused even
//     though its prompt holds none of it; a control run shows the weaker
//     model is served otherwise.
//
// Policies that need the fake model's port (known only once the harness has
// started it) are templates with @MODEL_PORT@, filled in when the harness
// expands WRAP. Known limit, not tested here: an excerpt the agent encrypts,
// encodes its own way, or splits across requests is not recognised.
//
// They skip, with the reason, when the harness is absent, in -short, or
// when the machine lacks a sandbox layer.
package gateway
