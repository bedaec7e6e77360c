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
# about 950 changed lines). Needs root or unprivileged user namespaces (the
# sandbox), git and the Go toolchain.
#
# Usage: bench/verify.sh
#        MODULE=github.com/spf13/pflag FROM=v1.0.6 TO=v1.0.7 bench/verify.sh
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
MODULE=${MODULE:-github.com/spf13/cobra}
FROM=${FROM:-v1.7.0}
TO=${TO:-v1.8.0}
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

echo "# machine: $(uname -sr), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# go: $(go version); change: $MODULE $FROM -> $TO"

moddir() {
	(cd "$work" && go mod download -json "$1@$2") |
		python3 -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d["Dir"])'
}
old=$(moddir "$MODULE" "$FROM")
new=$(moddir "$MODULE" "$TO")

g() { git -C "$work/repo" -c user.name=bench -c user.email=bench@example.com -c core.hooksPath=/dev/null "$@"; }
mkdir "$work/repo"
g init -q -b main
cp -R "$old"/. "$work/repo/"
chmod -R u+w "$work/repo"
g add -A && g commit -q -m "$MODULE $FROM"
base=$(g rev-parse HEAD)
find "$work/repo" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
cp -R "$new"/. "$work/repo/"
chmod -R u+w "$work/repo"
g add -A && g commit -q -m "$MODULE $TO"
head=$(g rev-parse HEAD)
echo "# diff: $(g diff --shortstat "$base" "$head")"
# The sandboxed tests resolve modules from the read-only cache only.
(cd "$work/repo" && GOFLAGS=-mod=mod go mod download) >&2

go test -c -o "$work/verify.test" ./internal/verify >&2
cd "$repo/internal/verify"
ENCLAVE_VERIFY_GITDIR="$work/repo/.git" ENCLAVE_VERIFY_BASE="$base" ENCLAVE_VERIFY_HEAD="$head" \
ENCLAVE_VERIFY_ROUNDS="${ENCLAVE_VERIFY_ROUNDS:-3}" \
	"$work/verify.test" -test.run '^TestRealChangeReport$' -test.count=1 -test.timeout 30m |
	grep -v -E '^(PASS|ok )'
