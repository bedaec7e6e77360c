#!/bin/sh
# rcwrap.sh HOSTDIR INSIDEDIR ENCLAVE [ENCLAVE-ARGS...] -- AGENT [AGENT-ARGS...]
#
# WRAP helper for ../shared/realclients: the harness runs "$WRAP AGENT ARGS",
# where AGENT is a path under its npm cache ($RC_CACHE, under /tmp by
# default). The sandbox builds its own private /tmp and refuses mount targets
# under it, so the cache is mounted elsewhere (--ro HOSTDIR:INSIDEDIR, given
# by the caller among ENCLAVE-ARGS) and this script rewrites AGENT, the first
# word after "--", from HOSTDIR/... to INSIDEDIR/... before it runs
# ENCLAVE ENCLAVE-ARGS -- AGENT ARGS. Nothing else is rewritten.
set -eu
[ $# -ge 4 ] || { echo "usage: rcwrap.sh HOSTDIR INSIDEDIR ENCLAVE [ARGS...] -- AGENT [ARGS...]" >&2; exit 2; }
from=${1%/}
to=${2%/}
shift 2
n=$#
i=0
seen=0
mapped=0
while [ "$i" -lt "$n" ]; do
	a=$1
	shift
	i=$((i + 1))
	if [ "$seen" = 1 ] && [ "$mapped" = 0 ]; then
		case $a in
		"$from"/*) a=$to${a#"$from"} ;;
		esac
		mapped=1
	elif [ "$seen" = 0 ] && [ "$a" = -- ]; then
		seen=1
	fi
	set -- "$@" "$a"
done
[ "$mapped" = 1 ] || { echo "rcwrap.sh: no agent after --" >&2; exit 2; }
exec "$@"
