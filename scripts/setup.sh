#!/usr/bin/env bash
# Set up this machine for trproxy: Debian packages, kernel headers for bcc, the venv.
# Idempotent and quick when nothing changed. Run as root (apt, /lib/modules).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(bpfcc-tools python3-bpfcc libbpfcc clang postgresql postgresql-contrib redis-server
      redis-tools gcc libc6-dev socat curl ca-certificates procps iproute2 docker.io
      docker-compose mariadb-server mariadb-client libmariadb-dev pkg-config build-essential dnsmasq-base)
# Node.js for the Node clients of tests/node (Debian's, unless a node with npm is there)
command -v npm >/dev/null || PKGS+=(nodejs npm)
# `make bench`'s references (benchmarks/bench_table.py), only for it: BENCH=1
if [ "${BENCH:-}" = 1 ]; then PKGS+=(haproxy nutcracker pgbouncer nginx-light wrk); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # keep the packaged redis/postgres services from starting on their default ports
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

bash scripts/kernel-headers.sh

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then  # Debian's python3 needs python3-venv
    rm -rf .venv
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv .venv
  fi
fi
stamp=.venv/.trproxy-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# bcc's Python module comes from Debian; link just it into the venv (not all of
# dist-packages), so `import bcc` works with the venv's own dependencies.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
bcc_src=$(ls -d /usr/lib/python3/dist-packages/bcc 2>/dev/null || true)
if [ -n "$bcc_src" ]; then ln -sfn "$bcc_src" "$site/bcc"; fi
.venv/bin/python -c 'import bcc' || { echo "setup: bcc does not import" >&2; exit 1; }
# the Node clients the e2e tests run (tests/node: pg, ioredis, kafkajs, mysql2), exactly
# as package-lock.json pins them; again only when the lock file or node changed
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: tests/node needs Node.js >= 20 (ioredis 6), found $(node --version): install a newer nodejs" >&2
  exit 1
fi
node_stamp=tests/node/node_modules/.trproxy-setup
node_want=$( (cat tests/node/package-lock.json; node --version) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$node_want" > "$node_stamp"
fi
# the clock shim `trproxy test` preloads into the app (built once per source version)
.venv/bin/python -m trproxy.apptest.timefreeze --build
echo "setup: ok"
