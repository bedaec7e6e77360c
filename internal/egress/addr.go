package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/enclave-dev/enclave/internal/policy"
)

// Decision rules the proxy itself applies, beside the policy's own
// ("network.allow[N]", "default-deny").
const (
	RuleIPLiteral = "egress.ip-literal" // an IP literal no rule names
	RuleAddress   = "egress.address"    // a name resolved to a forbidden address
	RuleBudget    = "egress.budget"     // the byte budget is spent
	RuleMalformed = "egress.malformed"  // the request did not parse unambiguously
	RuleAudit     = "egress.audit"      // the flow could not be recorded
)

type prefixReason struct {
	p      netip.Prefix
	reason string
}

// forbidden4 lists IPv4 ranges never dialled unless a rule names the exact
// IP. Order matters only for the reason given: specific entries first.
var forbidden4 = []prefixReason{
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("100.100.100.200/32"), "cloud metadata"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified or this-network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved or broadcast"},
}

// forbidden6 lists IPv6 ranges inside 2000::/3 (global unicast) that are
// still refused; everything outside 2000::/3 is refused too, except NAT64
// whose embedded IPv4 address is judged instead.
var forbidden6 = []prefixReason{
	{netip.MustParsePrefix("2001::/23"), "IETF special purpose (Teredo, benchmarking, ORCHID)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	global6   = netip.MustParsePrefix("2000::/3")
	ula       = netip.MustParsePrefix("fc00::/7")
	metadata6 = netip.MustParseAddr("fd00:ec2::254")
)

// ForbiddenReason says why a may not be dialled unless a policy rule names
// it exactly ("loopback", "private", "cloud metadata", ...), or returns ""
// for a public unicast address. IPv4-mapped addresses are judged by the
// IPv4 address they carry, as are NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
func ForbiddenReason(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid address"
	}
	if a.Zone() != "" {
		return "scoped address"
	}
	a = a.Unmap()
	if a.Is4() {
		for _, f := range forbidden4 {
			if f.p.Contains(a) {
				return f.reason
			}
		}
		return ""
	}
	switch {
	case a == metadata6:
		return "cloud metadata"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsMulticast():
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case ula.Contains(a):
		return "unique local (private)"
	case nat64.Contains(a):
		b := a.As16()
		if r := ForbiddenReason(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
			return "NAT64 of " + r
		}
		return ""
	case sixToFour.Contains(a):
		b := a.As16()
		if r := ForbiddenReason(netip.AddrFrom4([4]byte(b[2:6]))); r != "" {
			return "6to4 of " + r
		}
		return ""
	case !global6.Contains(a):
		// Site-local, IPv4-compatible, discard-only, local-use NAT64 and
		// every range not yet allocated for global unicast.
		return "not global unicast"
	}
	for _, f := range forbidden6 {
		if f.p.Contains(a) {
			return f.reason
		}
	}
	return ""
}

var errBadHost = errors.New("bad host")

// parseAuthority validates a request's authority ("host", "host:port",
// "[v6]:port"). It returns the normalised host, the address for an IP
// literal, and the port (defaultPort if none is given and defaultPort is
// not 0). Brackets are required around IPv6 literals and allowed nowhere
// else; the port is plain decimal in 1..65535.
func parseAuthority(auth string, defaultPort int) (host string, ip netip.Addr, port int, err error) {
	var hostPart, portPart string
	hasPort := false
	if rest, ok := strings.CutPrefix(auth, "["); ok {
		i := strings.IndexByte(rest, ']')
		if i < 0 {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: unclosed bracket in %q", errBadHost, auth)
		}
		hostPart, rest = rest[:i], rest[i+1:]
		a, perr := netip.ParseAddr(hostPart)
		if perr != nil || !a.Is6() || a.Zone() != "" {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: %q is not an IPv6 literal", errBadHost, hostPart)
		}
		ip = a
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return "", netip.Addr{}, 0, fmt.Errorf("%w: junk after IPv6 literal in %q", errBadHost, auth)
			}
			portPart, hasPort = p, true
		}
	} else {
		hostPart = auth
		if i := strings.LastIndexByte(auth, ':'); i >= 0 {
			hostPart, portPart, hasPort = auth[:i], auth[i+1:], true
		}
		if strings.ContainsAny(hostPart, ":[]") {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: %q (IPv6 literals need brackets)", errBadHost, auth)
		}
		if a, perr := netip.ParseAddr(hostPart); perr == nil {
			ip = a
		} else if err := checkName(policy.NormalizeHost(hostPart)); err != nil {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: %q: %v", errBadHost, hostPart, err)
		}
	}
	switch {
	case hasPort:
		if len(portPart) == 0 || len(portPart) > 5 || strings.Trim(portPart, "0123456789") != "" {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: bad port %q", errBadHost, portPart)
		}
		for _, c := range portPart {
			port = port*10 + int(c-'0')
		}
		if port < 1 || port > 65535 {
			return "", netip.Addr{}, 0, fmt.Errorf("%w: port %d out of range", errBadHost, port)
		}
	case defaultPort != 0:
		port = defaultPort
	default:
		return "", netip.Addr{}, 0, fmt.Errorf("%w: %q names no port", errBadHost, auth)
	}
	return policy.NormalizeHost(hostPart), ip, port, nil
}

// checkName accepts lowercase DNS names made of letters, digits, hyphens
// and underscores. A name whose last label is numeric ("127.1",
// "2130706433", "0x7f.1") is refused: resolvers treat such names as IP
// literals in forms the proxy does not parse, which is a classic way to
// reach loopback past a filter.
func checkName(name string) error {
	if len(name) > 253 {
		return errors.New("name longer than 253 bytes")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return errors.New("label longer than 63 bytes")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed in a host name", c)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" ||
		strings.HasPrefix(last, "0x") && strings.Trim(last[2:], "0123456789abcdef") == "" {
		return errors.New("numeric host that is not a plain IP literal")
	}
	return nil
}

// namesIP reports whether some rule of n names addr exactly, on any port.
func namesIP(n *policy.Network, addr netip.Addr) bool {
	for _, r := range n.Allow {
		ip, err := netip.ParseAddr(policy.NormalizeHost(r.Host))
		if err == nil && ip.Unmap() == addr.Unmap() {
			return true
		}
	}
	return false
}

// errResolve marks a name that did not resolve: an upstream failure, not a
// policy denial.
var errResolve = errors.New("resolve")

// vet returns the addresses the proxy may dial for host:port. A denial
// comes back as a Decision with Allow false; a resolution failure as an
// error wrapping errResolve. The resolver is only asked about names the
// policy already allowed, so a denied name never leaves the host as a DNS
// query.
func (p *Proxy) vet(ctx context.Context, host string, ip netip.Addr, port int) ([]netip.Addr, policy.Decision, error) {
	if ip.IsValid() {
		if p.net.AllowsIP(ip, port) {
			return []netip.Addr{ip.Unmap()}, policy.Decision{Allow: true}, nil
		}
		return nil, policy.Decision{Rule: RuleIPLiteral, Reason: fmt.Sprintf(
			"IP literal %s is refused: only an IP that a rule names exactly may be reached; ask for the host name", host)}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, policy.Decision{}, fmt.Errorf("%w %s: %v", errResolve, host, err)
	}
	if len(addrs) == 0 {
		return nil, policy.Decision{}, fmt.Errorf("%w %s: no addresses", errResolve, host)
	}
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if r := ForbiddenReason(a); r != "" && !(a.Zone() == "" && p.net.AllowsIP(a, port)) {
			return nil, policy.Decision{Rule: RuleAddress, Reason: fmt.Sprintf(
				"%s resolves to %s (%s), which is refused unless a rule names that IP", host, a, r)}, nil
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	// IPv4 first: the host may have no IPv6 route. Stable, so the
	// resolver's order holds within each family.
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	return out, policy.Decision{Allow: true}, nil
}

// dialVetted dials the first address of addrs that answers and checks the
// connection really goes to it.
func (p *Proxy) dialVetted(ctx context.Context, addrs []netip.Addr, port int) (net.Conn, error) {
	var errs []error
	for _, a := range addrs {
		target := netip.AddrPortFrom(a, uint16(port))
		dctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
		c, err := p.dial(dctx, "tcp", target.String())
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok && ta.AddrPort().Addr().Unmap() != a {
			c.Close()
			return nil, fmt.Errorf("egress: dialled %s but connected to %s", target, ta)
		}
		return c, nil
	}
	return nil, fmt.Errorf("dial %s port %d: %w", addrs, port, errors.Join(errs...))
}

type planKey struct{}

// dialPlan carries a request's vetted addresses to the transport's dialer.
type dialPlan struct {
	addrs []netip.Addr
	port  int
}

// dialPlanned is the http.Transport's dialer. It never resolves anything:
// it dials only the addresses vetted for the request that caused the dial,
// and refuses if there are none.
func (p *Proxy) dialPlanned(ctx context.Context, network, addr string) (net.Conn, error) {
	plan, _ := ctx.Value(planKey{}).(*dialPlan)
	if plan == nil || len(plan.addrs) == 0 {
		return nil, fmt.Errorf("egress: bug: transport dial of %s without vetted addresses", addr)
	}
	return p.dialVetted(ctx, plan.addrs, plan.port)
}
