package egress

import (
	"fmt"
	"net/http"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// connect serves a CONNECT request: decide, admit, dial, answer 200, then
// relay bytes both ways until either side is done, the budget is spent,
// or nothing moves for IdleTimeout.
func (cc *conn) connect(req *http.Request, start time.Time) {
	p := cc.p
	f := cc.newFlow(start)
	f.Method, f.Scheme = http.MethodConnect, "connect"
	host, ip, port, err := parseAuthority(req.RequestURI, 0)
	if err != nil {
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, "CONNECT target must be host:port: "+err.Error())
		return
	}
	f.Host, f.Port = host, port
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		cc.refuse(f, http.StatusBadRequest, RuleMalformed, "CONNECT request with a body")
		return
	}
	f.Decision = p.net.Decide(policy.Request{Host: host, Port: port, Method: http.MethodConnect})
	if !f.Decision.Allow {
		cc.refuse(f, http.StatusForbidden, f.Decision.Rule, f.Decision.Reason)
		return
	}
	if !p.authorize(f) {
		cc.refuse(f, http.StatusForbidden, f.Decision.Rule, f.Decision.Reason)
		return
	}
	if !cc.admit(f, host, ip, port) {
		return
	}
	defer p.recordEnd(f)
	up, err := p.dialVetted(p.ctx, f.Resolved, port)
	if err != nil {
		f.Err = err.Error()
		cc.answer(http.StatusBadGateway, policy.Decision{Rule: f.Decision.Rule, Reason: fmt.Sprintf("cannot connect to %s port %d", host, port)})
		return
	}
	defer up.Close()
	f.Addr = up.RemoteAddr().String()
	cc.c.SetWriteDeadline(time.Now().Add(p.idleTimeout))
	cc.bw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := cc.bw.Flush(); err != nil {
		f.Err, f.Partial = "answer agent: "+err.Error(), true
		return
	}
	cc.c.SetWriteDeadline(time.Time{})
	// Bytes the agent sent after the CONNECT head and before our 200 belong
	// to the tunnel (a TLS ClientHello sent early). They are never read as
	// HTTP; they go to the host the policy allowed, after the 200, counted.
	if n := cc.br.Buffered(); n > 0 {
		early, _ := cc.br.Peek(n)
		if !p.budget.takeExact(int64(n)) {
			f.Err, f.Partial = errBudget.Error(), true
			return
		}
		up.SetWriteDeadline(time.Now().Add(p.idleTimeout))
		_, werr := up.Write(early)
		up.SetWriteDeadline(time.Time{})
		f.BytesUp += int64(n)
		p.bytesUp.Add(int64(n))
		cc.br.Discard(n)
		if werr != nil {
			f.Err, f.Partial = "write upstream: "+werr.Error(), true
			return
		}
	}
	nUp, nDown, err := p.relay(cc.c, up)
	f.BytesUp += nUp
	f.BytesDown += nDown
	switch {
	case err != nil:
		f.Err, f.Partial = err.Error(), true
	case p.isClosed():
		f.Err, f.Partial = "proxy closed", true
	}
}
