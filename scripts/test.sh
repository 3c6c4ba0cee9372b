#!/usr/bin/env bash
# The test command: every test, servers started by the tests themselves on loopback.
# Exit 0 only when tests ran and passed (pytest's "no tests" exit 5 is a failure here).
# Tests run in TRPROXY_TEST_WORKERS pytest-xdist workers (default 4: they mostly wait on
# servers and subprocesses, even on 2 cores; 0 runs them in this process); rules for
# xdist-safe tests: docs/testing.md.
set -uo pipefail
cd "$(dirname "$0")/.."
# Compiled bytecode kept (in .venv, out of the tree) even where the environment says not to
# write it: otherwise every worker re-rewrites the asserts of every test module, and every
# trproxy or app process started by a test compiles trproxy again.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
workers=${TRPROXY_TEST_WORKERS:-4}
xdist=()
if [ "$workers" != 0 ]; then xdist=(-n "$workers" --dist loadgroup); fi
.venv/bin/pytest -q -p no:cacheprovider "${xdist[@]}" "$@"
status=$?
[ "$status" -eq 5 ] && { echo "test: no tests ran" >&2; exit 1; }
exit "$status"
