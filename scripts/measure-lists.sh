#!/usr/bin/env bash
# Measures the listing pages the portals show (issue 11: every list answers in under 100 ms with
# 1,000,000 orders in the ledger). Starts a server on a fresh temporary directory (default
# configuration: 2 shards), fills it with `clearing load --mode bulk` (ACCOUNTS funding recharges,
# then ORDERS balance payments, all of one platform), then times each listing with filters that
# match many, few and none, first page and deep, with `clearing get` (signed as the load's
# platform; REPEAT runs each, the median is the first column).
#
#   bash scripts/measure-lists.sh                      # 1,000,000 payments over 10,000 accounts
#   ORDERS=100000 ACCOUNTS=2000 bash scripts/measure-lists.sh
#
# Columns: median_ms min_ms max_ms status items next_cursor path.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ORDERS:=1000000}" "${ACCOUNTS:=10000}" "${REPEAT:=7}"
BIN="${CARGO_TARGET_DIR:-target}/release/clearing"
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin clearing" >&2; exit 1; }
DIR=$(mktemp -d /tmp/measure-lists.XXXXXX)
TOKEN=measure-lists-operator-token-0123456789
CLEARING_ADMIN_TOKEN=$TOKEN "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DIR/data" >"$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do
  URL=$(sed -n 's/^API: \(http:[^ ]*\).*/\1/p' "$DIR/server.log" | head -n 1)
  [ -n "$URL" ] && break
  sleep 0.1
done
URL=${URL%/}
[ -n "$URL" ] || { cat "$DIR/server.log" >&2; exit 1; }
echo "server $URL, data $DIR/data"

"$BIN" load --url "$URL" --admin-token "$TOKEN" --mode bulk --concurrency 8 --orders "$ORDERS" --accounts "$ACCOUNTS" | tee "$DIR/load.log"
PLATFORM=$(sed -n 's/^platform: \(plt_[0-9]*\).*/\1/p' "$DIR/load.log")
# The load keeps its secret to itself: the operator issues the platform a new one.
SECRET=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$URL/admin/platforms/$PLATFORM/rotate-secret" | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
[ -n "$SECRET" ] || { echo "no secret for $PLATFORM" >&2; exit 1; }
get() { "$BIN" get --url "$URL" --platform "$PLATFORM" --secret "$SECRET" "$@"; }

ACCOUNT=$(get --repeat 1 --body "/v1/orders?kind=payment&limit=1" | sed -n 's/.*"account_id":"\(acc_[^"]*\)".*/\1/p')
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
HOUR_AGO=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)
echo "platform $PLATFORM, account $ACCOUNT"
printf 'median_ms\tmin_ms\tmax_ms\tstatus\titems\tnext_cursor\tpath\n'
# Many matches: every order, the payments, the succeeded; first page and 200 pages deep.
get --repeat "$REPEAT" "/v1/orders?limit=50"
get --repeat "$REPEAT" "/v1/orders?limit=500"
get --repeat "$REPEAT" "/v1/orders?kind=payment&limit=50"
get --repeat "$REPEAT" "/v1/orders?status=succeeded&limit=50"
get --repeat "$REPEAT" --walk 200 "/v1/orders?kind=payment&limit=500"
# Few: the funding recharges (one per account, older than every payment), one account's orders,
# a time window that holds only the recharges.
get --repeat "$REPEAT" "/v1/orders?kind=recharge&limit=50"
get --repeat "$REPEAT" --walk 5 "/v1/orders?kind=recharge&limit=500"
get --repeat "$REPEAT" "/v1/orders?account_id=$ACCOUNT&limit=50"
get --repeat "$REPEAT" "/v1/orders?kind=payment&account_id=$ACCOUNT&limit=50"
# None: kinds and statuses nobody made.
get --repeat "$REPEAT" "/v1/orders?kind=refund&limit=50"
get --repeat "$REPEAT" "/v1/orders?kind=withdrawal&limit=50"
get --repeat "$REPEAT" "/v1/orders?status=failed&limit=50"
get --repeat "$REPEAT" "/v1/orders?status=pending&limit=50"
get --repeat "$REPEAT" "/v1/orders?kind=freeze&status=held&limit=50"
get --repeat "$REPEAT" "/v1/orders?from=$HOUR_AGO&to=$HOUR_AGO&limit=50"
get --repeat "$REPEAT" "/v1/orders?from=$NOW&limit=50"
# An account's journal lines, first page and 20 pages deep.
get --repeat "$REPEAT" "/v1/accounts/$ACCOUNT/entries?limit=50"
get --repeat "$REPEAT" --walk 5 "/v1/accounts/$ACCOUNT/entries?limit=50"
get --repeat "$REPEAT" "/v1/events?limit=50"
