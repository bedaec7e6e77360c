package verify

import "strings"

// popular lists well-known package names per ecosystem, written for
// Enclave from common knowledge of each ecosystem. A dependency whose
// name is one edit from one of these (two for names of nine characters or
// more) and is not the name itself is flagged as a possible typosquat.
var popular = map[string][]string{
	EcoNPM: strings.Fields(`react react-dom lodash express axios moment chalk commander debug request
		webpack babel-core typescript eslint prettier jest mocha chai vue angular jquery underscore
		async bluebird uuid dotenv yargs minimist glob rimraf mkdirp fs-extra body-parser cors
		jsonwebtoken bcrypt mongoose redis socket.io ws next nuxt electron colors cross-env
		node-fetch classnames prop-types rxjs tslib semver inquirer ora esbuild vite rollup
		nodemon dayjs zod qs cookie-parser morgan helmet passport sequelize pg mysql sqlite3`),
	EcoPyPI: strings.Fields(`requests numpy pandas django flask scipy matplotlib urllib3 boto3 botocore
		setuptools pip wheel six pyyaml cryptography certifi idna charset-normalizer jinja2
		markupsafe click pytest attrs packaging python-dateutil pytz sqlalchemy psycopg2
		pillow scikit-learn tensorflow torch beautifulsoup4 lxml selenium fastapi uvicorn
		pydantic httpx aiohttp celery redis gunicorn werkzeug paramiko colorama tqdm rich
		openai anthropic transformers jsonschema pyjwt docker kubernetes`),
	EcoCrates: strings.Fields(`serde serde_json tokio rand regex clap log syn quote proc-macro2 anyhow
		thiserror reqwest hyper futures chrono lazy_static once_cell libc bytes itertools
		tracing env_logger base64 uuid url sha2 hex bitflags cfg-if memchr time axum rayon
		crossbeam parking_lot smallvec toml walkdir tempfile`),
	EcoGo: strings.Fields(`github.com/sirupsen/logrus github.com/stretchr/testify github.com/spf13/cobra
		github.com/spf13/viper github.com/gin-gonic/gin github.com/gorilla/mux github.com/pkg/errors
		github.com/google/uuid github.com/golang/protobuf google.golang.org/protobuf
		google.golang.org/grpc github.com/go-sql-driver/mysql github.com/lib/pq
		github.com/jackc/pgx/v5 github.com/redis/go-redis/v9 go.uber.org/zap github.com/labstack/echo/v4
		github.com/gofiber/fiber/v2 github.com/aws/aws-sdk-go github.com/aws/aws-sdk-go-v2
		gopkg.in/yaml.v3 gopkg.in/yaml.v2 github.com/BurntSushi/toml github.com/mattn/go-sqlite3
		github.com/prometheus/client_golang github.com/golang-jwt/jwt/v5 golang.org/x/crypto
		golang.org/x/net golang.org/x/sys golang.org/x/text golang.org/x/mod golang.org/x/tools
		github.com/hashicorp/terraform github.com/docker/docker k8s.io/client-go
		github.com/urfave/cli/v2 github.com/fatih/color github.com/rs/zerolog`),
}

// typosquat returns the popular name near name, or "".
func typosquat(eco, name string) string {
	n := normName(eco, name)
	for _, p := range popular[eco] {
		pn := normName(eco, p)
		if pn == n {
			return ""
		}
	}
	for _, p := range popular[eco] {
		pn := normName(eco, p)
		limit := 1
		if len(pn) >= 9 {
			limit = 2
		}
		if len(pn) < 4 {
			continue // short names are one edit from too much
		}
		if d := editDistance(n, pn, limit); d > 0 && d <= limit {
			return p
		}
	}
	return ""
}

// editDistance is the optimal-string-alignment distance of a and b
// (insertions, deletions, substitutions, adjacent transpositions), or
// limit+1 if it exceeds limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
