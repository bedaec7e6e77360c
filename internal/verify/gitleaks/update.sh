#!/bin/sh
# internal/verify/gitleaks/update.sh: refresh the vendored gitleaks rule
# file from a gitleaks release, fetched through the Go module proxy (go
# checks the module against the checksum database), and print the SHA-256
# to put in gitleaksRulesSHA256 (secrets.go) with the version.
#
# Usage: internal/verify/gitleaks/update.sh v8.30.1
set -eu
v=${1:?usage: update.sh VERSION}
cd "$(dirname "$0")"
dir=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "github.com/zricethezav/gitleaks/v8@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "update.sh: module download failed" >&2; exit 1; }
cp "$dir/config/gitleaks.toml" gitleaks.toml
cp "$dir/LICENSE" LICENSE
chmod 644 gitleaks.toml LICENSE
echo "gitleaksVersion = \"$v\""
echo "gitleaksRulesSHA256 = \"$(sha256sum gitleaks.toml | cut -d' ' -f1)\""
