package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Request is one egress request as the proxy sees it.
type Request struct {
	// Host is the name or IP literal the agent asked for, as sent (the
	// decision lowercases it and strips one trailing dot).
	Host string
	Port int
	// Method is the HTTP method, or "CONNECT" for a tunnel.
	Method string
	// Path is the request path for plain HTTP; "" for CONNECT.
	Path string
}

// NormalizeHost lowercases h, strips one trailing dot and IPv6 brackets.
func NormalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	h = strings.TrimPrefix(h, "[")
	h = strings.TrimSuffix(h, "]")
	return h
}

// Decide answers whether the proxy may serve r. It only matches the policy's
// rules; the proxy separately refuses addresses that resolve to loopback,
// private, link-local or metadata ranges unless a rule names that exact IP.
func (n *Network) Decide(r Request) Decision {
	host := NormalizeHost(r.Host)
	if host == "" {
		return Decision{Rule: "default-deny", Reason: "request names no host"}
	}
	if !validRequestHost(host) {
		// Odd names ("a..example.com", "x.example.com\x00") may be read
		// differently by the resolver than by the matcher; refuse them.
		return Decision{Rule: "default-deny", Reason: fmt.Sprintf("%q is not a valid host name", r.Host)}
	}
	hostMatched := false
	for i, rule := range n.Allow {
		if !rule.matchHost(host) {
			continue
		}
		hostMatched = true
		name := fmt.Sprintf("network.allow[%d]", i)
		if !rule.matchPort(r.Port) {
			continue
		}
		if r.Method == "CONNECT" {
			if (len(rule.Methods) > 0 || len(rule.Paths) > 0) && !rule.AllowConnect {
				return Decision{Rule: name, Reason: fmt.Sprintf("%s allows only plain HTTP with method and path rules; a CONNECT tunnel would hide them", host)}
			}
			return Decision{Allow: true, Rule: name, Reason: fmt.Sprintf("%s:%d is allowed", host, r.Port)}
		}
		if len(rule.Methods) > 0 && !slices.ContainsFunc(rule.Methods, func(m string) bool { return strings.EqualFold(m, r.Method) }) {
			return Decision{Rule: name, Reason: fmt.Sprintf("method %s to %s is not allowed (allowed: %s)", r.Method, host, strings.Join(rule.Methods, ", "))}
		}
		if len(rule.Paths) > 0 && !slices.ContainsFunc(rule.Paths, func(p string) bool { return MatchPath(p, r.Path) }) {
			return Decision{Rule: name, Reason: fmt.Sprintf("path %s on %s is not allowed (allowed: %s)", r.Path, host, strings.Join(rule.Paths, ", "))}
		}
		return Decision{Allow: true, Rule: name, Reason: fmt.Sprintf("%s:%d is allowed", host, r.Port)}
	}
	if hostMatched {
		return Decision{Rule: "default-deny", Reason: fmt.Sprintf("port %d on %s is not allowed by the policy", r.Port, host)}
	}
	return Decision{Rule: "default-deny", Reason: fmt.Sprintf("host %s is not on the policy's network allowlist", host)}
}

// AllowsName reports whether some rule could allow the DNS name, so the
// in-sandbox resolver answers it. Names off the list get no answer.
func (n *Network) AllowsName(name string) bool {
	host := NormalizeHost(name)
	for _, rule := range n.Allow {
		if rule.matchHost(host) {
			return true
		}
	}
	return false
}

// AllowsIP reports whether a rule names addr exactly, which is the only way
// a loopback, private or link-local address may be reached.
func (n *Network) AllowsIP(addr netip.Addr, port int) bool {
	for _, rule := range n.Allow {
		ip, err := netip.ParseAddr(NormalizeHost(rule.Host))
		if err == nil && ip.Unmap() == addr.Unmap() && rule.matchPort(port) {
			return true
		}
	}
	return false
}

func (r *HostRule) matchHost(host string) bool {
	pat := NormalizeHost(r.Host)
	if suffix, ok := strings.CutPrefix(pat, "*."); ok {
		return strings.HasSuffix(host, "."+suffix) && len(host) > len(suffix)+1
	}
	if host == pat {
		return true
	}
	// IP literals match by value, so "::ffff:127.0.0.1" and "127.0.0.1"
	// are one address, as AllowsIP already treats them.
	if ip, err := netip.ParseAddr(host); err == nil {
		if pip, err := netip.ParseAddr(pat); err == nil {
			return ip.Unmap() == pip.Unmap()
		}
	}
	return false
}

func (r *HostRule) matchPort(port int) bool {
	if len(r.Ports) == 0 {
		return port == 443 || port == 80
	}
	return slices.Contains(r.Ports, port)
}

// MatchPath matches an HTTP request path against a glob: "*" matches within
// one segment, "**" matches across segments, a trailing "/**" also matches
// the directory itself.
//
// The path is normalised the way a lenient server might read it, so that no
// spelling reaches a resource the rule does not cover: the query is dropped,
// percent-escapes are decoded, ";parameters" are removed from each segment
// (some servers read "/a/..;/b" as "/a/../b"), and "." and ".." segments
// are resolved. Paths a server could read in more than one way never match:
// an encoded "/" or "\" ("%2F", "%5C"), a raw "\", a NUL, a "%" left after
// decoding (double encoding), an invalid escape, or a path not starting
// with "/".
func MatchPath(pattern, p string) bool {
	if p == "" {
		p = "/"
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	p, ok := normalizeRequestPath(p)
	return ok && matchGlob(pattern, p)
}

func normalizeRequestPath(p string) (string, bool) {
	if !strings.HasPrefix(p, "/") {
		return "", false
	}
	lower := strings.ToLower(p)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.ContainsAny(p, "\\\x00") {
		return "", false
	}
	dec, err := url.PathUnescape(p)
	if err != nil || strings.ContainsAny(dec, "%\\\x00") {
		return "", false
	}
	if strings.Contains(dec, ";") {
		segs := strings.Split(dec, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		dec = strings.Join(segs, "/")
	}
	return path.Clean(dec), true
}

// matchGlob matches s against a glob by translating it to a regular
// expression. Go's regexp runs in time linear in the input, so a hostile
// pattern such as "/**/**/**/**/z" cannot stall a decision, as a
// backtracking matcher would.
func matchGlob(pattern, s string) bool {
	if !utf8.ValidString(pattern) {
		return false // policy globs are validated; never guess at others
	}
	// Fast paths for the common shapes: "/exact" and "/prefix/**".
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	if dir, ok := strings.CutSuffix(pattern, "/**"); ok && !strings.Contains(dir, "*") {
		return s == dir || strings.HasPrefix(s, dir+"/") || dir == "" && strings.HasPrefix(s, "/")
	}
	return globRegexp(pattern).MatchString(s)
}

var (
	globCache   sync.Map // pattern -> *regexp.Regexp
	globCached  atomic.Int64
	maxGlobKeep = int64(4096)
)

func globRegexp(pattern string) *regexp.Regexp {
	if re, ok := globCache.Load(pattern); ok {
		return re.(*regexp.Regexp)
	}
	var b strings.Builder
	b.WriteString(`\A`)
	for i := 0; i < len(pattern); {
		rest := pattern[i:]
		switch {
		case rest == "/**":
			b.WriteString(`(?:/.*)?`) // "/x/**" also matches "/x"
			i += 3
		case strings.HasPrefix(rest, "/**/"):
			b.WriteString(`/(?:.*/)?`) // "/a/**/z" also matches "/a/z"
			i += 4
		case strings.HasPrefix(rest, "**/"):
			b.WriteString(`(?:.*/)?`)
			i += 3
		case strings.HasPrefix(rest, "**"):
			b.WriteString(`.*`)
			i += 2
		case rest[0] == '*':
			b.WriteString(`[^/]*`)
			i++
		default:
			_, n := utf8.DecodeRuneInString(rest)
			b.WriteString(regexp.QuoteMeta(rest[:n]))
			i += n
		}
	}
	b.WriteString(`\z`)
	re := regexp.MustCompile("(?s)" + b.String())
	if globCached.Add(1) <= maxGlobKeep {
		globCache.Store(pattern, re)
	}
	return re
}
