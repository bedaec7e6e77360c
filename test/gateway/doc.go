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
// environment and HOME, read on the host), and the audit log.
//
// They skip, with the reason, when the harness is absent, in -short, or
// when the machine lacks a sandbox layer.
package gateway
