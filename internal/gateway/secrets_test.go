package gateway

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// randStr draws n characters from alphabet.
func randStr(rng *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	alnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b64    = alnum + "+/"
	urlb64 = alnum + "-_"
	hexd   = "0123456789abcdef"
)

// labelledSecret is a generated secret of a kind and a line that carries it.
type labelledSecret struct {
	kind, secret, text string
}

// secretCorpus builds positives at run time (no key-shaped literal in the
// repository) in the contexts they turn up in: config files, env dumps,
// shell output, source code, JSON.
func secretCorpus(rng *rand.Rand) []labelledSecret {
	gen := []struct {
		kind string
		make func() string
		ctx  []string // %s is the secret
	}{
		{"aws-access-key-id", func() string { return "AKIA" + randStr(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16) },
			[]string{"aws_access_key_id = %s", "export AWS_ACCESS_KEY_ID=%s", `{"AccessKeyId": "%s"}`}},
		{"aws-secret-access-key", func() string { return randStr(rng, b64, 40) },
			[]string{"aws_secret_access_key = %s", "AWS_SECRET_ACCESS_KEY=%s", `aws.secretKey: "%s"`}},
		{"github-token", func() string { return "ghp_" + randStr(rng, alnum, 36) },
			[]string{"GITHUB_TOKEN=%s", "git clone https://x-access-token:%s@github.example.com/o/r", "token: %s"}},
		{"gitlab-token", func() string { return "glpat-" + randStr(rng, urlb64, 20) }, []string{"CI_TOKEN=%s", "PRIVATE-TOKEN: %s"}},
		{"slack-token", func() string { return "xoxb-" + randStr(rng, "0123456789", 12) + "-" + randStr(rng, alnum, 24) }, []string{"SLACK_BOT=%s", "slack.token = '%s'"}},
		{"stripe-key", func() string { return "sk_live_" + randStr(rng, alnum, 24) }, []string{"stripe.api_key = \"%s\"", "STRIPE=%s"}},
		{"anthropic-api-key", func() string { return "sk-ant-api03-" + randStr(rng, urlb64, 93) + "AA" }, []string{"ANTHROPIC_API_KEY=%s", "key is %s"}},
		{"openai-api-key", func() string { return "sk-proj-" + randStr(rng, urlb64, 64) }, []string{"OPENAI_API_KEY=%s", `client = OpenAI(api_key="%s")`}},
		{"google-api-key", func() string { return "AIza" + randStr(rng, urlb64, 35) }, []string{"GEMINI_API_KEY=%s", "?key=%s&q=1"}},
		{"npm-token", func() string { return "npm_" + randStr(rng, alnum, 36) }, []string{"//registry.example.com/:_authToken=%s"}},
		{"jwt", func() string {
			return "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + randStr(rng, urlb64, 40) + "." + randStr(rng, urlb64, 43)
		}, []string{"Cookie: session=%s", "jwt=%s"}},
		{"private-key", func() string {
			return "-----BEGIN RSA PRIVATE KEY-----\n" + randStr(rng, b64, 64) + "\n" + randStr(rng, b64, 64) + "\n-----END RSA PRIVATE KEY-----"
		}, []string{"%s", "$ cat id_rsa\n%s\n$"}},
		{"url-credentials", func() string { return randStr(rng, alnum, 14) }, []string{"DATABASE_URL=postgres://app:%s@db.internal:5432/app", "redis://default:%s@cache:6379"}},
		{"env-assignment", func() string { return randStr(rng, alnum+"!@#%", 20) }, []string{"DB_PASSWORD=%s", "export SESSION_SECRET='%s'", "SMTP_PASSWORD=\"%s\""}},
		{"generic-secret", func() string { return randStr(rng, alnum, 32) }, []string{`"client_secret": "%s"`, `apiKey: '%s',`, `password := "%s"`}},
	}
	var out []labelledSecret
	for _, g := range gen {
		for i := 0; i < 20; i++ {
			sec := g.make()
			ctx := g.ctx[i%len(g.ctx)]
			out = append(out, labelledSecret{g.kind, sec, strings.Replace(ctx, "%s", sec, 1)})
		}
	}
	return out
}

// hardNegatives look like secrets to a careless rule but are not.
var hardNegatives = []string{
	`password = getPassword()`,
	`token := r.Header.Get("Authorization")`,
	`API_KEY=${API_KEY}`,
	`OPENAI_API_KEY=<your key here>`,
	`apiKey: process.env.API_KEY,`,
	`aws_access_key_id = YOUR_ACCESS_KEY_ID`,
	`DB_PASSWORD=changeme`,
	`SECRET_KEY_BASE=xxxxxxxxxxxxxxxx`,
	`export GITHUB_TOKEN=$(cat ~/.token)`,
	`postgres://localhost:5432/app`,
	`https://user@github.example.com/org/repo.git`,
	`commit 3f2a91c0d8e4b7a6f5e4d3c2b1a0987654321fed`,
	`sha256:4a5f0c8e2b1d9f3a7c6e5b4d3a2f1e0c9b8a7d6e5f4c3b2a1d0e9f8a7b6c5d4e`,
	`id: 123e4567-e89b-12d3-a456-426614174000`,
	`const tokenType = "Bearer"`,
	`passwordMinLength = 12`,
	`if secret == nil { return errNoSecret }`,
	`The API key must be kept secret; rotate it every 90 days.`,
	`TOKEN_TTL=3600`,
	`AUTH_PROVIDER=oidc`,
	`var accessKey = flag.String("access-key", "", "access key id")`,
	`"integrity": "sha512-Lx1ZkJp9VXkKkDJz1ZQ9W6nq4sT8hZq1nK9p3dAa0vFbC1eS2mR4tU5vW6xY7zA8bC9dE0fG1hI2jK3lM4nO5pQ=="`,
	`image: registry.example.com/app@sha256:0d5f0a8e2b1d9f3a7c6e5b4d3a2f1e0c9b8a7d6e5f4c3b2a1d0e9f8a7b6c5d4e`,
	`secret_name = "prod/db/password"`,
	`token_endpoint = "https://auth.example.com/oauth2/token"`,
}

// TestMeasureSecretRules prints precision and recall of the built-in rules
// on a labelled corpus: generated secrets in context, hard negatives, and
// every line of some GOROOT packages as ordinary code.
func TestMeasureSecretRules(t *testing.T) {
	rs, err := loadRules(nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	pos := secretCorpus(rng)
	type stat struct{ tp, fn int }
	per := map[string]*stat{}
	var tp, fn, fp int
	for _, p := range pos {
		st := per[p.kind]
		if st == nil {
			st = &stat{}
			per[p.kind] = st
		}
		i := strings.Index(p.text, p.secret)
		covered := false
		for _, f := range rs.find(p.text) {
			if f.start <= i && f.end >= i+len(p.secret)-2 { // whole secret (a trailing "==" may stay)
				covered = true
			}
		}
		if covered {
			st.tp++
			tp++
		} else {
			st.fn++
			fn++
			t.Logf("missed %s: %q", p.kind, p.text)
		}
	}
	var negLines []string
	negLines = append(negLines, hardNegatives...)
	for _, d := range []string{"net/http", "encoding/json", "go/parser", "os/exec", "database/sql"} {
		for _, src := range goFiles(t, d, 0) {
			negLines = append(negLines, strings.Split(src, "\n")...)
		}
	}
	fpByRule := map[string]int{}
	for _, l := range negLines {
		for _, f := range rs.find(l) {
			fp++
			fpByRule[f.rule]++
			if fp <= 10 {
				t.Logf("false positive %s: %q", f.rule, l)
			}
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "secret rules: %d positives (%d kinds), %d negative lines (%d hard negatives + GOROOT code)\n", len(pos), len(per), len(negLines), len(hardNegatives))
	fmt.Fprintf(&b, "%-24s %5s %5s\n", "kind", "found", "missed")
	for _, k := range sortedKeysStat(per) {
		fmt.Fprintf(&b, "%-24s %5d %5d\n", k, per[k].tp, per[k].fn)
	}
	prec := float64(tp) / float64(max(tp+fp, 1))
	rec := float64(tp) / float64(max(tp+fn, 1))
	fmt.Fprintf(&b, "recall %.1f%%  precision %.1f%%  (tp %d, fn %d, fp %d; fp by rule %v)\n", 100*rec, 100*prec, tp, fn, fp, fpByRule)
	t.Log("\n" + b.String())
	if rec < 0.97 || prec < 0.97 {
		t.Errorf("recall %.3f precision %.3f, want both >= 0.97", rec, prec)
	}
}

func sortedKeysStat[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sortStrings(ks)
	return ks
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
