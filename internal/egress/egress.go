// Package egress is Enclave's egress proxy and in-sandbox DNS responder.
//
// The sandbox's network namespace holds loopback only. The agent's
// HTTP_PROXY, HTTPS_PROXY and ALL_PROXY point at a port that the sandbox
// hands to this package as a [net.Listener]; [Proxy.Serve] answers it from
// the host side and dials out from the host. [Proxy.ServeDNS] and
// [Proxy.ServeDNSTCP] answer the sandbox's 127.0.0.1:53.
//
// # What the proxy guarantees
//
//   - A flow is served only if the policy's network allowlist
//     ([policy.Network.Decide]) allows its host, port and, for plain HTTP,
//     its method and path. Everything else gets a 403 with a plain-text body
//     and an X-Enclave-Denied header saying why.
//   - With [Config.Authorize] set, a flow the allowlist allowed is also put
//     to that second decision point (Enclave's Cedar policies) and refused
//     unless it allows; an error there refuses too. It can never open a
//     flow the allowlist refused.
//   - IP literals are refused unless a rule names that exact IP. Names are
//     resolved on the host; if any resolved address is loopback, private,
//     CGNAT, link-local, multicast, unspecified, reserved, cloud metadata, or
//     an IPv4-mapped, NAT64 or 6to4 form of those, the flow is refused (a
//     mix of public and private answers is what DNS rebinding looks like).
//     The proxy then dials the vetted address, never the name again.
//   - Public IPv6 upstreams are allowed: an allowlisted host reached over
//     IPv6 is the same host. The DNS responder never returns AAAA records,
//     because nothing inside the sandbox can route to them anyway.
//   - Every flow is recorded through [Recorder] before any byte goes
//     upstream; if the record fails, the flow is refused. Its end is
//     recorded with bytes each way, the address dialled and the duration.
//   - One byte budget covers every flow of the proxy in both directions. It
//     is enforced mid-stream: the flow that crosses it is cut and recorded
//     as partial, and later flows are refused.
//   - Requests that parse ambiguously are refused rather than guessed at:
//     Content-Length with Transfer-Encoding, repeated Content-Length or
//     Host, obs-fold, bare CR or LF, unknown transfer codings, CONNECT with
//     a body or to a target that is not host:port, paths with dot segments
//     (also percent-encoded ones).
//
// # What it does not guarantee
//
// An allowlisted host is still a channel: a CONNECT tunnel to it is opaque,
// so method and path rules only apply to plain HTTP (the policy refuses
// CONNECT to hosts with such rules unless told otherwise). A wildcard rule
// lets the agent choose the name the host resolver looks up, so the owner
// of that domain's DNS sees query names. The byte budget and the flow record
// are the defence there. DNS queries never leave the host for names off the
// allowlist, but query names themselves carry a few bytes to Enclave's own
// record; TXT, NULL and other data-carrying types are answered with no data.
//
// The proxy speaks HTTP/1.x only on the agent side; TLS is never terminated.
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclave-dev/enclave/internal/policy"
)

// Defaults used when a [Config] field is zero.
const (
	DefaultByteBudget     = 1 << 30 // 1 GiB, both directions together
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultDialTimeout    = 10 * time.Second
	DefaultMaxHeaderBytes = 32 << 10
	DefaultMaxConns       = 512
)

// ErrClosed is returned by the Serve methods after [Proxy.Close].
var ErrClosed = errors.New("egress: proxy closed")

// Flow is one request (plain HTTP) or one tunnel (CONNECT) as recorded.
type Flow struct {
	// ID is unique within one Proxy.
	ID string
	// Client is the agent-side remote address, as the listener reports it.
	Client string
	// Host is the host the agent asked for, normalised (lowercase, no
	// trailing dot, no brackets); "" if the request did not parse.
	Host string
	Port int
	// Method is the HTTP method, "CONNECT" for tunnels.
	Method string
	// Path is the raw request path and query of a plain HTTP request;
	// "" for CONNECT.
	Path string
	// Scheme is "http" for plain HTTP, "connect" for tunnels.
	Scheme   string
	Decision policy.Decision
	// Policies are the ids of the policies of Config.Authorize's decision
	// (nil without Authorize, or when the network policy refused first).
	Policies []string
	// Resolved lists the vetted addresses the proxy may dial, set before
	// FlowStart for allowed flows.
	Resolved []netip.Addr
	// Addr is the IP:port actually dialled; set by FlowEnd.
	Addr string
	// BytesUp counts bytes from the agent towards the upstream (request
	// body, or tunnel payload); BytesDown the other way (response status,
	// headers and body, or tunnel payload).
	BytesUp, BytesDown int64
	Start              time.Time
	Duration           time.Duration
	// Err describes how an allowed flow failed; "" on success.
	Err string
	// Partial is true when the flow was cut before it finished: byte
	// budget, idle timeout, or an upstream or client error mid-stream.
	Partial bool
}

// DNSQuery is one query received by the DNS responder.
type DNSQuery struct {
	Time time.Time
	// Transport is "udp" or "tcp"; Client the querier's address.
	Transport, Client string
	// Name is the queried name as received (with its trailing dot); Type
	// the query type ("A", "TXT", "TYPE65", ...). Both are "" for a message
	// that did not parse.
	Name, Type string
	// Rcode is the answer's response code ("Success", "Refused", ...).
	Rcode string
	// Answers lists the addresses returned; empty if none.
	Answers []netip.Addr
	// Reason says why the query got the answer it got.
	Reason string
}

// Recorder durably records egress events, typically into the audit log.
// Implementations must be safe for concurrent use.
type Recorder interface {
	// FlowStart records a flow's decision. For an allowed flow it is called
	// before any byte goes upstream, and an error refuses the flow (fail
	// closed). Denied flows are recorded the same way; an error there is
	// logged. The Flow must not be retained: the proxy keeps filling it.
	FlowStart(ctx context.Context, f *Flow) error
	// FlowEnd records a flow's outcome: bytes, dialled address, duration,
	// error. It is called once for every flow whose FlowStart was called.
	FlowEnd(ctx context.Context, f *Flow) error
	// DNSQuery records one DNS query. If it fails the query is answered
	// SERVFAIL with no data.
	DNSQuery(ctx context.Context, q DNSQuery) error
}

// Resolver resolves host names on the host side; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a [Proxy]. Network and Recorder are required.
type Config struct {
	// Network is the policy's network section. The proxy reads it
	// concurrently and never writes it; the caller must not change it
	// while the proxy runs.
	Network *policy.Network
	// Recorder records every flow and DNS query.
	Recorder Recorder
	// Resolver resolves names; nil means net.DefaultResolver.
	Resolver Resolver
	// Dial dials upstream addresses (always an IP:port); nil means a
	// net.Dialer. Tests replace it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ByteBudget caps bytes in both directions over all flows. 0 means
	// Network.ByteBudget, and if that is 0 too, DefaultByteBudget.
	ByteBudget int64
	// Logger receives diagnostics (never request bodies); nil discards.
	Logger *slog.Logger
	// HeaderTimeout bounds reading one request's header block.
	HeaderTimeout time.Duration
	// IdleTimeout closes tunnels and connections with no bytes moving in
	// either direction for this long.
	IdleTimeout time.Duration
	// DialTimeout bounds each upstream dial attempt.
	DialTimeout time.Duration
	// MaxHeaderBytes bounds the request line plus headers; larger
	// requests get 431.
	MaxHeaderBytes int
	// MaxConns bounds concurrent agent connections; further accepts wait.
	MaxConns int
	// Authorize, if set, is a second decision point (Enclave's Cedar
	// policies) asked about every flow the network policy allowed, before
	// anything is dialled; it is never asked about a refused flow, so it
	// can only narrow. An error refuses the flow (fail closed). It is on
	// the hot path: it must be fast and safe for concurrent use.
	Authorize func(ctx context.Context, f *Flow) (Authorization, error)
}

// Authorization is Config.Authorize's answer.
type Authorization struct {
	Allow bool
	// Policies are the ids of the policies that decided; Reason says why
	// for the agent and the record.
	Policies []string
	Reason   string
}

// nameRefusal puts a name the allowlist lets the DNS responder answer to
// Config.Authorize, as a flow with method and scheme "dns" and port 0, and
// returns why it refuses ("" when it does not): a policy that forbids the
// host by name (whatever the port) also stops its lookups, which would
// otherwise carry data in query names to the domain's DNS servers.
func (p *Proxy) nameRefusal(name string) string {
	if p.authz == nil {
		return ""
	}
	f := &Flow{Host: name, Method: "DNS", Scheme: "dns", Decision: policy.Decision{Allow: true, Rule: "network.dns"}}
	if p.authorize(f) {
		return ""
	}
	return f.Decision.Reason
}

// RuleAuthz is the rule of a flow Config.Authorize refused.
const RuleAuthz = "egress.authz"

// authorize puts a flow the network policy allowed to Config.Authorize.
// It returns false, with f.Decision saying why, when the flow is refused.
func (p *Proxy) authorize(f *Flow) bool {
	if p.authz == nil {
		return true
	}
	a, err := p.authz(p.ctx, f)
	f.Policies = a.Policies
	switch {
	case err != nil:
		f.Decision = policy.Decision{Rule: RuleAuthz, Reason: "the authorisation policy could not decide, so the flow is refused: " + err.Error()}
		return false
	case !a.Allow:
		f.Decision = policy.Decision{Rule: RuleAuthz, Reason: a.Reason}
		return false
	}
	return true
}

// Proxy is the egress proxy of one session. Its methods are safe for
// concurrent use.
type Proxy struct {
	net      *policy.Network
	rec      Recorder
	authz    func(ctx context.Context, f *Flow) (Authorization, error)
	resolver Resolver
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	log      *slog.Logger

	headerTimeout, idleTimeout, dialTimeout time.Duration
	maxHeader                               int

	budget    budget
	bytesUp   atomic.Int64
	bytesDown atomic.Int64
	allowed   atomic.Int64
	denied    atomic.Int64
	flowSeq   atomic.Uint64

	transport *http.Transport
	sem       chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[io.Closer]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// New returns a proxy for cfg. It fails if a required field is missing or
// a limit is negative.
func New(cfg Config) (*Proxy, error) {
	if cfg.Network == nil {
		return nil, errors.New("egress: Config.Network is required")
	}
	if cfg.Recorder == nil {
		return nil, errors.New("egress: Config.Recorder is required: every flow must be recorded")
	}
	if cfg.ByteBudget < 0 || cfg.HeaderTimeout < 0 || cfg.IdleTimeout < 0 || cfg.DialTimeout < 0 || cfg.MaxHeaderBytes < 0 || cfg.MaxConns < 0 {
		return nil, errors.New("egress: negative limit in Config")
	}
	p := &Proxy{
		net:           cfg.Network,
		rec:           cfg.Recorder,
		authz:         cfg.Authorize,
		resolver:      cfg.Resolver,
		dial:          cfg.Dial,
		log:           cfg.Logger,
		headerTimeout: orDefault(cfg.HeaderTimeout, DefaultHeaderTimeout),
		idleTimeout:   orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		dialTimeout:   orDefault(cfg.DialTimeout, DefaultDialTimeout),
		maxHeader:     orDefault(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes),
		sem:           make(chan struct{}, orDefault(cfg.MaxConns, DefaultMaxConns)),
		listeners:     map[io.Closer]struct{}{},
		conns:         map[net.Conn]struct{}{},
	}
	if p.resolver == nil {
		p.resolver = net.DefaultResolver
	}
	if p.dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		p.dial = d.DialContext
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.budget.limit = cfg.ByteBudget
	if p.budget.limit == 0 {
		p.budget.limit = cfg.Network.ByteBudget
	}
	if p.budget.limit <= 0 {
		p.budget.limit = DefaultByteBudget
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.transport = &http.Transport{
		// Never a proxy from the environment: this is the proxy.
		Proxy:       nil,
		DialContext: p.dialPlanned,
		// The agent's Accept-Encoding goes through untouched; the
		// transport must not add gzip and decode it behind the agent.
		DisableCompression:     true,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  p.idleTimeout,
		MaxResponseHeaderBytes: 1 << 20,
		ForceAttemptHTTP2:      false,
	}
	return p, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Stats returns the bytes moved in each direction over all flows, and the
// number of flows allowed and denied so far.
func (p *Proxy) Stats() (bytesUp, bytesDown, allowed, denied int64) {
	return p.bytesUp.Load(), p.bytesDown.Load(), p.allowed.Load(), p.denied.Load()
}

// Close stops every Serve method, closes every agent connection and tunnel,
// and waits for their flows to be recorded. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	for l := range p.listeners {
		l.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.transport.CloseIdleConnections()
	p.wg.Wait()
	return nil
}

// track registers a listener or packet conn so Close can stop it. It
// reports false if the proxy is already closed.
func (p *Proxy) track(l io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.listeners[l] = struct{}{}
	return true
}

func (p *Proxy) untrack(l io.Closer) {
	p.mu.Lock()
	delete(p.listeners, l)
	p.mu.Unlock()
}

// trackConn registers an accepted connection and adds it to the wait group.
func (p *Proxy) trackConn(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrackConn(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Serve answers agent connections on l: HTTP/1.x forward-proxy requests in
// absolute form and CONNECT. It returns ErrClosed after Close, or the
// listener's error. l is closed when Serve returns.
func (p *Proxy) Serve(l net.Listener) error {
	if !p.track(l) {
		l.Close()
		return ErrClosed
	}
	defer p.untrack(l)
	defer l.Close()
	var backoff time.Duration
	for {
		select {
		case p.sem <- struct{}{}:
		case <-p.ctx.Done():
			return ErrClosed
		}
		c, err := l.Accept()
		if err != nil {
			<-p.sem
			if p.isClosed() {
				return ErrClosed
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("egress: accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("egress: accept: %w", err)
		}
		backoff = 0
		if !p.trackConn(c) {
			c.Close()
			<-p.sem
			return ErrClosed
		}
		go func() {
			defer func() { <-p.sem }()
			defer p.untrackConn(c)
			p.serveConn(c)
		}()
	}
}

// isTemporary reports whether accept failed for a reason worth retrying,
// such as running out of file descriptors.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// budget is a byte budget shared by every flow of a proxy. Flows reserve
// bytes before moving them and refund what they did not use, so the sum
// moved never exceeds the limit.
type budget struct {
	limit int64
	used  atomic.Int64
	// exhausted is set once a flow was cut for lack of budget: from then
	// on every new flow is refused, even if the cut flow refunded a little.
	exhausted atomic.Bool
}

// take reserves up to n bytes and returns how many it reserved. Near the
// end of the budget it hands out at most a quarter of what is left (and
// at least 16 KiB while that much remains), so one direction of a tunnel
// cannot starve the other by reserving everything. 0 means the budget is
// spent, and marks it exhausted.
func (b *budget) take(n int64) int64 {
	for {
		u := b.used.Load()
		avail := b.limit - u
		if avail <= 0 || n <= 0 {
			if n > 0 {
				b.exhausted.Store(true)
			}
			return 0
		}
		g := min(n, max(avail/4, min(avail, 16<<10)))
		if b.used.CompareAndSwap(u, u+g) {
			return g
		}
	}
}

// takeExact reserves exactly n bytes, or nothing (marking the budget
// exhausted) if fewer than n are left.
func (b *budget) takeExact(n int64) bool {
	for {
		u := b.used.Load()
		if b.limit-u < n {
			b.exhausted.Store(true)
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// left returns the bytes not yet reserved.
func (b *budget) left() int64 { return max(b.limit-b.used.Load(), 0) }

// refund returns reserved bytes that were not used.
func (b *budget) refund(n int64) {
	if n > 0 {
		b.used.Add(-n)
	}
}

func (b *budget) spent() bool { return b.exhausted.Load() || b.used.Load() >= b.limit }
