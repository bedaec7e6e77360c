#!/usr/bin/env bash
# bench/gateway.sh - measure the model gateway against a direct connection to
# the same fake upstream, in one run.
#
# Three processes, as in a deployment where the model is remote and the
# agent sits in a sandbox: the fake upstream (SSE chunks stamped with the
# time they were written), the gateway (one session, recording to a no-op
# recorder: the audit log's cost is bench/audit.sh's), and the load client.
# The client takes four paths in turn: direct; through the gateway; and
# through two floors that the gateway's process also serves, a byte-for-byte
# TCP relay (what one more hop costs) and "plain", net/http's server and
# client with a flushed copy loop and nothing inspected or recorded (what
# net/http costs per request: the gateway minus its checks). It prints, at
# 1, 100 and 1,000 concurrent streams:
#   - time to first byte (per request) and delivery delay per chunk (the
#     upstream's write stamp to the client's read), p50 and p99, for each
#     path and what each adds over direct; "later p99" counts only chunks
#     from each stream's third on, after the burst of requests that opened
#     the streams has been served;
#   - the gateway process's CPU time per stream and per chunk (getrusage;
#     what scheduling noise on a shared machine does not blur, though it
#     includes the Go runtime's idle spinning between wake-ups);
#   - one non-streamed request at a time, both paths;
#   - the gateway process's memory per open stream (Go heap + stacks, RSS).
# Then the in-process Go benchmarks (ns per request and per chunk, allocations,
# prompt inspection of a 50 KB request).
#
# All three processes share the machine's CPUs; on a small machine the
# 1,000-stream row measures CPU saturation more than the gateway.
#
# Usage: bench/gateway.sh [benchtime]   (default 2s)
#   ENCLAVE_BENCH_STREAMS=1,100,1000 ENCLAVE_BENCH_CHUNKS=20 ENCLAVE_BENCH_GAP=20ms
#   ENCLAVE_BENCH_ROUNDS=2 ENCLAVE_BENCH_HOLD=1000 ENCLAVE_BENCH_REQUESTS=400
#   (non-streamed requests) override the defaults.
#   ENCLAVE_BENCH_CPUPROFILE=FILE and ENCLAVE_BENCH_HEAPPROFILE=FILE write the
#   gateway process's CPU profile and, with the streams held, its heap.
#   ENCLAVE_BENCH_STAGGER=1 starts each concurrent stream at its own moment
#   within one gap, as independent agents would; by default all start
#   together and their chunks arrive in lock step (the worst case).
#   PIN=1 pins the gateway to the last CPU and the upstream and client to
#   the first (both paths run on the same CPUs, so the comparison stays
#   fair, and the gateway's CPU time is not taken by the load it serves).
#   GATEWAY_ENV="GOGC=400 GOMAXPROCS=1" sets variables for the gateway's
#   process only (runtime settings tried against the lock-step tail).
#   NICE=-5 runs all three processes at that nice level (root), so other
#   work on a shared machine disturbs the measurement less.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
benchtime=${1:-2s}
last=$(($(nproc) - 1))
prefix() { # prefix ROLE: the command words that place and prioritise a role
	local w=(nice -n "${NICE:-0}")
	if [ "${PIN:-0}" = 1 ]; then
		case $1 in
		gateway) w+=(taskset -c "$last") ;;
		*) w+=(taskset -c 0) ;;
		esac
	fi
	echo "${w[@]}"
}
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
go test -c -o "$tmp/gw.test" ./internal/gateway

start() { # start ROLE [VAR=value...]: run a server role, wait for its ready file
	local role=$1
	shift
	env "$@" ENCLAVE_BENCH_ROLE="$role" ENCLAVE_BENCH_READY="$tmp/$role.ready" \
		$(prefix "$role") "$tmp/gw.test" -test.run '^TestBenchRole$' -test.count=1 >"$tmp/$role.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		[ -s "$tmp/$role.ready" ] && return 0
		sleep 0.1
	done
	echo "bench/gateway.sh: the $role process did not start:" >&2
	cat "$tmp/$role.log" >&2
	exit 1
}
start upstream
upstream=$(sed -n 1p "$tmp/upstream.ready")
# shellcheck disable=SC2086 # GATEWAY_ENV is a list of words by design
start gateway ENCLAVE_BENCH_UPSTREAM="$upstream" ${GATEWAY_ENV:-}
gateway=$(sed -n 1p "$tmp/gateway.ready")
token=$(sed -n 2p "$tmp/gateway.ready")
control=$(sed -n 3p "$tmp/gateway.ready")
relay=$(sed -n 4p "$tmp/gateway.ready")
plainproxy=$(sed -n 5p "$tmp/gateway.ready")

echo "== three processes: fake upstream, gateway, load client (PIN=${PIN:-0} NICE=${NICE:-0}; load average $(cut -d' ' -f1-3 /proc/loadavg))"
ENCLAVE_BENCH_ROLE=client ENCLAVE_BENCH_UPSTREAM="$upstream" ENCLAVE_BENCH_GATEWAY="$gateway" \
	ENCLAVE_BENCH_TOKEN="$token" ENCLAVE_BENCH_CONTROL="$control" ENCLAVE_BENCH_RELAY="$relay" ENCLAVE_BENCH_PLAINPROXY="$plainproxy" \
	$(prefix client) "$tmp/gw.test" -test.run '^TestBenchRole$' -test.count=1 -test.timeout 900s |
	grep -v -e '^PASS$' -e '^ok ' -e '^--- '
echo
echo "== in-process Go benchmarks (benchtime $benchtime)"
"$tmp/gw.test" -test.run '^$' -test.bench 'Request|Stream|Inspect' -test.benchmem -test.benchtime "$benchtime" |
	grep -e '^Benchmark' -e '^goos' -e '^cpu'
