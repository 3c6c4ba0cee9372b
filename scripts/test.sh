#!/usr/bin/env bash
# The test command: every test, servers started by the tests themselves on loopback.
# Exit 0 only when tests ran and passed (pytest's "no tests" exit 5 is a failure here).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -q -p no:cacheprovider "$@"
status=$?
[ "$status" -eq 5 ] && { echo "test: no tests ran" >&2; exit 1; }
exit "$status"
