#!/bin/sh
# bench/secrets.sh: precision and recall of the verification gate's secret
# scanner against gitleaks, on the same labelled corpus, in one run.
#
# The corpus is generated afresh (fixed seed, so runs are comparable):
#   - positives: fake secrets of 40 kinds (cloud keys, forge and chat
#     tokens, payment and SaaS API keys, private keys, JWTs, URL
#     credentials, generic password/secret assignments, bearer headers;
#     8 "held-out" kinds with no vendor rule in rules.toml, to measure
#     the rules on formats nobody tuned them for: neither rules.toml nor the
#     loader was changed to fit them), three instances each, in Go, YAML, .env, JSON, shell and INI files,
#     one labelled line per file;
#   - negatives: near misses (documented example keys, placeholders,
#     ${VAR} references, os.Getenv calls, hashes, UUIDs, go.sum and lock
#     file integrity lines, redacted values) and several hundred ordinary
#     Go source files from GOROOT.
# A finding counts on (file, line): a reported line that is labelled is a
# true positive, any other reported line a false positive, a labelled line
# nobody reported a false negative. Every line is scanned as "added".
#
# Rows: enclave (the gate's default rules: rules.toml plus the gitleaks
# rule file vendored in internal/verify/gitleaks), enc-own (rules.toml
# alone), gitleaks (the gitleaks binary of the same release as the vendored
# rule file).
#
# gitleaks is built from the Go module proxy into a temporary GOBIN (never
# into the repository) unless GITLEAKS names a binary already.
#
# Usage: bench/secrets.sh
#        GITLEAKS=/path/to/gitleaks GITLEAKS_VERSION=v8.30.1 bench/secrets.sh
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

GITLEAKS_VERSION=${GITLEAKS_VERSION:-v8.30.1}
if [ -z "${GITLEAKS:-}" ]; then
	echo "# building gitleaks $GITLEAKS_VERSION from the Go module proxy" >&2
	(cd "$work" && GOBIN="$work/bin" GOFLAGS=-mod=mod go install "github.com/zricethezav/gitleaks/v8@$GITLEAKS_VERSION") >&2
	GITLEAKS="$work/bin/gitleaks"
fi

echo "# machine: $(uname -sr), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# go: $(go version); gitleaks $GITLEAKS_VERSION, default rule set"

python3 - "$work/corpus" "$work/labels" "$(go env GOROOT)" <<'PY'
import os, random, string, sys, base64, json
out, labels, goroot = sys.argv[1], sys.argv[2], sys.argv[3]
R = random.Random(20261124)
A = string.ascii_letters + string.digits
def r(n, alpha=A): return "".join(R.choice(alpha) for _ in range(n))
HEX = "0123456789abcdef"
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
def b64u(b): return base64.urlsafe_b64encode(b).decode().rstrip("=")
def jwt():
    h = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64u(json.dumps({"sub": r(10), "name": r(8), "iat": R.randint(1600000000, 1800000000)}).encode())
    return h + "." + p + "." + b64u(bytes(R.getrandbits(8) for _ in range(32)))
def pem(kind):
    body = base64.b64encode(bytes(R.getrandbits(8) for _ in range(600))).decode()
    lines = [body[i:i+64] for i in range(0, len(body), 64)]
    return ["-----BEGIN %s PRIVATE KEY-----" % kind] + lines + ["-----END %s PRIVATE KEY-----" % kind]

# kind -> (generator of the secret text, list of line templates {s})
kinds = {
 "aws-access-key-id": (lambda: "AKIA" + r(16, B32), ["aws_access_key_id = {s}", 'AccessKeyID: "{s}",', "export AWS_ACCESS_KEY_ID={s}"]),
 "aws-secret-key": (lambda: r(40, A + "/+"), ["aws_secret_access_key = {s}", 'AWS_SECRET_ACCESS_KEY="{s}"', 'awsSecretKey := "{s}"']),
 "github-classic": (lambda: "ghp_" + r(36), ['token := "{s}"', "GITHUB_TOKEN={s}", 'git clone https://x-access-token:{s}@git.example.com/org/repo']),
 "github-fine-grained": (lambda: "github_pat_" + r(22) + "_" + r(59), ['gh_token: "{s}"', "GH_TOKEN={s}", '{{"token": "{s}"}}']),
 "github-oauth": (lambda: "gho_" + r(36), ['oauth = "{s}"', "auth: {s}", "TOKEN={s}"]),
 "gitlab-pat": (lambda: "glpat-" + r(20, A + "_-"), ['private_token: "{s}"', "GITLAB_TOKEN={s}", 'headers["PRIVATE-TOKEN"] = "{s}"']),
 "slack-bot": (lambda: "xoxb-%s-%s-%s" % (r(12, "0123456789"), r(13, "0123456789"), r(24)), ['slackToken := "{s}"', "SLACK_BOT_TOKEN={s}", 'token: "{s}"']),
 "slack-webhook": (lambda: "https://hooks.slack.com/services/T%s/B%s/%s" % (r(8, B32[:26]), r(8, B32[:26]), r(24)), ['webhook := "{s}"', "SLACK_WEBHOOK={s}", 'url: "{s}"']),
 "stripe-live": (lambda: "sk_live_" + r(24), ['stripe.Key = "{s}"', "STRIPE_SECRET_KEY={s}", 'secret_key: "{s}"']),
 "google-api-key": (lambda: "AIza" + r(35, A + "_-"), ['const mapsKey = "{s}"', "GOOGLE_API_KEY={s}", '"apiKey": "{s}",']),
 "anthropic-key": (lambda: "sk-ant-api03-" + r(93, A + "_-") + "AA", ['client := anthropic.New("{s}")', "ANTHROPIC_API_KEY={s}", 'api_key: "{s}"']),
 "openai-key": (lambda: "sk-proj-" + r(20, A + "_-") + "T3BlbkFJ" + r(20, A + "_-"), ['openai.api_key = "{s}"', "OPENAI_API_KEY={s}", 'key: "{s}"']),
 "npm-token": (lambda: "npm_" + r(36), ["//registry.example.com/:_authToken={s}", "NPM_TOKEN={s}", 'npmToken := "{s}"']),
 "jwt": (lambda: jwt(), ['Authorization: Bearer {s}', 'const session = "{s}"', "jwt: {s}"]),
 "private-key-rsa": (lambda: pem("RSA"), None),
 "private-key-openssh": (lambda: pem("OPENSSH"), None),
 "url-credentials": (lambda: "postgres://admin:%s@db.internal.example.com:5432/app" % r(16), ['dsn := "{s}"', "DATABASE_URL={s}", 'url: "{s}"']),
 "go-password": (lambda: r(14) + "!9", ['dbPassword := "{s}"', 'const adminPassword = "{s}"', 'cfg.Password = "{s}"']),
 "yaml-secret": (lambda: r(32), ['client_secret: "{s}"', "  password: '{s}'", 'api_key: "{s}"']),
 "env-unquoted": (lambda: r(32), ["DB_PASSWORD={s}", "API_SECRET={s}", "AUTH_TOKEN={s}"]),
 "twilio-key": (lambda: "SK" + r(32, HEX), ['twilioKey := "{s}"', "TWILIO_API_KEY={s}", 'sid: "{s}"']),
 "sendgrid-key": (lambda: "SG." + r(22, A + "_-") + "." + r(43, A + "_-"), ['sendgrid_key = "{s}"', "SENDGRID_API_KEY={s}", 'mailKey := "{s}"']),
 "shopify-token": (lambda: "shpat_" + r(32, HEX), ['shop_token: "{s}"', "SHOPIFY_TOKEN={s}", 'X-Shopify-Access-Token: {s}']),
 "digitalocean-pat": (lambda: "dop_v1_" + r(64, HEX), ['do_token = "{s}"', "DIGITALOCEAN_TOKEN={s}", 'token: "{s}"']),
 "vault-token": (lambda: "hvs." + r(95, A + "_-"), ['VAULT_TOKEN={s}', 'vault_token: "{s}"', 'vaultToken := "{s}"']),
 "huggingface-token": (lambda: "hf_" + r(34, string.ascii_letters), ['HF_TOKEN={s}', 'hf_token: "{s}"', 'token = "{s}"']),
 "databricks-token": (lambda: "dapi" + r(32, HEX), ['DATABRICKS_TOKEN={s}', 'token: "{s}"', 'dbToken := "{s}"']),
 "age-secret-key": (lambda: "AGE-SECRET-KEY-1" + r(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"), ["{s}", "# {s}", 'key: "{s}"']),
 "grafana-sa-token": (lambda: "glsa_" + r(32) + "_" + r(8, HEX), ['GRAFANA_TOKEN={s}', 'grafana_token: "{s}"', 'tok := "{s}"']),
 "bearer-header": (lambda: r(40, A + "-._"), ['curl -H "Authorization: Bearer {s}" https://api.example.com/v1', 'req.Header.Set("Authorization", "Bearer {s}")', 'authorization: "Bearer {s}"']),
 "postman-key": (lambda: "PMAK-" + r(24, HEX) + "-" + r(34, HEX), ['POSTMAN_API_KEY={s}', 'postman_key: "{s}"', 'pmKey := "{s}"']),
 "basic-auth-url": (lambda: "https://deploy:%s@ci.example.com/hook" % r(20), ['curl "{s}"', "HOOK={s}", 'endpoint: "{s}"']),
 # Held out: kinds added after enclave's rules were written, with no
 # vendor rule of their own in rules.toml, to show how the generic rules
 # do on formats nobody tuned for.
 "heldout-linear": (lambda: "lin_api_" + r(40, string.ascii_lowercase + string.digits), ["LINEAR_API_KEY={s}", 'linear_key: "{s}"', 'linearClient := linear.New("{s}")']),
 "heldout-doppler": (lambda: "dp.pt." + r(43, string.ascii_lowercase + string.digits), ["DOPPLER_TOKEN={s}", 'doppler: "{s}"', 'dop := "{s}"']),
 "heldout-pulumi": (lambda: "pul-" + r(40, HEX), ["PULUMI_ACCESS_TOKEN={s}", 'pulumi_token: "{s}"', 'p := pulumi.Token("{s}")']),
 "heldout-planetscale": (lambda: "pscale_tkn_" + r(43, A + "_"), ["PLANETSCALE_TOKEN={s}", 'pscale: "{s}"', 'ps := "{s}"']),
 "heldout-newrelic": (lambda: "NRAK-" + r(27, string.ascii_uppercase + string.digits), ["NEW_RELIC_API_KEY={s}", 'newrelic_key: "{s}"', 'nr := "{s}"']),
 "heldout-alibaba": (lambda: "LTAI" + r(20, string.ascii_letters + string.digits), ["ALIBABA_ACCESS_KEY_ID={s}", 'alibaba_key_id: "{s}"', 'aliKey := "{s}"']),
 "heldout-mailgun": (lambda: "key-" + r(32, HEX), ["MAILGUN_API_KEY={s}", 'mailgun_api_key: "{s}"', 'mg := mailgun.New("example.com", "{s}")']),
 "heldout-telegram": (lambda: "%s:AA%s" % (r(10, "0123456789"), r(33, A + "_-")), ["TELEGRAM_BOT_TOKEN={s}", 'telegram_token: "{s}"', 'bot := telegram.NewBot("{s}")']),
}
ctx_before = {"go": ["package config", "", "import \"os\"", "", "func load() {"], "yaml": ["service:", "  name: api"],
              "env": ["# local settings", "LOG_LEVEL=debug"], "sh": ["#!/bin/sh", "set -eu"], "txt": ["notes"]}
def ext_for(t):
    if ":=" in t or t.startswith("const ") or "Header.Set" in t or ".New(" in t or t.startswith("stripe.") or t.startswith("cfg."): return "go"
    if t.startswith("export ") or t.startswith("curl ") or t.startswith("git "): return "sh"
    if "=" in t and ":" not in t.split("=")[0] and " " not in t.split("=")[0]: return "env"
    return "yaml"
lab = []
os.makedirs(out + "/pos", exist_ok=True)
n = 0
for kind, (gen, tmpls) in kinds.items():
    for i in range(3):
        n += 1
        if tmpls is None:
            ext = ["pem", "key", "txt"][i]
            lines = ["# deploy key"] + gen()
            at = 2
        else:
            t = tmpls[i]
            ext = ext_for(t)
            pre = ctx_before.get(ext, ["notes"])
            lines = pre + [t.format(s=gen())] + (["}"] if ext == "go" else [])
            at = len(pre) + 1
        name = "pos/%03d_%s.%s" % (n, kind, ext)
        open(out + "/" + name, "w").write("\n".join(lines) + "\n")
        lab.append("%s\t%d\t%s" % (name, at, kind))

# Near misses: nothing here is a live credential.
neg = [
 'aws_access_key_id = AKIAIOSFODNN7EXAMPLE',
 'aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
 'password = "${DB_PASSWORD}"',
 'password: "<your-password>"',
 'password := os.Getenv("DB_PASSWORD")',
 'password := r.FormValue("password")',
 'api_key = "xxxxxxxxxxxxxxxxxxxx"',
 'secret: "{{ .Values.secret }}"',
 'token: "REDACTED"',
 'const passwordMinLength = 12',
 'if password == "" { return errNoPassword }',
 'DB_PASSWORD=${DB_PASSWORD}',
 'API_KEY=changeme',
 'client_secret: "your-client-secret"',
 '// Tokens look like ghp_ followed by 36 characters.',
 'url := "https://user@git.example.com/org/repo.git"',
 'dsn := "postgres://app:${PGPASSWORD}@db:5432/app"',
 'dsn := fmt.Sprintf("postgres://%s:%s@%s/app", user, pass, host)',
 'secretName := "prod-db-credentials"',
 'passwordField := "password"',
 'tokenType := "bearer"',
 'Authorization: Bearer $TOKEN',
 'Authorization: Bearer <token>',
 'export GITHUB_TOKEN="$(cat ~/.config/token)"',
 'key: !vault |',
 'password_hash: "$2a$10$abcdefghijklmnopqrstuu"',
 'AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"),',
 'secret = config.get("secret")',
 'api_key = None',
 'token = ""',
]
for i in range(12):
    neg.append("golang.org/x/mod%d v0.%d.0 h1:%s=" % (i, i, base64.b64encode(bytes(R.getrandbits(8) for _ in range(32))).decode()[:43]))
    neg.append('"integrity": "sha512-%s=="' % base64.b64encode(bytes(R.getrandbits(8) for _ in range(64))).decode()[:86])
    neg.append("commit %s" % r(40, HEX))
    neg.append('id: "%s-%s-%s-%s-%s"' % (r(8, HEX), r(4, HEX), r(4, HEX), r(4, HEX), r(12, HEX)))
    neg.append('checksum := "%s"' % r(64, HEX))
os.makedirs(out + "/neg", exist_ok=True)
for i, l in enumerate(neg):
    open(out + "/neg/%03d.txt" % i, "w").write("settings\n" + l + "\n")

# Ordinary Go source: every non-test file of these standard packages.
m = 0
for pkg in ["net/http", "encoding/json", "go/ast", "go/parser", "os/exec", "database/sql", "text/template", "archive/tar", "compress/flate", "net/url", "strings", "sort", "bufio", "flag", "log/slog", "path/filepath", "regexp/syntax", "html/template", "mime/multipart", "net/mail", "crypto/x509", "crypto/tls", "cmd/go/internal/modfetch", "cmd/go/internal/auth"]:
    d = os.path.join(goroot, "src", pkg)
    if not os.path.isdir(d): continue
    for f in sorted(os.listdir(d)):
        if f.endswith(".go") and not f.endswith("_test.go"):
            dst = os.path.join(out, "go", pkg.replace("/", "_") + "__" + f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "wb").write(open(os.path.join(d, f), "rb").read())
            m += 1
open(labels, "w").write("\n".join(lab) + "\n")
print("# corpus: %d labelled secrets (%d kinds), %d near-miss files, %d Go source files" % (len(lab), len(kinds), len(neg), m))
PY

# Enclave's scanner: the test entry point over the same directory.
go test -c -o "$work/verify.test" ./internal/verify >&2
t0=$(date +%s%N)
(cd "$repo/internal/verify" && ENCLAVE_SECRET_CORPUS="$work/corpus" ENCLAVE_SECRET_OUT="$work/enclave.tsv" \
	"$work/verify.test" -test.run '^TestSecretCorpusScan$' -test.count=1 >/dev/null)
t1=$(date +%s%N)
# The same scanner with Enclave's own rules.toml only (no gitleaks set).
(cd "$repo/internal/verify" && ENCLAVE_SECRET_RULES=builtin ENCLAVE_SECRET_CORPUS="$work/corpus" ENCLAVE_SECRET_OUT="$work/enclave-own.tsv" \
	"$work/verify.test" -test.run '^TestSecretCorpusScan$' -test.count=1 >/dev/null)
t1b=$(date +%s%N)
"$GITLEAKS" dir --no-banner --log-level error --exit-code 0 --report-format json --report-path "$work/gitleaks.json" "$work/corpus" >&2
t2=$(date +%s%N)

python3 - "$work/corpus" "$work/labels" "$work/enclave.tsv" "$work/gitleaks.json" $(( (t1 - t0) / 1000000 )) $(( (t2 - t1b) / 1000000 )) "$work/enclave-own.tsv" $(( (t1b - t1) / 1000000 )) <<'PY'
import json, os, sys
corpus, labels, enc, gl, tenc, tgl, encown, tencown = sys.argv[1:9]
lab = {}
for l in open(labels):
    if l.strip():
        f, n, k = l.rstrip("\n").split("\t")
        lab[(f, int(n))] = k
def enclave(enc=enc):
    s = set()
    for l in open(enc):
        if l.strip():
            f, n, _ = l.rstrip("\n").split("\t")
            s.add((f, int(n)))
    return s
def gitleaks():
    s = set()
    for x in json.load(open(gl)):
        f = os.path.relpath(x["File"], corpus) if os.path.isabs(x["File"]) else x["File"]
        if f.startswith(corpus.lstrip("/")):
            f = os.path.relpath("/" + f, corpus)
        s.add((f, x["StartLine"]))
    return s
res = {"enclave": (enclave(), tenc), "gitleaks": (gitleaks(), tgl), "enc-own": (enclave(encown), tencown)}
print("# enclave: the default rules (rules.toml + the vendored gitleaks set); enc-own: rules.toml alone")
print("%-10s %4s %4s %4s %9s %7s %8s" % ("scanner", "TP", "FP", "FN", "precision", "recall", "wall ms"))
for name, (got, ms) in res.items():
    tp = len(got & lab.keys()); fp = len(got - lab.keys()); fn = len(lab.keys() - got)
    prec = tp / (tp + fp) if tp + fp else 0.0
    print("%-10s %4d %4d %4d %9.3f %7.3f %8s" % (name, tp, fp, fn, prec, tp / len(lab), ms))
for title, sel in (("tuned kinds (a vendor or generic rule in rules.toml)", lambda k: not k.startswith("heldout-")), ("held-out kinds (no vendor rule in rules.toml)", lambda k: k.startswith("heldout-"))):
    keys = {x for x, v in lab.items() if sel(v)}
    print("\n# recall on %s, %d secrets: enclave %.3f, gitleaks %.3f, enc-own %.3f" % (title, len(keys), len(keys & res["enclave"][0]) / len(keys), len(keys & res["gitleaks"][0]) / len(keys), len(keys & res["enc-own"][0]) / len(keys)))
kinds = sorted(set(lab.values()))
print("\n# recall by kind (found of 3): enclave / gitleaks / enc-own")
for k in kinds:
    keys = [x for x, v in lab.items() if v == k]
    print("%-22s %d / %d / %d" % (k, sum(x in res["enclave"][0] for x in keys), sum(x in res["gitleaks"][0] for x in keys), sum(x in res["enc-own"][0] for x in keys)))
for name, (got, _) in res.items():
    fps = sorted(got - lab.keys())
    print("\n# %s false positives (%d):" % (name, len(fps)))
    for f, n in fps[:40]:
        print("  %s:%d" % (f, n))
PY
