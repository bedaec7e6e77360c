package egress

// The DNS responder answers the sandbox's 127.0.0.1:53. It never forwards
// a query: for a name the policy allows it looks the name up on the host
// (the same lookup the proxy would make for that name) and answers A
// records, filtered like the proxy's dial targets; for anything else it
// answers REFUSED. AAAA, TXT, NULL and every other type get an empty
// answer, so no data comes back into the sandbox through DNS and nothing
// the agent puts in a query name goes further than Enclave's own record.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/enclave-dev/enclave/internal/policy"
)

const (
	dnsTTL          = 30
	dnsMaxAnswers   = 8
	dnsMaxInflight  = 64
	dnsTCPIdle      = 10 * time.Second
	dnsLookupBudget = 3 * time.Second
)

// ServeDNS answers DNS queries arriving on pc (UDP). It returns ErrClosed
// after Close, or pc's error. pc is closed when ServeDNS returns.
func (p *Proxy) ServeDNS(pc net.PacketConn) error {
	if !p.track(pc) {
		pc.Close()
		return ErrClosed
	}
	defer p.untrack(pc)
	defer pc.Close()
	sem := make(chan struct{}, dnsMaxInflight)
	buf := make([]byte, 4096)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if p.isClosed() {
				return ErrClosed
			}
			if isTemporary(err) || isTimeout(err) {
				continue
			}
			return fmt.Errorf("egress: dns read: %w", err)
		}
		msg := bytes.Clone(buf[:n])
		select {
		case sem <- struct{}{}:
		case <-p.ctx.Done():
			return ErrClosed
		}
		if !p.goTracked(func() {
			defer func() { <-sem }()
			client := ""
			if addr != nil {
				client = addr.String()
			}
			if resp := p.answerDNS(msg, "udp", client); resp != nil {
				pc.WriteTo(resp, addr)
			}
		}) {
			return ErrClosed
		}
	}
}

// ServeDNSTCP answers DNS over TCP (RFC 7766 framing) on l. It returns
// ErrClosed after Close, or l's error. l is closed when it returns.
func (p *Proxy) ServeDNSTCP(l net.Listener) error {
	if !p.track(l) {
		l.Close()
		return ErrClosed
	}
	defer p.untrack(l)
	defer l.Close()
	sem := make(chan struct{}, dnsMaxInflight)
	for {
		select {
		case sem <- struct{}{}:
		case <-p.ctx.Done():
			return ErrClosed
		}
		c, err := l.Accept()
		if err != nil {
			<-sem
			if p.isClosed() {
				return ErrClosed
			}
			if isTemporary(err) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("egress: dns accept: %w", err)
		}
		if !p.trackConn(c) {
			c.Close()
			return ErrClosed
		}
		go func() {
			defer func() { <-sem }()
			defer p.untrackConn(c)
			defer c.Close()
			p.serveDNSConn(c)
		}()
	}
}

func (p *Proxy) serveDNSConn(c net.Conn) {
	client := ""
	if ra := c.RemoteAddr(); ra != nil {
		client = ra.String()
	}
	var lenBuf [2]byte
	for {
		c.SetDeadline(time.Now().Add(dnsTCPIdle))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp := p.answerDNS(msg, "tcp", client)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// goTracked runs f on a goroutine Close waits for; false if closed.
func (p *Proxy) goTracked(f func()) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// answerDNS answers one DNS message, recording it. It returns nil when no
// answer is due (the message is too short to carry an ID, or is itself a
// response).
func (p *Proxy) answerDNS(msg []byte, transport, client string) []byte {
	q := DNSQuery{Time: time.Now(), Transport: transport, Client: client}
	var parser dnsmessage.Parser
	h, err := parser.Start(msg)
	if err != nil || h.Response {
		q.Reason = "not a DNS query"
		if err != nil {
			q.Reason = "message does not parse: " + err.Error()
		}
		if rerr := p.rec.DNSQuery(p.ctx, q); rerr != nil {
			p.log.Error("egress: record dns query", "err", rerr)
		}
		return nil
	}
	var question *dnsmessage.Question
	rcode, answers := dnsmessage.RCodeSuccess, []netip.Addr(nil)
	qs, err := parser.AllQuestions()
	switch {
	case err != nil:
		rcode, q.Reason = dnsmessage.RCodeFormatError, "question section does not parse: "+err.Error()
	case len(qs) != 1:
		rcode, q.Reason = dnsmessage.RCodeFormatError, fmt.Sprintf("%d questions; exactly one is answered", len(qs))
	case h.OpCode != 0:
		question = &qs[0]
		rcode, q.Reason = dnsmessage.RCodeNotImplemented, fmt.Sprintf("opcode %d is not answered", h.OpCode)
	default:
		question = &qs[0]
		q.Name, q.Type = question.Name.String(), typeName(question.Type)
		rcode, answers, q.Reason = p.decideDNS(question)
	}
	q.Rcode, q.Answers = rcodeName(rcode), answers
	if err := p.rec.DNSQuery(p.ctx, q); err != nil {
		p.log.Error("egress: dns query refused: cannot record it", "name", q.Name, "err", err)
		rcode, answers = dnsmessage.RCodeServerFailure, nil
	}
	resp, err := buildDNS(h, question, rcode, answers)
	if err != nil {
		p.log.Error("egress: bug: build dns answer", "err", err)
		return nil
	}
	return resp
}

// decideDNS answers one well-formed question.
func (p *Proxy) decideDNS(question *dnsmessage.Question) (dnsmessage.RCode, []netip.Addr, string) {
	name := policy.NormalizeHost(question.Name.String())
	switch {
	case question.Class != dnsmessage.ClassINET:
		return dnsmessage.RCodeRefused, nil, "only class IN is answered"
	case !p.net.DNS:
		return dnsmessage.RCodeRefused, nil, "the policy does not enable DNS answers"
	case checkName(name) != nil:
		return dnsmessage.RCodeRefused, nil, "not a host name the proxy accepts: " + checkName(name).Error()
	case !p.net.AllowsName(name):
		return dnsmessage.RCodeRefused, nil, fmt.Sprintf("%s is not on the policy's network allowlist", name)
	}
	if why := p.nameRefusal(name); why != "" {
		return dnsmessage.RCodeRefused, nil, fmt.Sprintf("%s: %s", name, why)
	}
	if question.Type != dnsmessage.TypeA {
		return dnsmessage.RCodeSuccess, nil, fmt.Sprintf("allowed name; no %s data is ever answered (A only)", typeName(question.Type))
	}
	ctx, cancel := context.WithTimeout(p.ctx, dnsLookupBudget)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return dnsmessage.RCodeNameError, nil, "host lookup: name not found"
		}
		return dnsmessage.RCodeServerFailure, nil, "host lookup failed: " + err.Error()
	}
	var out, dropped []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		if ForbiddenReason(a) != "" && !namesIP(p.net, a) {
			dropped = append(dropped, a)
			continue
		}
		if len(out) < dnsMaxAnswers {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if len(dropped) > 0 {
			return dnsmessage.RCodeRefused, nil, fmt.Sprintf("%s resolves only to refused addresses %v", name, dropped)
		}
		return dnsmessage.RCodeSuccess, nil, "host lookup returned no IPv4 address"
	}
	reason := "allowed name"
	if len(dropped) > 0 {
		reason = fmt.Sprintf("allowed name; refused addresses %v left out", dropped)
	}
	return dnsmessage.RCodeSuccess, out, reason
}

func buildDNS(h dnsmessage.Header, question *dnsmessage.Question, rcode dnsmessage.RCode, answers []netip.Addr) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		OpCode:             h.OpCode,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: true,
		RCode:              rcode,
	})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if question != nil {
		if err := b.Question(*question); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range answers {
		rh := dnsmessage.ResourceHeader{Name: question.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

func typeName(t dnsmessage.Type) string {
	s := t.String()
	if n, ok := strings.CutPrefix(s, "Type"); ok {
		return n
	}
	return "TYPE" + s
}

func rcodeName(r dnsmessage.RCode) string {
	s := r.String()
	if n, ok := strings.CutPrefix(s, "RCode"); ok {
		return n
	}
	return "RCODE" + s
}
