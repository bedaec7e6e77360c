package gateway

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// Agent names the adapters [AgentEnv] knows.
type Agent string

// Known agents.
const (
	AgentClaude   Agent = "claude"
	AgentCodex    Agent = "codex"
	AgentGemini   Agent = "gemini"
	AgentOpenCode Agent = "opencode"
	AgentOther    Agent = "other"
)

// DetectAgent picks the adapter from the command `enclave run` starts: the
// base name of argv[0], or of the first argument when argv[0] is a script
// runner (node, npx, bun, bunx, pnpm, yarn) — e.g. `npx codex`.
func DetectAgent(argv []string) Agent {
	for i, a := range argv {
		name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(a), ".exe"), ".js")
		switch name {
		case "claude", "claude-code":
			return AgentClaude
		case "codex":
			return AgentCodex
		case "gemini":
			return AgentGemini
		case "opencode":
			return AgentOpenCode
		case "node", "npx", "bun", "bunx", "pnpm", "yarn":
			continue
		}
		if i > 0 && strings.HasPrefix(a, "-") { // runner flags: npx -y codex
			continue
		}
		return AgentOther
	}
	return AgentOther
}

// AgentEnv returns what points an agent at the gateway without the user
// editing its configuration: environment variables to set in the sandbox,
// and files to place in the agent's fresh HOME (paths relative to HOME).
// gatewayURL is the gateway as the agent reaches it ("http://127.0.0.1:PORT",
// no trailing slash); token is the session token, the only key the agent
// gets.
//
// Every agent gets the standard variables, with the family base paths the
// SDKs expect:
//
//	ANTHROPIC_BASE_URL=<gw>/anthropic      ANTHROPIC_API_KEY=<token>
//	OPENAI_BASE_URL=<gw>/openai/v1         OPENAI_API_KEY=<token>  (and OPENAI_API_BASE)
//	GOOGLE_GEMINI_BASE_URL=<gw>/gemini     GEMINI_API_KEY=<token>
//
// Per agent:
//
//   - claude: Claude Code appends /v1/messages to ANTHROPIC_BASE_URL. Adds
//     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 (without it Claude contacts
//     its vendor even with a base URL) and the DISABLE_* switches.
//   - codex: Codex CLI ignores OPENAI_BASE_URL, so ~/.codex/config.toml
//     defines a model provider "enclave" at <gw>/openai/v1 (Responses API,
//     key from OPENAI_API_KEY) and selects it; analytics, feedback, plugins
//     and unbounded retries are off. Codex reads it from $CODEX_HOME, default ~/.codex:
//     the integrator must not set CODEX_HOME elsewhere.
//   - gemini: Gemini CLI takes its endpoint only from
//     GOOGLE_GEMINI_BASE_URL but refuses it unless ~/.gemini/settings.json
//     selects the "gemini-api-key" auth type; the file also turns off usage
//     statistics, telemetry and auto-update, which otherwise reach Google.
//   - opencode: the AI SDK appends /messages to a base that includes /v1,
//     so ANTHROPIC_BASE_URL is <gw>/anthropic/v1 for it; its config
//     (~/.config/opencode/opencode.json) also points the built-in anthropic,
//     openai and google providers at the gateway, and OPENCODE_DISABLE_*
//     stop its catalog fetch, auto-update and sharing.
//   - other: the standard variables only.
//
// The caller must not pass the host's own values of these variables into
// the sandbox: the ones returned here replace them.
func AgentEnv(argv []string, gatewayURL, token string) (env map[string]string, files map[string][]byte) {
	gw := strings.TrimSuffix(gatewayURL, "/")
	env = map[string]string{
		"ANTHROPIC_BASE_URL":     gw + "/anthropic",
		"ANTHROPIC_API_KEY":      token,
		"OPENAI_BASE_URL":        gw + "/openai/v1",
		"OPENAI_API_BASE":        gw + "/openai/v1",
		"OPENAI_API_KEY":         token,
		"GOOGLE_GEMINI_BASE_URL": gw + "/gemini",
		"GEMINI_API_KEY":         token,
	}
	files = map[string][]byte{}
	switch DetectAgent(argv) {
	case AgentClaude:
		for k, v := range map[string]string{
			"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
			"DISABLE_TELEMETRY":                        "1",
			"DISABLE_ERROR_REPORTING":                  "1",
			"DISABLE_AUTOUPDATER":                      "1",
			"DISABLE_BUG_COMMAND":                      "1",
			// Claude refuses --dangerously-skip-permissions as root unless
			// told it is sandboxed; here it is.
			"IS_SANDBOX": "1",
		} {
			env[k] = v
		}
	case AgentCodex:
		files[".codex/config.toml"] = []byte(fmt.Sprintf(`# written by enclave: the model gateway is the only model endpoint
model_provider = "enclave"
check_for_update_on_startup = false

[model_providers.enclave]
name = "enclave gateway"
base_url = %q
env_key = "OPENAI_API_KEY"
wire_api = "responses"
request_max_retries = 2
stream_max_retries = 2

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
unbounded_connection_retries = false
`, gw+"/openai/v1"))
	case AgentGemini:
		env["GEMINI_SANDBOX"] = "false" // enclave is the sandbox; no docker inside it
		files[".gemini/settings.json"] = mustJSON(map[string]any{
			"security":  map[string]any{"auth": map[string]any{"selectedType": "gemini-api-key"}},
			"general":   map[string]any{"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
			"privacy":   map[string]any{"usageStatisticsEnabled": false},
			"telemetry": map[string]any{"enabled": false},
		})
	case AgentOpenCode:
		env["ANTHROPIC_BASE_URL"] = gw + "/anthropic/v1"
		for _, k := range []string{"OPENCODE_DISABLE_MODELS_FETCH", "OPENCODE_DISABLE_AUTOUPDATE",
			"OPENCODE_DISABLE_SHARE", "OPENCODE_DISABLE_LSP_DOWNLOAD"} {
			env[k] = "1"
		}
		opts := func(base, keyVar string) map[string]any {
			return map[string]any{"options": map[string]any{"baseURL": base, "apiKey": "{env:" + keyVar + "}"}}
		}
		files[".config/opencode/opencode.json"] = mustJSON(map[string]any{
			"provider": map[string]any{
				"anthropic": opts(gw+"/anthropic/v1", "ANTHROPIC_API_KEY"),
				"openai":    opts(gw+"/openai/v1", "OPENAI_API_KEY"),
				"google":    opts(gw+"/gemini/v1beta", "GEMINI_API_KEY"),
			},
			"autoupdate": false,
			"share":      "disabled",
		})
	}
	return env, files
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic("gateway: bug: " + err.Error())
	}
	return append(b, '\n')
}
