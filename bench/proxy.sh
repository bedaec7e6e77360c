#!/bin/sh
# bench/proxy.sh: measure Enclave's egress proxy against direct loopback.
#
# One run, on this machine, reports:
#   - throughput of a 1 GiB transfer through a CONNECT tunnel, upload and
#     download, against the same transfer over a direct loopback TCP
#     connection (medians of ENCLAVE_BENCH_ROUNDS alternating rounds, ratio),
#     with two bare relays as further peers: one copying through a 1 MiB
#     buffer, one splicing (Go's io.Copy between TCP connections);
#   - CPU seconds per GiB moved in each process (client, servers, proxy),
#     which is what a relay competes for on a small machine;
#   - the latency a small plain-HTTP GET gains through the proxy, p50 and
#     p99, against a direct keep-alive request (ENCLAVE_BENCH_REQUESTS each);
#   - Go micro-benchmarks of the per-request hot paths.
# The client (the agent), the proxy and the servers (the upstream) are three
# processes, as in a session. Everything runs on 127.0.0.1. The proxy
# records every flow through an in-memory recorder, so the numbers include
# the record calls but not an audit database's write cost.
#
# With ENCLAVE_BENCH_NETNS=1 (root), two more paths put the client and the
# proxy's listening socket in a network namespace of their own, as the
# sandbox does ("sandbox"), and the same with BIG TCP (512 KiB GSO/GRO
# packets) on that namespace's loopback ("sandbox-bigtcp").
#
# Usage: bench/proxy.sh            (from anywhere in the repository)
#        ENCLAVE_BENCH_ROUNDS=9 ENCLAVE_BENCH_MIB=1024 bench/proxy.sh
#        ENCLAVE_BENCH_NETNS=1 bench/proxy.sh
set -eu
cd "$(dirname "$0")/.."

echo "# machine: $(uname -sr), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# go: $(go version)"
ENCLAVE_BENCH=1 \
ENCLAVE_BENCH_ROUNDS="${ENCLAVE_BENCH_ROUNDS:-5}" \
ENCLAVE_BENCH_MIB="${ENCLAVE_BENCH_MIB:-1024}" \
ENCLAVE_BENCH_REQUESTS="${ENCLAVE_BENCH_REQUESTS:-5000}" \
	go test -count=1 -run '^TestProxyBenchReport$' -v ./internal/egress/ 2>&1 |
	grep -E '^(throughput|cpu per GiB|latency|proxy flows)|bench_test.go|FAIL|panic'
go test -count=1 -run '^$' -benchmem \
	-bench '^(BenchmarkSmallRequest(Direct|Proxy)|BenchmarkCheckHead|BenchmarkForbiddenReason)$' \
	./internal/egress/ 2>&1 | grep -E '^(Benchmark|FAIL|panic)'
