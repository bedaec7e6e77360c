package policy

import (
	"path"
	"slices"
	"time"
)

// The model gateway's settings: which providers and models are sanctioned,
// under which data terms, and how workspace content is classified. They are
// policy-wide, not per profile: a profile changes what the sandbox may do,
// never which organisation-level data agreements apply.

// API names a provider wire protocol the gateway speaks.
const (
	APIAnthropic = "anthropic"
	APIOpenAI    = "openai"
	APIGemini    = "gemini"
)

// Provider is one sanctioned model provider.
type Provider struct {
	// Name is the key under providers: in the file.
	Name string
	// API is APIAnthropic, APIOpenAI or APIGemini.
	API string
	// BaseURL is the upstream, e.g. "https://llm.example.com". https is
	// required except for loopback test servers.
	BaseURL string
	// KeyEnv names the host environment variable holding the real API key;
	// KeyFile is an absolute path of a file holding it (the gateway should
	// refuse a file readable by group or others). At most one is set; when
	// neither is, the gateway uses the API's usual variable
	// (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY).
	KeyEnv  string
	KeyFile string
	// Models are model ids or globs ("claude-sonnet-4-*", "*"); a request
	// for any other model is refused. Never empty after Load.
	Models []string
	// Terms are the data terms agreed with the provider, as declared.
	Terms Terms
	// Clearance is the highest classification level this provider may
	// receive; Load fills in Classification.Default when unset.
	Clearance string
	// Line is the line of the provider in the policy file; 0 for built-ins.
	Line int
}

// Terms are what the organisation has agreed with a provider. Enclave records
// and reports them; it cannot verify them. A nil field was not stated.
type Terms struct {
	// Training: may the provider train on inputs.
	Training *bool
	// Retention: how long the provider keeps inputs; 0 means "none" (zero
	// data retention).
	Retention *time.Duration
	// Region where the data is processed, e.g. "eu".
	Region string
}

// AllowsModel reports whether the provider's model list sanctions model. The
// globs use path.Match syntax ("*" matches any run of characters but "/").
func (p *Provider) AllowsModel(model string) bool {
	if model == "" {
		return false
	}
	return slices.ContainsFunc(p.Models, func(pat string) bool {
		ok, err := path.Match(pat, model)
		return ok && err == nil
	})
}

// Action values for Classification.Action.
const (
	ActionBlock  = "block"
	ActionRedact = "redact"
)

// Classification labels workspace content with ordered levels.
type Classification struct {
	// Levels from least to most sensitive, e.g. public, internal,
	// confidential, restricted.
	Levels []string
	// Default is the level of files no path rule matches.
	Default string
	// Paths label workspace files; when several rules match a file the most
	// sensitive level wins, so a rule can never lower another's label.
	Paths []ClassPath
	// Action is ActionBlock or ActionRedact: what the gateway does with
	// content above a model's clearance.
	Action string
}

// ClassPath labels the workspace files a glob matches.
type ClassPath struct {
	// Path is a workspace glob in the syntax of [MatchWorkspace].
	Path  string
	Level string
	Line  int
}

// Rank is the position of level in Levels (0 is least sensitive), or -1.
func (c *Classification) Rank(level string) int {
	return slices.Index(c.Levels, level)
}

// Classify returns the level of the workspace file rel (slash-separated,
// relative to the workspace root) and the rule that set it ("default" or
// "classification.paths[i]").
func (c *Classification) Classify(rel string) (level, rule string) {
	level, rule, best := c.Default, "default", -1
	for i, p := range c.Paths {
		if r := c.Rank(p.Level); r > best && MatchWorkspace(p.Path, rel) {
			level, rule, best = p.Level, "classification.paths["+itoa(i)+"]", r
		}
	}
	// A matching rule sets the level even below the default: a rule such
	// as "docs/**: public" is how public files are declared.
	return level, rule
}

// Cleared reports whether content at level may go to a receiver with the
// given clearance. Unknown names are never cleared (fail closed).
func (c *Classification) Cleared(clearance, level string) bool {
	cr, lr := c.Rank(clearance), c.Rank(level)
	return cr >= 0 && lr >= 0 && lr <= cr
}

// Gateway holds settings of the model gateway.
type Gateway struct {
	Budget Budget
}

// Budget caps one session's model use; exceeding it is an error the agent
// sees and a record in the audit log.
type Budget struct {
	// Tokens caps input plus output tokens as the providers report them.
	Tokens int64
	// Requests caps model calls.
	Requests int64
}
