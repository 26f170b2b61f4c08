#!/bin/bash
# Settlement benchmark with a tiered rule: 1M bulk payments over 100k accounts, then the run.
set -e
# The operator token: at least 32 characters (the server refuses shorter ones).
TOKEN=bench-operator-token-0123456789abcdef
B=/var/tmp/clearing-target/release/clearing
D=/tmp/sb; rm -rf $D; mkdir -p $D
pkill -9 -f "clearing serve --listen 127.0.0.1:18090" || true
CLEARING_ADMIN_TOKEN="$TOKEN" $B serve --listen 127.0.0.1:18090 --data-dir $D > /tmp/sb.out 2>&1 &
sleep 3
$B load --url http://127.0.0.1:18090 --admin-token "$TOKEN" --mode bulk --concurrency 8 --orders 1000000 --accounts 100000 2>/dev/null | tail -3
curl -s -X PUT -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18090/admin/platforms/plt_1/settlement-rule -d '{"currency":"CNY","basis":"amount","period":"month","tiers":[{"from":"0.00","rate":"0.006"},{"from":"100.00","rate":"0.004"},{"from":"1000.00","rate":"0.002"}],"receivers":[{"account_id":"acc_24","share":7},{"account_id":"acc_25","share":3}],"service_fee_rate":"0.001"}'
echo
TOMORROW=$(TZ=Asia/Shanghai date -d tomorrow +%F)
for i in 1 2; do
  /usr/bin/time -f "settle_wall_s: %e" curl -s -X POST -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18090/admin/settlements -d "{\"business_date\":\"$TOMORROW\"}" | head -c 600; echo
done
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18090/admin/settlements/$TOMORROW/statement.csv" | wc -l
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18090/admin/settlements/$TOMORROW/statement.csv" | grep ",commission," 
curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18090/admin/invariants | head -c 200; echo
pkill -f "clearing serve --listen 127.0.0.1:18090"
