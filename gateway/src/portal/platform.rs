//! The platform operators' portal. Every page here requires a platform operator's session
//! (`Session::require_kind("platform")`); another kind of operator gets 404. THE platform is
//! always the session's (`session.scope().platform()`), never one named by a URL or a form, and
//! every object loaded by id (member, account, order) is checked to be that platform's (else 404,
//! like the API).
//!
//! Pages: the dashboard; members (list, register, a member's KYC facts, accounts, cards; open an
//! account); money (platform recharge, freeze, release, and the `adjustment` / `set_limits`
//! proposals); the three ledgers (orders, channel in/out, accounting entries) with filters,
//! cursor paging and CSV export; API access (webhook URL, secret version, `rotate_secret`
//! proposal). Every form that creates something carries an `out_order_no` generated when the
//! form was rendered, so submitting it twice is one operation (the engine's idempotency).

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use clearing_actor::Clearing;
use engine::Engine;
use maud::{html, Markup};
use serde_json::Value;
use storage::Store;

use super::approvals::{Action, Status};
use super::{check_form, csrf_field, notice, page, redirect, Fields, Portal, PortalError, Role, Scope, Session};
use crate::error::ApiError;
use crate::members::{Member, Members};
use crate::platforms::{Platform, Platforms};

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] = &[
    ("Dashboard", "/portal/platform"),
    ("Members", "/portal/platform/members"),
    ("Money", "/portal/platform/money"),
    ("Orders", "/portal/platform/orders"),
    ("Channel in/out", "/portal/platform/channels"),
    ("Entries", "/portal/platform/entries"),
    ("Agreements", "/portal/platform/agreements"),
    ("API access", "/portal/platform/api"),
    ("Approvals", "/portal/approvals"),
    ("Operators", "/portal/operators"),
    ("Audit log", "/portal/audit"),
];

/// Members on one page of the members list.
pub const MEMBERS_PAGE: usize = 50;
/// Rows one CSV export holds at most (followed through the ledger's cursor).
pub const CSV_ROWS_MAX: usize = 10_000;

type PortalData = web::Data<Arc<Portal>>;
type EngineData = web::Data<Arc<Engine>>;
type MembersData = web::Data<Arc<Members>>;
type PlatformsData = web::Data<Arc<Platforms>>;

/// The session's platform, for a platform operator (404 for another kind).
fn own_platform(session: &Session, platforms: &Platforms) -> Result<Platform, PortalError> {
    session.require_kind("platform")?;
    let id = session.scope().platform().ok_or(PortalError::NotFound)?;
    platforms.get(id).ok_or(PortalError::NotFound)
}

/// A fresh order number for a form (`pt-` and 24 hex digits), rendered into it as a hidden field.
pub fn new_out_order_no() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("pt-{}", hex::encode(bytes))
}

/// An ID number with all but its last four characters hidden.
pub fn mask_id_number(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let keep = chars.len().min(4);
    let hidden = chars.len() - keep;
    "*".repeat(hidden) + &chars[hidden..].iter().collect::<String>()
}

/// A phone number as `138****8000`.
pub fn mask_phone(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// The error line of a refused form or filter: the message, naming the field when known.
fn refusal(error: &ApiError) -> String {
    match &error.param {
        Some(param) => format!("{param}: {}", error.message),
        None => error.message.clone(),
    }
}

fn badge(status: &str) -> Markup {
    let class = match status {
        "active" | "normal" | "succeeded" | "verified" | "executed" => "badge ok",
        "failed" | "cancelled" | "closed" | "frozen" | "locked" | "rejected" => "badge bad",
        _ => "badge warn",
    };
    html! { span class=(class) { (status) } }
}

// ---------------------------------------------------------------------------------------------
// Dashboard

async fn home(
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    delivery: web::Data<crate::events::Delivery>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let failed_deliveries = delivery.recent(platform.id).iter().filter(|a| !a.delivered).count();
    let member_count = members.count_of(platform.id)?;
    let walked = portal.home_figures.of(&engine, platform.id).await?;
    let (account_count, held) = (walked.0, &walked.1);
    let today = crate::stats::today(&engine);
    let today_orders: u64 = crate::stats::daily_volume(&engine, Some(platform.id), today..=today).await?.iter().map(|t| t.count).sum();
    let pending = portal.approvals.list(&session.scope(), Some(Status::Pending), 1000)?.len();
    let exponent_of = |code: &str| engine.config().currencies.iter().find(|c| c.code_str() == code).map_or(2, |c| c.exponent);
    let first = (today.saturating_sub(13))..=today;
    let volume = crate::stats::daily_volume(&engine, Some(platform.id), first.clone()).await?;
    let chart = orders_chart("platform-orders-per-day", "Orders per day", first, &volume);
    let body = html! {
        section.cards #platform-metrics {
            div.metric { div.label { "Members" } div.value #metric-members { (member_count) } }
            div.metric { div.label { "Accounts" } div.value #metric-accounts { (account_count) } }
            div.metric { div.label { "Orders today" } div.value #metric-orders-today { (today_orders) } }
            @for balance in held {
                div.metric {
                    div.label { "Balances held (" (balance.currency) ")" }
                    div.value { (super::money(balance.settled + balance.unsettled + balance.frozen + balance.escrow, exponent_of(&balance.currency))) }
                }
            }
            div.metric {
                div.label { "Failed webhook deliveries (last " (crate::events::RECENT_ATTEMPTS_MAX) ")" }
                div.value #metric-failed-webhooks { a href="/portal/platform/api" { @if platform.webhook_url.is_some() { (failed_deliveries) } @else { "no webhook" } } }
            }
            div.metric { div.label { "Pending approvals" } div.value #metric-pending { a href="/portal/approvals" { (pending) } } }
        }
        section.card {
            h2 { "Orders per day (last 14 days)" }
            // Trusted SVG: crate::charts escapes every text it writes.
            div.charts { div.chart { (maud::PreEscaped(chart)) } }
            (volume_table(&volume, &exponent_of))
        }
        section.card {
            p { "Signed in as " (session.operator.display_name) " for " (session.operator.scope.describe()) " (" (platform.name) ")." }
        }
    };
    Ok(page(&session, "Dashboard", "/portal/platform", body))
}

/// Orders per day and kind over `days` as stacked bars (chart `id`, titled `title`).
pub(super) fn orders_chart(id: &str, title: &str, days: std::ops::RangeInclusive<u32>, volume: &[crate::stats::DayKindTotal]) -> String {
    let days: Vec<u32> = days.collect();
    let categories: Vec<String> = days.iter().map(|d| crate::stats::date_of(*d)).collect();
    let mut kinds: Vec<&str> = volume.iter().map(|t| t.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let series: Vec<crate::charts::Series> = kinds
        .iter()
        .map(|kind| crate::charts::Series {
            name: kind.to_string(),
            values: days
                .iter()
                .map(|day| volume.iter().filter(|t| t.kind == *kind && t.day == *day).map(|t| t.count).sum::<u64>().min(i64::MAX as u64) as i64)
                .collect(),
        })
        .collect();
    let frame = crate::charts::Frame { id, title, unit: crate::charts::Unit::Count };
    crate::charts::stacked_bars(&frame, &categories, &series)
}

fn volume_table(volume: &[crate::stats::DayKindTotal], exponent_of: &dyn Fn(&str) -> u8) -> Markup {
    html! {
        @if volume.is_empty() {
            p.muted { "No orders in these days." }
        } @else {
            table.data {
                thead { tr { th { "Date" } th { "Kind" } th { "Currency" } th.num { "Orders" } th.num { "Amount" } } }
                tbody {
                    @for row in volume {
                        tr { td { (row.date) } td { (row.kind) } td { (row.currency) } td.num { (row.count) } td.num { (super::money(row.amount_minor, exponent_of(&row.currency))) } }
                    }
                }
            }
        }
    }
}

/// The dashboard's figures that walk every account of every shard (a platform's accounts and
/// the balances they hold), kept per platform and worked out one walk at a time: a dashboard
/// reloaded in a loop (by any of a platform's operators, a viewer too) cost every shard a walk
/// of all its accounts per request (helper 107). A platform's figures are used again while no
/// shard has written a batch since (up to a minute), and for a second after one, unless an
/// account was opened since (then at once).
#[derive(Default)]
pub struct HomeFigures {
    kept: Arc<std::sync::Mutex<std::collections::HashMap<u32, Walked>>>,
    walking: Arc<tokio::sync::Mutex<()>>,
}

struct Walked {
    at: std::time::Instant,
    /// Each shard's last batch and number of accounts when the walk began.
    sequences: Vec<(u64, u64)>,
    figures: Arc<(usize, Vec<crate::stats::HeldBalance>)>,
}

impl HomeFigures {
    /// `platform`'s accounts and the balances they hold.
    pub async fn of(&self, engine: &Arc<Engine>, platform: u32) -> Result<Arc<(usize, Vec<crate::stats::HeldBalance>)>, ApiError> {
        use std::time::Duration;
        // Each shard's last batch and its number of accounts: an account opened anywhere is
        // walked again at once (the count is what an operator who just opened one looks at).
        let sequences = || {
            let now = |value: &std::sync::atomic::AtomicU64| value.load(std::sync::atomic::Ordering::SeqCst);
            engine.counters().iter().map(|c| (now(&c.last_sequence), now(&c.accounts))).collect::<Vec<(u64, u64)>>()
        };
        let fresh = |this: &HomeFigures| {
            let now = sequences();
            let kept = this.kept.lock().expect("figures lock");
            let walked = kept.get(&platform)?;
            let age = walked.at.elapsed();
            let accounts_same = walked.sequences.iter().map(|shard| shard.1).eq(now.iter().map(|shard| shard.1));
            (accounts_same && (age < Duration::from_secs(1) || (age < Duration::from_secs(60) && walked.sequences == now))).then(|| walked.figures.clone())
        };
        if let Some(figures) = fresh(self) {
            return Ok(figures);
        }
        let walking = self.walking.clone().lock_owned().await;
        // Another request may have walked while this one waited.
        if let Some(figures) = fresh(self) {
            return Ok(figures);
        }
        let before = sequences();
        // The walk and its keeping on a task of its own (with the lock): a request its client
        // drops (a reload) leaves the walk to end and be kept, rather than a next request
        // starting another beside its shard reads still running (helper 112).
        let (engine, kept) = (engine.clone(), self.kept.clone());
        actix_web::rt::spawn(async move {
            let _walking = walking;
            let figures = Arc::new((count_accounts(&engine, platform).await?, crate::stats::balances_held(&engine, Some(platform)).await?));
            let mut kept = kept.lock().expect("figures lock");
            kept.retain(|_, walked| walked.at.elapsed() < Duration::from_secs(60));
            kept.insert(platform, Walked { at: std::time::Instant::now(), sequences: before, figures: figures.clone() });
            Ok(figures)
        })
        .await
        .map_err(|_| ApiError::unavailable("the dashboard's figures could not be worked out".into()))?
    }
}

/// How many customer accounts `platform` has, over every shard.
async fn count_accounts(engine: &Arc<Engine>, platform: u32) -> Result<usize, ApiError> {
    let mut total = 0;
    for shard in 0..engine.config().shard_count {
        let engine = engine.clone();
        total +=
            crate::error::blocking(move || engine.read_shard(shard, move |state| state.owners.keys().filter(|(p, _, _)| *p == platform).count())).await??;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Members

#[derive(serde::Deserialize)]
struct MembersQuery {
    q: Option<String>,
    after: Option<String>,
}

async fn members_list(
    session: Session,
    platforms: PlatformsData,
    members: MembersData,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let query = MembersQuery {
        q: query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty()),
        after: query.iter().find(|(k, _)| k == "after").map(|(_, v)| v.clone()).filter(|v| !v.is_empty()),
    };
    members_page(&session, &platform, &members, &query, None).await
}

async fn members_page(
    session: &Session,
    platform: &Platform,
    members: &Arc<Members>,
    query: &MembersQuery,
    flash: Option<(&str, &str)>,
) -> Result<HttpResponse, PortalError> {
    let mut flash = flash.map(|(kind, text)| (kind.to_string(), text.to_string()));
    let after = match query.after.as_deref().map(|a| a.parse::<u64>()) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            flash = Some(("error".into(), "after: not a position this page gave".into()));
            0
        }
    };
    let (listing, platform_id, filter) = (members.clone(), platform.id, query.q.clone());
    let (found, next) = crate::error::blocking(move || listing.of_platform(platform_id, after, filter.as_deref(), MEMBERS_PAGE)).await??;
    let next_link = next.map(|n| {
        let mut link = format!("/portal/platform/members?after={n}");
        if let Some(q) = &query.q {
            link.push_str(&format!("&q={}", urlencoding(q)));
        }
        link
    });
    let body = html! {
        @if let Some((kind, text)) = &flash { (notice(kind, text)) }
        form.filters method="get" action="/portal/platform/members" {
            label { "Name or id" input type="search" name="q" value=(query.q.clone().unwrap_or_default()); }
            button.secondary type="submit" { "Filter" }
        }
        table.data #members {
            thead { tr { th { "Member" } th { "Type" } th { "Name" } th { "Status" } } }
            tbody {
                @for member in &found {
                    tr {
                        td { a href=(format!("/portal/platform/members/{}", member.public_id())) { (member.public_id()) } }
                        td { (member.kind) } td { (member.name) } td { (badge(&member.status)) }
                    }
                }
            }
        }
        @if found.is_empty() { p.muted { "No members match." } }
        @if let Some(link) = &next_link { p { a.next href=(link) { "Next page →" } } }
        @if session.has(Role::Operator) {
            section.card #register {
                h2 { "Register a member" }
                form method="post" action="/portal/platform/members" {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Type" select name="type" { option value="individual" { "individual" } option value="enterprise" { "enterprise" } } }
                    label { "Name" input name="name" required maxlength="64"; }
                    label { "ID number (resident ID or unified credit code)" input name="id_number" required maxlength="18"; }
                    label { "Mobile phone" input name="phone" required maxlength="11"; }
                    button type="submit" { "Register" }
                }
            }
        }
    };
    Ok(page(session, "Members", "/portal/platform/members", body))
}

/// Percent-encodes a query value.
fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn register_member(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    members: MembersData,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Operator)?;
    let new = crate::members::NewMember {
        out_order_no: form.get("out_order_no").to_string(),
        kind: form.get("type").to_string(),
        name: form.get("name").to_string(),
        id_number: form.get("id_number").trim().to_string(),
        phone: form.get("phone").trim().to_string(),
    };
    let creating = members.get_ref().clone();
    let platform_id = platform.id;
    match crate::error::blocking(move || creating.create(platform_id, new)).await? {
        Ok(created) => {
            let member = created.member;
            let outcome = if created.replayed { "replayed" } else { "ok" };
            portal.audit.record(&session, session.scope(), "member.create", &member.public_id(), Value::Null, member.view(), outcome)?;
            Ok(redirect(&format!("/portal/platform/members/{}", member.public_id())))
        }
        Err(error) => {
            portal.audit.record(&session, session.scope(), "member.create", "", Value::Null, Value::Null, &format!("refused: {}", error.code))?;
            let query = MembersQuery { q: None, after: None };
            members_page(&session, &platform, &members, &query, Some(("error", &refusal(&error)))).await
        }
    }
}

/// The platform's member named by a path segment (`mem_N`), or 404.
fn member_of(members: &Members, platform: &Platform, text: &str) -> Result<Member, PortalError> {
    members.named(platform.id, text)?.ok_or(PortalError::NotFound)
}

#[allow(clippy::too_many_arguments)]
async fn member_page(
    session: Session,
    path: web::Path<String>,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    cards: web::Data<Arc<crate::cards::Cards>>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let member = member_of(&members, &platform, &path)?;
    render_member(&session, &platform, &member, &engine, &cards, None).await
}

async fn render_member(
    session: &Session,
    platform: &Platform,
    member: &Member,
    engine: &Arc<Engine>,
    cards: &Arc<crate::cards::Cards>,
    flash: Option<(&str, &str)>,
) -> Result<HttpResponse, PortalError> {
    let mut accounts = Vec::new();
    let mut bound = Vec::new();
    for id in crate::accounts::accounts_of_member(engine, platform.id, member.id).await? {
        if let Some(summary) = crate::accounts::summary(engine, platform.id, id).await? {
            accounts.push(summary);
        }
        bound.extend(crate::cards::cards_of(engine, cards, platform.id, id).await?);
    }
    let currencies: Vec<String> = engine.config().currencies.iter().map(|c| c.code_str().to_string()).collect();
    let body = html! {
        @if let Some((kind, text)) = flash { (notice(kind, text)) }
        section.card #kyc {
            h2 { "Identity (KYC)" }
            dl.facts {
                dt { "Member" } dd #member-id { (member.public_id()) }
                dt { "Type" } dd { (member.kind) }
                dt { "Name" } dd { (member.name) }
                dt { "ID number" } dd #id-number { (mask_id_number(&member.id_number)) }
                dt { "Phone" } dd #phone { (mask_phone(&member.phone)) }
                dt { "Status" } dd { (badge(&member.status)) }
            }
        }
        section.card #accounts {
            h2 { "Accounts" }
            @if accounts.is_empty() { p.muted { "No account yet." } } @else {
                table.data {
                    thead { tr { th { "Account" } th { "Currency" } th { "Virtual account number" } th { "Status" } th.num { "Available" } th.num { "Withdrawable" } th.num { "Frozen" } th.num { "Unsettled" } } }
                    tbody {
                        @for account in &accounts {
                            tr {
                                td { a href=(format!("/portal/platform/entries?account_id={}", account.account_id)) { (account.account_id) } }
                                td { (account.currency) }
                                td.van { code { (account.virtual_account_no) } }
                                td { (badge(&account.status)) }
                                td.num { (account.available) } td.num { (account.withdrawable) } td.num { (account.frozen) } td.num { (account.unsettled) }
                            }
                        }
                    }
                }
            }
            @if session.has(Role::Operator) {
                form.inline-form method="post" action=(format!("/portal/platform/members/{}/accounts", member.public_id())) {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Currency" select name="currency" { @for code in &currencies { option value=(code) { (code) } } } }
                    button type="submit" { "Open an account" }
                }
            }
        }
        section.card #cards {
            h2 { "Bank cards" }
            @if bound.is_empty() { p.muted { "No card bound." } } @else {
                table.data {
                    thead { tr { th { "Card" } th { "Account" } th { "Number" } th { "Holder" } th { "Status" } } }
                    tbody {
                        @for card in &bound {
                            tr {
                                td { (card.public_id()) }
                                td { (crate::accounts::public_account_id(engine::ledger::types::AccountId(card.account))) }
                                td { code { (card.masked()) } }
                                td { (card.holder_name) }
                                td { (badge(&card.status)) }
                            }
                        }
                    }
                }
            }
        }
        @if session.has(Role::Operator) && !accounts.is_empty() {
            (member_money_forms(session, member, &accounts, &bound, &Fields::default()))
        }
        section.card #agreements {
            h2 { "Agreements" }
            p { a href=(format!("/portal/platform/agreements?member={}", member.public_id())) { "Agreements this member signed" } }
        }
    };
    Ok(page(session, &format!("Member {}", member.name), "/portal/platform/members", body))
}

/// The member page's 代收 and 代付 forms: collect from one of the member's verified cards into
/// their account, and pay out from their account to an outside card (previewed first).
fn member_money_forms(
    session: &Session,
    member: &Member,
    accounts: &[crate::accounts::AccountSummary],
    bound: &[crate::cards::Card],
    fields: &Fields,
) -> Markup {
    let base = format!("/portal/platform/members/{}", member.public_id());
    let account_select = html! {
        label { "Account" select name="account_id" {
            @for a in accounts { option value=(a.account_id) selected[fields.get("account_id") == a.account_id] { (a.account_id) " · " (a.currency) } }
        } }
    };
    let verified: Vec<&crate::cards::Card> = bound.iter().filter(|c| c.status == "verified").collect();
    html! {
        div.platform-forms {
            section.card #collection {
                h2 { "Collect from a card (代收)" }
                @if verified.is_empty() { p.muted { "No verified card: collections come only from a member's verified card." } } @else {
                    form method="post" action=(format!("{base}/collection")) {
                        (csrf_field(session))
                        input type="hidden" name="out_order_no" value=(new_out_order_no());
                        (account_select)
                        label { "Card" select name="card_id" {
                            @for c in &verified {
                                @let id = c.public_id();
                                option value=(id) selected[fields.get("card_id") == id] { (c.masked()) " · " (c.holder_name) " · " (crate::accounts::public_account_id(engine::ledger::types::AccountId(c.account))) }
                            }
                        } }
                        label { "Amount" input name="amount" required inputmode="decimal" value=(fields.get("amount")); }
                        button type="submit" { "Collect" }
                    }
                }
            }
            section.card #payout {
                h2 { "Pay out to an outside card (代付)" }
                form method="post" action=(format!("{base}/payout/preview")) {
                    (csrf_field(session))
                    (account_select)
                    label { "Card number" input name="card_no" required inputmode="numeric" maxlength="19" value=(fields.get("card_no")); }
                    label { "Holder's name" input name="holder_name" required maxlength="64" value=(fields.get("holder_name")); }
                    label { "Amount" input name="amount" required inputmode="decimal" value=(fields.get("amount")); }
                    label { "Arrival" select name="arrival" {
                        option value="standard" selected[fields.get("arrival") != "realtime"] { "standard" }
                        option value="realtime" selected[fields.get("arrival") == "realtime"] { "realtime" }
                    } }
                    label { "Receiving account" select name="account_type" {
                        option value="personal" selected[fields.get("account_type") != "corporate"] { "personal" }
                        option value="corporate" selected[fields.get("account_type") == "corporate"] { "corporate" }
                    } }
                    button type="submit" { "Preview" }
                }
            }
        }
    }
}

/// The member's account named by a form field, with its currency; another member's or
/// platform's account is the API's 404 naming the field.
async fn members_account(engine: &Arc<Engine>, platform: u32, member: &Member, text: &str) -> Result<(String, engine::money::CurrencySpec), ApiError> {
    let id = crate::orders::account(text.trim(), "account_id")?;
    let (owner, _, spec) = crate::accounts::account_of(engine, platform, id).await?;
    if owner != member.id {
        return Err(ApiError { param: Some("account_id".into()), ..ApiError::not_found() });
    }
    Ok((crate::accounts::public_account_id(id), spec))
}

/// Audits a member money form's outcome, then answers: the order's page, or the member's page
/// with the refusal.
#[allow(clippy::too_many_arguments)]
async fn member_money_outcome(
    session: &Session,
    portal: &Portal,
    platform: &Platform,
    member: &Member,
    engine: &Arc<Engine>,
    cards: &Arc<crate::cards::Cards>,
    action: &str,
    after: Value,
    (result, recorded): (Result<engine::ledger::types::Reply, ApiError>, bool),
) -> Result<HttpResponse, PortalError> {
    if !recorded {
        let (target, words) = super::audit::reply_outcome(&result, &member.public_id());
        portal.audit.record(session, session.scope(), action, &target, Value::Null, after, &words)?;
    }
    let refused = match result {
        Ok(reply) if reply.is_ok() => {
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id));
            return Ok(redirect(&format!("/portal/platform/orders/{order}")));
        }
        Ok(reply) => crate::error::rejection(reply.code),
        Err(error) => error,
    };
    render_member(session, platform, member, engine, cards, Some(("error", &refusal(&refused)))).await
}

/// 代收: collects from the member's verified card into their account (`recharges::collect`,
/// the API's own checks); the form's order number makes a second submit a replay.
#[allow(clippy::too_many_arguments)]
async fn collection(
    request: HttpRequest,
    session: Session,
    path: web::Path<String>,
    portal: PortalData,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    cards: web::Data<Arc<crate::cards::Cards>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    let member = member_of(&members, &platform, &path)?;
    session.require(Role::Operator)?;
    let mut after = serde_json::json!({"out_order_no": form.get("out_order_no"), "member_id": member.public_id(), "account_id": form.get("account_id").trim(), "card_id": form.get("card_id"), "amount": form.get("amount").trim()});
    let result = match members_account(&engine, platform.id, &member, form.get("account_id")).await {
        Ok((account_id, spec)) => {
            after["currency"] = Value::from(spec.code_str());
            let body = crate::recharges::CollectionBody {
                out_order_no: form.get("out_order_no").to_string(),
                account_id,
                card_id: form.get("card_id").to_string(),
                amount: form.get("amount").trim().to_string(),
                currency: spec.code_str().to_string(),
                channel: None,
            };
            let (engine, clearing, cards, platform, target) =
                (engine.get_ref().clone(), clearing.get_ref().clone(), cards.get_ref().clone(), platform.clone(), member.public_id());
            let work = async move { crate::recharges::collect(&engine, &clearing, &cards, &platform, body).await.map(|(_, reply)| reply) };
            let outcome = move |result: &Result<engine::ledger::types::Reply, ApiError>, _: &mut Value| super::audit::reply_outcome(result, &target);
            (
                super::audit::audited(
                    portal.get_ref().clone(),
                    session.clone(),
                    session.scope(),
                    "order.collection",
                    member.public_id(),
                    after.clone(),
                    work,
                    outcome,
                )
                .await?,
                true,
            )
        }
        Err(error) => (Err(error), false),
    };
    member_money_outcome(&session, &portal, &platform, &member, &engine, &cards, "order.collection", after, result).await
}

/// The 代付 form's fields as the API's body (the currency is the account's).
fn payout_body(form: &Fields, account_id: String, spec: &engine::money::CurrencySpec, out_order_no: String) -> crate::withdrawals::PayoutBody {
    crate::withdrawals::PayoutBody {
        out_order_no,
        account_id,
        card_no: form.get("card_no").trim().to_string(),
        holder_name: form.get("holder_name").trim().to_string(),
        amount: form.get("amount").trim().to_string(),
        currency: spec.code_str().to_string(),
        arrival: form.opt("arrival").map(str::to_string),
        account_type: form.opt("account_type").map(str::to_string),
    }
}

/// 代付 preview: the payout checked as the API checks it, then the clearing actor's read-only
/// `quote` (channel, every candidate and why, fee, total) and a confirm form with a fresh
/// order number. Nothing moves and nothing is audited here.
#[allow(clippy::too_many_arguments)]
async fn payout_preview(
    request: HttpRequest,
    session: Session,
    path: web::Path<String>,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    cards: web::Data<Arc<crate::cards::Cards>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    let member = member_of(&members, &platform, &path)?;
    session.require(Role::Operator)?;
    let checked = match members_account(&engine, platform.id, &member, form.get("account_id")).await {
        Ok((account_id, spec)) => {
            let body = payout_body(&form, account_id, &spec, new_out_order_no());
            crate::withdrawals::check_payout(&engine, platform.id, &body).await.map(|checked| (body, checked))
        }
        Err(error) => Err(error),
    };
    let (body, checked) = match checked {
        Ok(found) => found,
        Err(error) => return render_member(&session, &platform, &member, &engine, &cards, Some(("error", &refusal(&error)))).await,
    };
    let quote = clearing.quote(checked.route()).await.map_err(ApiError::from)?;
    let (spec, amount) = (checked.spec, checked.route().amount);
    let base = format!("/portal/platform/members/{}", member.public_id());
    let page_body = html! {
        section.card.preview #payout-preview {
            h2 { "Payout preview (代付)" }
            dl.facts {
                dt { "From account" } dd { (body.account_id) " (" (member.name) ")" }
                dt { "To card" } dd { (crate::withdrawals::masked_card_no(&body.card_no)) " · " (body.holder_name) }
                dt { "Amount" } dd.amount { (spec.format(amount)) " " (spec.code_str()) }
                dt { "Arrival" } dd { (body.arrival.as_deref().unwrap_or("standard")) }
                (super::routing_facts(&quote, &spec, amount))
            }
            (super::routing_candidates(&quote))
            @if quote.chosen.is_some() {
                form.confirm method="post" action=(format!("{base}/payout")) {
                    (csrf_field(&session))
                    input type="hidden" name="out_order_no" value=(body.out_order_no);
                    input type="hidden" name="account_id" value=(body.account_id);
                    input type="hidden" name="card_no" value=(body.card_no);
                    input type="hidden" name="holder_name" value=(body.holder_name);
                    input type="hidden" name="amount" value=(spec.format(amount));
                    input type="hidden" name="arrival" value=(body.arrival.as_deref().unwrap_or("standard"));
                    input type="hidden" name="account_type" value=(body.account_type.as_deref().unwrap_or("personal"));
                    label { "Note for the approver" input name="note" maxlength="200"; }
                    button type="submit" { "Propose the payout (four eyes)" }
                    " "
                    a href=(base) { "Change" }
                }
                p.muted { "A payout to an outside card is a proposal: another operator with the approver role carries it out. Routing decides again then (a channel's cap or health may change meanwhile); the order shows the channel it took." }
            } @else {
                (notice("error", "No channel can take this payout now; see why above."))
            }
        }
    };
    Ok(page(&session, &format!("Member {}", member.name), "/portal/platform/members", page_body))
}

/// 代付 confirmed: a proposal (four eyes), checked as the API checks it; another operator with the
/// approver role carries it out (`pages::execute`: `withdrawals::pay_out` with the preview's
/// order number, so two proposals of one preview pay out once).
#[allow(clippy::too_many_arguments)]
async fn payout(
    request: HttpRequest,
    session: Session,
    path: web::Path<String>,
    portal: PortalData,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    cards: web::Data<Arc<crate::cards::Cards>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    let member = member_of(&members, &platform, &path)?;
    session.require(Role::Operator)?;
    let checked = match members_account(&engine, platform.id, &member, form.get("account_id")).await {
        Ok((account_id, spec)) => {
            let body = payout_body(&form, account_id, &spec, form.get("out_order_no").to_string());
            crate::withdrawals::check_payout(&engine, platform.id, &body).await.map(|_| body)
        }
        Err(error) => Err(error),
    };
    let payout = match checked {
        Ok(payout) => payout,
        Err(error) => return render_member(&session, &platform, &member, &engine, &cards, Some(("error", &refusal(&error)))).await,
    };
    let action = Action::Payout { platform: platform.id, member: member.public_id(), payout };
    let proposal = portal.approvals.propose(&session, Scope::Platform { platform: platform.id }, action, form.get("note"))?;
    portal.audit.record(
        &session,
        proposal.scope,
        "approval.propose",
        &format!("proposal {}", proposal.id),
        Value::Null,
        serde_json::json!({"action": proposal.action.summary(), "note": proposal.note}),
        "pending",
    )?;
    let message = format!(
        "Proposal {} recorded: {}. Another operator with the approver role must approve it on the Approvals page.",
        proposal.id,
        proposal.action.summary()
    );
    render_member(&session, &platform, &member, &engine, &cards, Some(("ok", &message))).await
}

#[allow(clippy::too_many_arguments)]
async fn open_account(
    request: HttpRequest,
    session: Session,
    path: web::Path<String>,
    portal: PortalData,
    platforms: PlatformsData,
    members: MembersData,
    engine: EngineData,
    cards: web::Data<Arc<crate::cards::Cards>>,
    agreements: web::Data<Arc<crate::agreements::Agreements>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    let member = member_of(&members, &platform, &path)?;
    session.require(Role::Operator)?;
    match crate::accounts::open(&engine, &members, &agreements, &platform, form.get("out_order_no"), &member.public_id(), form.get("currency")).await {
        Ok((id, replayed)) => {
            let account = crate::accounts::public_account_id(id);
            let after = serde_json::json!({"account_id": account, "member_id": member.public_id(), "currency": form.get("currency"), "virtual_account_no": crate::accounts::virtual_account_no(id)});
            portal.audit.record(&session, session.scope(), "account.open", &account, Value::Null, after, if replayed { "replayed" } else { "ok" })?;
            Ok(redirect(&format!("/portal/platform/members/{}", member.public_id())))
        }
        Err(error) => {
            portal.audit.record(
                &session,
                session.scope(),
                "account.open",
                &member.public_id(),
                Value::Null,
                Value::Null,
                &format!("refused: {}", error.code),
            )?;
            render_member(&session, &platform, &member, &engine, &cards, Some(("error", &refusal(&error)))).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Money: recharge, freeze, release, and the proposals that need four eyes

async fn money_page(session: Session, platforms: PlatformsData, engine: EngineData, clearing: web::Data<Clearing>) -> Result<HttpResponse, PortalError> {
    own_platform(&session, &platforms)?;
    Ok(render_money(&session, &engine, &clearing, None))
}

fn render_money(session: &Session, engine: &Engine, clearing: &Clearing, flash: Option<(&str, &str)>) -> HttpResponse {
    let currencies: Vec<String> = engine.config().currencies.iter().map(|c| c.code_str().to_string()).collect();
    let channels = clearing.channels();
    let money_in: Vec<String> =
        channels.all().iter().filter(|c| c.direction == clearing_actor::channels::Direction::In && c.enabled).map(|c| c.name.clone()).collect();
    let currency_select = html! { label { "Currency" select name="currency" { @for code in &currencies { option value=(code) { (code) } } } } };
    let operator = session.has(Role::Operator);
    let body = html! {
        @if let Some((kind, text)) = flash { (notice(kind, text)) }
        @if !operator { (notice("warn", "These forms need the operator role.")) }
        div.platform-forms {
            section.card #recharge {
                h2 { "Recharge an account" }
                form method="post" action="/portal/platform/recharge" {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Account (acc_…)" input name="account_id" required; }
                    label { "Amount" input name="amount" required inputmode="decimal"; }
                    (currency_select)
                    label { "Channel" select name="channel" { @for name in &money_in { option value=(name) { (name) } } } }
                    button type="submit" disabled[!operator] { "Recharge" }
                }
            }
            section.card #freeze {
                h2 { "Freeze" }
                form method="post" action="/portal/platform/freeze" {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Account (acc_…)" input name="account_id" required; }
                    label { "Amount" input name="amount" required inputmode="decimal"; }
                    (currency_select)
                    label { "Reason" input name="reason" required maxlength="256"; }
                    button type="submit" disabled[!operator] { "Freeze" }
                }
            }
            section.card #release {
                h2 { "Release a freeze" }
                form method="post" action="/portal/platform/release" {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Freeze order (ord_…)" input name="order_id" required; }
                    label { "Amount (blank: all that is frozen)" input name="amount" inputmode="decimal"; }
                    button type="submit" disabled[!operator] { "Release" }
                }
            }
            section.card #adjustment {
                h2 { "Propose an adjustment (four eyes)" }
                form method="post" action="/portal/approvals" {
                    (csrf_field(session))
                    input type="hidden" name="kind" value="adjustment";
                    label { "From (acc_… or suspense)" input name="from" required; }
                    label { "To (acc_… or suspense)" input name="to" required; }
                    label { "Amount" input name="amount" required; }
                    (currency_select)
                    label { "Reason" input name="reason" required; }
                    label { "Note for the approver" input name="note"; }
                    button type="submit" disabled[!operator] { "Propose" }
                }
            }
            section.card #limits {
                h2 { "Propose limits (four eyes)" }
                form method="post" action="/portal/approvals" {
                    (csrf_field(session))
                    input type="hidden" name="kind" value="set_limits";
                    label { "Account (acc_…)" input name="account" required; }
                    label { "Payment per order max" input name="payment_per_order_max"; }
                    label { "Payment daily max" input name="payment_daily_max"; }
                    label { "Withdrawal per order max" input name="withdrawal_per_order_max"; }
                    label { "Withdrawal daily max" input name="withdrawal_daily_max"; }
                    label { "Note for the approver" input name="note"; }
                    button type="submit" disabled[!operator] { "Propose" }
                }
            }
        }
    };
    page(session, "Money", "/portal/platform/money", body)
}

/// Records the outcome of a money form and answers: the order's page, or the form with the refusal.
#[allow(clippy::too_many_arguments)]
fn money_outcome(
    session: &Session,
    portal: &Portal,
    engine: &Engine,
    clearing: &Clearing,
    action: &str,
    request: Value,
    (result, recorded): (Result<engine::ledger::types::Reply, ApiError>, bool),
) -> Result<HttpResponse, PortalError> {
    if !recorded {
        let (target, words) = super::audit::reply_outcome(&result, "");
        portal.audit.record(session, session.scope(), action, &target, Value::Null, request, &words)?;
    }
    match result {
        Ok(reply) if reply.is_ok() => {
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id));
            Ok(redirect(&format!("/portal/platform/orders/{order}")))
        }
        Ok(reply) => Ok(render_money(session, engine, clearing, Some(("error", &refusal(&crate::error::rejection(reply.code)))))),
        Err(error) => Ok(render_money(session, engine, clearing, Some(("error", &refusal(&error))))),
    }
}

/// An engine command of the platform portal's money forms, on a task of its own between its
/// audit records (`audit::audited`); the outcome's target is the order made, else empty.
async fn audited_execute(
    session: &Session,
    portal: &PortalData,
    engine: &EngineData,
    action: &'static str,
    target: String,
    request: &Value,
    envelope: engine::ledger::command::Envelope,
) -> Result<(Result<engine::ledger::types::Reply, ApiError>, bool), PortalError> {
    let engine = engine.get_ref().clone();
    let work = async move { crate::accounts::execute(&engine, envelope).await };
    let outcome = |result: &Result<engine::ledger::types::Reply, ApiError>, _: &mut Value| super::audit::reply_outcome(result, "");
    Ok((super::audit::audited(portal.get_ref().clone(), session.clone(), session.scope(), action, target, request.clone(), work, outcome).await?, true))
}

/// The platform's account named by a form field, or the API's 404 naming it.
async fn own_account(engine: &Arc<Engine>, platform: u32, text: &str, param: &'static str) -> Result<(), ApiError> {
    let id = crate::orders::account(text.trim(), param)?;
    crate::accounts::account_of(engine, platform, id).await.map(|_| ()).map_err(|e| ApiError { param: Some(param.into()), ..e })
}

async fn recharge(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Operator)?;
    let body = crate::recharges::RechargeBody {
        out_order_no: form.get("out_order_no").to_string(),
        account_id: form.get("account_id").trim().to_string(),
        amount: form.get("amount").trim().to_string(),
        currency: form.get("currency").to_string(),
        channel: form.opt("channel").map(str::to_string),
    };
    let shown = serde_json::to_value(&body).unwrap_or(Value::Null);
    let result = match own_account(&engine, platform.id, &body.account_id, "account_id").await {
        Ok(()) => {
            let (engine, clearing, target) = (engine.get_ref().clone(), clearing.get_ref().clone(), body.account_id.clone());
            let work = async move { crate::recharges::recharge(&engine, &clearing, &platform, &body).await.map(|(_, reply)| reply) };
            let outcome = |result: &Result<engine::ledger::types::Reply, ApiError>, _: &mut Value| super::audit::reply_outcome(result, "");
            (
                super::audit::audited(portal.get_ref().clone(), session.clone(), session.scope(), "order.recharge", target, shown.clone(), work, outcome)
                    .await?,
                true,
            )
        }
        Err(error) => (Err(error), false),
    };
    money_outcome(&session, &portal, &engine, &clearing, "order.recharge", shown, result)
}

async fn freeze(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Operator)?;
    let body = crate::payments::FreezeBody {
        out_order_no: form.get("out_order_no").to_string(),
        account_id: form.get("account_id").trim().to_string(),
        amount: form.get("amount").trim().to_string(),
        currency: form.get("currency").to_string(),
        reason: form.get("reason").trim().to_string(),
        expires_at: None,
    };
    let shown = serde_json::to_value(&body).unwrap_or(Value::Null);
    let result = match own_account(&engine, platform.id, &body.account_id, "account_id").await {
        Ok(()) => match crate::payments::prepare_freeze(&engine, &platform, &body) {
            Ok(prepared) => audited_execute(&session, &portal, &engine, "order.freeze", body.account_id.clone(), &shown, prepared.envelope).await?,
            Err(error) => (Err(error), false),
        },
        Err(error) => (Err(error), false),
    };
    money_outcome(&session, &portal, &engine, &clearing, "order.freeze", shown, result)
}

async fn release(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Operator)?;
    let order_id = form.get("order_id").trim().to_string();
    let body =
        crate::payments::PartialBody { order_id: None, out_order_no: form.get("out_order_no").to_string(), amount: form.opt("amount").map(str::to_string) };
    let shown = serde_json::json!({"order_id": order_id, "out_order_no": body.out_order_no, "amount": body.amount});
    // prepare_release reads the order as the platform's: another platform's order is not found.
    let result = match crate::payments::prepare_release(&engine, &platform, &order_id, &body).await {
        Ok(prepared) => audited_execute(&session, &portal, &engine, "order.release", order_id.clone(), &shown, prepared.envelope).await?,
        Err(error) => (Err(error), false),
    };
    money_outcome(&session, &portal, &engine, &clearing, "order.release", shown, result)
}

// ---------------------------------------------------------------------------------------------
// Ledgers: orders, channel in/out, entries

/// The ledgers' filters as the page's form sends them (dates as `YYYY-MM-DD`, UTC days).
#[derive(Default, Clone)]
struct LedgerForm {
    kind: String,
    status: String,
    account_id: String,
    from: String,
    to: String,
    cursor: String,
    /// Page size (the API's `limit`: 1-500, default 50).
    limit: String,
    csv: bool,
}

impl LedgerForm {
    fn of(query: &[(String, String)]) -> LedgerForm {
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
        LedgerForm {
            kind: get("kind"),
            status: get("status"),
            account_id: get("account_id"),
            from: get("from"),
            to: get("to"),
            cursor: get("cursor"),
            limit: get("limit"),
            csv: get("format") == "csv",
        }
    }

    /// The query string of these filters (without the cursor).
    fn query_string(&self) -> String {
        let pairs =
            [("kind", &self.kind), ("status", &self.status), ("account_id", &self.account_id), ("from", &self.from), ("to", &self.to), ("limit", &self.limit)];
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", urlencoding(v))).collect::<Vec<_>>().join("&")
    }

    /// The API's listing query, the dates turned into RFC 3339 (`to` is inclusive: the next
    /// day's start); a bad date names its filter.
    fn orders_query(&self, channel_only: bool) -> Result<crate::orders::ListQuery, ApiError> {
        let opt = |text: &str| Some(text.to_string()).filter(|t| !t.is_empty());
        Ok(crate::orders::ListQuery {
            kind: opt(&self.kind),
            status: opt(&self.status),
            account_id: opt(&self.account_id),
            from: day_start(&self.from, 0, "from")?,
            to: day_start(&self.to, 1, "to")?,
            cursor: opt(&self.cursor),
            limit: opt(&self.limit),
            channel_only,
            ..Default::default()
        })
    }
}

/// `YYYY-MM-DD` (plus `days`) as the RFC 3339 start of that UTC day; "" is no bound.
fn day_start(text: &str, days: i64, param: &'static str) -> Result<Option<String>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(text, format).map_err(|_| ApiError::invalid("a date as YYYY-MM-DD", param))?;
    let day = day.checked_add(time::Duration::days(days)).ok_or_else(|| ApiError::invalid("a date as YYYY-MM-DD", param))?;
    Ok(Some(format!("{}T00:00:00Z", day.format(format).map_err(|_| ApiError::invalid("a date as YYYY-MM-DD", param))?)))
}

const ORDER_KINDS: [&str; 6] = ["recharge", "payment", "refund", "freeze", "withdrawal", "adjustment"];
const CHANNEL_KINDS: [&str; 2] = ["recharge", "withdrawal"];
const ORDER_STATUSES: [&str; 8] = ["pending", "processing", "held", "succeeded", "failed", "cancelled", "partially_refunded", "refunded"];

fn text_of(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A CSV answer (`text/csv`, as an attachment named `name`).
fn csv_response(name: &str, header: &[&str], rows: &[Vec<String>]) -> HttpResponse {
    let bytes = crate::portal::csv_file(header, rows);
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("Cache-Control", "no-store"))
        .body(bytes)
}

fn filters_form(action: &str, form: &LedgerForm, kinds: &[&str], with_status: bool) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Kind" select name="kind" {
                option value="" { "any" }
                @for kind in kinds { option value=(kind) selected[form.kind == *kind] { (kind) } }
            } }
            @if with_status {
                label { "Status" select name="status" {
                    option value="" { "any" }
                    @for status in ORDER_STATUSES { option value=(status) selected[form.status == status] { (status) } }
                } }
            }
            label { "Account" input name="account_id" value=(form.account_id) placeholder="acc_…"; }
            label { "From" input type="date" name="from" value=(form.from); }
            label { "To" input type="date" name="to" value=(form.to); }
            button.secondary type="submit" { "Filter" }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ledger_of_orders(
    session: &Session,
    platform: &Platform,
    engine: &Arc<Engine>,
    clearing: &Clearing,
    query: &[(String, String)],
    channel_only: bool,
) -> Result<HttpResponse, PortalError> {
    let form = LedgerForm::of(query);
    let (path, title, kinds) = if channel_only {
        ("/portal/platform/channels", "Channel in/out", &CHANNEL_KINDS[..])
    } else {
        ("/portal/platform/orders", "Orders", &ORDER_KINDS[..])
    };
    let mut error = None;
    if channel_only && !form.kind.is_empty() && !CHANNEL_KINDS.contains(&form.kind.as_str()) {
        error = Some(ApiError::invalid("unknown kind", "kind"));
    }
    let mut rows = Vec::new();
    let mut next = None;
    if error.is_none() {
        match form.orders_query(channel_only) {
            Err(e) => error = Some(e),
            Ok(mut listing) => {
                if form.csv {
                    listing.limit = Some("500".into());
                    for pages in 1.. {
                        match crate::orders::list(engine, clearing, platform.id, &listing).await {
                            Ok((page, cursor)) => {
                                rows.extend(page);
                                match cursor {
                                    Some(cursor) if rows.len() < CSV_ROWS_MAX && pages < super::EXPORT_PAGES_MAX => listing.cursor = Some(cursor),
                                    cursor => {
                                        next = cursor;
                                        break;
                                    }
                                }
                            }
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                } else {
                    match crate::orders::list(engine, clearing, platform.id, &listing).await {
                        Ok((page, cursor)) => {
                            rows = page;
                            next = cursor;
                        }
                        Err(e) => error = Some(e),
                    }
                }
            }
        }
    }
    let columns: &[&str] = if channel_only {
        &["order_id", "out_order_no", "kind", "status", "amount", "fee", "currency", "account_id", "channel", "created_at", "updated_at"]
    } else {
        &["order_id", "out_order_no", "kind", "status", "amount", "currency", "account_id", "channel", "created_at", "updated_at"]
    };
    if form.csv {
        if let Some(error) = error {
            return Err(PortalError::Api(error));
        }
        let mut table: Vec<Vec<String>> = rows.iter().map(|row| columns.iter().map(|c| text_of(row, c)).collect()).collect();
        table.extend(next.map(|cursor| super::export_stopped_row(columns.len(), &cursor)));
        let name = if channel_only { "channel-ledger.csv" } else { "orders.csv" };
        return Ok(csv_response(name, columns, &table));
    }
    let filters = form.query_string();
    let with = |extra: &str| {
        let mut link = format!("{path}?{filters}");
        if !filters.is_empty() {
            link.push('&');
        }
        link.push_str(extra);
        link
    };
    let body = html! {
        @if let Some(error) = &error { (notice("error", &refusal(error))) }
        (filters_form(path, &form, kinds, true))
        p { a.csv href=(with("format=csv")) { "Export CSV" } }
        table.data #ledger {
            thead { tr { @for column in columns { th { (column) } } } }
            tbody {
                @for row in &rows {
                    tr {
                        @for column in columns {
                            @if *column == "order_id" {
                                td { a href=(format!("/portal/platform/orders/{}", text_of(row, "order_id"))) { (text_of(row, column)) } }
                            } @else if matches!(*column, "amount" | "fee") {
                                td.num { (text_of(row, column)) }
                            } @else {
                                td { (text_of(row, column)) }
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() && error.is_none() { p.muted { "No orders match." } }
        @if let Some(cursor) = &next { p { a.next href=(with(&format!("cursor={}", urlencoding(cursor)))) { "Next page →" } } }
    };
    Ok(page(session, title, path, body))
}

async fn orders_ledger(
    session: Session,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    ledger_of_orders(&session, &platform, &engine, &clearing, &query, false).await
}

async fn channels_ledger(
    session: Session,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    ledger_of_orders(&session, &platform, &engine, &clearing, &query, true).await
}

async fn order_page(
    session: Session,
    path: web::Path<String>,
    platforms: PlatformsData,
    engine: EngineData,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let id = crate::orders::parse_order_id(&path).ok_or(PortalError::NotFound)?;
    let channels = clearing.channels();
    let view = crate::orders::read_order(&engine, platform.id, id, move |state, order| crate::orders::view(state, order, &channels))
        .await?
        .ok_or(PortalError::NotFound)?;
    let facts: Vec<(String, String)> = view
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), if v.is_string() || v.is_null() { text_of(&view, k) } else { v.to_string() })).collect())
        .unwrap_or_default();
    let body = html! {
        section.card #order {
            dl.facts { @for (key, value) in &facts { dt { (key) } dd data-key=(key) { (value) } } }
        }
        p { a href="/portal/platform/orders" { "← Orders" } }
    };
    Ok(page(&session, &format!("Order {}", text_of(&view, "order_id")), "/portal/platform/orders", body))
}

const ENTRY_COLUMNS: [&str; 7] = ["entry_id", "order_id", "kind", "direction", "amount", "balance_after", "created_at"];

#[allow(clippy::too_many_arguments)]
async fn entries_ledger(
    session: Session,
    platforms: PlatformsData,
    engine: EngineData,
    store: web::Data<Arc<dyn Store>>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let form = LedgerForm::of(&query);
    let mut error = None;
    let mut rows: Vec<Value> = Vec::new();
    let mut next = None;
    // Entries have no server-side kind or date index: the filters keep lines of the pages read.
    let from = day_start(&form.from, 0, "from");
    let to = day_start(&form.to, 1, "to");
    let (from, to) = match (from, to) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => {
            error = Some(e);
            (None, None)
        }
    };
    let kinds = ["recharge", "payment", "refund", "freeze", "release", "withdrawal", "settlement", "fee", "adjustment"];
    let keeps = |line: &Value| {
        let at = text_of(line, "created_at");
        (form.kind.is_empty() || text_of(line, "kind").starts_with(&form.kind))
            && from.as_deref().is_none_or(|f| at.as_str() >= f)
            && to.as_deref().is_none_or(|t| at.as_str() < t)
    };
    if error.is_none() && !form.account_id.is_empty() {
        match crate::accounts::parse_account_id(&form.account_id) {
            None => error = Some(ApiError::invalid("not an account id", "account_id")),
            Some(account) => {
                let cursor = Some(form.cursor.as_str()).filter(|c| !c.is_empty()).map(str::to_string);
                let mut cursor = cursor;
                for pages in 1.. {
                    match crate::entries::page(&engine, &store, &platforms, platform.id, account, Some("500"), cursor.as_deref()).await {
                        Ok((lines, more)) => {
                            rows.extend(lines.into_iter().filter(|l| keeps(l)));
                            cursor = more;
                            if !form.csv || cursor.is_none() || rows.len() >= CSV_ROWS_MAX || pages >= super::EXPORT_PAGES_MAX {
                                break;
                            }
                        }
                        // Another platform's account is not found, like the API.
                        Err(e) if e.code == "not_found" => return Err(PortalError::NotFound),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                next = cursor;
            }
        }
    }
    if form.csv {
        if let Some(error) = error {
            return Err(PortalError::Api(error));
        }
        let mut table: Vec<Vec<String>> = rows.iter().map(|row| ENTRY_COLUMNS.iter().map(|c| text_of(row, c)).collect()).collect();
        table.extend(next.map(|cursor| super::export_stopped_row(ENTRY_COLUMNS.len(), &cursor)));
        return Ok(csv_response("entries.csv", &ENTRY_COLUMNS, &table));
    }
    let filters = form.query_string();
    let with = |extra: &str| format!("/portal/platform/entries?{filters}&{extra}");
    let body = html! {
        @if let Some(error) = &error { (notice("error", &refusal(error))) }
        (filters_form("/portal/platform/entries", &form, &kinds, false))
        @if form.account_id.is_empty() {
            p.muted { "Name an account (acc_…) to see its accounting entries; a member's page links each of its accounts here." }
        } @else {
            p { a.csv href=(with("format=csv")) { "Export CSV" } }
            table.data #ledger {
                thead { tr { @for column in ENTRY_COLUMNS { th { (column) } } } }
                tbody {
                    @for row in &rows {
                        tr { @for column in ENTRY_COLUMNS { @if matches!(column, "amount" | "balance_after") { td.num { (text_of(row, column)) } } @else { td { (text_of(row, column)) } } } }
                    }
                }
            }
            @if rows.is_empty() && error.is_none() { p.muted { "No entries match on this page." } }
            @if let Some(cursor) = &next { p { a.next href=(with(&format!("cursor={}", urlencoding(cursor)))) { "Next page →" } } }
        }
    };
    Ok(page(&session, "Accounting entries", "/portal/platform/entries", body))
}

// ---------------------------------------------------------------------------------------------
// API access

async fn api_page(session: Session, platforms: PlatformsData, delivery: web::Data<crate::events::Delivery>) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    Ok(render_api(&session, &platforms, &platform, &delivery, None))
}

fn render_api(session: &Session, platforms: &Platforms, platform: &Platform, delivery: &crate::events::Delivery, flash: Option<(&str, &str)>) -> HttpResponse {
    let attempts = delivery.recent(platform.id);
    // The webhook's signing secret is shown to the platform's admins (who may set the URL and
    // rotate it); it verifies deliveries and signs no request.
    let signing_secret = platforms.webhook_signing_secret(platform).filter(|_| session.has(Role::Admin));
    let now = crate::signed::unix_seconds();
    let previous_signing = platform.previous_webhook_secret.filter(|previous| now < previous.valid_until);
    let body = html! {
        @if let Some((kind, text)) = flash { (notice(kind, text)) }
        section.card #webhook {
            h2 { "Webhook" }
            dl.facts {
                dt { "Platform" } dd { (platform.public_id()) " · " (platform.name) }
                dt { "URL" } dd #webhook-url { @match &platform.webhook_url { Some(url) => code { (url) }, None => span.muted { "not set: events are only listed" } } }
                dt { "Signature header" } dd { code { "X-Clearing-Signature" } }
                dt { "Signed with" } dd #webhook-signing {
                    @if platform.webhook_secret_version == 0 {
                        "the API secret (made before webhook secrets: rotate the webhook secret to give deliveries their own, then propose a rotation of the API secret, which your receivers hold)"
                    } @else {
                        "webhook secret version " (platform.webhook_secret_version)
                        @if let Some(secret) = &signing_secret { " · " code #webhook-secret { (secret) } }
                    }
                }
                @if let Some(previous) = previous_signing {
                    dt { "Previous" } dd {
                        @if previous.version == 0 { "the API secret" } @else { "version " (previous.version) }
                        " also signs until " (super::format_time(previous.valid_until))
                    }
                }
            }
            @if session.has(Role::Admin) {
                form method="post" action="/portal/platform/api/webhook" {
                    (csrf_field(session))
                    label { "Webhook URL (https; blank removes it)" input name="url" value=(platform.webhook_url.clone().unwrap_or_default()); }
                    button type="submit" { "Save" }
                }
                form method="post" action="/portal/platform/api/webhook-secret" {
                    (csrf_field(session))
                    input type="hidden" name="from_version" value=(platform.webhook_secret_version);
                    label { "Overlap in seconds (the secret in use keeps signing beside the new one; 0 ends it now)" input name="overlap_seconds" inputmode="numeric"; }
                    button type="submit" { "Rotate the webhook secret" }
                }
            }
        }
        section.card #secret {
            h2 { "API secret" }
            dl.facts {
                dt { "Secret version" } dd #secret-version { (platform.secret_version) }
                @if let Some(previous) = &platform.previous_secret {
                    dt { "Previous version" } dd { (previous.version) " verifies until " (super::format_time(previous.valid_until)) }
                }
            }
            form method="post" action="/portal/approvals" {
                (csrf_field(session))
                input type="hidden" name="kind" value="rotate_secret";
                label { "Overlap in seconds (the current secret keeps verifying; 0 revokes it now)" input name="overlap_seconds" inputmode="numeric"; }
                label { "Note for the approver" input name="note"; }
                button type="submit" disabled[!session.has(Role::Operator)] { "Propose a rotation" }
            }
            p.muted { "An approver other than you, who is an admin too, approves it on the Approvals page; the new secret is shown to them once." }
        }
        section.card #deliveries {
            h2 { "Recent deliveries" }
            @if attempts.is_empty() {
                p.muted { "No delivery attempt since the server started (the last " (crate::events::RECENT_ATTEMPTS_MAX) " are kept in memory)." }
            } @else {
                table.data {
                    thead { tr { th { "At" } th { "Event" } th { "URL" } th { "Answer" } th.num { "ms" } } }
                    tbody {
                        @for attempt in &attempts {
                            tr {
                                td.nowrap { (super::format_time(attempt.at)) }
                                td { code { (attempt.event_id) } }
                                td.small { (attempt.url) }
                                td { span class=(if attempt.delivered { "badge ok" } else { "badge bad" }) { (attempt.outcome) } }
                                td.num { (attempt.elapsed_ms) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(session, "API access", "/portal/platform/api", body)
}

async fn set_webhook(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    delivery: web::Data<crate::events::Delivery>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Admin)?;
    let url = form.opt("url").map(str::to_string);
    let before = serde_json::json!({"url": platform.webhook_url});
    portal.audit.begin(&session, session.scope(), "webhook.set", &platform.public_id(), &serde_json::json!({"url": url}))?;
    match crate::events::set_webhook_url(&platforms, &delivery, platform.id, url.clone()).await {
        Ok(updated) => {
            portal.audit.record(
                &session,
                session.scope(),
                "webhook.set",
                &platform.public_id(),
                before,
                serde_json::json!({"url": updated.webhook_url}),
                "ok",
            )?;
            Ok(render_api(&session, &platforms, &updated, &delivery, Some(("ok", "The webhook URL is saved."))))
        }
        Err(error) => {
            portal.audit.record(
                &session,
                session.scope(),
                "webhook.set",
                &platform.public_id(),
                before,
                serde_json::json!({"url": url}),
                &format!("refused: {}", error.code),
            )?;
            Ok(render_api(&session, &platforms, &platform, &delivery, Some(("error", &refusal(&error)))))
        }
    }
}

/// The platform admin rotates the webhook's signing secret (audited as `webhook.secret_rotated`,
/// the versions only: no secret is written to the audit log). From the version the page showed,
/// so a form sent twice rotates once.
async fn rotate_webhook_secret(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    delivery: web::Data<crate::events::Delivery>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Admin)?;
    let number = |name: &'static str| -> Result<Option<u64>, crate::error::ApiError> {
        form.opt(name)
            .map(|text| text.trim().parse::<u64>().map_err(|_| crate::error::ApiError::invalid(&format!("{name} must be a whole number"), name)))
            .transpose()
    };
    let before = serde_json::json!({"webhook_secret_version": platform.webhook_secret_version});
    let parsed = number("overlap_seconds").and_then(|overlap| {
        let from = number("from_version")?
            .map(|from| u32::try_from(from).map_err(|_| crate::error::ApiError::invalid("from_version is too large", "from_version")))
            .transpose()?;
        Ok((overlap, from))
    });
    let (overlap, from) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Ok(render_api(&session, &platforms, &platform, &delivery, Some(("error", &refusal(&error))))),
    };
    portal.audit.begin(
        &session,
        session.scope(),
        "webhook.secret_rotated",
        &platform.public_id(),
        &serde_json::json!({"overlap_seconds": overlap, "from_version": from}),
    )?;
    let (shared, id, now) = (platforms.get_ref().clone(), platform.id, crate::signed::unix_seconds());
    let result = crate::error::blocking(move || shared.rotate_webhook_secret(id, overlap, from, now)).await.and_then(|result| result);
    match result {
        Ok((updated, rotated)) => {
            let after = serde_json::json!({"webhook_secret_version": updated.webhook_secret_version, "rotated": rotated});
            portal.audit.record(&session, session.scope(), "webhook.secret_rotated", &platform.public_id(), before, after, "ok")?;
            let text = if rotated { "The webhook secret is rotated: deploy the new one to your receiver." } else { "The webhook secret was rotated already." };
            Ok(render_api(&session, &platforms, &updated, &delivery, Some(("ok", text))))
        }
        Err(error) => {
            portal.audit.record(
                &session,
                session.scope(),
                "webhook.secret_rotated",
                &platform.public_id(),
                before.clone(),
                before,
                &format!("refused: {}", error.code),
            )?;
            Ok(render_api(&session, &platforms, &platform, &delivery, Some(("error", &refusal(&error)))))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Electronic agreements: the platform's templates (a new version never changes an old one) and
// what a member signed, shown as it was signed.

#[derive(serde::Deserialize)]
struct AgreementsQuery {
    member: Option<String>,
}

fn agreements_page(
    session: &Session,
    platform: &Platform,
    agreements: &crate::agreements::Agreements,
    member: Option<&Member>,
    message: Option<(&str, &str)>,
) -> Result<HttpResponse, PortalError> {
    // Each version's excerpt (kept in the index), not its text.
    let templates = agreements.templates(platform.id);
    let signatures = member.map(|member| agreements.signatures_of(platform.id, member.id)).transpose()?.unwrap_or_default();
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        @if let Some(member) = member {
            section.card #signatures {
                h2 { "Signed by " (member.name) " (" (member.public_id()) ")" }
                @if signatures.is_empty() { p.muted { "Nothing signed yet." } } @else {
                    table.data {
                        thead { tr { th { "Signature" } th { "Agreement" } th.num { "Version" } th { "Signed at" } th { "Channel" } th { "Client address" } th { "SHA-256 of the text shown" } } }
                        tbody {
                            @for signature in &signatures {
                                tr {
                                    td { (signature.public_id()) } td { (signature.code) } td.num { (signature.version) }
                                    td.nowrap { (super::format_time(signature.signed_at)) } td { (format!("{:?}", signature.channel).to_lowercase()) }
                                    td { (signature.client_address) } td.small { code { (signature.sha256) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card #templates {
            h2 { "Templates" }
            @if templates.is_empty() { p.muted { "No agreement published yet." } } @else {
                table.data {
                    thead { tr { th { "Code" } th.num { "Version" } th { "Title" } th { "Text" } th { "SHA-256" } } }
                    tbody {
                        @for template in &templates {
                            tr {
                                td { (template.code) } td.num { (template.version) } td { (template.title) }
                                td.small { (template.excerpt) }
                                td.small { code { (template.sha256) } }
                            }
                        }
                    }
                }
            }
        }
        @if session.has(Role::Operator) {
            section.card {
                h2 { "Publish a version" }
                p.muted { "Publishing a code again makes its next version; members sign the latest version of each code the platform requires." }
                form method="post" action="/portal/platform/agreements" {
                    (csrf_field(session))
                    input type="hidden" name="out_order_no" value=(new_out_order_no());
                    label { "Code (e.g. account_opening, card_binding, service)" input name="code" required maxlength="32"; }
                    label { "Title" input name="title" required maxlength="128"; }
                    label { "Text, exactly as members will read it" textarea name="text" rows="8" required {} }
                    button type="submit" { "Publish" }
                }
            }
        }
    };
    Ok(page(session, "Agreements", "/portal/platform/agreements", body))
}

async fn agreements(
    session: Session,
    platforms: PlatformsData,
    members: MembersData,
    agreements: web::Data<Arc<crate::agreements::Agreements>>,
    query: web::Query<AgreementsQuery>,
) -> Result<HttpResponse, PortalError> {
    let platform = own_platform(&session, &platforms)?;
    let member = match query.member.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(member_of(&members, &platform, text)?),
        None => None,
    };
    agreements_page(&session, &platform, &agreements, member.as_ref(), None)
}

async fn publish_agreement(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    agreements: web::Data<Arc<crate::agreements::Agreements>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let platform = own_platform(&session, &platforms)?;
    session.require(Role::Operator)?;
    let body = crate::agreements::PublishBody {
        out_order_no: form.get("out_order_no").to_string(),
        code: form.get("code").trim().to_string(),
        title: form.get("title").trim().to_string(),
        text: form.get("text").replace("\r\n", "\n"),
    };
    let (publishing, platform_id) = (agreements.get_ref().clone(), platform.id);
    let now = super::operators::now_seconds();
    match crate::error::blocking(move || publishing.publish(platform_id, &body, now)).await? {
        Ok((template, replayed)) => {
            let after = serde_json::json!({"code": template.code, "version": template.version, "title": template.title, "sha256": template.sha256});
            portal.audit.record(
                &session,
                session.scope(),
                "agreement.publish",
                &format!("{} v{}", template.code, template.version),
                Value::Null,
                after,
                if replayed { "replayed" } else { "ok" },
            )?;
            let message = format!("Published {} version {}.", template.code, template.version);
            agreements_page(&session, &platform, &agreements, None, Some(("ok", &message)))
        }
        Err(error) => {
            portal.audit.record(
                &session,
                session.scope(),
                "agreement.publish",
                form.get("code"),
                Value::Null,
                Value::Null,
                &format!("refused: {}", error.code),
            )?;
            agreements_page(&session, &platform, &agreements, None, Some(("error", &refusal(&error))))
        }
    }
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/platform/agreements", web::get().to(agreements))
        .route("/portal/platform/agreements", web::post().to(publish_agreement))
        .route("/portal/platform", web::get().to(home))
        .route("/portal/platform/members", web::get().to(members_list))
        .route("/portal/platform/members", web::post().to(register_member))
        .route("/portal/platform/members/{member}", web::get().to(member_page))
        .route("/portal/platform/members/{member}/accounts", web::post().to(open_account))
        .route("/portal/platform/members/{member}/collection", web::post().to(collection))
        .route("/portal/platform/members/{member}/payout/preview", web::post().to(payout_preview))
        .route("/portal/platform/members/{member}/payout", web::post().to(payout))
        .route("/portal/platform/money", web::get().to(money_page))
        .route("/portal/platform/recharge", web::post().to(recharge))
        .route("/portal/platform/freeze", web::post().to(freeze))
        .route("/portal/platform/release", web::post().to(release))
        .route("/portal/platform/orders", web::get().to(orders_ledger))
        .route("/portal/platform/orders/{order}", web::get().to(order_page))
        .route("/portal/platform/channels", web::get().to(channels_ledger))
        .route("/portal/platform/entries", web::get().to(entries_ledger))
        .route("/portal/platform/api", web::get().to(api_page))
        .route("/portal/platform/api/webhook", web::post().to(set_webhook))
        .route("/portal/platform/api/webhook-secret", web::post().to(rotate_webhook_secret));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (helper 107): the dashboard walked every account of every shard per request.
    /// Reloads with no batch since are answered from the figures walked before; a batch since
    /// (an account opened) and a second passed walk again.
    #[actix_web::test]
    async fn the_dashboards_walk_of_every_account_is_used_again_until_a_batch() {
        use engine::ledger::command::{Command, Envelope};
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let engine = Arc::new(Engine::start(engine::EngineConfig { shard_count: 2, ..engine::EngineConfig::default() }, store).unwrap());
        let open = |owner: u64| Envelope {
            platform: 7,
            out_order_no: None,
            command: Command::OpenAccount { owner, currency: engine::money::CurrencyId(0), limits: engine::ledger::types::Limits::NONE },
        };
        assert!(engine.execute_one(open(1)).unwrap().is_ok());
        let figures = HomeFigures::default();
        let first = figures.of(&engine, 7).await.unwrap();
        assert_eq!(first.0, 1);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = figures.of(&engine, 7).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "no batch since: the same walk");
        assert!(engine.execute_one(open(2)).unwrap().is_ok());
        assert_eq!(figures.of(&engine, 7).await.unwrap().0, 2, "an account opened since: walked again at once");
        assert_eq!(figures.of(&engine, 8).await.unwrap().0, 0, "another platform's own figures");
        engine.shutdown();
    }

    #[test]
    fn identity_numbers_and_phones_are_masked() {
        assert_eq!(mask_id_number("11010519491231002X"), "**************002X");
        assert_eq!(mask_id_number("12"), "12");
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_phone("123"), "***");
    }

    #[test]
    fn dates_become_day_bounds_and_bad_ones_name_the_filter() {
        assert_eq!(day_start("2026-12-01", 0, "from").unwrap().as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(day_start("2026-12-31", 1, "to").unwrap().as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(day_start("", 0, "from").unwrap(), None);
        assert_eq!(day_start("yesterday", 0, "from").unwrap_err().param.as_deref(), Some("from"));
    }

    #[test]
    fn form_order_numbers_are_valid_and_fresh() {
        let (a, b) = (new_out_order_no(), new_out_order_no());
        assert_ne!(a, b);
        assert!(crate::ids::out_order_no(&a, "out_order_no").is_ok());
    }
}
