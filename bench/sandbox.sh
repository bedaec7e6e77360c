#!/bin/sh
# Sandbox startup: enclave's sandbox against bubblewrap with equivalent
# isolation, both running /bin/true. Prints medians and the ratio.
#
#   bench/sandbox.sh [runs]        (default 50; needs bwrap: apt-get install -y bubblewrap)
#
# The enclave side is the internal/sandbox test binary in its
# "__sandbox-testrun" mode: a fresh Go process that starts a sandbox and
# waits, as `enclave run -- true` does (user, mount, pid, net, ipc, uts and
# cgroup namespaces, pivot_root view, Landlock, seccomp, no capabilities),
# with enclave-init as the sandbox's init, as an installed enclave uses
# it. bwrap gets the same namespaces, view and capability drop; it applies
# no Landlock or seccomp filter here. Runs alternate between the two so
# machine load affects both alike.
#
# Two measures: (1) from a fresh process each time (this script's loop:
# a Go test binary against the bwrap binary, so Go's start-up counts
# against enclave), and (2) from a running process, as `enclave run`
# starts its sandbox (BenchmarkStartVersusBubblewrap: Start+Wait against
# exec of bwrap, both from one Go process), once with enclave-init as the
# init and once with the whole enclave binary, which is the init when
# enclave-init is not installed beside it.
set -eu
runs=${1:-50}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# CGO_ENABLED=0 as the enclave binary should be built: a static binary
# skips the dynamic loader in each of the sandbox's re-executed stages.
CGO_ENABLED=0 go test -c -o "$tmp/sandbox.test" ./internal/sandbox
CGO_ENABLED=0 go build -o "$tmp/" ./cmd/enclave ./cmd/enclave-init
chmod 755 "$tmp" "$tmp/sandbox.test" "$tmp/enclave" "$tmp/enclave-init"
ws="$tmp/ws"
mkdir "$ws"
if [ "$(id -u)" = 0 ]; then
	# As root the agent is an unprivileged uid: it must own the workspace.
	hostid=$(awk -F: '$1=="root"{print $2; exit}' /etc/subuid 2>/dev/null)
	chown "${hostid:-2000000000}:${hostid:-2000000000}" "$ws"
fi

links=""
for l in bin sbin lib lib64; do
	if [ -L "/$l" ]; then links="$links --symlink $(readlink /$l) /$l"; fi
done
opt=""
[ -d /opt ] && opt="--ro-bind /opt /opt"

enclave() { ENCLAVE_BENCH_EXE="$tmp/enclave-init" "$tmp/sandbox.test" __sandbox-testrun "$ws" /bin/true; }
# shellcheck disable=SC2086
bwrap_run() {
	bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL \
		--ro-bind /usr /usr $links --ro-bind /etc /etc $opt \
		--bind "$ws" /work --tmpfs /tmp --tmpfs /home/agent --proc /proc --dev /dev \
		--hostname enclave --chdir /work /bin/true
}

now() { date +%s%N; }
enclave && bwrap_run || { echo "a sandbox failed to run /bin/true" >&2; exit 1; }
: > "$tmp/e"; : > "$tmp/b"
i=0
while [ $i -lt "$runs" ]; do
	t0=$(now); enclave; t1=$(now); bwrap_run; t2=$(now)
	echo $(( (t1 - t0) / 1000 )) >> "$tmp/e"
	echo $(( (t2 - t1) / 1000 )) >> "$tmp/b"
	i=$((i + 1))
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
e=$(median "$tmp/e"); b=$(median "$tmp/b")
echo "from a fresh process each time, enclave-init as the init:"
echo "runs:            $runs (as uid $(id -u), load $(cut -d' ' -f1 /proc/loadavg))"
echo "enclave sandbox: median ${e} us"
echo "bubblewrap:      median ${b} us"
awk -v e="$e" -v b="$b" 'BEGIN { printf "ratio:           %.2fx (target <= 1.5x)\n", e / b }'
echo
gobench() { # gobench INIT LABEL: BenchmarkStartVersusBubblewrap with INIT as the sandbox's init
	echo
	echo "from a running process, $2 as the init (BenchmarkStartVersusBubblewrap, $runs starts each):"
	ENCLAVE_BENCH_EXE="$1" "$tmp/sandbox.test" -test.run '^$' -test.bench StartVersusBubblewrap -test.benchtime "${runs}x" 2>&1 |
		awk '/^BenchmarkStartVersus/ { for (i = 1; i <= NF; i++) { if ($i == "enclave-ms") e = $(i-1); if ($i == "bwrap-ms") b = $(i-1); if ($i == "ratio") r = $(i-1) } }
			END { printf "enclave sandbox: median %s ms\nbubblewrap:      median %s ms\nratio:           %sx (target <= 1.5x)\n", e, b, r }'
}
gobench "$tmp/enclave-init" "enclave-init (installed beside enclave)"
gobench "$tmp/enclave" "the enclave binary (enclave-init not installed)"
