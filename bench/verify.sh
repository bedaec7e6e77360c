#!/bin/sh
# bench/verify.sh: time the verification gate on a real release diff.
#
# Fetches two releases of a public Go module through the Go module proxy
# (go mod download -json), builds a throwaway git repository whose base
# commit is the old release's tree and whose head commit is the new one's,
# fills the module cache with the new release's dependencies (the sandboxed
# test run has no network and reads the cache read-only), and runs the gate
# on it through internal/verify's TestRealChangeReport: go vet and the
# project's tests run in real sandboxes. Prints, without and with the tests
# check, the median wall time per check over ENCLAVE_VERIFY_ROUNDS runs,
# the change's size and what the gate found.
#
# The default change is github.com/spf13/cobra v1.7.0 -> v1.8.0 (36 files,
# about 950 changed lines). The base has one release of history before it
# (PREV, v1.6.1), each commit dated with its release time from the module
# proxy, so that recent churn (base lines the change rewrites that the base
# release itself had changed) has a history to blame. Needs root or
# unprivileged user namespaces (the sandbox), git and the Go toolchain.
# GOSEC=1 also builds gosec (the pinned version) from the Go module proxy
# into a temporary directory and puts it on PATH, so the static check runs
# it on the head and the base.
#
# Usage: bench/verify.sh
#        GOSEC=1 ENCLAVE_VERIFY_ROUNDS=1 bench/verify.sh
#        MODULE=github.com/spf13/pflag PREV=v1.0.5 FROM=v1.0.6 TO=v1.0.7 bench/verify.sh
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
MODULE=${MODULE:-github.com/spf13/cobra}
PREV=${PREV:-v1.6.1}
FROM=${FROM:-v1.7.0}
TO=${TO:-v1.8.0}
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "# machine: $(uname -sr), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# go: $(go version); change: $MODULE $FROM -> $TO (history: $PREV)"

moddir() {
	(cd "$work" && go mod download -json "$1@$2") |
		python3 -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d["Dir"])'
}
reltime() {
	(cd "$work" && go mod download -json "$1@$2") |
		python3 -c 'import json,sys; print(json.load(open(json.load(sys.stdin)["Info"]))["Time"])'
}

g() { git -C "$work/repo" -c user.name=bench -c user.email=bench@example.com -c core.hooksPath=/dev/null "$@"; }
mkdir "$work/repo"
g init -q -b main
# commit_release VERSION: the work tree becomes that release, committed at
# its release time.
commit_release() {
	find "$work/repo" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
	cp -R "$(moddir "$MODULE" "$1")"/. "$work/repo/"
	chmod -R u+w "$work/repo"
	t=$(reltime "$MODULE" "$1")
	g add -A && GIT_AUTHOR_DATE="$t" GIT_COMMITTER_DATE="$t" g commit -q -m "$MODULE $1"
}
commit_release "$PREV"
commit_release "$FROM"
base=$(g rev-parse HEAD)
# The base's modules too: gosec analyses the base to tell new findings.
(cd "$work/repo" && GOFLAGS=-mod=mod go mod download) >&2
commit_release "$TO"
head=$(g rev-parse HEAD)
echo "# diff: $(g diff --shortstat "$base" "$head")"
# The sandboxed tests resolve modules from the read-only cache only.
(cd "$work/repo" && GOFLAGS=-mod=mod go mod download) >&2

if [ "${GOSEC:-}" = 1 ]; then
	v=$(sed -n 's/^const GosecVersion = "\(.*\)"$/\1/p' internal/verify/gosec.go)
	echo "# building gosec $v from the Go module proxy" >&2
	(cd "$work" && GOBIN="$work/gosec" GOFLAGS=-mod=mod go install "github.com/securego/gosec/v2/cmd/gosec@$v") >&2
	PATH="$work/gosec:$PATH"
	export PATH
fi
go test -c -o "$work/verify.test" ./internal/verify >&2
cd "$repo/internal/verify"
ENCLAVE_VERIFY_GITDIR="$work/repo/.git" ENCLAVE_VERIFY_BASE="$base" ENCLAVE_VERIFY_HEAD="$head" \
ENCLAVE_VERIFY_ROUNDS="${ENCLAVE_VERIFY_ROUNDS:-3}" \
	"$work/verify.test" -test.run '^TestRealChangeReport$' -test.count=1 -test.timeout 30m |
	grep -v -E '^(PASS|ok )'
