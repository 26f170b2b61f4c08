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
#
# Then the portals' pages (issue 11 again, as an operator sees them): a system operator and a
# platform operator of the load's platform (and a merchant operator of one of its members) sign
# in over curl with a cookie, and each page is fetched REPEAT times (curl's time_total: the
# whole request on a kept-alive loopback connection is not available to curl across runs, so
# each run includes its connection, a fraction of a millisecond on loopback). Ledgers: first
# page, a page DEEP cursor pages down (followed untimed first), CSV of one page's filter.
# Columns: median_ms min_ms max_ms status bytes path.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ORDERS:=1000000}" "${ACCOUNTS:=10000}" "${REPEAT:=7}"
BIN="${CARGO_TARGET_DIR:-target}/release/clearing"
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin clearing" >&2; exit 1; }
DIR=$(mktemp -d /tmp/measure-lists.XXXXXX)
TOKEN=measure-lists-operator-token-0123456789
: "${DEEP:=200}"
OPERATOR_PASSWORD=measure-lists-operator-password
CLEARING_OPERATOR_PASSWORD=$OPERATOR_PASSWORD CLEARING_ADMIN_TOKEN=$TOKEN "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DIR/data" >"$DIR/server.log" 2>&1 &
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

# ---- The portals' pages ------------------------------------------------------------------------
# sign_in JAR USER PASSWORD: a session cookie in JAR.
sign_in() {
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' -c "$1" -H "Origin: $URL" --data-urlencode "username=$2" --data-urlencode "password=$3" "$URL/portal/login")
  [ "$status" = 303 ] || { echo "sign-in of $2 answered $status" >&2; exit 1; }
}
# csrf JAR: the session's CSRF token, read from its own account page.
csrf() { curl -s -b "$1" "$URL/portal/account" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1; }
# operator KIND USER [MEMBER]: the system operator makes an operator of the load's platform.
operator() {
  local status
  status=$(curl -s -o "$DIR/made.html" -w '%{http_code}' -b "$DIR/system.jar" -H "Origin: $URL" \
    --data-urlencode "csrf=$(csrf "$DIR/system.jar")" --data-urlencode "username=$2" --data-urlencode "display_name=$2" \
    --data-urlencode "kind=$1" --data-urlencode "platform=$PLATFORM" --data-urlencode "member=${3:-}" \
    --data-urlencode "role=viewer" --data-urlencode "role=operator" --data-urlencode "password=$OPERATOR_PASSWORD" "$URL/portal/operators")
  grep -q created "$DIR/made.html" || { echo "making operator $2 answered $status" >&2; exit 1; }
}
# page JAR PATH: fetched REPEAT times; median, min, max (ms), status, bytes, path.
page() {
  local jar=$1 path=$2 times=() status bytes
  for _ in $(seq 1 "$REPEAT"); do
    read -r status bytes seconds < <(curl -s -o /dev/null -b "$jar" -w '%{http_code} %{size_download} %{time_total}\n' "$URL$path")
    times+=("$seconds")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk -v status="$status" -v bytes="$bytes" -v path="$path" '
    { t[NR] = $1 * 1000 } END { printf "%.2f\t%.2f\t%.2f\t%s\t%s\t%s\n", t[int((NR + 1) / 2)], t[1], t[NR], status, bytes, path }'
}
# deep JAR PATH: the path of the page DEEP "Next page" links after PATH (followed untimed).
deep() {
  local jar=$1 path=$2 next
  for _ in $(seq 1 "$DEEP"); do
    next=$(curl -s -b "$jar" "$URL$path" | sed -n 's/.*<a class="next" href="\([^"]*\)".*/\1/p' | head -n 1 | sed 's/&amp;/\&/g')
    [ -n "$next" ] || { echo "$path: no next page" >&2; break; }
    path=$next
  done
  echo "$path"
}

sign_in "$DIR/system.jar" admin "$OPERATOR_PASSWORD"
operator platform measure_platform
MEMBER=$(get --repeat 1 --body "/v1/accounts/$ACCOUNT" | sed -n 's/.*"member_id":"\(mem_[^"]*\)".*/\1/p')
operator merchant measure_merchant "$MEMBER"
sign_in "$DIR/platform.jar" measure_platform "$OPERATOR_PASSWORD"
sign_in "$DIR/merchant.jar" measure_merchant "$OPERATOR_PASSWORD"
echo "portal pages: platform $PLATFORM, merchant $MEMBER (account $ACCOUNT), deep = $DEEP pages"
printf 'median_ms\tmin_ms\tmax_ms\tstatus\tbytes\tpath\n'
P=$DIR/platform.jar
page "$DIR/system.jar" "/portal/system"
page "$DIR/system.jar" "/portal/system/channels"
page "$P" "/portal/platform"
page "$DIR/merchant.jar" "/portal/merchant"
page "$P" "/portal/platform/orders"
page "$P" "$(deep "$P" /portal/platform/orders)"
page "$P" "/portal/platform/orders?kind=payment"
page "$P" "/portal/platform/orders?kind=recharge"
page "$P" "/portal/platform/orders?account_id=$ACCOUNT"
page "$P" "/portal/platform/orders?format=csv&account_id=$ACCOUNT"
page "$P" "/portal/platform/orders?format=csv&kind=recharge"
page "$P" "/portal/platform/channels"
page "$P" "$(deep "$P" /portal/platform/channels)"
page "$P" "/portal/platform/channels?format=csv"
page "$P" "/portal/platform/entries?account_id=$ACCOUNT"
page "$P" "$(DEEP=5 deep "$P" "/portal/platform/entries?account_id=$ACCOUNT")"
page "$P" "/portal/platform/entries?account_id=$ACCOUNT&format=csv"
page "$DIR/merchant.jar" "/portal/merchant/orders"
