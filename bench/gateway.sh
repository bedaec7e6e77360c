#!/usr/bin/env bash
# bench/gateway.sh - measure the model gateway against a direct connection to
# the same in-process fake upstream (an httptest server streaming SSE chunks).
#
# Prints, in one run:
#   - Go benchmarks: one non-streaming request and one 50-chunk stream, direct
#     vs through the gateway (ns/op, ns/chunk), and the prompt inspection
#     (secret rules + classification fingerprints) on a 50 KB request;
#   - added latency per request and per streamed chunk, p50 and p99, at 1, 100
#     and 1000 concurrent streams (gateway minus direct);
#   - memory per open stream.
# Client, gateway and upstream share the machine's CPUs, so absolute numbers
# include the client's and upstream's cost; compare the "added" rows.
#
# Usage: bench/gateway.sh [benchtime]   (default 2s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benchtime=${1:-2s}
echo "== Go benchmarks (benchtime $benchtime)"
go test -run '^$' -bench 'Request|Stream|Inspect' -benchmem -benchtime "$benchtime" ./internal/gateway
echo
echo "== concurrency: added latency and memory per stream"
ENCLAVE_BENCH=1 go test -count=1 -timeout 600s -run '^TestBenchConcurrency$' -v ./internal/gateway |
  sed -n '/streams of/,/memory per open stream/p' | sed 's/^ *//'
