#!/bin/sh
# rcmap.sh HOSTDIR INSIDEDIR CMD... : runs CMD with every argument after the
# first "--" that lies under HOSTDIR/ rewritten to INSIDEDIR/... (the agent
# binary sits in the harness's npm cache under /tmp, which the sandbox
# cannot mount at the same path, so enclave mounts it at INSIDEDIR).
set -eu
from=${1%/}; to=${2%/}; shift 2
n=$#; i=0; state=0
while [ "$i" -lt "$n" ]; do
	a=$1; shift; i=$((i + 1))
	if [ "$state" -ge 1 ]; then
		case $a in "$from"/*) a=$to${a#"$from"} ;; esac
		state=2
	elif [ "$a" = -- ]; then
		state=1
	fi
	set -- "$@" "$a"
done
[ "$state" = 2 ] || { echo "rcmap.sh: no command after --" >&2; exit 2; }
exec "$@"
