package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Endpoint names what a request does, independent of the path shape used.
type Endpoint string

// The endpoints served.
const (
	EpMessages      Endpoint = "messages"         // Anthropic
	EpCountTokens   Endpoint = "count_tokens"     // Anthropic
	EpChat          Endpoint = "chat.completions" // OpenAI
	EpResponses     Endpoint = "responses"        // OpenAI
	EpGenerate      Endpoint = "generateContent"  // Gemini
	EpStream        Endpoint = "streamGenerateContent"
	EpGeminiCount   Endpoint = "countTokens"
	EpModels        Endpoint = "models"
	epNone          Endpoint = ""
	geminiModelsSeg          = "models/"
)

// route is a parsed request path.
type route struct {
	fam      Family
	ep       Endpoint
	model    string // Gemini: from the path
	upPath   string // path to append to the provider's base URL
	stream   bool   // Gemini: streamGenerateContent
	ok       bool
	badModel bool // Gemini: the model in the path is malformed
}

// parseRoute maps method and path to a route. It never touches the body.
// On failure route.fam still names the family the path looked like, so the
// 404 comes in that family's error shape.
func parseRoute(method, path string, h http.Header) route {
	fam, rest, prefixed := cutFamily(path)
	if !prefixed {
		switch {
		case strings.HasPrefix(path, "/v1beta/"):
			fam = Gemini
		case path == "/v1/models" || path == "/v1/models/":
			fam = OpenAI
			if h.Get("anthropic-version") != "" || h.Get("x-api-key") != "" {
				fam = Anthropic
			}
		case strings.HasPrefix(path, "/v1/messages"):
			fam = Anthropic
		case strings.HasPrefix(path, "/v1/models/") && strings.Contains(path, ":"):
			fam = Gemini
		default:
			fam = OpenAI
			if h.Get("anthropic-version") != "" || h.Get("x-api-key") != "" {
				fam = Anthropic
			} else if h.Get("x-goog-api-key") != "" {
				fam = Gemini
			}
		}
	}
	r := route{fam: fam}
	switch fam {
	case Anthropic, OpenAI:
		p := strings.TrimPrefix(rest, "/v1")
		if !strings.HasPrefix(p, "/") {
			return r
		}
		switch {
		case fam == Anthropic && p == "/messages" && method == http.MethodPost:
			r.ep, r.upPath = EpMessages, "/v1/messages"
		case fam == Anthropic && p == "/messages/count_tokens" && method == http.MethodPost:
			r.ep, r.upPath = EpCountTokens, "/v1/messages/count_tokens"
		case fam == Anthropic && p == "/models" && method == http.MethodGet:
			r.ep, r.upPath = EpModels, "/v1/models"
		case fam == OpenAI && p == "/chat/completions" && method == http.MethodPost:
			r.ep, r.upPath = EpChat, "/chat/completions"
		case fam == OpenAI && p == "/responses" && method == http.MethodPost:
			r.ep, r.upPath = EpResponses, "/responses"
		case fam == OpenAI && p == "/models" && method == http.MethodGet:
			r.ep, r.upPath = EpModels, "/models"
		default:
			return r
		}
	case Gemini:
		var ver string
		switch {
		case strings.HasPrefix(rest, "/v1beta/"):
			ver = "/v1beta/"
		case strings.HasPrefix(rest, "/v1/"):
			ver = "/v1/"
		default:
			return r
		}
		p := strings.TrimPrefix(rest, ver)
		if p == "models" && method == http.MethodGet {
			r.ep, r.upPath = EpModels, ver+"models"
			break
		}
		name, ok := strings.CutPrefix(p, geminiModelsSeg)
		if !ok || method != http.MethodPost {
			return r
		}
		model, op, ok := strings.Cut(name, ":")
		if !ok {
			return r
		}
		switch Endpoint(op) {
		case EpGenerate, EpGeminiCount:
		case EpStream:
			r.stream = true
		default:
			return r
		}
		if !validGeminiModel(model) {
			r.badModel = true
			r.model = model
			return r
		}
		r.ep, r.model, r.upPath = Endpoint(op), model, ver+geminiModelsSeg+model+":"+op
	}
	r.ok = true
	return r
}

func cutFamily(path string) (Family, string, bool) {
	for _, f := range []Family{Anthropic, OpenAI, Gemini} {
		if rest, ok := strings.CutPrefix(path, "/"+string(f)); ok && (rest == "" || rest[0] == '/') {
			return f, rest, true
		}
	}
	return "", path, false
}

// validGeminiModel keeps the model name from smuggling path segments or
// escapes into the upstream URL.
func validGeminiModel(m string) bool {
	if m == "" || len(m) > maxModelNameBytes || m == "." || m == ".." {
		return false
	}
	for _, c := range []byte(m) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// apiError is an error the gateway itself returns to the agent.
type apiError struct {
	status int
	kind   errKind
	msg    string
}

type errKind int

const (
	errInvalid errKind = iota
	errAuth
	errPermission
	errNotFound
	errTooLarge
	errRateLimit
	errUpstream
	errTimeout
	errUnavailable
)

// finalStatus is the status a refusal is sent with, chosen so that the
// agent's client treats it as final instead of retrying a request the
// gateway will refuse again (each retry is another record, and another
// copy of the refused content on the wire). What the clients do, read from
// their behaviour through the realclients harness (test/gateway counts the
// refused requests per user turn):
//
//   - Claude Code and OpenCode (Anthropic SDK, AI SDK) retry 408, 409, 429
//     and 5xx only; 403 is final. The Stainless SDKs also honour
//     "x-should-retry: false", which every refusal carries.
//   - Gemini CLI retries 429 and 5xx; 403 is final.
//   - Codex CLI retries every status it does not recognise, 403 included
//     (request_max_retries and stream_max_retries: three attempts with the
//     adapter's config), but treats 400 as an invalid request and gives up.
//     OpenAI's own API answers a prompt its policy refuses with 400
//     (invalid_prompt), so a policy refusal in the OpenAI family is a 400
//     with code "permission_denied".
func finalStatus(fam Family, status int) int {
	if fam == OpenAI && status == http.StatusForbidden {
		return http.StatusBadRequest
	}
	return status
}

// writeError writes e in fam's native error shape, so the agent's SDK
// surfaces the message instead of a parse error.
func writeError(w http.ResponseWriter, fam Family, e apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Enclave-Gateway", "refused")
	if e.status >= 400 && e.status < 500 {
		// Stainless-generated SDKs (Anthropic, OpenAI) skip their retries.
		w.Header().Set("X-Should-Retry", "false")
	}
	w.WriteHeader(e.status)
	w.Write(errorBody(fam, e))
}

func errorBody(fam Family, e apiError) []byte {
	var v any
	switch fam {
	case Anthropic:
		t := [...]string{"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
			"request_too_large", "rate_limit_error", "api_error", "timeout_error", "api_error"}[e.kind]
		v = map[string]any{"type": "error", "error": map[string]any{"type": t, "message": e.msg}}
	case Gemini:
		st := [...]string{"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
			"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL", "DEADLINE_EXCEEDED", "UNAVAILABLE"}[e.kind]
		v = map[string]any{"error": map[string]any{"code": e.status, "message": e.msg, "status": st}}
	default:
		t := [...]string{"invalid_request_error", "invalid_request_error", "permission_error", "invalid_request_error",
			"invalid_request_error", "rate_limit_error", "server_error", "server_error", "server_error"}[e.kind]
		code := [...]string{"invalid_request", "invalid_api_key", "permission_denied", "not_found",
			"request_too_large", "rate_limit_exceeded", "upstream_error", "timeout", "unavailable"}[e.kind]
		v = map[string]any{"error": map[string]any{"message": e.msg, "type": t, "param": nil, "code": code}}
	}
	b, _ := json.Marshal(v)
	return b
}

// streamErrorEvent is the SSE event that tells a streaming client the
// stream broke, in fam's shape; nil when the family has none.
func streamErrorEvent(fam Family, ep Endpoint, msg string) []byte {
	switch fam {
	case Anthropic:
		b := errorBody(Anthropic, apiError{status: 502, kind: errUpstream, msg: msg})
		return append(append([]byte("event: error\ndata: "), b...), "\n\n"...)
	case OpenAI:
		if ep == EpResponses {
			b, _ := json.Marshal(map[string]any{"type": "error", "code": "upstream_error", "message": msg, "param": nil})
			return append(append([]byte("event: error\ndata: "), b...), "\n\n"...)
		}
		b := errorBody(OpenAI, apiError{status: 502, kind: errUpstream, msg: msg})
		return append(append([]byte("data: "), b...), "\n\n"...)
	}
	return nil
}
