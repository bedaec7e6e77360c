#!/bin/sh
# bench/workspace.sh: what preparing a session copy costs on a large
# repository, and whether it scales with the repository's byte size.
#
# It generates two repositories of FILES files (default 50000, ~2 KiB each)
# in a temp dir: "small" with a one-commit history, and "big" with the same
# kind of tree plus HISTORY_MIB MiB (default 500) of incompressible blobs in
# its history. It then times, RUNS times each (default 5), and prints the
# medians of:
#   prepare   workspace.Prepare (shared clone + checkout + base)
#   snap0     workspace.Snapshot with no change
#   snap10    workspace.Snapshot with 10 new files
#   cp        cp -a of the work tree without .git (the floor for any copy)
#   clone     git clone --no-local (what copying the objects would cost)
#
# Usage: bench/workspace.sh            (from the repository root)
#        FILES=5000 RUNS=3 bench/workspace.sh
set -eu

FILES=${FILES:-50000}
HISTORY_MIB=${HISTORY_MIB:-500}
RUNS=${RUNS:-5}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/enclave-bench-ws.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

go test -c -o "$tmp/ws.test" ./internal/workspace

# An isolated git identity for generating the repositories (set after the
# build, so that Go keeps its own caches under the real HOME).
mkdir "$tmp/home"
printf '[user]\n\tname = bench\n\temail = bench@example.com\n' >"$tmp/home/.gitconfig"
export HOME="$tmp/home" GIT_CONFIG_NOSYSTEM=1

gen() { # gen DIR HISTORY_MIB
	ENCLAVE_BENCH_GEN="$1" ENCLAVE_BENCH_FILES="$FILES" ENCLAVE_BENCH_HISTORY_MIB="$2" \
		"$tmp/ws.test" -test.run '^TestGenerateBenchRepo$' >/dev/null
}

median() { # reads one number per line
	sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit} m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.3f", m}'
}

# secs CMD...: wall seconds of one run of CMD
secs() {
	s=$(date +%s.%N)
	"$@" >/dev/null 2>&1
	e=$(date +%s.%N)
	awk -v s="$s" -v e="$e" 'BEGIN {print e - s}'
}

# gobench REPO NAME: medians (seconds) of a Go benchmark over RUNS runs
gobench() {
	ENCLAVE_BENCH_REPO="$1" "$tmp/ws.test" -test.run '^$' -test.bench "$2" \
		-test.benchtime 1x -test.count "$RUNS" 2>/dev/null |
		awk -v name="$2" '$1 ~ "^Benchmark" && index($1, name) {print $3/1e9}' | median
}

printf 'generating repositories: %d files each, big one with %d MiB of history\n' "$FILES" "$HISTORY_MIB"
gen "$tmp/small" 0
gen "$tmp/big" "$HISTORY_MIB"
sync # do not time the write-back of the generated files

printf '\n%-6s %10s %10s %10s %10s %10s %10s %10s\n' repo tree-MiB git-MiB prepare snap0 snap10 cp clone
for r in small big; do
	repo="$tmp/$r"
	treemb=$(du -sm --exclude=.git "$repo" | cut -f1)
	gitmb=$(du -sm "$repo/.git" | cut -f1)
	prep=$(gobench "$repo" 'BenchmarkPrepare')
	s0=$(gobench "$repo" 'BenchmarkSnapshot/changed=0')
	s10=$(gobench "$repo" 'BenchmarkSnapshot/changed=10')
	cpt=$(for i in $(seq "$RUNS"); do
		rm -rf "$tmp/cp"
		secs sh -c "mkdir '$tmp/cp' && cd '$repo' && tar --exclude=./.git -cf - . | tar -C '$tmp/cp' -xf -"
	done | median)
	cl=$(for i in $(seq "$RUNS"); do
		rm -rf "$tmp/clone"
		secs git clone -q --no-local --no-checkout "$repo" "$tmp/clone"
	done | median)
	rm -rf "$tmp/cp" "$tmp/clone"
	printf '%-6s %10s %10s %9ss %9ss %9ss %9ss %9ss\n' "$r" "$treemb" "$gitmb" "$prep" "$s0" "$s10" "$cpt" "$cl"
done
printf '\n%s, %s cores, %s; medians of %d runs; load average %s\n' \
	"$(uname -sr)" "$(nproc)" "$(git --version)" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
