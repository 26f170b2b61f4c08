#!/bin/bash
# The HTTP load figures of ARCHITECTURE.md: `clearing load` single and bulk against a fresh
# server on the default configuration, RUNS times each (default 3); prints orders_per_second and
# the latency line of each run. Usage: bash scripts/bench-load.sh [BINARY] (default: the release
# build under $CARGO_TARGET_DIR). MODES="single" or "bulk" runs one of them.
set -euo pipefail
B=${1:-${CARGO_TARGET_DIR:-/var/tmp/clearing-target}/release/clearing}
RUNS=${RUNS:-3}
PORT=${PORT:-18080}
TOKEN=bench-operator-token-0123456789abcdef0123456789
run() {
  local mode=$1 orders=$2
  for i in $(seq "$RUNS"); do
    D=$(mktemp -d)
    CLEARING_ADMIN_TOKEN="$TOKEN" "$B" serve --listen 127.0.0.1:$PORT --data-dir "$D" > "$D/server.out" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null 2>&1 && break; sleep 0.1; done
    echo "== $mode run $i"
    "$B" load --url http://127.0.0.1:$PORT --admin-token "$TOKEN" --mode "$mode" --concurrency 64 --orders "$orders" --accounts 10000 2>/dev/null | grep -E '^orders:|orders_per_second|latency_ms'
    kill -TERM $pid; wait $pid || true
    rm -rf "$D"
  done
}
for mode in ${MODES:-single bulk}; do
  case $mode in
    single) run single 200000 ;;
    bulk) run bulk 2000000 ;;
  esac
done
