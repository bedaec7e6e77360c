package egress

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// relayChunk is how much budget one copy step reserves. Large enough that
// the kernel's splice moves most of a transfer without returning to Go.
const relayChunk = 1 << 20

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

// relay copies bytes between the agent side a and the upstream b until
// both directions end. It returns bytes moved each way and the first
// error other than a clean end of stream.
//
// Each direction copies in budget-sized chunks with io.Copy over an
// io.LimitedReader, which keeps the kernel's splice path between two
// *net.TCPConn. Idle detection uses short read deadlines ("ticks"): a
// direction whose read times out checks when the tunnel last moved a byte
// in either direction and only gives up once that is IdleTimeout ago.
func (p *Proxy) relay(a, b net.Conn) (up, down int64, err error) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	tick := max(p.idleTimeout/4, 10*time.Millisecond)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	fail := func(e error) {
		errOnce.Do(func() {
			first = e
			a.Close()
			b.Close()
		})
	}
	pump := func(dst, src net.Conn, n *int64, total *atomic.Int64, what string) {
		defer wg.Done()
		for {
			g := p.budget.take(relayChunk)
			if g == 0 {
				fail(fmt.Errorf("%s: %w", what, errBudget))
				return
			}
			lr := &io.LimitedReader{R: src, N: g}
			src.SetReadDeadline(time.Now().Add(tick))
			c, cerr := io.Copy(dst, lr)
			p.budget.refund(g - c)
			*n += c
			total.Add(c)
			now := time.Now()
			if c > 0 {
				last.Store(now.UnixNano())
			}
			switch {
			case cerr != nil && isTimeout(cerr):
				if now.Sub(time.Unix(0, last.Load())) >= p.idleTimeout {
					fail(fmt.Errorf("%s: %w after %s", what, errIdle, p.idleTimeout))
					return
				}
			case cerr != nil:
				if !errors.Is(cerr, net.ErrClosed) {
					fail(fmt.Errorf("%s: %w", what, cerr))
				}
				fail(nil)
				return
			case c < g:
				// End of stream: pass the half-close on and let the other
				// direction finish.
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				return
			}
		}
	}
	wg.Add(2)
	go pump(b, a, &up, &p.bytesUp, "agent to upstream")
	pump(a, b, &down, &p.bytesDown, "upstream to agent")
	wg.Wait()
	return up, down, first
}
