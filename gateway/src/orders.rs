//! Orders at the API edge: ids, views, the table from engine result codes to API errors, the
//! shape every money-moving operation shares (`Prepared` -> engine -> `render`), and
//! `GET /v1/orders/{order_id}`, `GET /v1/orders?out_order_no=` and the filtered listing.

use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use clearing_actor::channels::ChannelSet;
use clearing_actor::Clearing;
use engine::cold::ColdRow;
use engine::ledger::command::{idempotency_key, Command, Envelope, OutOrderNo};
use engine::ledger::growth::ChunkedVec;
use engine::ledger::state::ShardState;
use engine::ledger::types::{
    AccountId, AdjustmentDetail, AdjustmentSide, Order, OrderDetail, OrderId, OrderKind, OrderStatus, Reply, Timestamp, NO_ORDER_INDEX,
};
use engine::money::{CurrencyId, CurrencySpec, Minor};
use engine::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{parse_account_id, public_account_id};
use crate::error::{blocking, ApiError};
use crate::signed::Signed;

/// The order id as the API shows it (`ord_42`).
pub fn public_order_id(id: OrderId) -> String {
    format!("ord_{}", id.0)
}

/// Parses an API order id.
pub fn parse_order_id(text: &str) -> Option<OrderId> {
    crate::ids::parse_prefixed(text, "ord_").map(OrderId)
}

pub use crate::ids::out_order_no;

/// A configured currency by its code.
pub fn currency(engine: &Engine, code: &str) -> Result<(CurrencyId, CurrencySpec), ApiError> {
    engine
        .config()
        .currencies
        .iter()
        .position(|c| c.code_str() == code)
        .map(|i| (CurrencyId(i as u8), engine.config().currencies[i]))
        .ok_or_else(|| ApiError::invalid("unknown currency", "currency"))
}

/// An API amount in minor units of `spec` (`invalid_amount` naming `param` otherwise).
pub fn amount(text: &str, spec: &CurrencySpec, param: &'static str) -> Result<Minor, ApiError> {
    crate::parse_amount(text, spec).map_err(|error| ApiError { param: Some(param.into()), ..ApiError::new(400, error.code(), &error.to_string()) })
}

/// An account id named by the request; an unparseable one is as unknown as a missing one.
pub fn account(text: &str, param: &'static str) -> Result<AccountId, ApiError> {
    parse_account_id(text).ok_or(ApiError { param: Some(param.into()), ..ApiError::not_found() })
}

/// Formats an engine timestamp (microseconds since the epoch) as RFC 3339 in UTC.
pub fn format_time(at: Timestamp) -> String {
    let nanos = at as i128 * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).unwrap_or_default()
}

/// Parses an RFC 3339 time into an engine timestamp.
pub fn parse_time(text: &str, param: &'static str) -> Result<Timestamp, ApiError> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid("expected an RFC 3339 time such as 2026-11-22T10:00:00Z", param))?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000).map_err(|_| ApiError::invalid("time before 1970", param))
}

pub use crate::error::rejection;

/// A JSON object's members written straight into a buffer, each with a leading comma (no
/// intermediate map: the bulk path renders thousands of these per request).
#[derive(Debug, Default)]
pub struct Fields(Vec<u8>);

impl Fields {
    /// Appends `"key": value`.
    pub fn value<T: serde::Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> &mut Fields {
        self.0.push(b',');
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        serde_json::to_writer(&mut self.0, value).expect("values serialize");
        self
    }
}

/// An operation ready for the engine, with the response body it will answer with (the reply
/// adds `order_id` and `status`). Responses are built from the request and the stored reply
/// only, so a replay answers the very same body.
pub struct Prepared {
    pub envelope: Envelope,
    pub body: Fields,
    /// 201 for operations that create an order, 200 for those that act on one.
    pub created: bool,
    /// A pending recharge's command, kept once `take_envelope` has moved the command out
    /// (the simulator is told about it after the engine accepted it).
    pub recharge: Option<Envelope>,
}

impl Prepared {
    /// An operation with its command and the members of its response body.
    pub fn new(envelope: Envelope, body: Fields, created: bool) -> Prepared {
        Prepared { envelope, body, created, recharge: None }
    }

    /// Moves the command out (for a submission of many) without copying it.
    pub fn take_envelope(&mut self) -> Envelope {
        let placeholder = Envelope { platform: self.envelope.platform, out_order_no: None, command: Command::ExpireFreezes };
        let envelope = std::mem::replace(&mut self.envelope, placeholder);
        if let Command::RequestRecharge { .. } | Command::RequestDirectPayment { .. } = envelope.command {
            self.recharge = Some(envelope.clone());
        }
        envelope
    }
}

/// Appends the JSON body answered for a prepared operation once the engine accepted it, and
/// returns its status; a refusal is the API error of its result code.
pub fn render_into(out: &mut Vec<u8>, prepared: &Prepared, reply: &Reply) -> Result<u16, ApiError> {
    render_fields_into(out, &prepared.body, prepared.created, reply)
}

/// Renders an order's answer from its response members (see `render_into`).
fn render_fields_into(out: &mut Vec<u8>, fields: &Fields, created: bool, reply: &Reply) -> Result<u16, ApiError> {
    if !reply.is_ok() {
        return Err(crate::error::refused(reply));
    }
    use std::io::Write;
    let status = reply.status.map_or("succeeded", |s| s.name());
    write!(out, "{{\"order_id\":\"ord_{}\",\"status\":\"{status}\"", reply.id).expect("writing to memory");
    out.extend_from_slice(&fields.0);
    out.push(b'}');
    Ok(if created { 201 } else { 200 })
}

/// The HTTP response of one prepared operation (with `Idempotent-Replay: true` on a replay).
pub fn answer(prepared: Prepared, reply: &Reply) -> Result<HttpResponse, ApiError> {
    answer_fields(&prepared.body, prepared.created, reply)
}

/// The HTTP response of an order whose command someone else submitted (the clearing actor).
pub fn answer_fields(fields: &Fields, created: bool, reply: &Reply) -> Result<HttpResponse, ApiError> {
    let mut body = Vec::with_capacity(fields.0.len() + 64);
    let status = render_fields_into(&mut body, fields, created, reply)?;
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid"));
    if reply.replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.content_type("application/json").body(body))
}

/// Runs one prepared operation and answers it.
pub async fn respond(engine: &Engine, prepared: Prepared) -> Result<HttpResponse, ApiError> {
    let reply = crate::accounts::execute(engine, prepared.envelope.clone()).await?;
    answer(prepared, &reply)
}

/// The API's name of an order kind.
pub fn kind_name(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Recharge => "recharge",
        OrderKind::Payment | OrderKind::Guarantee => "payment",
        OrderKind::Refund => "refund",
        OrderKind::Freeze => "freeze",
        OrderKind::Withdrawal => "withdrawal",
        OrderKind::Adjustment => "adjustment",
    }
}

/// An adjustment's side as the API shows it: `acc_N`, or `suspense:SHARD`.
pub fn adjustment_side(side: AdjustmentSide) -> String {
    match side {
        AdjustmentSide::Account(account) => public_account_id(account),
        AdjustmentSide::Suspense(shard) => format!("suspense:{shard}"),
    }
}

/// The full view of an order as `GET /v1/orders/{id}` shows it.
pub fn view(state: &ShardState, order: &Order, channels: &ChannelSet) -> Value {
    let spec = state.currencies[order.currency.0 as usize];
    let money = |minor: Minor| Value::String(spec.format(minor));
    let mut body = json!({
        "order_id": public_order_id(order.id),
        "out_order_no": order.out_order_no.map(|n| n.as_str().to_string()),
        "kind": kind_name(order.kind),
        "status": order.status.name(),
        "amount": money(order.amount),
        "currency": spec.code_str(),
        "account_id": public_account_id(order.account),
        "created_at": format_time(order.created_at),
        "updated_at": format_time(order.updated_at),
    });
    let extra = body.as_object_mut().expect("an object");
    match &order.detail {
        OrderDetail::None => {}
        OrderDetail::Recharge { channel } => {
            extra.insert("channel".into(), json!(channels.name(*channel)));
        }
        OrderDetail::Payment { refunded, held, channel, .. } => {
            let mode = if order.kind == OrderKind::Guarantee { "guarantee" } else { "balance" };
            extra.insert("mode".into(), json!(mode));
            extra.insert("funding".into(), json!(if channel.is_some() { "channel" } else { "balance" }));
            if let Some(channel) = channel {
                extra.insert("channel".into(), json!(channels.name(*channel)));
            }
            extra.insert("payer_account_id".into(), json!(public_account_id(order.account)));
            extra.insert("refunded_amount".into(), money(*refunded));
            let receivers: Vec<Value> = held
                .iter()
                .map(|leg| {
                    json!({
                        "account_id": public_account_id(leg.account),
                        "amount": money(leg.held),
                        "released": money(leg.released),
                        "cancelled": money(leg.cancelled),
                        "held": money(leg.held - leg.released - leg.cancelled),
                    })
                })
                .collect();
            extra.insert("receivers".into(), Value::Array(receivers));
        }
        OrderDetail::Refund { payment, payee } => {
            extra.insert("payment_order_id".into(), json!(public_order_id(*payment)));
            extra.insert("payee_account_id".into(), json!(public_account_id(*payee)));
        }
        OrderDetail::Freeze { remaining, expires_at, reason, .. } => {
            extra.insert("frozen_amount".into(), money(*remaining));
            extra.insert("reason".into(), json!(reason));
            extra.insert("expires_at".into(), json!(expires_at.map(format_time)));
        }
        OrderDetail::Withdrawal { fee, channel } => {
            extra.insert("fee".into(), money(*fee));
            extra.insert("channel".into(), json!(channels.name(*channel)));
        }
        OrderDetail::Adjustment(adjustment) => {
            let AdjustmentDetail { source, target, reason, proposer, approver } = &**adjustment;
            // Out of suspense, the order's account is a stripe: the customer credited is the one to show.
            if let (AdjustmentSide::Suspense(_), AdjustmentSide::Account(credited)) = (source, target) {
                extra.insert("account_id".into(), json!(public_account_id(*credited)));
            }
            extra.insert("from".into(), json!(adjustment_side(*source)));
            extra.insert("to".into(), json!(adjustment_side(*target)));
            extra.insert("reason".into(), json!(reason));
            extra.insert("proposer".into(), json!(proposer));
            extra.insert("approver".into(), json!(approver));
        }
    }
    body
}

/// Reads one order of `platform` (None when it does not exist or is another platform's).
pub async fn read_order<R: Send + 'static>(
    engine: &Arc<Engine>,
    platform: u32,
    id: OrderId,
    read: impl FnOnce(&ShardState, &Order) -> R + Send + 'static,
) -> Result<Option<R>, ApiError> {
    let shard = id.shard(engine.config().shard_count);
    let engine = engine.clone();
    // Reading waits on the shard's thread: off the async workers.
    // Owned first, read after: another platform's old order is never read back (`owned_order`).
    Ok(blocking(move || engine.read_shard(shard, move |state| state.owned_order(platform, id).map(|order| read(state, order)))).await??)
}

#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders", params(("order_id" = String, Path, description = "Order id (ord_...)")), responses((status = 200, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/orders/{order_id}")]
pub async fn show_order(
    signed: Signed,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_order_id(&path).ok_or_else(ApiError::not_found)?;
    let channels = clearing.channels();
    let found = read_order(&engine, signed.platform.id, id, move |state, order| view(state, order, &channels)).await?.ok_or_else(ApiError::not_found)?;
    let mut found = [found];
    with_routing(&mut found, signed.platform.id, &clearing).await?;
    let [found] = found;
    Ok(HttpResponse::Ok().json(found))
}

/// Adds each withdrawal's routing decision (the clearing actor's payout note) to its view.
async fn with_routing(views: &mut [Value], platform: u32, clearing: &Clearing) -> Result<(), ApiError> {
    let withdrawals: Vec<usize> = (0..views.len()).filter(|i| views[*i]["kind"] == "withdrawal").collect();
    if withdrawals.is_empty() {
        return Ok(());
    }
    let numbers = withdrawals.iter().map(|i| views[*i]["out_order_no"].as_str().unwrap_or_default().to_string()).collect();
    let notes = clearing.notes(platform, numbers).await?;
    for (index, note) in withdrawals.into_iter().zip(notes) {
        let routing = note.and_then(|n| n.routing).map(|r| serde_json::to_value(r).expect("routings serialize"));
        views[index]["routing"] = routing.unwrap_or(Value::Null);
    }
    Ok(())
}

/// The most orders one listing request examines per shard before it answers with a cursor
/// (filters that match little must not turn one request into a scan of the whole history).
const LIST_SCAN_MAX: usize = 100_000;

/// The most chunks of orders out of memory one listing request reads back per shard before it
/// answers with a cursor (each is a store read and about 650 KB decoded: a walk over an old,
/// busy account's chain must not read the whole history back in one request).
const LIST_COLD_READS_MAX: usize = 32;
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

/// The filters of `GET /v1/orders` (the portals build one from their forms).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub out_order_no: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Only orders that went through a bank channel (recharges and withdrawals): the portals'
    /// channel ledger; not an API parameter.
    #[serde(skip)]
    pub channel_only: bool,
}

/// The page size of `?limit=` (1–500, default 50).
pub fn page_limit(text: Option<&str>) -> Result<usize, ApiError> {
    match text {
        None => Ok(PAGE_DEFAULT),
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=PAGE_MAX).contains(n)).ok_or_else(|| ApiError::invalid("limit is 1 to 500", "limit")),
    }
}

/// Which orders a listing keeps.
#[derive(Clone, Copy)]
struct Filter {
    platform: u32,
    kind: Option<&'static str>,
    status: Option<OrderStatus>,
    account: Option<AccountId>,
    from: Timestamp,
    to: Timestamp,
    channel_only: bool,
}

impl Filter {
    fn keeps(&self, order: &Order) -> bool {
        order.platform == self.platform
            && self.kind.is_none_or(|k| kind_name(order.kind) == k)
            && self.status.is_none_or(|s| order.status == s)
            && self.account.is_none_or(|a| order.account == a)
            && (self.from..self.to).contains(&order.created_at)
            && (!self.channel_only || matches!(order.detail, OrderDetail::Recharge { .. } | OrderDetail::Withdrawal { .. }))
    }
}

/// A position in a listing across shards (newest first): items strictly older than (time, number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(pub Timestamp, pub u64);

impl Position {
    /// Before everything: the first page.
    pub const NEWEST: Position = Position(Timestamp::MAX, u64::MAX);
}

/// Parses a `?cursor=` this API returned (`NEWEST` when absent).
pub fn parse_cursor(text: Option<&str>) -> Result<Position, ApiError> {
    let Some(text) = text else { return Ok(Position::NEWEST) };
    let bad = || ApiError::invalid("not a cursor this API returned", "cursor");
    let (at, id) = text.split_once('-').ok_or_else(bad)?;
    Ok(Position(at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

/// One shard's part of a page: its newest matches older than the cursor, and where its scan
/// stopped if it stopped early.
pub type ShardPage = (Vec<(Position, Value)>, Option<Position>);

/// A page of `limit` items newest first across all shards, and its next cursor. `scan` gives
/// each shard's newest `limit + 1` matches (one more tells whether a next page exists); a shard
/// that stopped its scan early bounds the page: nothing older than where it stopped.
pub async fn merged_page(
    engine: &Arc<Engine>,
    limit: usize,
    scan: impl Fn(&ShardState, usize) -> ShardPage + Clone + Send + 'static,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let (items, next) = merged_positions(engine, limit, scan).await?;
    Ok((items, next.map(|position| format!("{}-{}", position.0, position.1))))
}

/// `merged_page` with the next page's position as it is (`events` seals it for its platform).
pub async fn merged_positions(
    engine: &Arc<Engine>,
    limit: usize,
    scan: impl Fn(&ShardState, usize) -> ShardPage + Clone + Send + 'static,
) -> Result<(Vec<Value>, Option<Position>), ApiError> {
    let mut found = Vec::new();
    let mut floor = Position(0, 0);
    for shard in 0..engine.config().shard_count {
        let (engine, scan) = (engine.clone(), scan.clone());
        let (part, stopped) = blocking(move || engine.read_shard(shard, move |state| scan(state, limit + 1))).await??;
        found.extend(part);
        if let Some(stopped) = stopped {
            floor = floor.max(stopped);
        }
    }
    found.retain(|(position, _)| *position >= floor);
    found.sort_by_key(|item| std::cmp::Reverse(item.0));
    let more = found.len() > limit || floor > Position(0, 0);
    found.truncate(limit);
    let next_cursor = match (more, found.last()) {
        (true, Some((position, _))) => Some(*position),
        (true, None) => Some(floor),
        (false, _) => None,
    };
    Ok((found.into_iter().map(|(_, v)| v).collect(), next_cursor))
}

const KINDS: [&str; 6] = ["recharge", "payment", "refund", "freeze", "withdrawal", "adjustment"];
const STATUSES: [OrderStatus; 8] = [
    OrderStatus::Pending,
    OrderStatus::Processing,
    OrderStatus::Held,
    OrderStatus::Succeeded,
    OrderStatus::Failed,
    OrderStatus::Cancelled,
    OrderStatus::PartiallyRefunded,
    OrderStatus::Refunded,
];

/// One shard's part of a page: up to `limit` matching orders older than `before`, newest first,
/// and where its scan stopped if it stopped early. Only the platform's own orders are examined
/// (the shard indexes them per platform), and of those only the ones an index says may match:
/// an account's own chain, the open or the exceptional set for such a status, the orders of
/// the kind asked for. So a page costs what matches, not what the shard or the platform holds,
/// and a filter that matches few orders among millions answers them at once (issue 11).
fn scan_shard(state: &ShardState, filter: Filter, before: Position, limit: usize, channels: &ChannelSet) -> ShardPage {
    let Some(index) = state.platform_orders.get(&filter.platform) else { return (Vec::new(), None) };
    // Nothing created at or after `to` matches: the scan starts below both it and the cursor.
    let start = before.min(Position(filter.to, 0));
    // Orders are appended in timestamp order: the first at or after `start`, by bisection.
    let end = state.orders.partition_point(|order| Position(order.created_at, order.id.0) < start);
    let end = u32::try_from(end).unwrap_or(u32::MAX);
    if let Some(account) = filter.account {
        return scan_account(state, filter, account, before, end, limit, channels);
    }
    let candidates: Box<dyn Iterator<Item = u32> + '_> = match (filter.status, filter.kind) {
        (Some(status), _) if status.is_open() => Box::new(index.open.range(..end).rev().copied()),
        (Some(status), _) if status.is_exceptional() => Box::new(index.exceptional.range(..end).rev().copied()),
        (_, Some(name)) => {
            // The engine's kinds the API calls `name` (a guarantee payment is a payment), found
            // from the orders themselves, so a kind added later is listed without a table here.
            let lists =
                index.by_kind.iter().filter(|list| list.get(0).and_then(|&first| state.orders.get(first as usize)).is_some_and(|o| kind_name(o.kind) == name));
            Box::new(Descending::below(lists, end))
        }
        _ => Box::new(Descending::below(std::iter::once(&index.all), end)),
    };
    let mut found = Vec::new();
    let mut cold_reads = 0;
    for (scanned, local) in candidates.enumerate() {
        cold_reads += usize::from(!state.orders.is_resident(local as usize));
        let order = state.orders.get(local as usize).expect("indexed orders exist");
        if order.created_at < filter.from {
            break;
        }
        if scanned == LIST_SCAN_MAX || cold_reads > LIST_COLD_READS_MAX {
            return (found, Some(Position(order.created_at, order.id.0 + 1)));
        }
        if filter.keeps(order) {
            found.push((Position(order.created_at, order.id.0), view(state, order, channels)));
            if found.len() == limit {
                break;
            }
        }
    }
    (found, None)
}

/// The orders of one account (`?account_id=`): they all live on the account's shard, chained
/// newest first (`Account::last_order`, `ShardState::previous_order_of_account`), so the scan
/// reads only them. A cursor this listing returned names the account's order where the last
/// page ended, so a deep page starts there at once; a scan that stops early answers the last
/// order it examined as its cursor, which the next page finds the same way.
fn scan_account(state: &ShardState, filter: Filter, account: AccountId, before: Position, end: u32, limit: usize, channels: &ChannelSet) -> ShardPage {
    // Another platform's account (or none) lists nothing and answers no cursor: a cursor from
    // its history would tell that it exists and when it was used.
    let Some(owner) = state.account(account).filter(|owner| owner.platform == filter.platform) else { return (Vec::new(), None) };
    let link = |local: u32| state.previous_order_of_account.get(local as usize).copied().unwrap_or(NO_ORDER_INDEX);
    let cursor_order = OrderId(before.1);
    let resumed = (cursor_order.shard(state.shard_count) == state.shard)
        .then(|| cursor_order.local_index(state.shard_count))
        .and_then(|local| state.orders.get(usize::try_from(local).ok()?).map(|order| (local as u32, order)))
        .filter(|(_, order)| order.account == account && Position(order.created_at, order.id.0) == before);
    let mut at = match resumed {
        Some((local, _)) => link(local),
        None => owner.last_order,
    };
    let mut found = Vec::new();
    let (mut scanned, mut examined, mut cold_reads) = (0, None, 0);
    while at != NO_ORDER_INDEX {
        cold_reads += usize::from(!state.orders.is_resident(at as usize));
        let order = state.orders.get(at as usize).expect("chained orders exist");
        if let (true, Some(last)) = (scanned == LIST_SCAN_MAX || cold_reads > LIST_COLD_READS_MAX, examined) {
            // Strictly older than the last order examined: the next page resumes at `at`.
            let last: &Order = last;
            return (found, Some(Position(last.created_at, last.id.0)));
        }
        scanned += 1;
        examined = Some(order);
        if at < end {
            if order.created_at < filter.from {
                break;
            }
            if filter.keeps(order) {
                found.push((Position(order.created_at, order.id.0), view(state, order, channels)));
                if found.len() == limit {
                    break;
                }
            }
        }
        at = link(at);
    }
    (found, None)
}

/// Merges ascending lists of order indexes into one descending sequence, below `end`.
struct Descending<'a> {
    /// Each list and how many of its first items are still to come.
    lists: Vec<(&'a ChunkedVec<u32>, usize)>,
}

impl<'a> Descending<'a> {
    fn below(lists: impl Iterator<Item = &'a ChunkedVec<u32>>, end: u32) -> Descending<'a> {
        Descending { lists: lists.map(|list| (list, list.partition_point(|&local| local < end))).collect() }
    }
}

impl Iterator for Descending<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (list, left) = self.lists.iter_mut().filter(|(_, left)| *left > 0).max_by_key(|(list, left)| list.get(*left - 1).copied().unwrap_or(0))?;
        *left -= 1;
        list.get(*left).copied()
    }
}

/// The idempotency scopes of the commands that open orders (a number is unique per platform and
/// scope).
fn order_number_scopes() -> [u8; 7] {
    [
        Command::RequestRecharge { account: AccountId(0), currency: CurrencyId(0), amount: 0, channel: 0 }.kind_code(),
        Command::Payment { payer: AccountId(0), guarantee: false, currency: CurrencyId(0), amount: 0, payees: Default::default(), splits: Default::default() }
            .kind_code(),
        Command::Refund { payment: OrderId(0), payee: AccountId(0), amount: 0 }.kind_code(),
        Command::Freeze { account: AccountId(0), currency: CurrencyId(0), amount: 0, reason: String::new(), expires_at: None }.kind_code(),
        Command::Withdraw { account: AccountId(0), currency: CurrencyId(0), amount: 0, fee: 0, channel: 0 }.kind_code(),
        Command::Recharge { account: AccountId(0), currency: CurrencyId(0), amount: 0, channel: 0 }.kind_code(),
        Command::Adjust {
            source: AdjustmentSide::Suspense(0),
            target: AdjustmentSide::Suspense(0),
            currency: CurrencyId(0),
            amount: 0,
            reason: String::new(),
            proposer: String::new(),
            approver: String::new(),
        }
        .kind_code(),
    ]
}

/// The orders a platform created with `number` (one per kind that opens orders: the number is
/// unique per platform and kind) that `filter` keeps and that come before `before`, newest first.
/// `cold` holds the number's cold idempotency rows (read from the store beforehand): a record
/// is in the shard's memory or among them.
fn find_by_out_order_no(
    state: &ShardState,
    filter: Filter,
    number: &OutOrderNo,
    cold: &[(u128, ColdRow)],
    before: Position,
    limit: usize,
    channels: &ChannelSet,
) -> ShardPage {
    let mut found: Vec<(Position, Value)> = order_number_scopes()
        .iter()
        .filter_map(|kind| {
            let key = idempotency_key(filter.platform, *kind, number);
            let in_cold = || cold.iter().find(|(k, row)| *k == key && row.shard == state.shard).map(|(_, row)| row.record);
            // A refusal the number keeps (journal format 5) is no order.
            let record = state.idempotency_record(&key).or_else(in_cold).filter(|record| record.reply.is_ok())?;
            let order = state.platform_order(filter.platform, OrderId(record.reply.id))?;
            let position = Position(order.created_at, order.id.0);
            (position < before && filter.keeps(order)).then(|| (position, view(state, order, channels)))
        })
        .collect();
    found.sort_by_key(|item| std::cmp::Reverse(item.0));
    found.dedup_by_key(|item| item.0);
    found.truncate(limit);
    (found, None)
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(("out_order_no" = Option<String>, Query, description = "The platform's order number: only the orders with it (at most one per kind)"), ("kind" = Option<String>, Query, description = "recharge, payment, refund, freeze, withdrawal or adjustment"), ("status" = Option<String>, Query, description = "An order status"), ("account_id" = Option<String>, Query, description = "Account id (acc_...): orders of that account"), ("from" = Option<String>, Query, description = "RFC 3339: created at or after"), ("to" = Option<String>, Query, description = "RFC 3339: created before"), ("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = crate::schemas::OrderPage), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/orders")]
pub async fn list_orders(
    signed: Signed,
    query: web::Query<ListQuery>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    let (orders, next_cursor) = list(&engine, &clearing, signed.platform.id, &query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(json!({"orders": orders, "next_cursor": next_cursor})))
}

/// One page of `platform`'s orders matching `query`, newest first, and the next cursor:
/// `GET /v1/orders` and the portals' ledgers share it. Every filter is checked (a bad one is 400
/// naming it) before anything is read; `out_order_no` narrows the page to the orders with that
/// number (at most one per kind), the other filters still apply.
pub async fn list(engine: &Arc<Engine>, clearing: &Clearing, platform: u32, query: &ListQuery) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let channels = clearing.channels();
    let limit = page_limit(query.limit.as_deref())?;
    let kind = match &query.kind {
        None => None,
        Some(k) => Some(*KINDS.iter().find(|name| *name == k).ok_or_else(|| ApiError::invalid("unknown kind", "kind"))?),
    };
    let status = match &query.status {
        None => None,
        Some(s) => Some(*STATUSES.iter().find(|st| st.name() == s).ok_or_else(|| ApiError::invalid("unknown status", "status"))?),
    };
    let account = query.account_id.as_deref().map(|a| parse_account_id(a).ok_or_else(|| ApiError::invalid("not an account id", "account_id"))).transpose()?;
    let from = query.from.as_deref().map(|t| parse_time(t, "from")).transpose()?.unwrap_or(0);
    let to = query.to.as_deref().map(|t| parse_time(t, "to")).transpose()?.unwrap_or(Timestamp::MAX);
    let before = parse_cursor(query.cursor.as_deref())?;
    let number = query.out_order_no.as_deref().map(|n| out_order_no(n, "out_order_no")).transpose()?;
    let filter = Filter { platform, kind, status, account, from, to, channel_only: query.channel_only };
    let (mut orders, next_cursor) = match number {
        Some(number) => {
            // The cold rows are read before the shards' memory; a checkpoint finishing in between
            // moves a record from memory to a row the first read missed, so an empty answer is
            // read once more (rows are durable before memory lets go: the second read finds it).
            let mut attempt = 0;
            loop {
                let (reading, wanted_number) = (engine.clone(), number);
                let cold = blocking(move || {
                    let mut rows = Vec::new();
                    for kind in order_number_scopes() {
                        let key = idempotency_key(platform, kind, &wanted_number);
                        if let Some(row) = reading.cold_idempotency_row(key)? {
                            rows.push((key, row));
                        }
                    }
                    Ok::<_, engine::EngineError>(rows)
                })
                .await??;
                let channels = channels.clone();
                let page =
                    merged_page(engine, limit, move |state, wanted| find_by_out_order_no(state, filter, &number, &cold, before, wanted, &channels)).await?;
                attempt += 1;
                if !page.0.is_empty() || attempt == 2 {
                    break page;
                }
            }
        }
        None => merged_page(engine, limit, move |state, wanted| scan_shard(state, filter, before, wanted, &channels)).await?,
    };
    with_routing(&mut orders, platform, clearing).await?;
    Ok((orders, next_cursor))
}

/// Registers the order routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(show_order).service(list_orders);
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::result::ResultCode;

    #[test]
    fn every_rejection_has_a_stable_code_and_only_ours_are_5xx() {
        for code in ResultCode::ALL.iter().skip(1) {
            let error = rejection(*code);
            assert!(
                (400..500).contains(&error.status)
                    || matches!(code, ResultCode::InvalidFee | ResultCode::NotRoutable | ResultCode::Overloaded | ResultCode::ShardStopped),
                "{code:?}"
            );
            assert!(!error.code.is_empty());
        }
    }

    /// Listing another platform's account by `?account_id=` finds nothing and answers no
    /// cursor, however long that account's history (a scan that stopped at its limit answered
    /// the last order it examined: the account's order ids and times).
    #[test]
    fn another_platforms_account_lists_nothing_and_no_cursor() {
        use engine::ledger::state::Effects;
        use engine::ledger::types::Limits;
        let (mut state, mut fx) = (ShardState::default(), Effects::default());
        let currencies = vec![engine::money::CurrencySpec::new("CNY", 2).unwrap()];
        let apply = |state: &mut ShardState, fx: &mut Effects, platform: u32, command: Command| {
            fx.clear();
            let reply = state.apply(&Envelope { platform, out_order_no: None, command }, 1_700_000_000_000_000, fx);
            assert!(reply.is_ok(), "{reply:?}");
            reply.id
        };
        apply(&mut state, &mut fx, 0, Command::Genesis { shard: 0, shard_count: 1, currencies, utc_offset_seconds: 0 });
        let account = AccountId(apply(&mut state, &mut fx, 2, Command::OpenAccount { owner: 1, currency: CurrencyId(0), limits: Limits::NONE }));
        for _ in 0..=LIST_SCAN_MAX {
            apply(&mut state, &mut fx, 2, Command::Recharge { account, currency: CurrencyId(0), amount: 1, channel: 1 });
        }
        let filter = |platform| Filter { platform, kind: None, status: None, account: Some(account), from: 0, to: u64::MAX, channel_only: false };
        let channels = ChannelSet::default();
        let top = Position(u64::MAX, u64::MAX);
        let (found, cursor) = scan_account(&state, filter(1), account, top, u32::MAX, 50, &channels);
        assert!(found.is_empty() && cursor.is_none(), "{} found, cursor {cursor:?}", found.len());
        let (found, cursor) = scan_account(&state, filter(2), account, top, u32::MAX, 50, &channels);
        assert_eq!((found.len(), cursor.is_some()), (50, false), "its own platform lists it");
    }

    #[test]
    fn descending_merges_sorted_lists_below_an_end() {
        let list = |items: &[u32]| {
            let mut list = ChunkedVec::default();
            items.iter().for_each(|&item| list.push(item));
            list
        };
        let (odd, even, none) = (list(&[1, 3, 5, 7]), list(&[0, 2, 4, 6, 8]), list(&[]));
        for (end, expected) in [(u32::MAX, vec![8, 7, 6, 5, 4, 3, 2, 1, 0]), (5, vec![4, 3, 2, 1, 0]), (0, vec![]), (1, vec![0])] {
            let merged: Vec<u32> = Descending::below([&odd, &even, &none].into_iter(), end).collect();
            assert_eq!(merged, expected, "below {end}");
        }
        assert_eq!(Descending::below(std::iter::empty(), 9).count(), 0);
    }

    #[test]
    fn times_round_trip() {
        let at = parse_time("2026-11-22T10:00:00Z", "t").unwrap();
        assert_eq!(format_time(at), "2026-11-22T10:00:00Z");
        assert!(parse_time("yesterday", "t").is_err());
    }
}
