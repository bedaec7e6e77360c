#!/bin/sh
# bench/audit.sh: the audit log benchmarks, in one run on one machine.
#
#   durable appends/s with group commit (many producers waiting for their
#   own acknowledgement) beside one fsync per event (a single producer),
#   full verification of a 1,000,000-event log, inclusion proof generation
#   and offline check, canonical encoding.
#
# The 1,000,000-event SQLite log is built once (through the store, not
# Append) under $TMPDIR/enclave-audit-bench-1000000 and reused; delete that
# directory to rebuild it. Run on an otherwise idle machine: group commit is
# latency-bound and the numbers swing with other load.
#
# Usage: bench/audit.sh [extra go test flags]
set -eu
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' \
	-bench 'AppendGroupCommit|AppendFsyncEach|Verify1M|Prove|CheckProof|EncodeLeaf' \
	-benchtime 3s -benchmem -timeout 60m "$@" ./internal/audit/ | tee "$out"
echo
echo "summary ($(nproc) cores, $(uname -r)):"
awk '
/^BenchmarkAppendGroupCommit/ { for (i = 1; i <= NF; i++) if ($i == "events/s") printf "  durable appends, group commit:  %8.0f events/s (target >= 50000)\n", $(i-1) }
/^BenchmarkAppendFsyncEach/   { for (i = 1; i <= NF; i++) if ($i == "events/s") printf "  durable appends, fsync each:    %8.0f events/s\n", $(i-1) }
/^BenchmarkVerify1M/          { for (i = 1; i <= NF; i++) if ($i == "s/verify") printf "  verify 1,000,000 events:        %8.2f s (target < 3)\n", $(i-1) }
/^BenchmarkProve/             { printf "  inclusion proof generation:     %8.1f us\n", $3 / 1000 }
/^BenchmarkCheckProof/        { printf "  inclusion proof check:          %8.1f us\n", $3 / 1000 }
/^BenchmarkEncodeLeaf/        { printf "  canonical encoding:             %8.1f us\n", $3 / 1000 }
' "$out"
