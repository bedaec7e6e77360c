package egress

// This file reads agent requests. The rules: the raw header block is
// checked before net/http parses it, so shapes that two parsers could read
// two ways (the stuff of request smuggling) are refused, not normalised;
// every refusal is recorded and answered, and the connection is closed
// after it, so no byte the agent sent after a refused request is ever read
// as another request.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

const maxHeaderLines = 100

var (
	errHeadTooLarge = errors.New("request header block too large")
	errBudget       = errors.New("byte budget exhausted")
	errIdle         = errors.New("idle timeout")
)

// conn is one agent connection.
type conn struct {
	p      *Proxy
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	client string
}

func (p *Proxy) serveConn(c net.Conn) {
	cc := &conn{
		p:  p,
		c:  c,
		br: bufio.NewReaderSize(c, p.maxHeader),
		bw: bufio.NewWriterSize(c, 16<<10),
	}
	if ra := c.RemoteAddr(); ra != nil {
		cc.client = ra.String()
	}
	tunnel := false
	for {
		keep, tun := cc.serveOne()
		if !keep {
			tunnel = tun
			break
		}
	}
	if !tunnel {
		lingerClose(c)
	}
	c.Close()
}

// lingerClose half-closes c and discards what the agent still sends for a
// moment, so a final answer is not destroyed by a reset from unread bytes.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			io.Copy(io.Discard, io.LimitReader(c, 256<<10))
		}
	}
}

// serveOne reads and answers one request. keep says whether the connection
// may carry another request; tunnel that it became a tunnel (now closed).
func (cc *conn) serveOne() (keep, tunnel bool) {
	p := cc.p
	// Wait for the first byte as long as the idle timeout allows, then
	// give the rest of the header block HeaderTimeout.
	cc.c.SetReadDeadline(time.Now().Add(p.idleTimeout))
	if _, err := cc.br.Peek(1); err != nil {
		return false, false
	}
	start := time.Now()
	cc.c.SetReadDeadline(start.Add(p.headerTimeout))
	head, err := cc.readHead()
	if err != nil {
		f := cc.newFlow(start)
		switch {
		case errors.Is(err, errHeadTooLarge):
			cc.refuse(f, http.StatusRequestHeaderFieldsTooLarge, RuleMalformed,
				fmt.Sprintf("request line and headers exceed %d bytes", p.maxHeader))
		case isTimeout(err):
			cc.refuse(f, http.StatusRequestTimeout, RuleMalformed,
				fmt.Sprintf("request headers not received within %s", p.headerTimeout))
		default:
			f.Decision = policy.Decision{Rule: RuleMalformed, Reason: "connection closed inside the request headers"}
			p.recordDenied(f)
		}
		return false, false
	}
	if status, reason := checkHead(head); status != 0 {
		cc.refuse(cc.newFlow(start), status, RuleMalformed, reason)
		return false, false
	}
	headLen := int64(len(head))
	req, err := http.ReadRequest(cc.br)
	if err != nil {
		cc.refuse(cc.newFlow(start), http.StatusBadRequest, RuleMalformed, "request does not parse: "+err.Error())
		return false, false
	}
	if req.Method == http.MethodConnect {
		cc.connect(req, start)
		return false, true
	}
	return cc.forward(req, start, headLen), false
}

func (cc *conn) newFlow(start time.Time) *Flow {
	return &Flow{ID: cc.p.newID(), Client: cc.client, Start: start}
}

func (p *Proxy) newID() string {
	return "f" + strconv.FormatUint(p.flowSeq.Add(1), 10)
}

// readHead returns the request line and headers up to and including the
// empty line, leaving them buffered for http.ReadRequest. Empty lines
// before the request line are skipped (RFC 9112 section 2.2).
func (cc *conn) readHead() ([]byte, error) {
	scanned := 0
	for {
		buf, _ := cc.br.Peek(cc.br.Buffered())
		if scanned == 0 {
			skip := 0
			for skip < len(buf) && (buf[skip] == '\r' || buf[skip] == '\n') {
				skip++
			}
			if skip > 0 {
				cc.br.Discard(skip)
				buf = buf[skip:]
			}
		}
		from := max(scanned-2, 0)
		if i := bytes.Index(buf[from:], []byte("\n\r\n")); i >= 0 {
			return buf[:from+i+3], nil
		}
		if i := bytes.Index(buf[from:], []byte("\n\n")); i >= 0 {
			return buf[:from+i+2], nil
		}
		scanned = len(buf)
		if cc.br.Buffered() >= cc.br.Size() {
			return nil, errHeadTooLarge
		}
		if _, err := cc.br.Peek(cc.br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// checkHead refuses header blocks that parsers disagree about. It returns
// an HTTP status and a reason, or 0 if the block is acceptable.
func checkHead(head []byte) (int, string) {
	body, ok := bytes.CutSuffix(head, []byte("\r\n\r\n"))
	if !ok {
		return http.StatusBadRequest, "header lines must end in CRLF, not a bare LF"
	}
	lines := strings.Split(string(body), "\r\n")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return http.StatusBadRequest, "bare CR or LF inside the header block"
		}
	}
	if len(lines)-1 > maxHeaderLines {
		return http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("more than %d header fields", maxHeaderLines)
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 {
		return http.StatusBadRequest, "request line is not METHOD SP TARGET SP VERSION"
	}
	method, target, version := parts[0], parts[1], parts[2]
	if method == "" || !isToken(method) {
		return http.StatusBadRequest, "method is not a token"
	}
	if target == "" {
		return http.StatusBadRequest, "empty request target"
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return http.StatusBadRequest, fmt.Sprintf("byte 0x%02x not allowed in the request target", c)
		}
	}
	if version != "HTTP/1.1" && version != "HTTP/1.0" {
		return http.StatusHTTPVersionNotSupported, "only HTTP/1.1 and HTTP/1.0 are spoken"
	}
	for _, l := range lines[1:] {
		if l == "" {
			return http.StatusBadRequest, "empty header line"
		}
		if l[0] == ' ' || l[0] == '\t' {
			return http.StatusBadRequest, "obsolete line folding in headers"
		}
	}
	var nCL, nTE, nHost int
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || !isToken(name) {
			return http.StatusBadRequest, fmt.Sprintf("malformed header field name %q", truncate(name, 40))
		}
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
				return http.StatusBadRequest, fmt.Sprintf("control byte 0x%02x in header %s", c, name)
			}
		}
		value = strings.Trim(value, " \t")
		switch strings.ToLower(name) {
		case "content-length":
			nCL++
			if value == "" || len(value) > 18 || strings.Trim(value, "0123456789") != "" {
				return http.StatusBadRequest, fmt.Sprintf("Content-Length %q is not a decimal number", truncate(value, 40))
			}
		case "transfer-encoding":
			nTE++
			if value == "" {
				return http.StatusBadRequest, "empty Transfer-Encoding"
			}
			if !strings.EqualFold(value, "chunked") {
				return http.StatusNotImplemented, fmt.Sprintf("Transfer-Encoding %q is not supported; only chunked is", truncate(value, 40))
			}
		case "host":
			nHost++
		}
	}
	switch {
	case nCL > 1:
		return http.StatusBadRequest, "more than one Content-Length header"
	case nTE > 1:
		return http.StatusBadRequest, "more than one Transfer-Encoding header"
	case nCL > 0 && nTE > 0:
		return http.StatusBadRequest, "both Content-Length and Transfer-Encoding (a request smuggling shape)"
	case nHost > 1:
		return http.StatusBadRequest, "more than one Host header"
	case nTE > 0 && version == "HTTP/1.0":
		return http.StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request"
	}
	return 0, ""
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuse records f as denied with rule and reason and answers status.
func (cc *conn) refuse(f *Flow, status int, rule, reason string) {
	f.Decision = policy.Decision{Rule: rule, Reason: reason}
	cc.p.recordDenied(f)
	cc.answer(status, f.Decision)
}

// answer writes a final plain-text response telling the agent why, and
// asks it to close the connection. Refusals carry X-Enclave-Denied; an
// allowed flow that failed upstream (502) carries X-Enclave-Error instead.
// Both carry X-Enclave-Rule.
func (cc *conn) answer(status int, d policy.Decision) {
	reason := headerSafe(d.Reason)
	what, hdr := "egress refused", "X-Enclave-Denied"
	if status == http.StatusBadGateway {
		what, hdr = "egress failed", "X-Enclave-Error"
	}
	body := fmt.Sprintf("enclave: %s: %s\nrule: %s\n", what, reason, headerSafe(d.Rule))
	cc.c.SetWriteDeadline(time.Now().Add(cc.p.idleTimeout))
	fmt.Fprintf(cc.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n%s: %s\r\nX-Enclave-Rule: %s\r\n\r\n%s",
		status, http.StatusText(status), len(body), hdr, reason, headerSafe(d.Rule), body)
	cc.bw.Flush()
}

// headerSafe keeps printable ASCII, replacing anything else with '?', so a
// reason quoting agent input cannot break the response framing.
func headerSafe(s string) string {
	b := []byte(truncate(s, 400))
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

// recordDenied records a denied flow (start and end) and counts it.
func (p *Proxy) recordDenied(f *Flow) {
	p.denied.Add(1)
	f.Duration = time.Since(f.Start)
	if err := p.rec.FlowStart(p.ctx, f); err != nil {
		p.log.Error("egress: record denied flow", "flow", f.ID, "err", err)
	}
	p.recordEnd(f)
}

func (p *Proxy) recordEnd(f *Flow) {
	f.Duration = time.Since(f.Start)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 10*time.Second)
	defer cancel()
	if err := p.rec.FlowEnd(ctx, f); err != nil {
		p.log.Error("egress: record flow end", "flow", f.ID, "err", err)
	}
	p.log.Debug("egress: flow", "flow", f.ID, "host", f.Host, "port", f.Port, "method", f.Method,
		"allow", f.Decision.Allow, "rule", f.Decision.Rule, "up", f.BytesUp, "down", f.BytesDown, "err", f.Err)
}

// admit runs the checks every allowed flow passes after the policy said
// yes: budget, address vetting, and the start record. It answers the
// agent and returns false when the flow may not go ahead.
func (cc *conn) admit(f *Flow, host string, ip netip.Addr, port int) bool {
	p := cc.p
	if p.budget.spent() {
		cc.refuse(f, http.StatusForbidden, RuleBudget,
			fmt.Sprintf("the session's byte budget of %d bytes is spent", p.budget.limit))
		return false
	}
	addrs, d, err := p.vet(p.ctx, host, ip, port)
	if err != nil {
		// The policy allowed the flow; it failed upstream.
		if rerr := p.rec.FlowStart(p.ctx, f); rerr != nil {
			p.log.Error("egress: record flow", "flow", f.ID, "err", rerr)
		}
		f.Err = err.Error()
		p.recordEnd(f)
		cc.answer(http.StatusBadGateway, policy.Decision{Rule: f.Decision.Rule, Reason: "cannot resolve " + host})
		return false
	}
	if !d.Allow {
		cc.refuse(f, http.StatusForbidden, d.Rule, d.Reason)
		return false
	}
	f.Resolved = addrs
	if err := p.rec.FlowStart(p.ctx, f); err != nil {
		p.log.Error("egress: flow refused: cannot record it", "flow", f.ID, "err", err)
		f.Decision = policy.Decision{Rule: RuleAudit, Reason: "the flow could not be recorded in the audit log, so it is not allowed"}
		p.denied.Add(1)
		p.recordEnd(f)
		cc.answer(http.StatusServiceUnavailable, f.Decision)
		return false
	}
	p.allowed.Add(1)
	return true
}

// forward serves one plain-HTTP request and reports whether the
// connection may carry another.
func (cc *conn) forward(req *http.Request, start time.Time, headLen int64) bool {
	p := cc.p
	f := cc.newFlow(start)
	f.Method, f.Scheme = req.Method, "http"
	rawPath, rawQuery, ok := splitTarget(req.RequestURI)
	switch {
	case !ok && strings.HasPrefix(strings.ToLower(req.RequestURI), "https://"):
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, "https:// URLs must go through CONNECT")
		return false
	case !ok:
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, "not a proxy request: the target must be an absolute http:// URL")
		return false
	}
	f.Path = rawPath
	if rawQuery != "" {
		f.Path += "?" + rawQuery
	}
	if req.URL.User != nil {
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, "credentials in the URL are refused")
		return false
	}
	host, ip, port, err := parseAuthority(req.URL.Host, 80)
	if err != nil {
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, err.Error())
		return false
	}
	f.Host, f.Port = host, port
	// A stricter check than the policy's own path matching: shapes that
	// servers read in different ways are refused for every host, not only
	// for hosts with path rules.
	if err := checkPath(rawPath); err != nil {
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, fmt.Sprintf("path %s: %v", truncate(rawPath, 200), err))
		return false
	}
	// The policy decodes and normalises the raw path itself.
	d := p.net.Decide(policy.Request{Host: host, Port: port, Method: req.Method, Path: rawPath})
	f.Decision = d
	if !d.Allow {
		cc.refuse(f, http.StatusForbidden, d.Rule, d.Reason)
		return false
	}
	if !p.authorize(f) {
		cc.refuse(f, http.StatusForbidden, f.Decision.Rule, f.Decision.Reason)
		return false
	}
	if exp := req.Header.Get("Expect"); exp != "" && !strings.EqualFold(exp, "100-continue") {
		cc.refuse(f, http.StatusExpectationFailed, RuleMalformed, "unsupported Expect header")
		return false
	}
	if req.ContentLength > 0 && req.ContentLength > p.budget.left() {
		cc.refuse(f, http.StatusForbidden, RuleBudget, fmt.Sprintf(
			"the request body of %d bytes exceeds what is left of the session's byte budget", req.ContentLength))
		return false
	}
	if !cc.admit(f, host, ip, port) {
		return false
	}
	keep, err := cc.roundTrip(f, req, headLen, ip.IsValid())
	if err != nil {
		f.Err = err.Error()
	}
	p.recordEnd(f)
	return keep && err == nil
}

// roundTrip sends an admitted request upstream and relays the response.
func (cc *conn) roundTrip(f *Flow, req *http.Request, headLen int64, literal bool) (keep bool, err error) {
	p := cc.p
	// The agent's request head counts: headers carry data as well as bodies.
	if !p.budget.takeExact(headLen) {
		f.Partial = true
		cc.answer(http.StatusForbidden, policy.Decision{Rule: RuleBudget, Reason: "the session's byte budget is spent"})
		return false, errBudget
	}
	f.BytesUp += headLen
	p.bytesUp.Add(headLen)

	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		cc.c.SetWriteDeadline(time.Now().Add(p.idleTimeout))
		cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := cc.bw.Flush(); err != nil {
			return false, err
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	// Cancel the exchange when nothing moves for IdleTimeout.
	watchdog := time.AfterFunc(p.idleTimeout, cancel)
	defer watchdog.Stop()
	var mu sync.Mutex
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		mu.Lock()
		f.Addr = i.Conn.RemoteAddr().String()
		mu.Unlock()
	}})
	ctx = context.WithValue(ctx, planKey{}, &dialPlan{addrs: f.Resolved, port: f.Port})

	hdr := req.Header.Clone()
	removeHopByHop(hdr)
	hdr.Del("Expect")
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = []string{""} // no Go default in its place
	}
	u := *req.URL
	u.User = nil
	u.Host = f.Host
	if strings.Contains(f.Host, ":") {
		u.Host = "[" + f.Host + "]"
	}
	if f.Port != 80 {
		u.Host += ":" + strconv.Itoa(f.Port)
	}
	up := &meteredBody{r: req.Body, p: p, watchdog: watchdog, idle: p.idleTimeout, done: make(chan struct{})}
	out := &http.Request{
		Method:        req.Method,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Host:          u.Host,
		ContentLength: req.ContentLength,
	}
	if req.ContentLength != 0 {
		out.Body = up
	} else {
		close(up.done)
		up.sawEOF = true
	}
	cc.c.SetReadDeadline(time.Time{}) // the watchdog bounds body reads
	resp, rtErr := p.transport.RoundTrip(out.WithContext(ctx))
	finishUp := func() {
		// The transport may still be sending the body; give it a moment.
		select {
		case <-up.done:
		case <-time.After(time.Second):
		}
		n := up.n.Load()
		f.BytesUp += n
	}
	if rtErr != nil {
		finishUp()
		f.Partial = f.BytesUp > headLen
		if errors.Is(rtErr, errBudget) {
			cc.answer(http.StatusForbidden, policy.Decision{Rule: RuleBudget, Reason: "the session's byte budget ran out while sending the request"})
			return false, errBudget
		}
		cc.answer(http.StatusBadGateway, policy.Decision{Rule: f.Decision.Rule, Reason: "upstream request failed"})
		return false, fmt.Errorf("upstream: %w", rtErr)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 {
		// The transport consumes 100 and 103 itself; a 101 cannot happen
		// since Upgrade is never forwarded. Relaying it would hand the
		// connection to a protocol the proxy does not parse.
		finishUp()
		cc.answer(http.StatusBadGateway, policy.Decision{Rule: f.Decision.Rule, Reason: fmt.Sprintf("upstream answered an unexpected %d", resp.StatusCode)})
		return false, fmt.Errorf("upstream answered %d", resp.StatusCode)
	}
	keep, err = cc.writeResponse(f, req, resp, watchdog)
	finishUp()
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		f.Partial = true
		return false, err
	}
	// A body the transport did not read to its end would be read as the
	// next request: close instead.
	if !up.sawEOFSafe() {
		keep = false
	}
	return keep && !req.Close && req.ProtoAtLeast(1, 1), nil
}

// writeResponse relays resp to the agent, framing it afresh.
func (cc *conn) writeResponse(f *Flow, req *http.Request, resp *http.Response, watchdog *time.Timer) (keep bool, err error) {
	p := cc.p
	h := resp.Header.Clone()
	removeHopByHop(h)
	h.Del("Content-Length")
	keep = true
	noBody := req.Method == http.MethodHead || resp.StatusCode/100 == 1 ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	chunked := false
	switch {
	case noBody:
		if req.Method == http.MethodHead && resp.ContentLength >= 0 {
			h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
	case resp.ContentLength >= 0:
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	case req.ProtoAtLeast(1, 1):
		h.Set("Transfer-Encoding", "chunked")
		chunked = true
	default:
		keep = false
	}
	if !keep || req.Close || !req.ProtoAtLeast(1, 1) {
		h.Set("Connection", "close")
	}
	status := resp.Status
	if len(status) < 3 || status[:3] != strconv.Itoa(resp.StatusCode) {
		status = strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	var head bytes.Buffer
	fmt.Fprintf(&head, "HTTP/1.1 %s\r\n", headerSafe(status))
	h.Write(&head)
	head.WriteString("\r\n")
	hn := int64(head.Len())
	if !p.budget.takeExact(hn) {
		return false, errBudget
	}
	f.BytesDown += hn
	p.bytesDown.Add(hn)
	cc.c.SetWriteDeadline(time.Now().Add(p.idleTimeout))
	cc.bw.Write(head.Bytes())
	if noBody {
		return keep, cc.bw.Flush()
	}
	var w io.Writer = cc.bw
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(cc.bw)
		w = cw
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		g := p.budget.take(int64(len(buf)))
		if g == 0 {
			cc.bw.Flush()
			return false, errBudget
		}
		n, rerr := resp.Body.Read(buf[:g])
		p.budget.refund(g - int64(n))
		if n > 0 {
			watchdog.Reset(p.idleTimeout)
			f.BytesDown += int64(n)
			p.bytesDown.Add(int64(n))
			cc.c.SetWriteDeadline(time.Now().Add(p.idleTimeout))
			if _, err := w.Write(buf[:n]); err != nil {
				return false, fmt.Errorf("write to agent: %w", err)
			}
			// Flush as data arrives so streamed responses stream.
			if err := cc.bw.Flush(); err != nil {
				return false, fmt.Errorf("write to agent: %w", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cc.bw.Flush()
			return false, fmt.Errorf("read upstream body: %w", rerr)
		}
	}
	if chunked {
		cw.Close()
		cc.bw.WriteString("\r\n")
	}
	return keep, cc.bw.Flush()
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopByHop headers are never forwarded, in either direction.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "Proxy-") {
			delete(h, k)
		}
	}
}

// meteredBody is the request body as sent upstream: it counts bytes,
// spends the budget as it goes, and never lets the transport drain an
// unbounded remainder on Close.
type meteredBody struct {
	r        io.Reader
	p        *Proxy
	watchdog *time.Timer
	idle     time.Duration
	n        atomic.Int64
	mu       sync.Mutex
	sawEOF   bool
	once     sync.Once
	done     chan struct{}
}

func (b *meteredBody) Read(buf []byte) (int, error) {
	g := b.p.budget.take(int64(len(buf)))
	if g == 0 && len(buf) > 0 {
		return 0, errBudget
	}
	n, err := b.r.Read(buf[:g])
	b.p.budget.refund(g - int64(n))
	if n > 0 {
		b.n.Add(int64(n))
		b.p.bytesUp.Add(int64(n))
		b.watchdog.Reset(b.idle)
	}
	if err == io.EOF {
		b.mu.Lock()
		b.sawEOF = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *meteredBody) Close() error {
	b.once.Do(func() { close(b.done) })
	return nil
}

func (b *meteredBody) sawEOFSafe() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sawEOF
}

// splitTarget splits an absolute-form http:// target into its raw path
// (at least "/") and raw query. ok is false for any other form.
func splitTarget(uri string) (rawPath, rawQuery string, ok bool) {
	const scheme = "http://"
	if len(uri) < len(scheme) || !strings.EqualFold(uri[:len(scheme)], scheme) {
		return "", "", false
	}
	rest := uri[len(scheme):]
	i := strings.IndexAny(rest, "/?")
	if i < 0 {
		return "/", "", true
	}
	rest = rest[i:]
	rawPath, rawQuery, _ = strings.Cut(rest, "?")
	if rawPath == "" {
		rawPath = "/"
	}
	return rawPath, rawQuery, true
}

// checkPath refuses raw request paths that servers read in different
// ways: invalid or control-byte escapes, a raw backslash, and dot segments
// in any reading (raw, decoded, with "%2F" and "%5C" taken as slashes, or
// with ";parameters" cut off, as some servers turn "/..;/" into "/../").
// Clients resolve dot segments before sending, so none is lost.
func checkPath(raw string) error {
	for _, keepSlash := range []bool{false, true} {
		s, err := decodePath(raw, keepSlash)
		if err != nil {
			return err
		}
		for seg := range strings.SplitSeq(s, "/") {
			seg, _, _ = strings.Cut(seg, ";")
			if seg == "." || seg == ".." {
				return errors.New("dot segment in path")
			}
		}
	}
	return nil
}

func decodePath(raw string, keepSlash bool) (string, error) {
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '\\':
			return "", errors.New("backslash in path")
		case '%':
			if i+2 >= len(raw) || unhex(raw[i+1]) < 0 || unhex(raw[i+2]) < 0 {
				return "", errors.New("malformed percent-encoding")
			}
			d := byte(unhex(raw[i+1])<<4 | unhex(raw[i+2]))
			i += 2
			switch {
			case d < ' ' || d == 0x7f:
				return "", fmt.Errorf("encoded control byte 0x%02x", d)
			case d == '?' || d == '#' || d == '%' || keepSlash && (d == '/' || d == '\\'):
				// Stays encoded: decoding it would change the path's shape.
				fmt.Fprintf(&b, "%%%02X", d)
			case d == '\\':
				b.WriteByte('/')
			default:
				b.WriteByte(d)
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
