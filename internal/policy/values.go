package policy

// Checks of single values. Each returns a *problem (what is wrong, what to
// write instead) or nil; the YAML decoder adds the file position, Validate
// adds only the field path.

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

type problem struct{ msg, hint string }

func bad(hint, format string, args ...any) *problem {
	return &problem{msg: fmt.Sprintf(format, args...), hint: hint}
}

func itoa(i int) string { return strconv.Itoa(i) }

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

const sizeHint = "write a whole number and a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. 4GiB"

// ParseSize parses a byte size such as "4GiB", "500MB" or "512 KiB". The
// unit is required and case-sensitive, so "500M" (which unit?) is an error.
func ParseSize(s string) (int64, error) {
	n, p := parseSize(s)
	if p != nil {
		return 0, fmt.Errorf("%s; %s", p.msg, p.hint)
	}
	return n, nil
}

func parseSize(s string) (int64, *problem) {
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(s, u.name)
		if !ok {
			continue
		}
		num = strings.TrimSuffix(num, " ")
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || num == "" || num[0] == '+' || num[0] == '-' {
			if strings.HasPrefix(num, "-") {
				return 0, bad("sizes are positive", "%q is negative", s)
			}
			return 0, bad(sizeHint, "%q is not a size", s)
		}
		if n == 0 {
			return 0, bad("remove the setting to use the default", "%q is zero", s)
		}
		if n > math.MaxInt64/u.mult {
			return 0, bad("write a smaller size", "%q is too large", s)
		}
		return n * u.mult, nil
	}
	return 0, bad(sizeHint, "%q is not a size", s)
}

const durationHint = `write a number and a unit: s, m, h or d, e.g. "90s", "2h", "1h30m", "30d"`

// ParseDuration parses a duration such as "90s", "2h", "1h30m" or "30d"
// (days of 24 hours). It must be at least one second.
func ParseDuration(s string) (time.Duration, error) {
	d, p := parseDuration(s)
	if p != nil {
		return 0, fmt.Errorf("%s; %s", p.msg, p.hint)
	}
	return d, nil
}

func parseDuration(s string) (time.Duration, *problem) {
	if strings.HasPrefix(s, "-") {
		return 0, bad("durations are positive", "%q is negative", s)
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || days == "" || days[0] == '+' || n > int64(math.MaxInt64/(24*time.Hour)) {
			return 0, bad(durationHint, "%q is not a duration", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		if s == "" || s[0] < '0' || s[0] > '9' {
			return 0, bad(durationHint, "%q is not a duration", s)
		}
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, bad(durationHint, "%q is not a duration", s)
		}
	}
	if d < time.Second {
		return 0, bad("write at least 1s, or remove the setting to use the default", "%q is less than one second", s)
	}
	return d, nil
}

// normalizeHostPattern checks a network.allow host and returns its canonical
// form: lowercase, no trailing dot, IP literals without brackets.
func normalizeHostPattern(h string) (string, *problem) {
	const hint = `write a host name ("registry.example.com"), a wildcard ("*.example.com") or an IP address`
	switch {
	case h == "":
		return "", bad(hint, "host is empty")
	case strings.Contains(h, "://"):
		u, _ := url.Parse(h)
		if u != nil && u.Hostname() != "" {
			return "", bad(fmt.Sprintf("write the host name only (host: %s) and put the port in ports and the path in paths", u.Hostname()), "%q is a URL, not a host", h)
		}
		return "", bad(hint, "%q is a URL, not a host", h)
	case !utf8.ValidString(h) || strings.ContainsFunc(h, func(r rune) bool { return r >= 0x80 }):
		return "", bad(`write the ASCII (punycode, "xn--") form of the name`, "%q is not an ASCII host name", h)
	}
	n := strings.ToLower(strings.TrimSuffix(h, "."))
	if strings.HasPrefix(n, "[") && strings.HasSuffix(n, "]") {
		n = n[1 : len(n)-1]
	}
	if ip, err := netip.ParseAddr(n); err == nil {
		if ip.Zone() != "" {
			return "", bad("write the address without a zone", "%q has an IPv6 zone", h)
		}
		if ip.Is4In6() {
			return "", bad(fmt.Sprintf("write %s", ip.Unmap()), "%q is an IPv4-mapped IPv6 address", h)
		}
		return ip.String(), nil
	}
	if i := strings.LastIndexByte(n, ':'); i >= 0 {
		if _, err := strconv.Atoi(n[i+1:]); err == nil {
			return "", bad(fmt.Sprintf("write host: %s and ports: [%s]", n[:i], n[i+1:]), "%q includes a port", h)
		}
	}
	if strings.ContainsAny(n, "/?#@") {
		return "", bad(hint+"; paths go in paths", "%q is not a host name", h)
	}
	name := n
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		name = rest
		if !strings.Contains(rest, ".") {
			return "", bad(`name at least two labels after "*.", e.g. "*.example.com"`, "%q would match every name under a top-level domain", h)
		}
	}
	if strings.Contains(name, "*") {
		return "", bad(`only a leading "*." wildcard is supported, e.g. "*.example.com"`, "%q has a wildcard in the wrong place", h)
	}
	if p := checkDNSName(name); p != nil {
		return "", bad(hint, "%q is not a host name: %s", h, p.msg)
	}
	return n, nil
}

// checkDNSName checks a lowercase name without trailing dot.
func checkDNSName(name string) *problem {
	if len(name) > 253 {
		return bad("", "longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return bad("", "empty label")
		}
		if len(l) > 63 {
			return bad("", "label longer than 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("", "label starts or ends with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return bad("", "character %q", c)
			}
		}
	}
	// "127.1" or "0x7f.1" is an IP address to many resolvers; a real
	// top-level domain is never all digits.
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return bad("", "the last label is numeric, which resolvers may read as an IP address")
	}
	return nil
}

// validRequestHost reports whether a host as a client sent it (after
// NormalizeHost) is a syntactically valid name or IP literal.
func validRequestHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return checkDNSName(h) == nil
}

func normalizeMethod(m string) (string, *problem) {
	u := strings.ToUpper(m)
	if u == "" || strings.Trim(u, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return "", bad("write an HTTP method such as GET, HEAD or POST", "%q is not an HTTP method", m)
	}
	if u == "CONNECT" {
		return "", bad("remove it and set allow_connect: true", "CONNECT is not a method rule")
	}
	return u, nil
}

// checkHTTPPathGlob checks a network.allow paths entry, in the syntax of
// [MatchPath].
func checkHTTPPathGlob(p string) *problem {
	const hint = `write a path glob starting with "/", e.g. "/simple/**" or "/v1/*/info"`
	if len(p) > 1024 || !utf8.ValidString(p) {
		return bad(hint, "path glob is longer than 1024 bytes or not UTF-8")
	}
	if !strings.HasPrefix(p, "/") {
		return bad(hint, "%q does not start with /", p)
	}
	if strings.ContainsAny(p, "?#") {
		return bad("rules match the path only; remove the query", "%q has a query or fragment", p)
	}
	if strings.ContainsAny(p, `%\`) || strings.ContainsRune(p, 0) {
		return bad("write the decoded path; requests are matched after decoding", "%q has an escape or backslash", p)
	}
	if strings.ContainsAny(p, "[]{}") {
		return bad(`only "*" (within a segment) and "**" (across segments) are supported`, "%q has an unsupported glob character", p)
	}
	return checkSegments(p[1:], p, hint)
}

func checkSegments(rest, p, hint string) *problem {
	if rest == "" {
		return nil
	}
	for i, seg := range strings.Split(rest, "/") {
		switch {
		case seg == "" && i < strings.Count(rest, "/"):
			return bad(hint, "%q has an empty segment", p)
		case seg == "." || seg == "..":
			return bad(hint, "%q has a %q segment", p, seg)
		case strings.Contains(seg, "**") && seg != "**":
			return bad(`use "**" as a whole segment ("/a/**/b") or "*" within one`, "%q has \"**\" inside a segment", p)
		}
	}
	return nil
}

// normalizeWorkspaceGlob checks a workspace glob (filesystem.hidden,
// classification.paths) and strips a trailing "/".
func normalizeWorkspaceGlob(p string) (string, *problem) {
	const hint = `write a path relative to the workspace root, e.g. ".env", "secrets/**" or "**/*.pem"`
	n := strings.TrimSuffix(p, "/")
	switch {
	case len(n) > 1024 || !utf8.ValidString(n):
		return "", bad(hint, "glob is longer than 1024 bytes or not UTF-8")
	case n == "":
		return "", bad(hint, "path is empty")
	case strings.HasPrefix(n, "/") || strings.HasPrefix(n, "~"):
		return "", bad(hint+"; host paths outside read_only and read_write are never visible, so there is nothing to hide", "%q is not relative to the workspace", p)
	case strings.ContainsRune(n, 0) || strings.Contains(n, `\`):
		return "", bad(hint, "%q has a NUL or backslash", p)
	case strings.ContainsAny(n, "?[]{}"):
		return "", bad(`only "*" (within a segment) and "**" (across segments) are supported`, "%q has an unsupported glob character", p)
	}
	if pr := checkSegments(n, p, hint); pr != nil {
		return "", pr
	}
	return n, nil
}

// MatchWorkspace matches a workspace-relative, slash-separated path against
// a workspace glob: "*" matches within one segment, "**" across segments. A
// pattern without "/" matches a base name at any depth (".env" matches
// "a/b/.env"); one with "/" is anchored at the workspace root. A pattern
// that matches a directory also matches everything below it.
func MatchWorkspace(pattern, rel string) bool {
	rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
	if !strings.Contains(pattern, "/") {
		pattern = "**/" + pattern
	}
	for {
		if matchGlob(pattern, rel) {
			return true
		}
		i := strings.LastIndexByte(rel, '/')
		if i < 0 {
			return false
		}
		rel = rel[:i]
	}
}

// hostPath expands "~" and checks that p is an absolute host path.
func hostPath(p, home string, homeErr error) (string, *problem) {
	const hint = `write an absolute path ("/opt/tools") or one under your home ("~/.cache/go-build")`
	switch {
	case p == "":
		return "", bad(hint, "path is empty")
	case strings.ContainsRune(p, 0):
		return "", bad(hint, "%q has a NUL byte", p)
	case strings.ContainsAny(p, "*?["):
		return "", bad(hint+"; globs are not supported here", "%q is a glob", p)
	case p == "~" || strings.HasPrefix(p, "~/"):
		if homeErr != nil || home == "" {
			return "", bad("set HOME or write an absolute path", "%q uses ~ but the home directory is unknown", p)
		}
		p = filepath.Join(home, p[1:])
	case strings.HasPrefix(p, "~"):
		return "", bad(hint, "%q: ~user is not supported", p)
	case !strings.HasPrefix(p, "/"):
		return "", bad(hint+"; relative paths are ambiguous because the agent works on a copy of the repository", "%q is not absolute", p)
	}
	return filepath.Clean(p), nil
}

// credentialDirs are places under a home directory that hold credentials;
// mounting them, or a directory containing them, hands the agent the keys.
var credentialDirs = []string{
	".ssh", ".aws", ".azure", ".gnupg", ".kube", ".docker", ".config/gcloud", ".config/gh",
	".password-store", ".local/share/keyrings", ".netrc", ".git-credentials", ".npmrc", ".pypirc",
}

// credentialPath refuses p if it is home, contains home, or is (in) one of
// its credential directories. home "" skips the check.
func credentialPath(p, home string) *problem {
	if home == "" || home == "/" || p == "/" {
		return nil // "/" gets its own message from crossCheck
	}
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/") }
	if within(home, p) {
		return bad("name the directories the agent needs, e.g. ~/.cache/go-build", "%s exposes your whole home directory, with its keys and credentials", p)
	}
	for _, c := range credentialDirs {
		if within(p, filepath.Join(home, c)) {
			return bad("give the agent no credentials; the model gateway holds API keys, and other keys stay outside", "%s holds credentials (~/%s)", p, c)
		}
	}
	return nil
}

// checkEnvName checks a variable name and that it is not one Enclave must
// control or that holds secrets.
func checkEnvName(name string) *problem {
	if !validEnvName(name) {
		return bad("write a name of letters, digits and _ that does not start with a digit", "%q is not a variable name", name)
	}
	if why := envForbidden(name); why != "" {
		return bad("remove it", "%s %s", name, why)
	}
	return nil
}

func validEnvName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// envSetByEnclave are variables the sandbox sets itself; passing or setting
// them would point the agent around the proxy or gateway or break the view.
var envSetByEnclave = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "SHELL": true,
	"TMPDIR": true, "PWD": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "ALL_PROXY": true, "NO_PROXY": true, "FTP_PROXY": true,
	"ANTHROPIC_BASE_URL": true, "OPENAI_BASE_URL": true, "GOOGLE_GEMINI_BASE_URL": true, "GEMINI_BASE_URL": true,
}

// envHostChannels point at host sockets or credentials stores.
var envHostChannels = map[string]bool{
	"SSH_AUTH_SOCK": true, "GPG_AGENT_INFO": true, "DBUS_SESSION_BUS_ADDRESS": true,
	"XDG_RUNTIME_DIR": true, "DOCKER_HOST": true, "KUBECONFIG": true, "GIT_ASKPASS": true, "SSH_ASKPASS": true,
}

// envForbidden says why name may never be passed into or set in the
// sandbox, or returns "". Names are compared case-insensitively because
// many programs read http_proxy as well as HTTP_PROXY.
func envForbidden(name string) string {
	u := strings.ToUpper(name)
	switch {
	case envSetByEnclave[u]:
		return "is set by enclave itself (proxy, gateway, or the sandbox's own view)"
	case strings.HasPrefix(u, "LD_") || u == "GCONV_PATH" || u == "GLIBC_TUNABLES":
		return "changes which code the dynamic loader runs in every process of the sandbox, enclave's own helpers included"
	case envHostChannels[u]:
		return "points at a host socket or credential helper the sandbox must not reach"
	case strings.Contains(u, "PASSWORD") || strings.Contains(u, "PASSWD"):
		return "looks like a secret; real credentials stay outside the sandbox"
	}
	segs := strings.Split(u, "_")
	for i, s := range segs {
		switch s {
		case "TOKEN", "TOKENS", "SECRET", "SECRETS", "CREDENTIAL", "CREDENTIALS", "APIKEY", "AUTH", "PAT":
			return "looks like a secret; real credentials stay outside the sandbox"
		case "KEY":
			if i > 0 && (segs[i-1] == "API" || segs[i-1] == "PRIVATE" || segs[i-1] == "ACCESS" || segs[i-1] == "SIGNING" || segs[i-1] == "ENCRYPTION") {
				return "looks like a secret; real credentials stay outside the sandbox"
			}
		}
	}
	return ""
}

// checkEnvPattern checks an env.allow entry: a name or NAME_PREFIX*.
func checkEnvPattern(p string) *problem {
	prefix, wild := strings.CutSuffix(p, "*")
	if !wild {
		return checkEnvName(p)
	}
	if len(prefix) < 2 || !validEnvName(prefix) {
		return bad(`write a name, or a prefix of at least two characters followed by "*", e.g. "LC_*"`, "%q is too broad or not a name pattern", p)
	}
	// The sandbox drops forbidden names even when a pattern matches them;
	// a pattern that exists only to match them is a mistake worth naming.
	if why := envForbidden(strings.TrimRight(prefix, "_")); why != "" {
		return bad("name the variables you need one by one", "%q matches %s, which %s", p, strings.TrimRight(prefix, "_"), why)
	}
	if why := envForbidden(prefix + "X"); why != "" {
		return bad("name the variables you need one by one", "%q matches only variables enclave refuses: each %s", p, why)
	}
	return nil
}

func checkModelGlob(m string) *problem {
	if m == "" || strings.TrimSpace(m) != m {
		return bad(`write a model id such as "claude-sonnet-4-5" or a glob such as "claude-*"`, "%q is not a model id", m)
	}
	if _, err := path.Match(m, ""); err != nil {
		return bad(`globs use "*", "?" and "[a-z]"`, "%q is not a valid glob", m)
	}
	return nil
}

func checkBaseURL(s string) *problem {
	const hint = `write an https URL such as "https://llm.example.com" (http only for a loopback test server)`
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return bad(hint, "%q is not a URL", s)
	}
	if u.User != nil {
		return bad("put keys in key_env or key_file, never in the URL", "%q has credentials in it", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad(hint, "%q has a query or fragment", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		ip, err := netip.ParseAddr(h)
		if h != "localhost" && (err != nil || !ip.IsLoopback()) {
			return bad(hint, "%q uses plain http to a non-loopback host", s)
		}
	default:
		return bad(hint, "%q has scheme %q", s, u.Scheme)
	}
	return nil
}

func checkLevelName(s string) *problem {
	if s == "" || !validEnvName(strings.ReplaceAll(s, "-", "_")) {
		return bad("write a short name such as \"confidential\"", "%q is not a level name", s)
	}
	return nil
}

// Degrade values.
const (
	LayerLandlock = "landlock"
	LayerSeccomp  = "seccomp"
	LayerCgroups  = "cgroups"
)

func checkLayer(s string) *problem {
	switch s {
	case LayerLandlock, LayerSeccomp, LayerCgroups:
		return nil
	}
	return bad("write landlock, seccomp or cgroups", "%q is not a protection layer enclave can run without", s)
}
