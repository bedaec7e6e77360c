#!/bin/sh
# twice.sh [--] CLAUDE ARGS... : runs Claude Code twice in one enclave
# session, first with model claude-cleared-1, then with claude-weak-1
# (Claude Code reads ANTHROPIC_MODEL), for the sticky-sensitivity test.
# enclave detects the agent from its command line, which here starts with
# sh, so the switches it sets for Claude are set here.
[ "${1:-}" = -- ] && shift
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \
	DISABLE_AUTOUPDATER=1 IS_SANDBOX=1 CLAUDE_CODE_MAX_RETRIES=1
ANTHROPIC_MODEL=claude-cleared-1 "$@"
echo "twice.sh: first run exit $?" >&2
ANTHROPIC_MODEL=claude-weak-1 "$@"
rc=$?
echo "twice.sh: second run exit $rc" >&2
exit "$rc"
