#!/bin/sh
# rcmap.sh HOSTDIR INSIDEDIR CMD... : runs CMD with the first argument after
# "--" rewritten from HOSTDIR/... to INSIDEDIR/... (the agent binary sits in
# the harness's npm cache under /tmp, which the sandbox cannot mount at the
# same path, so enclave mounts it at INSIDEDIR).
set -eu
from=${1%/}; to=${2%/}; shift 2
n=$#; i=0; state=0
while [ "$i" -lt "$n" ]; do
	a=$1; shift; i=$((i + 1))
	if [ "$state" = 1 ]; then
		case $a in "$from"/*) a=$to${a#"$from"} ;; esac
		state=2
	elif [ "$state" = 0 ] && [ "$a" = -- ]; then
		state=1
	fi
	set -- "$@" "$a"
done
[ "$state" = 2 ] || { echo "rcmap.sh: no command after --" >&2; exit 2; }
exec "$@"
