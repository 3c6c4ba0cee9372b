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
# pytest's cache (kept out of the tree) remembers which tests failed, for the second look.
cache=(-o "cache_dir=$PWD/.venv/pytest-cache")
rm -f .venv/pytest-cache/v/cache/lastfailed  # this run's failures only
.venv/bin/pytest -q "${cache[@]}" "${xdist[@]}" "$@"
status=$?
[ "$status" -eq 5 ] && { echo "test: no tests ran" >&2; exit 1; }
# A few failures get one second look, alone in one process: end-to-end tests share 2 cores
# with three other workers' servers and apps. What passes then is named as flaky (a bug
# to find, in the log for everyone), what fails again fails the build; many failures, or
# anything but failed tests (exit 1), are not looked at twice.
failed=$(.venv/bin/python - "$PWD/.venv/pytest-cache" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1], "v", "cache", "lastfailed")
print(len(json.loads(path.read_text())) if path.exists() else 0)
PY
)
if [ "$status" -eq 1 ] && [ "$failed" -gt 0 ] && [ "$failed" -le "${TRPROXY_TEST_RETRY_MAX:-3}" ]; then
  echo "test: $failed failed test(s): running them again, alone" >&2
  .venv/bin/pytest -q "${cache[@]}" --last-failed --last-failed-no-failures none "$@"
  status=$?
  if [ "$status" -eq 0 ]; then
    echo "test: FLAKY (failed alongside the other workers, passed alone): see the failures above" >&2
  fi
fi
exit "$status"
