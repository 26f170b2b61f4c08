//! The merchant portal's ledgers: the orders that concern the merchant's own accounts (its own
//! orders, payments it received, refunds of them), channel in/out, journal entries, and the
//! statements per settlement day. Lists are cursor-paged (never the whole history for one page),
//! filters are checked (a bad one is an error notice naming it), exports are CSV.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use clearing_actor::channels::ChannelSet;
use engine::ledger::state::ShardState;
use engine::ledger::types::{AccountId, Order, OrderDetail, OrderStatus};
use engine::Engine;
use maud::{html, Markup};
use serde_json::Value;
use storage::Store;

use super::{merchant, Merchant};
use crate::accounts::{parse_account_id, public_account_id};
use crate::error::{blocking, ApiError};
use crate::orders::{merged_page, parse_cursor, Position, ShardPage};
use crate::platforms::Platforms;
use crate::portal::{notice, page, Fields, PortalError, Session};

/// Orders one listing examines per shard before it answers with a cursor.
const SCAN_MAX: usize = 100_000;
/// Orders out of memory one listing reads back per shard before it answers with a cursor (as
/// the API's listings do).
const COLD_READS_MAX: usize = 32;
/// Rows on one page.
const PAGE_ROWS: usize = 50;
/// Rows of one CSV export at most (the file says when it stopped short).
pub const EXPORT_ROWS_MAX: usize = 10_000;

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

/// Whether one of `accounts` receives money in payment `order`.
pub fn receives(order: &Order, accounts: &[AccountId]) -> bool {
    matches!(&order.detail, OrderDetail::Payment { held, .. } if held.iter().any(|leg| accounts.contains(&leg.account)))
}

/// Whether `order` concerns one of `accounts`: its own order, a payment it received, or a refund
/// taken from it.
pub fn concerns(order: &Order, accounts: &[AccountId]) -> bool {
    accounts.contains(&order.account) || receives(order, accounts) || matches!(order.detail, OrderDetail::Refund { payee, .. } if accounts.contains(&payee))
}

/// Which orders a merchant's listing keeps.
#[derive(Clone)]
pub struct Filter {
    pub platform: u32,
    /// The merchant's accounts, or the one the filter names.
    pub accounts: Arc<Vec<AccountId>>,
    pub kind: Option<&'static str>,
    pub status: Option<OrderStatus>,
    pub from: u64,
    pub to: u64,
    /// Only payments the accounts received.
    pub received_only: bool,
}

impl Filter {
    fn keeps(&self, order: &Order) -> bool {
        let accounts = self.accounts.as_slice();
        order.platform == self.platform
            && if self.received_only { receives(order, accounts) } else { concerns(order, accounts) }
            && self.kind.is_none_or(|k| crate::orders::kind_name(order.kind) == k)
            && self.status.is_none_or(|s| order.status == s)
            && (self.from..self.to).contains(&order.created_at)
    }
}

/// One shard's part of a page: the newest matching orders older than `before` (the platform's
/// own orders only, at most `SCAN_MAX` examined), and where the scan stopped if it stopped early.
fn scan(state: &ShardState, filter: &Filter, before: Position, limit: usize, channels: &ChannelSet) -> ShardPage {
    let Some(index) = state.platform_orders.get(&filter.platform) else { return (Vec::new(), None) };
    let end = state.orders.partition_point(|order| Position(order.created_at, order.id.0) < before);
    let end = u32::try_from(end).unwrap_or(u32::MAX);
    let stop = index.all.partition_point(|&local| local < end);
    let mut found = Vec::new();
    let mut cold_reads = 0;
    for (scanned, k) in (0..stop).rev().enumerate() {
        let Some(&local) = index.all.get(k) else { break };
        // An order out of memory is read back from the store on the shard's thread.
        cold_reads += usize::from(!state.orders.is_resident(local as usize));
        let Some(order) = state.orders.get(local as usize) else { break };
        if order.created_at < filter.from {
            break;
        }
        if scanned == SCAN_MAX || cold_reads > COLD_READS_MAX {
            return (found, Some(Position(order.created_at, order.id.0 + 1)));
        }
        if filter.keeps(order) {
            found.push((Position(order.created_at, order.id.0), merchants_view(crate::orders::view(state, order, channels), order.account, &filter.accounts)));
            if found.len() == limit {
                break;
            }
        }
    }
    (found, None)
}

/// A page of orders for `filter` newest first, and the next cursor.
pub async fn orders_page(
    engine: &Arc<Engine>,
    channels: Arc<ChannelSet>,
    filter: Filter,
    before: Position,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    merged_page(engine, limit, move |state, wanted| scan(state, &filter, before, wanted, &channels)).await
}

/// A filter form's values checked: the filter and the first bad field's complaint, if any.
fn parse_filter(m: &Merchant, query: &Fields) -> Result<(Filter, Position), String> {
    let kind = match query.opt("kind") {
        None => None,
        Some(k) => Some(*KINDS.iter().find(|name| **name == k).ok_or("kind: unknown order kind")?),
    };
    let status = match query.opt("status") {
        None => None,
        Some(s) => Some(*STATUSES.iter().find(|st| st.name() == s).ok_or("status: unknown order status")?),
    };
    let accounts = match query.opt("account") {
        None => m.accounts.clone(),
        Some(text) => vec![parse_account_id(text).filter(|a| m.accounts.contains(a)).ok_or("account: not one of your accounts")?],
    };
    let day = |name: &str| -> Result<Option<u64>, String> {
        match query.opt(name) {
            None => Ok(None),
            Some(text) => {
                crate::settlements::day_number(text).map(|day| Some(u64::from(day) * 86_400 * 1_000_000)).ok_or_else(|| format!("{name}: a date is YYYY-MM-DD"))
            }
        }
    };
    let from = day("from")?.unwrap_or(0);
    // `to` is inclusive: orders of that whole (UTC) day.
    let to = day("to")?.map_or(u64::MAX, |start| start + 86_400 * 1_000_000);
    let before = parse_cursor(query.opt("cursor")).map_err(|_| "cursor: not a cursor this page gave".to_string())?;
    let received_only = query.opt("received") == Some("1");
    Ok((Filter { platform: m.platform.id, accounts: Arc::new(accounts), kind, status, from, to, received_only }, before))
}

/// A link to the same listing with `changes` applied (other filters kept).
fn link(base: &str, query: &Fields, changes: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.0.iter().filter(|(k, v)| !v.is_empty() && !changes.iter().any(|(c, _)| c == k) && k != "format").cloned().collect();
    pairs.extend(changes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())));
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    if encoded.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{encoded}")
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An order's view as a merchant sees it: a payment it received (`payer` not one of its
/// `accounts`) with its own legs only, without what the other receivers of a split got or gave
/// back (`refunded_amount` counts every receiver's refunds).
pub fn merchants_view(mut view: Value, payer: AccountId, accounts: &[AccountId]) -> Value {
    if accounts.contains(&payer) {
        return view;
    }
    let own: Vec<String> = accounts.iter().map(|account| crate::accounts::public_account_id(*account)).collect();
    if let Some(receivers) = view.get_mut("receivers").and_then(Value::as_array_mut) {
        receivers.retain(|leg| leg["account_id"].as_str().is_some_and(|id| own.iter().any(|o| o == id)));
    }
    if let Some(object) = view.as_object_mut() {
        object.remove("refunded_amount");
    }
    view
}

/// The columns of the orders table and CSV.
const ORDER_COLUMNS: [&str; 11] =
    ["order_id", "out_order_no", "kind", "status", "amount", "currency", "account_id", "channel", "fee", "refunded_amount", "created_at"];

/// The orders table of a page.
pub fn orders_table(orders: &[Value]) -> Markup {
    html! {
        table.data.orders {
            thead { tr { th { "Order" } th { "Number" } th { "Kind" } th { "Status" } th.num { "Amount" } th { "Account" } th { "Channel" } th.num { "Fee" } th { "Created" } } }
            tbody {
                @for o in orders {
                    tr {
                        td { a href=(format!("/portal/merchant/orders/{}", text(&o["order_id"]))) { (text(&o["order_id"])) } }
                        td { (text(&o["out_order_no"])) }
                        td { (text(&o["kind"])) }
                        td { span.badge.(badge(&text(&o["status"]))) { (text(&o["status"])) } }
                        td.num { (text(&o["amount"])) " " (text(&o["currency"])) }
                        td { (text(&o["account_id"])) }
                        td { (text(&o["channel"])) }
                        td.num { (text(&o["fee"])) }
                        td { (text(&o["created_at"])) }
                    }
                }
                @if orders.is_empty() { tr { td colspan="9" { "No orders." } } }
            }
        }
    }
}

/// The badge class of a status.
pub fn badge(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" | "cancelled" => "bad",
        _ => "warn",
    }
}

fn csv_response(name: &str, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> HttpResponse {
    let bytes = crate::portal::csv_file(header, rows);
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("Cache-Control", "no-store"))
        .body(bytes)
}

/// `GET /portal/merchant/orders`: the merchant's orders with filters (kind, status, account,
/// from, to, received), a cursor, and `format=csv` for the export.
async fn orders(
    session: Session,
    query: web::Query<Fields>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let parsed = parse_filter(&m, &query);
    let csv = query.get("format") == "csv";
    let (listing, complaint) = match parsed {
        Ok((filter, before)) if csv => {
            let (mut rows, mut before, mut stopped) = (Vec::new(), before, None);
            for pages in 1.. {
                let want = (EXPORT_ROWS_MAX - rows.len()).min(500);
                let (page, next) = orders_page(&engine, clearing.channels(), filter.clone(), before, want).await?;
                rows.extend(page);
                match next {
                    Some(cursor) if rows.len() < EXPORT_ROWS_MAX && pages < crate::portal::EXPORT_PAGES_MAX => before = parse_cursor(Some(&cursor))?,
                    next => {
                        stopped = next;
                        break;
                    }
                }
            }
            let mut lines: Vec<Vec<String>> = rows.into_iter().map(|o| ORDER_COLUMNS.iter().map(|c| text(&o[*c])).collect()).collect();
            lines.extend(stopped.map(|cursor| crate::portal::export_stopped_row(ORDER_COLUMNS.len(), &cursor)));
            return Ok(csv_response("orders.csv", &ORDER_COLUMNS, lines.into_iter()));
        }
        Ok((filter, before)) => (Some(orders_page(&engine, clearing.channels(), filter, before, PAGE_ROWS).await?), None),
        Err(complaint) => (None, Some(complaint)),
    };
    let base = "/portal/merchant/orders";
    let tab = |label: &str, kind: &str, received: &str| {
        let href = link(base, &Fields::default(), &[("kind", kind), ("received", received)]);
        html! { a href=(href) { (label) } }
    };
    let body = html! {
        @if let Some(complaint) = &complaint { (notice("error", complaint)) }
        p.tabs { (tab("All", "", "")) " " (tab("Channel in", "recharge", "")) " " (tab("Channel out", "withdrawal", "")) " " (tab("Payments received", "payment", "1")) }
        form.filters method="get" action=(base) {
            label { "Kind " select name="kind" { option value="" { "any" } @for k in KINDS { option value=(k) selected[query.get("kind") == k] { (k) } } } }
            label { "Status " select name="status" { option value="" { "any" } @for s in STATUSES { option value=(s.name()) selected[query.get("status") == s.name()] { (s.name()) } } } }
            label { "Account " select name="account" { option value="" { "all" } @for a in &m.accounts { @let id = public_account_id(*a); option value=(id) selected[query.get("account") == id] { (id) } } } }
            label { "From " input type="date" name="from" value=(query.get("from")); }
            label { "To " input type="date" name="to" value=(query.get("to")); }
            @if query.get("received") == "1" { input type="hidden" name="received" value="1"; }
            button type="submit" { "Filter" }
            " "
            a.export href=(link(base, &query, &[("cursor", ""), ("format", "csv")])) { "Export CSV" }
        }
        @if let Some((orders, next)) = &listing {
            (orders_table(orders))
            @if let Some(next) = next { p { a.next href=(link(base, &query, &[("cursor", next)])) { "Older orders" } } }
        }
    };
    Ok(page(&session, "Orders", base, body))
}

/// `GET /portal/merchant/entries?account=&cursor=&format=csv`: an account's journal lines.
async fn entries(
    session: Session,
    query: web::Query<Fields>,
    engine: web::Data<Arc<Engine>>,
    store: web::Data<Arc<dyn Store>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let account = match query.opt("account") {
        None => m.accounts.first().copied(),
        Some(text) => Some(parse_account_id(text).filter(|a| m.accounts.contains(a)).ok_or(PortalError::NotFound)?),
    };
    const COLUMNS: [&str; 8] = ["entry_id", "order_id", "kind", "direction", "bucket", "amount", "balance_after", "created_at"];
    let base = "/portal/merchant/entries";
    let Some(account) = account else {
        return Ok(page(&session, "Entries", base, html! { p { "You have no account yet." } }));
    };
    let csv = query.get("format") == "csv";
    let limit = if csv { "500" } else { "50" };
    let found = crate::entries::page(&engine, &store, &platforms, m.platform.id, account, Some(limit), query.opt("cursor")).await;
    let (lines, next, complaint) = match found {
        Ok((lines, next)) => (lines, next, None),
        Err(error) if error.status == 400 => (Vec::new(), None, Some(format!("{}: {}", error.param.as_deref().unwrap_or("filter"), error.message))),
        Err(error) => return Err(error.into()),
    };
    if csv && complaint.is_none() {
        let rows = lines.iter().map(|l| COLUMNS.iter().map(|c| text(&l[*c])).collect());
        return Ok(csv_response("entries.csv", &COLUMNS, rows));
    }
    let id = public_account_id(account);
    let body = html! {
        @if let Some(complaint) = &complaint { (notice("error", complaint)) }
        form.filters method="get" action=(base) {
            label { "Account " select name="account" { @for a in &m.accounts { @let each = public_account_id(*a); option value=(each) selected[each == id] { (each) } } } }
            button type="submit" { "Show" }
            " "
            a.export href=(link(base, &query, &[("account", &id), ("format", "csv")])) { "Export CSV (this page, up to 500 lines)" }
        }
        table.data.entries {
            thead { tr { th { "Entry" } th { "Order" } th { "Kind" } th { "Bucket" } th.num { "Amount" } th.num { "Balance after" } th { "At" } } }
            tbody {
                @for l in &lines {
                    tr {
                        td { (text(&l["entry_id"])) }
                        td { @let order = text(&l["order_id"]); @if !order.is_empty() { a href=(format!("/portal/merchant/orders/{order}")) { (order) } } }
                        td { (text(&l["kind"])) }
                        td { (text(&l["bucket"])) }
                        td.num { @if l["direction"] == "debit" { "-" } (text(&l["amount"])) }
                        td.num { (text(&l["balance_after"])) }
                        td { (text(&l["created_at"])) }
                    }
                }
                @if lines.is_empty() { tr { td colspan="7" { "No entries." } } }
            }
        }
        @if let Some(next) = &next { p { a.next href=(link(base, &query, &[("account", &id), ("cursor", next)])) { "Older entries" } } }
    };
    Ok(page(&session, "Entries", base, body))
}

/// `GET /portal/merchant/statements?date=YYYY-MM-DD&format=csv`: the settlement statement of a
/// business day for the merchant's accounts (income made withdrawable, what the platform's rule
/// charged, commissions received).
async fn statements(
    session: Session,
    query: web::Query<Fields>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let base = "/portal/merchant/statements";
    let today = crate::stats::date_of(crate::stats::today(&engine));
    let date = query.opt("date").unwrap_or(&today).to_string();
    let Some(day) = crate::settlements::day_number(&date) else {
        let body = html! { (notice("error", "date: a date is YYYY-MM-DD")) (statement_form(&today)) };
        return Ok(page(&session, "Statements", base, body));
    };
    let (engine_ref, platform, accounts) = (engine.get_ref().clone(), m.platform.clone(), m.accounts.clone());
    let (header, rows) = blocking(move || -> Result<(Vec<String>, Vec<Vec<String>>), ApiError> {
        let mut header = Vec::new();
        let mut rows = Vec::new();
        for account in accounts {
            let text = crate::settlements::statement_csv(&engine_ref, std::slice::from_ref(&platform), day, Some(account))?;
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            header = reader.headers().map(|h| h.iter().map(str::to_string).collect()).unwrap_or_default();
            for record in reader.records().map_while(Result::ok) {
                rows.push(record.iter().map(str::to_string).collect());
            }
        }
        Ok((header, rows))
    })
    .await??;
    if query.get("format") == "csv" {
        let header: Vec<&str> = if header.is_empty() { crate::settlements::STATEMENT_COLUMNS.to_vec() } else { header.iter().map(String::as_str).collect() };
        return Ok(csv_response(&format!("statement-{date}.csv"), &header, rows.into_iter()));
    }
    let column = |name: &str| header.iter().position(|h| h == name);
    let cell = |row: &Vec<String>, name: &str| column(name).and_then(|i| row.get(i).cloned()).unwrap_or_default();
    let body = html! {
        (statement_form(&date))
        p { a.export href=(format!("{base}?date={date}&format=csv")) { "Export CSV" } }
        table.data.statement {
            thead { tr { th { "Line" } th { "Account" } th { "Currency" } th { "Income through" } th.num { "Matured" } th.num { "Count" } th { "Rate" } th.num { "Commission" } th.num { "Service fee" } th.num { "Net" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td { (cell(row, "line")) } td { (cell(row, "account_id")) } td { (cell(row, "currency")) } td { (cell(row, "income_through")) }
                        td.num { (cell(row, "matured_amount")) } td.num { (cell(row, "count")) } td { (cell(row, "rate")) }
                        td.num { (cell(row, "commission")) } td.num { (cell(row, "service_fee")) } td.num { (cell(row, "net_amount")) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="10" { "Nothing was settled for your accounts on " (date) "." } } }
            }
        }
    };
    Ok(page(&session, "Statements", base, body))
}

fn statement_form(date: &str) -> Markup {
    html! {
        form.filters method="get" action="/portal/merchant/statements" {
            label { "Settlement day " input type="date" name="date" value=(date); }
            button type="submit" { "Show" }
        }
    }
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/merchant/orders", web::get().to(orders))
        .route("/portal/merchant/entries", web::get().to(entries))
        .route("/portal/merchant/statements", web::get().to(statements));
}
