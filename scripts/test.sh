#!/usr/bin/env bash
# Install what the tests need, then lint and run the whole suite on both broker lanes
# (embedded Tansu and Apache Kafka). Extra arguments go to pytest, e.g.
#   bash scripts/test.sh --lanes embedded -k router
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SHOPSTREAM_VENV:-.venv}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# System packages (test-only): a JVM and Maven run the Apache Kafka reference broker.
need=()
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
# docker-compose (v1) validates compose.yaml offline; no Docker engine is needed for that.
command -v docker-compose >/dev/null || need+=(docker-compose)
# Chromium: the dashboard's end-to-end test drives it (Playwright, headless).
command -v chromium >/dev/null || need+=(chromium)
# PostgreSQL: the tests start their own server for the read models' DuckLake catalog.
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  as_root apt-get update -qq && as_root apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "could not install ${need[*]}: the Apache Kafka lane will skip outside CI"
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[dev]"

"$venv/bin/ruff" check .
"$venv/bin/shopstream" schemas export --check
# Two workers or more (one per core, at most 4): the integration tests spend much of their
# time waiting on brokers and processes. Each worker runs whole modules (their stacks
# and brokers are module and session fixtures) and starts its own brokers.
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -lt 2 ] && workers=2
[ "$workers" -gt 4 ] && workers=4
exec "$venv/bin/pytest" -n "$workers" --dist loadscope --durations=25 "$@"
