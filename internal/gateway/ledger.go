package gateway

import (
	"context"
	"time"
)

// Recorder receives the gateway's record of every call. The integrator
// adapts it to the audit log.
//
// Record is called twice per call: once with Phase [PhaseDecision] before
// anything is forwarded (also for every refusal), and once with Phase
// [PhaseResult] after the response ended. If Record returns an error for a
// decision, the gateway refuses the call (fail closed): nothing is sent
// unrecorded. An error for a result is logged; the bytes already left.
//
// Record must be safe for concurrent use and should return quickly: it runs
// on the request path. The Call must not be retained after Record returns
// unless copied (its slices are not shared with later calls, so a shallow
// copy is enough). A Call never holds a provider key, the session token, a
// prompt, or a secret; only hashes.
type Recorder interface {
	Record(ctx context.Context, c *Call) error
}

// RecorderFunc adapts a function to [Recorder].
type RecorderFunc func(ctx context.Context, c *Call) error

// Record calls f.
func (f RecorderFunc) Record(ctx context.Context, c *Call) error { return f(ctx, c) }

// Phase says which of the two records of a call this is.
type Phase string

// The phases.
const (
	PhaseDecision Phase = "decision"
	PhaseResult   Phase = "result"
)

// Call is one record of one model call.
type Call struct {
	Session string    `json:"session"`
	ID      string    `json:"id"` // links a call's decision and result
	Phase   Phase     `json:"phase"`
	Time    time.Time `json:"time"`

	Family   Family   `json:"family"`
	Endpoint Endpoint `json:"endpoint,omitempty"`
	Path     string   `json:"path"` // as the agent sent it, without query
	Provider string   `json:"provider,omitempty"`
	Upstream string   `json:"upstream,omitempty"` // host[:port] of the provider
	Model    string   `json:"model,omitempty"`
	Stream   bool     `json:"stream,omitempty"`
	Terms    *Terms   `json:"terms,omitempty"`

	// Decision fields.
	Allow  bool   `json:"allow"`
	Rule   string `json:"rule"`   // e.g. "model.sanctioned", "budget.tokens", "classification"
	Reason string `json:"reason"` // what the agent was told, or why it passed
	// Policies are the ids of the policies of SessionConfig.Authorize's
	// decision; empty without it or when the gateway refused first.
	Policies []string `json:"policies,omitempty"`
	// Clearance is the target model's clearance level.
	Clearance string `json:"clearance,omitempty"`
	// PromptSHA256 is the hex SHA-256 of the request body as forwarded
	// (after redaction), or as received when refused.
	PromptSHA256   string      `json:"prompt_sha256,omitempty"`
	Redactions     []Redaction `json:"redactions,omitempty"`
	Classification []Hit       `json:"classification,omitempty"`

	// Result fields. Status is the upstream's status; on a refused
	// decision, the status the agent was answered with.
	Status        int           `json:"status,omitempty"`
	RequestBytes  int64         `json:"request_bytes"`
	ResponseBytes int64         `json:"response_bytes,omitempty"`
	InputTokens   int64         `json:"input_tokens,omitempty"`
	OutputTokens  int64         `json:"output_tokens,omitempty"`
	Latency       time.Duration `json:"latency_ns,omitempty"`
	// FirstByte is the time to the first response byte.
	FirstByte time.Duration `json:"first_byte_ns,omitempty"`
	// Partial is true when the response stream was cut before its end
	// (upstream dropped, client went away, or no terminal event).
	Partial bool   `json:"partial,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Redaction is one secret replaced in a prompt.
type Redaction struct {
	Rule string `json:"rule"`
	// Hash is a keyed hash of the secret (HMAC-SHA256 with a per-session
	// key, 16 hex digits): equal within a session, unlinkable across
	// sessions, and not brute-forceable from the record alone.
	Hash string `json:"hash"`
	// Placeholder is what the model saw instead.
	Placeholder string `json:"placeholder"`
	// Count is how many times it occurred in this request.
	Count int `json:"count"`
}

// Hit is classified content found in a prompt.
type Hit struct {
	Path  string `json:"path"`
	Level string `json:"level"`
	// StartLine and EndLine are the span in the classified file (1-based,
	// inclusive) that the prompt matched.
	StartLine int `json:"start_line"`
	EndLine   int `json:"end_line"`
	// Matched is the number of fingerprints shared with the file.
	Matched int `json:"matched"`
	// Action is "blocked", "redacted" or "allowed" (within clearance).
	Action string `json:"action"`
}
