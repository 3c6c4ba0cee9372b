#!/usr/bin/env bash
# `make demo`: record the shop example against real services, stop them all, replay it as tests.
#
#   1. start Postgres, Redis, a Kafka broker and the pricing service on free loopback ports
#   2. trproxy record -- python examples/shop/app.py   while traffic.sh sends a dozen API calls
#   3. stop every dependency
#   4. trproxy test -- python examples/shop/app.py     the calls replayed as tests, no dependency
#
# Each run starts from a fresh recording in examples/shop/trproxy/ (git-ignored); run it
# as often as you like. Needs root: the eBPF redirect is what lets the unmodified app
# talk to trproxy instead of its real dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
TRPROXY=("$PY" -m trproxy.cli)
SHOP=examples/shop
REC=$SHOP/trproxy
WORK=$(mktemp -d /tmp/trproxy-demo.XXXXXX)
SERVICES_PID="" RECORDER_PID=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_pid() {  # stop a process this script started, by its pid
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_pid "$RECORDER_PID"
  stop_pid "$SERVICES_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() {  # wait_for SECONDS PID DESCRIPTION COMMAND...: until COMMAND succeeds
  local seconds=$1 pid=$2 what=$3
  shift 3
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "demo: $what exited early" >&2; exit 1; }
    sleep 0.1
  done
  echo "demo: $what not ready after ${seconds}s" >&2
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (sudo make demo): the eBPF redirect needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN" >&2
  exit 1
fi
rm -rf "$REC"

say "1. starting Postgres, Redis, Kafka (librdkafka mock broker) and the pricing service"
"$PY" $SHOP/services.py --env-file "$WORK/services.env" &
SERVICES_PID=$!
wait_for 120 "$SERVICES_PID" "services.py" test -f "$WORK/services.env"
set -a
# shellcheck disable=SC1091
. "$WORK/services.env"
set +a
grep -v '^PORT' "$WORK/services.env" | sed 's/^/   /'
echo "   the shop will listen on 127.0.0.1:$PORT"

say "2. recording: trproxy record -- python $SHOP/app.py  (and traffic.sh)"
"${TRPROXY[@]}" record --dir "$REC" --app-port "$PORT" -- "$PY" $SHOP/app.py &
RECORDER_PID=$!
wait_for 60 "$RECORDER_PID" "trproxy record" curl -sf "http://127.0.0.1:$PORT/health"
bash $SHOP/traffic.sh "http://127.0.0.1:$PORT"
stop_pid "$RECORDER_PID"  # SIGTERM: trproxy stops the app and publishes the recording
RECORDER_PID=""

say "3. stopping every dependency"
stop_pid "$SERVICES_PID"
SERVICES_PID=""
echo "   Postgres, Redis, Kafka and the pricing service are gone"

say "4. testing: trproxy test -- python $SHOP/app.py  (dependencies served from the recording)"
status=0
"${TRPROXY[@]}" test --dir "$REC" -- "$PY" $SHOP/app.py || status=$?

say "recording in $REC/"
find "$REC" -type f \( -name '*.yaml' -o -name '*.json' -o -name '*.xml' \) | sort | sed 's/^/   /'
exit "$status"
