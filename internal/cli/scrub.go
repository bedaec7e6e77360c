package cli

import "regexp"

// secretLike matches the shapes of keys and tokens that must never be
// printed, even inside an error message quoting a flag or a URL.
var secretLike = regexp.MustCompile(`(?i)` +
	`(sk-(?:ant-)?[a-z0-9_\-]{16,})` + // Anthropic and OpenAI keys
	`|(AKIA[0-9A-Z]{16})` + // AWS access key ids
	`|(gh[pousr]_[A-Za-z0-9]{30,})` + // GitHub tokens
	`|(AIza[0-9A-Za-z_\-]{30,})` + // Google API keys
	`|(enc_[A-Za-z0-9_\-]{20,})` + // Enclave session tokens
	`|((?:api[_-]?key|token|secret|password)=)[^&\s"']+` + // key=value in URLs and flags
	`|(://[^/\s:@]+:)[^/\s@]+@`) // credentials in URLs

// scrub replaces anything key-shaped in s.
func scrub(s string) string {
	return secretLike.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretLike.FindStringSubmatch(m)
		switch {
		case sub[6] != "":
			return sub[6] + "[redacted]"
		case sub[7] != "":
			return sub[7] + "[redacted]@"
		}
		return "[redacted]"
	})
}
