#!/bin/sh
# Whole-session cost: `enclave run -- true` in a small git repository,
# against the same job done by hand with stock tools in one run, alternated.
#
#   bench/run.sh [runs]     (default 30; needs bwrap: apt-get install -y bubblewrap)
#
# The peer is what a careful wrapper around bubblewrap has to do to give an
# agent the same thing enclave does, minus what bubblewrap cannot: a
# shared clone of the repository on a new branch (without git's sample
# hooks, as enclave's copy has none), bubblewrap with the same
# namespaces and view running /bin/true in it, and a commit of whatever the
# agent left (git add -A, commit). It has no egress proxy, DNS, audit log,
# Landlock, seccomp or exec record, so it is a floor, not an equal.
#
# enclave's side is `enclave run -q --verify off -- true`, each run a new
# session: workspace copy and base, sandbox, proxy listeners, durable audit
# events (start, sandbox, exit, change), snapshot and diff summary.
set -eu
runs=${1:-30}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -o "$tmp/" ./cmd/enclave ./cmd/enclave-init
chmod 755 "$tmp" "$tmp/enclave" "$tmp/enclave-init"

export ENCLAVE_STATE_DIR="$tmp/state" GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
repo="$tmp/repo"
mkdir "$repo"
git -C "$repo" init -q
i=0
while [ $i -lt 50 ]; do echo "file $i" >"$repo/f$i.txt"; i=$((i + 1)); done
git -C "$repo" add . && git -C "$repo" commit -qm init

links=""
for l in bin sbin lib lib64; do
	if [ -L "/$l" ]; then links="$links --symlink $(readlink /$l) /$l"; fi
done
n=0
# shellcheck disable=SC2086
peer() {
	n=$((n + 1))
	ws="$tmp/peer$n"
	git clone -q --shared --no-checkout --template= "$repo" "$ws"
	git -C "$ws" checkout -q -b "agent/$n"
	bwrap --unshare-all --die-with-parent --new-session --cap-drop ALL \
		--ro-bind /usr /usr $links --ro-bind /etc /etc \
		--bind "$ws" /work --tmpfs /tmp --tmpfs /home/agent --proc /proc --dev /dev \
		--hostname enclave --chdir /work /bin/true
	git -C "$ws" add -A
	git -C "$ws" commit -q --allow-empty -m "agent session $n"
	git -C "$ws" diff --stat HEAD~1 HEAD >/dev/null
	rm -rf "$ws"
}
run() { (cd "$repo" && "$tmp/enclave" run -q --verify off -- true); }

run && peer || { echo "a side failed to run" >&2; exit 1; }
now() { date +%s%N; }
: >"$tmp/e"
: >"$tmp/p"
i=0
while [ $i -lt "$runs" ]; do
	t0=$(now); run; t1=$(now); peer; t2=$(now)
	echo $(((t1 - t0) / 1000)) >>"$tmp/e"
	echo $(((t2 - t1) / 1000)) >>"$tmp/p"
	i=$((i + 1))
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
e=$(median "$tmp/e")
p=$(median "$tmp/p")
echo "runs:                   $runs (as uid $(id -u), load $(cut -d' ' -f1 /proc/loadavg))"
echo "enclave run -- true:    median ${e} us"
echo "clone+bwrap+commit:     median ${p} us"
awk -v e="$e" -v p="$p" 'BEGIN { printf "ratio:                  %.2fx\n", e / p }'
