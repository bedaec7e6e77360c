package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// copyBufs holds response copy buffers: a stream's events are small, and
// pooling keeps the garbage per stream (and so GC work under load) low. An
// open stream holds one for its whole life, so it is no bigger than the
// HTTP client's own read buffer (4 KiB), which bounds what one Read of a
// response body returns anyway.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// hop-by-hop and credential headers never forwarded in either direction.
var dropHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Host": true,
	"Content-Length": true, "Accept-Encoding": true, "Cookie": true, "Set-Cookie": true,
	"Authorization": true, "X-Api-Key": true, "X-Goog-Api-Key": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
	"X-Real-Ip": true,
}

// ServeHTTP serves the agent's model calls for this session.
func (s *Session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rt := parseRoute(r.Method, r.URL.Path, r.Header)
	c := &Call{
		Session: s.id, ID: s.nextID(), Phase: PhaseDecision, Time: start,
		Family: rt.fam, Endpoint: rt.ep, Path: r.URL.Path, Model: rt.model, Stream: rt.stream,
	}
	refuse := func(status int, kind errKind, rule, msg string) {
		status = finalStatus(rt.fam, status)
		c.Allow, c.Rule, c.Reason, c.Status = false, rule, msg, status
		if err := s.rec.Record(r.Context(), c); err != nil {
			s.log.Error("record refusal", "err", err, "call", c.ID)
		}
		s.account(c)
		writeError(w, rt.fam, apiError{status: status, kind: kind, msg: "enclave gateway: " + msg})
	}

	// Authenticate first: nothing else is revealed to a caller without the
	// token, not even which paths exist.
	if msg := s.authenticate(r); msg != "" {
		refuse(http.StatusUnauthorized, errAuth, "auth", msg)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		// Codex tries a WebSocket before SSE; 426 makes it fall back at once.
		refuse(http.StatusUpgradeRequired, errInvalid, "route", "websocket transport is not supported; use HTTP streaming")
		return
	}
	if !rt.ok {
		msg := fmt.Sprintf("%s %s is not a model endpoint this gateway serves", r.Method, r.URL.Path)
		if rt.badModel {
			msg = fmt.Sprintf("model name %q in the path is malformed", truncate(rt.model, 80))
			refuse(http.StatusBadRequest, errInvalid, "route", msg)
			return
		}
		refuse(http.StatusNotFound, errNotFound, "route", msg)
		return
	}

	if rt.ep == EpModels {
		s.serveModels(w, r, rt, c, start)
		return
	}

	// Read and parse the body.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.g.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			refuse(http.StatusRequestEntityTooLarge, errTooLarge, "request.size",
				fmt.Sprintf("request body is larger than the gateway's limit of %d bytes", s.g.cfg.MaxBodyBytes))
			return
		}
		refuse(http.StatusBadRequest, errInvalid, "request.read", "reading the request body failed: "+err.Error())
		return
	}
	c.RequestBytes = int64(len(body))
	sum := sha256.Sum256(body)
	c.PromptSHA256 = hex.EncodeToString(sum[:])
	root, err := decodeBody(body)
	if err != nil {
		refuse(http.StatusBadRequest, errInvalid, "request.json", "request body is not valid JSON: "+err.Error())
		return
	}
	if rt.fam != Gemini {
		m, ok := root["model"].(string)
		if !ok || m == "" {
			refuse(http.StatusBadRequest, errInvalid, "request.model", `request body has no "model" string`)
			return
		}
		if len(m) > maxModelNameBytes {
			refuse(http.StatusBadRequest, errInvalid, "request.model", "model name is too long")
			return
		}
		c.Model = m
		c.Stream, _ = root["stream"].(bool)
	}

	p, why := s.g.resolve(rt.fam, c.Model)
	if p == nil {
		refuse(http.StatusForbidden, errPermission, "model.sanctioned", why)
		return
	}
	c.Provider, c.Upstream, c.Clearance = p.Name, p.host, s.g.levels[p.clearance]
	terms := p.Terms
	c.Terms = &terms

	if s.ended.Load() {
		refuse(http.StatusUnauthorized, errAuth, "auth", "the session has ended")
		return
	}
	if b := s.bud.Tokens; b > 0 && s.tokens.Load() >= b {
		refuse(http.StatusForbidden, errPermission, "budget.tokens",
			fmt.Sprintf("the session's token budget of %d is used up (%d used); no further model calls are allowed", b, s.tokens.Load()))
		return
	}
	if b := s.bud.Requests; b > 0 {
		if n := s.requests.Add(1); n > b {
			s.requests.Add(-1)
			refuse(http.StatusForbidden, errPermission, "budget.requests",
				fmt.Sprintf("the session's request budget of %d is used up; no further model calls are allowed", b))
			return
		}
	}
	release := func() {
		if s.bud.Requests > 0 {
			s.requests.Add(-1)
		}
	}

	// Content checks: secrets and classified excerpts.
	ins := s.inspect(root, p)
	c.Redactions, c.Classification = ins.redactions, ins.hits
	if ins.block != "" {
		release()
		refuse(http.StatusForbidden, errPermission, ins.rule, ins.block)
		return
	}
	if ins.modified {
		body, err = encodeBody(root)
		if err != nil {
			release()
			refuse(http.StatusInternalServerError, errUpstream, "request.encode", "re-encoding the redacted request failed")
			return
		}
		sum = sha256.Sum256(body)
		c.PromptSHA256 = hex.EncodeToString(sum[:])
	}
	c.RequestBytes = int64(len(body))

	if why := s.authorize(r.Context(), c, ins.level); why != "" {
		release()
		refuse(http.StatusForbidden, errPermission, RuleAuthz, why)
		return
	}
	c.Allow, c.Rule = true, "model.sanctioned"
	c.Reason = fmt.Sprintf("model %s is sanctioned on provider %s", c.Model, p.Name)
	if err := s.rec.Record(r.Context(), c); err != nil {
		release()
		s.log.Error("record decision", "err", err, "call", c.ID)
		writeError(w, rt.fam, apiError{status: http.StatusServiceUnavailable, kind: errUnavailable,
			msg: "enclave gateway: the audit log did not accept the record of this call, so it was not sent"})
		return
	}
	s.account(c)
	if ins.level >= 0 {
		s.noteSent(ins.level, ins.levelFrom)
	}
	s.forward(w, r, rt, p, c, body, start)
}

// authenticate checks every credential the request presents; all must be
// this session's token. It returns "" on success, else the reason.
func (s *Session) authenticate(r *http.Request) string {
	var got []string
	if v := r.Header.Get("X-Api-Key"); v != "" {
		got = append(got, v)
	}
	if v := r.Header.Get("X-Goog-Api-Key"); v != "" {
		got = append(got, v)
	}
	if v := r.Header.Get("Authorization"); v != "" {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			return "the Authorization header is not a Bearer token"
		}
		got = append(got, strings.TrimSpace(tok))
	}
	if v := r.URL.Query().Get("key"); v != "" {
		got = append(got, v)
	}
	if len(got) == 0 {
		return "no API key presented; use the session token enclave gave this agent"
	}
	for _, t := range got {
		if !s.checkToken(t) {
			return "the API key is not this session's token"
		}
	}
	if s.ended.Load() {
		return "the session has ended"
	}
	return ""
}

// bodyOptions decode a request body for inspection: a duplicate member
// name is refused (the gateway and the provider could otherwise read
// different values of, say, "model"); numbers stay as written
// (json.Number), so a re-encoded body says exactly what the agent sent;
// invalid UTF-8 becomes U+FFFD, as encoding/json does (an agent that read
// a binary file may send lone surrogates).
var bodyOptions = jsonv2.JoinOptions(
	jsontext.AllowInvalidUTF8(true),
	jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *any) error {
		if dec.PeekKind() != '0' {
			return errors.ErrUnsupported // the default for everything else
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		*v = json.Number(tok.String())
		return nil
	})),
)

// decodeBody decodes a request body that must be one JSON object. It is
// the gateway's hottest parse (agents resend their whole history, often
// hundreds of KB, every turn): the v2 decoder reads it in one pass, about
// 3.5 times as fast as encoding/json (BenchmarkDecodeBody).
func decodeBody(b []byte) (map[string]any, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] != '{' {
		return nil, errors.New("top-level value is not an object")
	}
	var m map[string]any
	if err := jsonv2.Unmarshal(b, &m, bodyOptions); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("top-level value is not an object")
	}
	return m, nil
}

func encodeBody(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// upstreamRequest builds the request to p, with the agent's credentials
// removed and p's key added.
func (s *Session) upstreamRequest(ctx context.Context, r *http.Request, rt route, p *provider, body []byte) (*http.Request, error) {
	u := *p.base
	u.Path = p.base.Path + rt.upPath
	q := r.URL.Query()
	q.Del("key")
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	up, err := http.NewRequestWithContext(ctx, r.Method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.Header {
		if dropHeaders[k] {
			continue
		}
		up.Header[k] = vs
	}
	up.Header.Del("X-Enclave-Gateway")
	switch p.Family {
	case Anthropic:
		up.Header.Set("X-Api-Key", p.key.value())
	case OpenAI:
		up.Header.Set("Authorization", "Bearer "+p.key.value())
	case Gemini:
		up.Header.Set("X-Goog-Api-Key", p.key.value())
	}
	if body != nil {
		up.ContentLength = int64(len(body))
	}
	return up, nil
}

// forward sends the call upstream and streams the answer back.
func (s *Session) forward(w http.ResponseWriter, r *http.Request, rt route, p *provider, c *Call, body []byte, start time.Time) {
	res := *c
	res.Phase, res.Redactions, res.Classification = PhaseResult, nil, nil
	defer func() {
		res.Latency = since(start)
		res.Time = time.Now()
		s.tokens.Add(res.InputTokens + res.OutputTokens)
		s.account(&res)
		// The request context may be cancelled; the record must still go.
		if err := s.rec.Record(context.WithoutCancel(r.Context()), &res); err != nil {
			s.log.Error("record result", "err", err, "call", res.ID)
		}
	}()
	up, err := s.upstreamRequest(r.Context(), r, rt, p, body)
	if err != nil {
		res.Error = "building upstream request failed"
		writeError(w, rt.fam, apiError{status: http.StatusInternalServerError, kind: errUpstream, msg: "enclave gateway: " + res.Error})
		return
	}
	resp, err := s.g.client.Do(up)
	if err != nil {
		status, kind, msg := upstreamFailure(r.Context(), err, p)
		res.Status, res.Error = status, msg
		if r.Context().Err() == nil {
			writeError(w, rt.fam, apiError{status: status, kind: kind, msg: "enclave gateway: " + msg})
		}
		return
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.FirstByte = since(start)

	h := w.Header()
	for k, vs := range resp.Header {
		if !dropHeaders[k] {
			h[k] = vs
		}
	}
	if resp.StatusCode >= 300 {
		// Error bodies are small; read them whole to scrub any echo of the key.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		b = scrubKey(b, p.key.value())
		res.ResponseBytes = int64(len(b))
		res.Error = fmt.Sprintf("upstream answered %d", resp.StatusCode)
		if resp.StatusCode < 400 {
			// A redirect is not followed (it could carry the key elsewhere).
			b = errorBody(rt.fam, apiError{status: 502, kind: errUpstream, msg: "enclave gateway: upstream answered with a redirect, which the gateway does not follow"})
			h.Set("Content-Type", "application/json")
			h.Del("Location")
			w.WriteHeader(http.StatusBadGateway)
		} else {
			w.WriteHeader(resp.StatusCode)
		}
		w.Write(b)
		return
	}

	sse := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var u usage
	var parser *sseParser
	var tee *bytes.Buffer
	if sse {
		parser = &sseParser{max: maxUsageBodyBytes, onEvent: func(ev, data []byte) { u.observe(rt.fam, ev, data) }}
	} else {
		tee = &bytes.Buffer{}
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	if sse && fl != nil {
		fl.Flush()
	}
	// A stream is flushed after every read, so each event reaches the
	// agent as it arrives. A plain answer is not: net/http then sends it
	// in one write with a Content-Length, a system call fewer per request.
	// (Gemini's streamGenerateContent without alt=sse streams a JSON array,
	// so a request that asked for a stream is always flushed.)
	if !sse && !c.Stream && !rt.stream {
		fl = nil
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var readErr, writeErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if _, werr := w.Write(chunk); werr != nil {
				writeErr = werr
				break
			}
			if fl != nil {
				fl.Flush()
			}
			res.ResponseBytes += int64(n)
			if sse {
				parser.Write(chunk)
			} else if tee.Len()+n <= maxUsageBodyBytes {
				tee.Write(chunk)
			}
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
	}
	if !sse && tee.Len() == int(res.ResponseBytes) {
		var v any
		if json.Unmarshal(tee.Bytes(), &v) == nil {
			u.from(v)
			u.terminal = true
		}
	}
	if rt.ep != EpCountTokens && rt.ep != EpGeminiCount {
		res.InputTokens, res.OutputTokens = u.in, u.out
	}
	switch {
	case writeErr != nil || r.Context().Err() != nil:
		res.Partial = true
		res.Error = "client disconnected before the response ended"
	case readErr != nil:
		res.Partial = true
		res.Error = "upstream stream broke: " + scrubString(readErr.Error(), p.key.value())
		if ev := streamErrorEvent(rt.fam, rt.ep, "enclave gateway: the upstream stream broke before it ended"); sse && ev != nil {
			w.Write(ev)
			if fl != nil {
				fl.Flush()
			}
		}
	case sse && !u.terminal:
		res.Partial = true
		res.Error = "stream ended without its final event"
	}
}

// upstreamFailure turns a transport error into what the agent is told.
func upstreamFailure(ctx context.Context, err error, p *provider) (int, errKind, string) {
	if ctx.Err() != nil {
		return 499, errUpstream, "client disconnected"
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return http.StatusGatewayTimeout, errTimeout, fmt.Sprintf("upstream %s (%s) did not answer in time", p.Name, p.host)
	}
	return http.StatusBadGateway, errUpstream, fmt.Sprintf("upstream %s (%s) is unreachable", p.Name, p.host)
}

func scrubKey(b []byte, key string) []byte {
	if key == "" || !bytes.Contains(b, []byte(key)) {
		return b
	}
	return bytes.ReplaceAll(b, []byte(key), []byte("[provider key]"))
}

func scrubString(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[provider key]")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// serveModels forwards a model listing and filters it to sanctioned models.
func (s *Session) serveModels(w http.ResponseWriter, r *http.Request, rt route, c *Call, start time.Time) {
	p := s.g.firstProvider(rt.fam)
	if p == nil {
		c.Allow, c.Rule, c.Reason = false, "model.sanctioned", fmt.Sprintf("the policy sanctions no %s provider", rt.fam)
		s.rec.Record(r.Context(), c)
		writeError(w, rt.fam, apiError{status: http.StatusNotFound, kind: errNotFound, msg: "enclave gateway: " + c.Reason})
		return
	}
	c.Provider, c.Upstream = p.Name, p.host
	c.Allow, c.Rule, c.Reason = true, "models.list", "model listing, filtered to sanctioned models"
	if err := s.rec.Record(r.Context(), c); err != nil {
		writeError(w, rt.fam, apiError{status: http.StatusServiceUnavailable, kind: errUnavailable,
			msg: "enclave gateway: the audit log did not accept the record of this call, so it was not sent"})
		return
	}
	res := *c
	res.Phase = PhaseResult
	defer func() {
		res.Latency, res.Time = since(start), time.Now()
		s.rec.Record(context.WithoutCancel(r.Context()), &res)
	}()
	up, err := s.upstreamRequest(r.Context(), r, rt, p, nil)
	if err != nil {
		writeError(w, rt.fam, apiError{status: 500, kind: errUpstream, msg: "enclave gateway: building upstream request failed"})
		return
	}
	resp, err := s.g.client.Do(up)
	if err != nil {
		status, kind, msg := upstreamFailure(r.Context(), err, p)
		res.Status, res.Error = status, msg
		writeError(w, rt.fam, apiError{status: status, kind: kind, msg: "enclave gateway: " + msg})
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxUsageBodyBytes))
	res.Status = resp.StatusCode
	if err != nil || resp.StatusCode != http.StatusOK {
		res.Error = fmt.Sprintf("upstream answered %d", resp.StatusCode)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(max(resp.StatusCode, 400))
		w.Write(scrubKey(b, p.key.value()))
		return
	}
	out, err := s.g.filterModels(rt.fam, b, s.listable(r.Context(), rt))
	if err != nil {
		res.Error = "upstream model list is not valid JSON"
		writeError(w, rt.fam, apiError{status: 502, kind: errUpstream, msg: "enclave gateway: " + res.Error})
		return
	}
	res.ResponseBytes = int64(len(out))
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// filterModels keeps only sanctioned models in a listing, and of those
// only the ones keep (when set) keeps. Anthropic and OpenAI list
// {"data":[{"id":...}]}; Gemini lists {"models":[{"name":"models/..."}]}.
func (g *Gateway) filterModels(fam Family, b []byte, keep func(id string) bool) ([]byte, error) {
	m, err := decodeBody(b)
	if err != nil {
		return nil, err
	}
	field, idKey := "data", "id"
	if fam == Gemini {
		field, idKey = "models", "name"
	}
	list, _ := m[field].([]any)
	kept := []any{}
	for _, e := range list {
		o, ok := e.(map[string]any)
		if !ok {
			continue
		}
		id, _ := o[idKey].(string)
		if fam == Gemini {
			id = strings.TrimPrefix(id, geminiModelsSeg)
		}
		if id != "" && g.sanctioned(fam, id) && (keep == nil || keep(id)) {
			kept = append(kept, o)
		}
	}
	m[field] = kept
	if fam == Anthropic && len(kept) > 0 {
		m["first_id"] = kept[0].(map[string]any)["id"]
		m["last_id"] = kept[len(kept)-1].(map[string]any)["id"]
	}
	return encodeBody(m)
}
