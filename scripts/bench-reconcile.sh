#!/bin/bash
# Reconciliation benchmark: the simulator's statement of 100,000 real recharges (from a load
# run that funds 100,000 accounts) plus 900,000 lines naming no order, reconciled by the CLI
# on the stopped server's data directory, three times (the re-runs reload the carried lines).
set -e
# The operator token: at least 32 characters (the server refuses shorter ones).
TOKEN=bench-operator-token-0123456789abcdef
B=${CARGO_TARGET_DIR:-/var/tmp/clearing-target}/release/clearing
D=/tmp/rb; rm -rf $D; mkdir -p $D
pkill -9 -f "clearing serve --listen 127.0.0.1:18091" || true
CLEARING_ADMIN_TOKEN="$TOKEN" $B serve --listen 127.0.0.1:18091 --data-dir $D > /tmp/rb.out 2>&1 &
sleep 3
$B load --url http://127.0.0.1:18091 --admin-token "$TOKEN" --mode bulk --concurrency 8 --orders 100000 --accounts 100000 2>/dev/null | tail -2
TODAY=$(TZ=Asia/Shanghai date +%F)
sleep 2
curl -s "http://127.0.0.1:18091/sim/channels/sim_gateway/statements/$TODAY" > /tmp/stmt1m.csv
echo "real lines: $(($(wc -l < /tmp/stmt1m.csv) - 1))"
pkill -f "clearing serve --listen 127.0.0.1:18091"; sleep 2
python3 - <<'PY'
with open('/tmp/stmt1m.csv', 'a') as f:
    for i in range(900_000):
        f.write(f"STRANGER{i:07d},ord_9{i:012d},in,1.00,succeeded,0.00\n")
PY
wc -l /tmp/stmt1m.csv
for i in 1 2 3; do
  $B reconcile --channel sim_gateway --date $TODAY --file /tmp/stmt1m.csv --data-dir $D | grep -E "counts|elapsed"
done
