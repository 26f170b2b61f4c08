//! The merchant operators' portal. Every page here requires a merchant operator's session
//! (`Session::require_kind("merchant")`); another kind of operator gets 404. A merchant operator's
//! scope is one member of one platform: the member and platform come from the session only, and
//! every account, card and order named in a path or form is loaded and checked to be the
//! member's (else 404) before anything else.
//!
//! Pages: the dashboard (balances, today's income, pending withdrawals), KYC, recharge (the same
//! path as `POST /v1/recharges`; the order number is made when the form is shown, so a double
//! submit is one order), withdrawal with a preview (the clearing actor's read-only `quote`: the
//! channel, every candidate and why, the fee and the total debited) then the same path as
//! `POST /v1/withdrawals`, refunds of payments the member received
//! (`payments::prepare_refund`), and the ledgers (`merchant_ledgers`). Every action is in the
//! audit log before its answer.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use clearing_actor::channels::{AccountType, RouteRequest};
use clearing_actor::Clearing;
use engine::ledger::types::{AccountId, OrderDetail, OrderKind, OrderStatus};
use engine::money::Minor;
use engine::Engine;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::{check_form, csrf_field, notice, page, redirect, Fields, Portal, PortalError, Role, Scope, Session};
use crate::accounts::{parse_account_id, public_account_id, AccountSummary};
use crate::agreements::{Agreements, SignRequest, Template};
use crate::cards::{Card, Cards};
use crate::error::ApiError;
use crate::members::Members;
use crate::notifications::Notifications;
use crate::platforms::{Platform, Platforms};

#[path = "merchant_ledgers.rs"]
mod ledgers;

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] = &[
    ("Dashboard", "/portal/merchant"),
    ("KYC", "/portal/merchant/kyc"),
    ("Recharge", "/portal/merchant/recharge"),
    ("Withdraw", "/portal/merchant/withdraw"),
    ("Refunds", "/portal/merchant/refunds"),
    ("Orders", "/portal/merchant/orders"),
    ("Entries", "/portal/merchant/entries"),
    ("Statements", "/portal/merchant/statements"),
    ("Operators", "/portal/operators"),
    ("Audit log", "/portal/audit"),
];

/// Orders the dashboard examines per shard for today's income.
const TODAY_SCAN_MAX: usize = 100_000;

/// The signed-in merchant: its platform, member and accounts (from the session, never a form).
pub struct Merchant {
    pub platform: Platform,
    pub member: u64,
    pub accounts: Vec<AccountId>,
}

/// The merchant of a merchant operator's session (404 for any other kind).
pub async fn merchant(session: &Session, platforms: &Platforms, engine: &Arc<Engine>) -> Result<Merchant, PortalError> {
    session.require_kind("merchant")?;
    let Scope::Merchant { platform, member } = session.scope() else { return Err(PortalError::NotFound) };
    let platform = platforms.get(platform).ok_or(PortalError::NotFound)?;
    let accounts = crate::accounts::accounts_of_member(engine, platform.id, member).await?;
    Ok(Merchant { platform, member, accounts })
}

impl Merchant {
    /// The merchant's own account named by `text` (404 otherwise).
    pub fn own(&self, text: &str) -> Result<AccountId, PortalError> {
        parse_account_id(text.trim()).filter(|id| self.accounts.contains(id)).ok_or(PortalError::NotFound)
    }

    pub fn scope(&self) -> Scope {
        Scope::Merchant { platform: self.platform.id, member: self.member }
    }

    async fn summaries(&self, engine: &Arc<Engine>) -> Result<Vec<AccountSummary>, PortalError> {
        let mut all = Vec::new();
        for id in &self.accounts {
            if let Some(summary) = crate::accounts::summary(engine, self.platform.id, *id).await? {
                all.push(summary);
            }
        }
        Ok(all)
    }

    /// The verified cards of the merchant's accounts.
    async fn verified_cards(&self, engine: &Arc<Engine>, cards: &Arc<Cards>) -> Result<Vec<Card>, PortalError> {
        let mut all = Vec::new();
        for id in &self.accounts {
            all.extend(crate::cards::cards_of(engine, cards, self.platform.id, *id).await?.into_iter().filter(|c| c.status == "verified"));
        }
        Ok(all)
    }
}

/// The hex digits after a form's order number's prefix (`new_number`).
const NUMBER_HEX_DIGITS: usize = 24;

impl Merchant {
    /// The order number a form asked for, in this merchant's own part of the platform's numbers:
    /// `m{member}-` before the form's number, which must be one `new_number` makes (three
    /// letters, a dash, 24 hex digits). A merchant operator who edits the form therefore cannot
    /// take a number the platform's back end or another merchant uses (a number is unique per
    /// platform), only make a number of its own that a retry of the same form repeats.
    fn order_number(&self, fields: &Fields) -> Result<String, PortalError> {
        let number = fields.get("out_order_no");
        let made_here = number.len() == 4 + NUMBER_HEX_DIGITS
            && number.as_bytes()[..3].iter().all(u8::is_ascii_lowercase)
            && number.as_bytes()[3] == b'-'
            && number.as_bytes()[4..].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if !made_here {
            return Err(ApiError::invalid("the form's order number is not one this page made; open the page again", "out_order_no").into());
        }
        Ok(format!("m{}-{number}", self.member))
    }
}

/// A new order number for a form (made when the form is shown, so submitting it twice is one order).
fn new_number(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; NUMBER_HEX_DIGITS / 2];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}-{}", hex::encode(bytes))
}

/// `text` with all but its first `keep_start` and last `keep_end` characters hidden.
fn mask(text: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= keep_start + keep_end {
        return "*".repeat(chars.len());
    }
    let hidden = chars.len() - keep_start - keep_end;
    format!("{}{}{}", chars[..keep_start].iter().collect::<String>(), "*".repeat(hidden), chars[chars.len() - keep_end..].iter().collect::<String>())
}

/// Today's income and pending withdrawals, per currency (minor units).
#[derive(Default)]
struct Figures {
    income: std::collections::BTreeMap<u8, (u64, i128)>,
    pending: std::collections::BTreeMap<u8, (u64, i128)>,
}

async fn figures(engine: &Arc<Engine>, m: &Merchant) -> Result<Figures, PortalError> {
    let offset = i64::from(engine.config().utc_offset_seconds);
    let day_start = (i64::from(crate::stats::today(engine)) * 86_400 - offset).max(0) as u64 * 1_000_000;
    let mut all = Figures::default();
    for shard in 0..engine.config().shard_count {
        let (engine, platform, accounts) = (engine.clone(), m.platform.id, m.accounts.clone());
        let part = crate::error::blocking(move || {
            engine.read_shard(shard, move |state| {
                let mut part = Figures::default();
                let Some(index) = state.platform_orders.get(&platform) else { return part };
                for (scanned, k) in (0..index.all.len()).rev().enumerate() {
                    let Some(order) = index.all.get(k).and_then(|local| state.orders.get(*local as usize)) else { break };
                    if order.created_at < day_start || scanned == TODAY_SCAN_MAX {
                        break;
                    }
                    if let OrderDetail::Payment { held, .. } = &order.detail {
                        if matches!(order.status, OrderStatus::Failed | OrderStatus::Cancelled | OrderStatus::Pending) {
                            continue;
                        }
                        let received: i128 = held.iter().filter(|l| accounts.contains(&l.account)).map(|l| i128::from(l.held - l.cancelled)).sum();
                        if received > 0 {
                            let sum = part.income.entry(order.currency.0).or_default();
                            sum.0 += 1;
                            sum.1 += received;
                        }
                    }
                }
                for local in &index.open {
                    if let Some(order) = state.orders.get(*local as usize) {
                        if order.kind == OrderKind::Withdrawal && accounts.contains(&order.account) {
                            let sum = part.pending.entry(order.currency.0).or_default();
                            sum.0 += 1;
                            sum.1 += i128::from(order.amount);
                        }
                    }
                }
                part
            })
        })
        .await?
        .map_err(ApiError::from)?;
        for (currency, (count, amount)) in part.income {
            let sum = all.income.entry(currency).or_default();
            sum.0 += count;
            sum.1 += amount;
        }
        for (currency, (count, amount)) in part.pending {
            let sum = all.pending.entry(currency).or_default();
            sum.0 += count;
            sum.1 += amount;
        }
    }
    Ok(all)
}

/// Days the merchant's orders chart shows.
const CHART_DAYS: u32 = 14;

/// The merchant's charts: its accounts' orders per day by kind (last `CHART_DAYS` days) and
/// what its accounts hold per currency (settled, unsettled, frozen, escrow), from
/// `stats::member_figures`, which reads only the member's own accounts and recent orders.
async fn charts(engine: &Arc<Engine>, m: &Merchant, summaries: &[AccountSummary]) -> Result<Markup, PortalError> {
    let today = crate::stats::today(engine);
    let days = today.saturating_sub(CHART_DAYS - 1)..=today;
    let figures = crate::stats::member_figures(engine, m.platform.id, &m.accounts, days.clone()).await?;
    let mut svgs = vec![super::platform::orders_chart("merchant-orders-per-day", "Your accounts' orders per day (last 14 days)", days, &figures.volume)];
    let clamp = |value: i128| value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let currencies = engine.config().currencies.clone();
    for (held, spec) in figures.held.iter().zip(&currencies) {
        if !summaries.iter().any(|a| a.currency == held.currency) {
            continue;
        }
        let bars = vec![
            ("settled".to_string(), clamp(held.settled)),
            ("unsettled".to_string(), clamp(held.unsettled)),
            ("frozen".to_string(), clamp(held.frozen)),
            ("escrow".to_string(), clamp(held.escrow)),
        ];
        let (id, title) = (format!("merchant-held-{}", held.currency), format!("Balances held ({})", held.currency));
        svgs.push(crate::charts::horizontal_bars(&crate::charts::Frame { id: &id, title: &title, unit: crate::charts::Unit::Money(*spec) }, &bars));
    }
    Ok(html! {
        // Trusted SVG: crate::charts escapes every text it writes.
        div.charts #merchant-charts { @for svg in &svgs { section.card.chart { (maud::PreEscaped(svg)) } } }
        @if figures.truncated { p.muted { "An account had more than " (crate::stats::MEMBER_SCAN_MAX) " orders in these days: the chart counts its newest." } }
    })
}

async fn home(
    session: Session,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    members: web::Data<Arc<Members>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let summaries = m.summaries(&engine).await?;
    let figures = figures(&engine, &m).await?;
    let charts = charts(&engine, &m, &summaries).await?;
    let member = members.get(m.platform.id, m.member)?;
    let currencies = engine.config().currencies.clone();
    let wide = |currency: u8, minor: i128| {
        let spec = currencies[currency as usize];
        format!("{} {}", crate::stats::format_wide(&spec, minor), spec.code_str())
    };
    let body = html! {
        section.card {
            p { "Merchant " strong { (member.as_ref().map_or(String::new(), |m| m.name.clone())) } " (" (crate::members::Member::public_id_of(m.member)) ") of " (m.platform.name) " (" (m.platform.public_id()) ")." }
        }
        section.cards {
            div.metric.income {
                span.label { "Today's income" }
                @if figures.income.is_empty() { span.value { "0" } }
                @for (currency, (count, amount)) in &figures.income { span.value { (wide(*currency, *amount)) } span.label { (count) " payments" } }
            }
            div.metric.pending {
                span.label { "Pending withdrawals" }
                @if figures.pending.is_empty() { span.value { "0" } }
                @for (currency, (count, amount)) in &figures.pending { span.value { (count) } span.label { (wide(*currency, *amount)) } }
            }
        }
        (charts)
        section.card {
            h2 { "Accounts" }
            table.data.balances {
                thead { tr { th { "Account" } th { "Virtual account no." } th { "Currency" } th { "Status" } th.num { "Available" } th.num { "Withdrawable" } th.num { "Frozen" } th.num { "Unsettled" } } }
                tbody {
                    @for a in &summaries {
                        tr data-account=(a.account_id) {
                            td { a href=(format!("/portal/merchant/orders?account={}", a.account_id)) { (a.account_id) } }
                            td { (a.virtual_account_no) } td { (a.currency) } td { (a.status) }
                            td.num.available { (a.available) } td.num.withdrawable { (a.withdrawable) } td.num.frozen { (a.frozen) } td.num.unsettled { (a.unsettled) }
                        }
                    }
                    @if summaries.is_empty() { tr { td colspan="8" { "No account yet: your platform opens them." } } }
                }
            }
            p { a href="/portal/merchant/recharge" { "Recharge" } " · " a href="/portal/merchant/withdraw" { "Withdraw" } " · " a href="/portal/merchant/entries" { "Entries" } }
        }
    };
    Ok(page(&session, "Dashboard", "/portal/merchant", body))
}

/// Agreements to sign that the KYC page shows with their whole text; the others are listed
/// with their excerpt and a link to a page of their own (`agreement_page`). A platform may
/// publish up to 1,000 codes of 64 K characters each: every text on one page would be up to
/// 256 MB built for one request.
const KYC_TEXTS_SHOWN: usize = 5;

/// An agreement to sign: its title, its whole text and (for an operator) the form that signs
/// that version with the SHA-256 of the text shown.
fn agreement_to_sign(session: &Session, t: &Template) -> Markup {
    html! {
        article.agreement data-code=(t.code) {
            h3 { (t.title) " (" (t.code) ", version " (t.version) ")" }
            // The line break after <pre> is the parser's to drop, so a text that begins with
            // one shows it (the hash signed is of the text's own bytes).
            pre.agreement-text { "\n" (t.text) }
            @if session.has(Role::Operator) {
                form.sign method="post" action="/portal/merchant/agreements/sign" {
                    (csrf_field(session))
                    input type="hidden" name="code" value=(t.code);
                    input type="hidden" name="version" value=(t.version);
                    input type="hidden" name="sha256" value=(crate::agreements::text_hash(&t.text));
                    button type="submit" { "Sign version " (t.version) }
                }
            }
        }
    }
}

/// `GET /portal/merchant/kyc`: the member's record as the platform registered it (masked), the
/// agreements to sign (the latest version of each code the member has not signed: the first
/// `KYC_TEXTS_SHOWN` by code with their text, the others by excerpt and link) and the versions
/// signed.
async fn kyc(
    session: Session,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let member = members.get(m.platform.id, m.member)?.ok_or(PortalError::NotFound)?;
    let reading = agreements.get_ref().clone();
    let (platform, member_id) = (m.platform.id, m.member);
    let signed = crate::error::blocking(move || reading.signatures_of(platform, member_id)).await??;
    let mut latest: std::collections::BTreeMap<String, Template> = std::collections::BTreeMap::new();
    for template in agreements.templates(m.platform.id) {
        latest.insert(template.code.clone(), template);
    }
    let mut to_sign: Vec<Template> = latest.into_values().filter(|t| !signed.iter().any(|s| s.code == t.code && s.version == t.version)).collect();
    let listed = to_sign.split_off(to_sign.len().min(KYC_TEXTS_SHOWN));
    let reading = agreements.get_ref().clone();
    let to_sign = crate::error::blocking(move || reading.with_texts(to_sign)).await??;
    let body = html! {
        section.card {
            dl.facts {
                dt { "Member" } dd { (member.public_id()) }
                dt { "Kind" } dd { (member.kind) }
                dt { "Name" } dd { (member.name) }
                dt { "ID number" } dd.masked { (mask(&member.id_number, 3, 4)) }
                dt { "Phone" } dd.masked { (mask(&member.phone, 3, 4)) }
                dt { "KYC status" } dd { span.badge.(if member.status == "active" { "ok" } else { "warn" }) { (member.status) } }
            }
        }
        section.card.agreements {
            h2 { "Agreements to sign" }
            @for t in &to_sign { (agreement_to_sign(&session, t)) }
            @if !listed.is_empty() {
                p { (listed.len()) " more to sign, each on a page of its own:" }
                ul.more-agreements {
                    @for t in &listed {
                        li data-code=(t.code) {
                            a href=(format!("/portal/merchant/agreements/{}", t.code)) { (t.title) " (" (t.code) ", version " (t.version) ")" }
                            span.muted { " " (t.excerpt) }
                        }
                    }
                }
            }
            @if to_sign.is_empty() { p.muted { "Nothing to sign." } }
            h2 { "Signed" }
            table.data.signed {
                thead { tr { th { "Signature" } th { "Agreement" } th.num { "Version" } th { "Signed at" } th { "Channel" } th { "From" } th { "SHA-256 of the text" } } }
                tbody {
                    @for s in &signed {
                        tr { td { (s.public_id()) } td { (s.code) } td.num { (s.version) } td { (super::format_time(s.signed_at)) } td { (format!("{:?}", s.channel).to_lowercase()) } td { (s.client_address) } td { code { (s.sha256) } } }
                    }
                    @if signed.is_empty() { tr { td colspan="7" { "No agreement signed yet." } } }
                }
            }
        }
    };
    Ok(page(&session, "KYC", "/portal/merchant/kyc", body))
}

/// `GET /portal/merchant/agreements/{code}`: the latest version of one of the platform's
/// agreements, its whole text, and (for an operator, unless the member signed that version)
/// the form that signs it.
async fn agreement_page(
    session: Session,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let latest = agreements.latest(m.platform.id, &path).ok_or(PortalError::NotFound)?;
    let reading = agreements.get_ref().clone();
    let member = m.member;
    let (template, signed) = crate::error::blocking(move || -> Result<(Template, bool), ApiError> {
        let signed = reading.signatures_of(latest.platform, member)?.iter().any(|s| s.code == latest.code && s.version == latest.version);
        Ok((reading.with_text(latest)?, signed))
    })
    .await??;
    let body = html! {
        section.card.agreements {
            @if signed {
                article.agreement data-code=(template.code) {
                    h3 { (template.title) " (" (template.code) ", version " (template.version) ")" }
                    p { span.badge.ok { "signed" } }
                    pre.agreement-text { "\n" (template.text) }
                }
            } @else {
                (agreement_to_sign(&session, &template))
            }
            p { a href="/portal/merchant/kyc" { "Back to KYC" } }
        }
    };
    Ok(page(&session, "KYC", "/portal/merchant/kyc", body))
}

/// `POST /portal/merchant/agreements/sign`: the merchant signs a version of an agreement on the
/// portal, with the SHA-256 of exactly the text the page showed (a text changed since is refused).
#[allow(clippy::too_many_arguments)]
async fn sign_agreement(
    request: HttpRequest,
    session: Session,
    fields: web::Form<Fields>,
    portal: web::Data<Arc<Portal>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &fields)?;
    session.require(Role::Operator)?;
    let m = merchant(&session, &platforms, &engine).await?;
    let member = members.get(m.platform.id, m.member)?.ok_or(PortalError::NotFound)?;
    let (code, version, shown) = (fields.get("code").to_string(), fields.get("version").parse::<u32>().ok(), fields.get("sha256").to_string());
    let after = json!({"code": code, "version": version, "sha256": shown});
    let signed = match version {
        None => Err(ApiError::invalid("not a version", "version")),
        Some(version) => {
            let (agreements, address) = (agreements.get_ref().clone(), session.from.clone());
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            crate::error::blocking(move || {
                let request = SignRequest {
                    code: &code,
                    version,
                    channel: crate::agreements::Channel::Portal,
                    client_address: address,
                    shown_sha256: Some(&shown),
                    out_order_no: None,
                };
                agreements.sign(&member, &request, now)
            })
            .await
            .and_then(|signed| signed)
        }
    };
    match signed {
        Ok((signature, existed)) => {
            audit(&portal, &session, &m, "merchant.agreement_sign", &signature.public_id(), after, Ok(if existed { "signed already" } else { "ok" }))?;
            Ok(redirect("/portal/merchant/kyc"))
        }
        Err(error) => {
            audit(&portal, &session, &m, "merchant.agreement_sign", fields.get("code"), after, Err(&error))?;
            let body = html! { (notice("error", &complaint(&error))) p { a href="/portal/merchant/kyc" { "Show the agreements again" } } };
            Ok(page(&session, "KYC", "/portal/merchant/kyc", body))
        }
    }
}

fn account_options(summaries: &[AccountSummary], selected: &str) -> Markup {
    html! {
        @for a in summaries {
            option value=(a.account_id) selected[a.account_id == selected] { (a.account_id) " · " (a.currency) " · available " (a.available) ", withdrawable " (a.withdrawable) }
        }
    }
}

fn recharge_form(session: &Session, summaries: &[AccountSummary], fields: &Fields) -> Markup {
    html! {
        form.recharge method="post" action="/portal/merchant/recharge" {
            (csrf_field(session))
            input type="hidden" name="out_order_no" value=(new_number("prc"));
            label { "Account " select name="account_id" { (account_options(summaries, fields.get("account_id"))) } }
            label { "Amount " input type="text" name="amount" inputmode="decimal" required value=(fields.get("amount")); }
            button type="submit" { "Recharge" }
        }
    }
}

async fn recharge_page(session: Session, engine: web::Data<Arc<Engine>>, platforms: web::Data<Arc<Platforms>>) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let summaries = m.summaries(&engine).await?;
    let body = html! {
        section.card {
            p { "Money in through the bank channel; the order is pending until the channel confirms it." }
            (recharge_form(&session, &summaries, &Fields::default()))
        }
    };
    Ok(page(&session, "Recharge", "/portal/merchant/recharge", body))
}

/// The message of an API error for a notice: the field it names, then why.
fn complaint(error: &ApiError) -> String {
    match &error.param {
        Some(param) => format!("{param}: {}", error.message),
        None => error.message.clone(),
    }
}

/// Records an operator's action and its outcome before the answer.
#[allow(clippy::too_many_arguments)]
fn audit(
    portal: &Portal,
    session: &Session,
    m: &Merchant,
    action: &str,
    target: &str,
    after: Value,
    outcome: Result<&str, &ApiError>,
) -> Result<(), PortalError> {
    let outcome = match outcome {
        Ok(text) => text.to_string(),
        Err(error) => format!("refused: {}", error.code),
    };
    portal.audit.record(session, m.scope(), action, target, Value::Null, after, &outcome)?;
    Ok(())
}

async fn recharge(
    request: HttpRequest,
    session: Session,
    fields: web::Form<Fields>,
    portal: web::Data<Arc<Portal>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &fields)?;
    session.require(Role::Operator)?;
    let m = merchant(&session, &platforms, &engine).await?;
    let account = m.own(fields.get("account_id"))?;
    let (_, _, spec) = crate::accounts::account_of(&engine, m.platform.id, account).await?;
    let body = crate::recharges::RechargeBody {
        out_order_no: m.order_number(&fields)?,
        account_id: public_account_id(account),
        amount: fields.get("amount").trim().to_string(),
        currency: spec.code_str().to_string(),
        channel: None,
    };
    let after = json!({"out_order_no": body.out_order_no, "account_id": body.account_id, "amount": body.amount, "currency": body.currency});
    let (working, clearing, platform, request, target) =
        (engine.get_ref().clone(), clearing.get_ref().clone(), m.platform.clone(), body.clone(), public_account_id(account));
    let work = async move { crate::recharges::recharge(&working, &clearing, &platform, &request).await.map(|(_, reply)| reply) };
    let outcome = move |result: &Result<engine::ledger::types::Reply, ApiError>, _: &mut Value| super::audit::reply_outcome(result, &target);
    let result =
        super::audit::audited(portal.get_ref().clone(), session.clone(), m.scope(), "merchant.recharge", body.account_id.clone(), after, work, outcome).await?;
    let outcome = match result {
        Ok(reply) if reply.is_ok() => Ok(reply),
        Ok(reply) => Err(crate::orders::rejection(reply.code)),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(reply) => {
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id));
            Ok(redirect(&format!("/portal/merchant/orders/{order}")))
        }
        Err(error) => {
            let summaries = m.summaries(&engine).await?;
            let body = html! { (notice("error", &complaint(&error))) section.card { (recharge_form(&session, &summaries, &fields)) } };
            Ok(page(&session, "Recharge", "/portal/merchant/recharge", body))
        }
    }
}

fn withdraw_form(session: &Session, summaries: &[AccountSummary], cards: &[Card], fields: &Fields) -> Markup {
    html! {
        form.withdraw method="post" action="/portal/merchant/withdraw/preview" {
            (csrf_field(session))
            label { "Account " select name="account_id" { (account_options(summaries, fields.get("account_id"))) } }
            label { "Card " select name="card_id" {
                @for c in cards { @let id = c.public_id(); option value=(id) selected[fields.get("card_id") == id] { (c.masked()) " · " (c.holder_name) " · " (public_account_id(AccountId(c.account))) } }
            } }
            label { "Amount " input type="text" name="amount" inputmode="decimal" required value=(fields.get("amount")); }
            label { "Arrival " select name="arrival" {
                option value="standard" selected[fields.get("arrival") != "realtime"] { "standard" }
                option value="realtime" selected[fields.get("arrival") == "realtime"] { "realtime" }
            } }
            button type="submit" { "Preview" }
        }
        @if cards.is_empty() { p.muted { "No verified card yet: your platform binds and verifies cards." } }
    }
}

async fn withdraw_page(
    session: Session,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let summaries = m.summaries(&engine).await?;
    let verified = m.verified_cards(&engine, &cards).await?;
    let body = html! {
        section.card {
            p { "Money out to a verified card. The next page shows the channel routing would choose, every candidate and the fee before you confirm." }
            (withdraw_form(&session, &summaries, &verified, &Fields::default()))
        }
    };
    Ok(page(&session, "Withdraw", "/portal/merchant/withdraw", body))
}

/// A withdrawal form's values checked against the merchant's own accounts and cards.
struct Checked {
    account: AccountId,
    card: Card,
    spec: engine::money::CurrencySpec,
    amount: Minor,
    arrival: clearing_actor::channels::Arrival,
    account_type: AccountType,
}

async fn check_withdrawal(
    m: &Merchant,
    fields: &Fields,
    engine: &Arc<Engine>,
    cards: &Cards,
    members: &Members,
) -> Result<Result<Checked, ApiError>, PortalError> {
    let account = m.own(fields.get("account_id"))?;
    let (_, _, spec) = crate::accounts::account_of(engine, m.platform.id, account).await?;
    let checked = (|| {
        let card = cards
            .named(m.platform.id, account, fields.get("card_id"))?
            .filter(|c| c.status == "verified")
            .ok_or_else(|| ApiError::invalid("choose a verified card of this account", "card_id"))?;
        let amount = crate::orders::amount(fields.get("amount").trim(), &spec, "amount")?;
        let arrival = crate::withdrawals::parse_arrival(fields.opt("arrival"))?;
        let member = members.get(m.platform.id, m.member)?.ok_or_else(ApiError::not_found)?;
        let account_type = if member.kind == "enterprise" { AccountType::Corporate } else { AccountType::Personal };
        Ok(Checked { account, card, spec, amount, arrival, account_type })
    })();
    Ok(checked)
}

#[allow(clippy::too_many_arguments)]
async fn withdraw_preview(
    request: HttpRequest,
    session: Session,
    fields: web::Form<Fields>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &fields)?;
    session.require(Role::Operator)?;
    let m = merchant(&session, &platforms, &engine).await?;
    let checked = match check_withdrawal(&m, &fields, &engine, &cards, &members).await? {
        Ok(checked) => checked,
        Err(error) => {
            let (summaries, verified) = (m.summaries(&engine).await?, m.verified_cards(&engine, &cards).await?);
            let body = html! { (notice("error", &complaint(&error))) section.card { (withdraw_form(&session, &summaries, &verified, &fields)) } };
            return Ok(page(&session, "Withdraw", "/portal/merchant/withdraw", body));
        }
    };
    let spec = checked.spec;
    let quote = clearing
        .quote(RouteRequest { amount: checked.amount, currency: spec, arrival: checked.arrival, account_type: checked.account_type })
        .await
        .map_err(ApiError::from)?;
    let code = spec.code_str();
    let arrival = if checked.arrival == clearing_actor::channels::Arrival::Realtime { "realtime" } else { "standard" };
    let body = html! {
        section.card.preview {
            h2 { "Withdrawal preview" }
            dl.facts {
                dt { "From account" } dd { (public_account_id(checked.account)) }
                dt { "To card" } dd { (checked.card.masked()) " · " (checked.card.holder_name) }
                dt { "Amount" } dd.amount { (spec.format(checked.amount)) " " (code) }
                dt { "Arrival" } dd { (arrival) }
                (super::routing_facts(&quote, &spec, checked.amount))
            }
            (super::routing_candidates(&quote))
            @if quote.chosen.is_some() {
                form.confirm method="post" action="/portal/merchant/withdraw" {
                    (csrf_field(&session))
                    input type="hidden" name="out_order_no" value=(new_number("pwd"));
                    input type="hidden" name="account_id" value=(public_account_id(checked.account));
                    input type="hidden" name="card_id" value=(checked.card.public_id());
                    input type="hidden" name="amount" value=(spec.format(checked.amount));
                    input type="hidden" name="arrival" value=(arrival);
                    button type="submit" { "Confirm withdrawal" }
                    " "
                    a href="/portal/merchant/withdraw" { "Change" }
                }
                p.muted { "Routing decides again when you confirm (a channel's cap or health may change meanwhile); the order shows the channel it took." }
            } @else {
                (notice("error", "No channel can take this withdrawal now; see why above."))
            }
        }
    };
    Ok(page(&session, "Withdraw", "/portal/merchant/withdraw", body))
}

#[allow(clippy::too_many_arguments)]
async fn withdraw(
    request: HttpRequest,
    session: Session,
    fields: web::Form<Fields>,
    portal: web::Data<Arc<Portal>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &fields)?;
    session.require(Role::Operator)?;
    let m = merchant(&session, &platforms, &engine).await?;
    let account = m.own(fields.get("account_id"))?;
    let (_, _, spec) = crate::accounts::account_of(&engine, m.platform.id, account).await?;
    let body = crate::withdrawals::WithdrawalBody {
        out_order_no: m.order_number(&fields)?,
        account_id: public_account_id(account),
        card_id: fields.get("card_id").to_string(),
        amount: fields.get("amount").trim().to_string(),
        currency: spec.code_str().to_string(),
        arrival: fields.opt("arrival").map(str::to_string),
    };
    let after = json!({"out_order_no": body.out_order_no, "account_id": body.account_id, "card_id": body.card_id, "amount": body.amount, "currency": body.currency, "arrival": body.arrival});
    let (working, carding, membering, notifying, clearing, platform, request, target) = (
        engine.get_ref().clone(),
        cards.get_ref().clone(),
        members.get_ref().clone(),
        notifications.get_ref().clone(),
        clearing.get_ref().clone(),
        m.platform.id,
        body.clone(),
        public_account_id(account),
    );
    let work = async move { crate::withdrawals::withdraw(&working, &carding, &membering, &notifying, &clearing, platform, &request).await };
    let outcome = move |result: &Result<crate::withdrawals::Submitted, ApiError>, after: &mut Value| match result {
        Ok(submitted) if submitted.reply.is_ok() => {
            after["channel"] = json!(submitted.channel);
            after["fee"] = json!(spec.format(submitted.fee));
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(submitted.reply.id));
            (order, if submitted.reply.replayed { "replayed" } else { "ok" }.to_string())
        }
        Ok(submitted) => (target, format!("refused: {}", crate::orders::rejection(submitted.reply.code).code)),
        Err(error) => (target, format!("refused: {}", error.code)),
    };
    let result =
        super::audit::audited(portal.get_ref().clone(), session.clone(), m.scope(), "merchant.withdraw", body.account_id.clone(), after, work, outcome).await?;
    let outcome = match result {
        Ok(submitted) if submitted.reply.is_ok() => Ok(submitted),
        Ok(submitted) => Err(crate::orders::rejection(submitted.reply.code)),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(submitted) => {
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(submitted.reply.id));
            Ok(redirect(&format!("/portal/merchant/orders/{order}")))
        }
        Err(error) => {
            let (summaries, verified) = (m.summaries(&engine).await?, m.verified_cards(&engine, &cards).await?);
            let body = html! { (notice("error", &complaint(&error))) section.card { (withdraw_form(&session, &summaries, &verified, &fields)) } };
            Ok(page(&session, "Withdraw", "/portal/merchant/withdraw", body))
        }
    }
}

/// An order of the platform that concerns the merchant (404 otherwise): its view, and the
/// merchant's accounts a payment paid that may still be refunded (with what each received).
async fn own_order(engine: &Arc<Engine>, clearing: &Clearing, m: &Merchant, text: &str) -> Result<(Value, Vec<(AccountId, String)>), PortalError> {
    let id = crate::orders::parse_order_id(text).ok_or(PortalError::NotFound)?;
    let (channels, accounts) = (clearing.channels(), m.accounts.clone());
    let found = crate::orders::read_order(engine, m.platform.id, id, move |state, order| {
        if !ledgers::concerns(order, &accounts) {
            return None;
        }
        let spec = state.currencies[order.currency.0 as usize];
        let refundable = !matches!(order.status, OrderStatus::Failed | OrderStatus::Cancelled | OrderStatus::Refunded | OrderStatus::Pending);
        let paid = match &order.detail {
            OrderDetail::Payment { held, .. } if refundable => {
                held.iter().filter(|l| accounts.contains(&l.account)).map(|l| (l.account, format!("{} {}", spec.format(l.held), spec.code_str()))).collect()
            }
            _ => Vec::new(),
        };
        // A payment the merchant received: its own legs only (before session 57 every leg and
        // the total refunded).
        let view = ledgers::merchants_view(crate::orders::view(state, order, &channels), order.account, &accounts);
        Some((view, paid))
    })
    .await?;
    found.flatten().ok_or(PortalError::NotFound)
}

fn fact_rows(view: &Value) -> Markup {
    let skip = ["receivers", "routing"];
    html! {
        @if let Some(object) = view.as_object() {
            @for (key, value) in object.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
                dt { (key.replace('_', " ")) }
                dd data-field=(key) { @match value { Value::String(s) => (s), Value::Null => "", other => (other.to_string()) } }
            }
        }
    }
}

async fn order_page(
    session: Session,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let (view, paid) = own_order(&engine, &clearing, &m, &path).await?;
    let routing = if view["kind"] == "withdrawal" {
        let number = view["out_order_no"].as_str().unwrap_or_default().to_string();
        clearing.notes(m.platform.id, vec![number]).await.map_err(ApiError::from)?.into_iter().next().flatten().and_then(|note| note.routing)
    } else {
        None
    };
    let order_id = view["order_id"].as_str().unwrap_or_default().to_string();
    let body = html! {
        section.card {
            dl.facts.order { (fact_rows(&view)) }
        }
        @if let Some(receivers) = view["receivers"].as_array() {
            section.card {
                h2 { "Receivers" }
                table.data { thead { tr { th { "Account" } th.num { "Amount" } th.num { "Released" } th.num { "Held" } } }
                    tbody { @for r in receivers { tr { td { (r["account_id"].as_str().unwrap_or_default()) } td.num { (r["amount"].as_str().unwrap_or_default()) } td.num { (r["released"].as_str().unwrap_or_default()) } td.num { (r["held"].as_str().unwrap_or_default()) } } } } }
            }
        }
        @if let Some(routing) = &routing {
            section.card {
                h2 { "Routing" }
                table.data.candidates { thead { tr { th { "Channel" } th.num { "Fee" } th.num { "ETA" } th { "Decision" } } }
                    tbody { @for c in &routing.candidates { tr { td { (c.channel) } td.num { (c.fee) } td.num { (c.eta_minutes) } td { @if let Some(why) = &c.rejected_because { (why) } @else if routing.chosen.as_deref() == Some(c.channel.as_str()) { "chosen" } @else { "viable" } } } } } }
                @for f in &routing.fallbacks { p { "Moved from " (f.from) " to " (f.to) " (" (f.reason) "), fee " (f.fee) } }
            }
        }
        @if !paid.is_empty() && session.has(Role::Operator) {
            section.card {
                h2 { "Refund" }
                form.refund method="post" action=(format!("/portal/merchant/orders/{order_id}/refund")) {
                    (csrf_field(&session))
                    input type="hidden" name="out_order_no" value=(new_number("prf"));
                    label { "From your account " select name="payee_account_id" { @for (account, left) in &paid { option value=(public_account_id(*account)) { (public_account_id(*account)) " (received " (left) ")" } } } }
                    label { "Amount " input type="text" name="amount" inputmode="decimal" required; }
                    button type="submit" { "Refund" }
                }
            }
        }
    };
    Ok(page(&session, &format!("Order {order_id}"), "/portal/merchant/orders", body))
}

#[allow(clippy::too_many_arguments)]
async fn refund(
    request: HttpRequest,
    session: Session,
    path: web::Path<String>,
    fields: web::Form<Fields>,
    portal: web::Data<Arc<Portal>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &fields)?;
    session.require(Role::Operator)?;
    let m = merchant(&session, &platforms, &engine).await?;
    let (view, paid) = own_order(&engine, &clearing, &m, &path).await?;
    // Only a payment the member received, from the member's own receiving account.
    let payee = m.own(fields.get("payee_account_id"))?;
    if !paid.iter().any(|(account, _)| *account == payee) {
        return Err(PortalError::NotFound);
    }
    let body = crate::payments::RefundBody {
        out_order_no: m.order_number(&fields)?,
        payment_order_id: view["order_id"].as_str().unwrap_or_default().to_string(),
        amount: fields.get("amount").trim().to_string(),
        payee_account_id: Some(public_account_id(payee)),
    };
    let after =
        json!({"out_order_no": body.out_order_no, "payment_order_id": body.payment_order_id, "payee_account_id": body.payee_account_id, "amount": body.amount});
    let result = match crate::payments::prepare_refund(&engine, &m.platform, &body, crate::payments::CreditWait::Wait).await {
        Ok(prepared) => {
            let (working, target) = (engine.get_ref().clone(), body.payment_order_id.clone());
            let work = async move { crate::accounts::execute(&working, prepared.envelope).await };
            let outcome = move |result: &Result<engine::ledger::types::Reply, ApiError>, _: &mut Value| super::audit::reply_outcome(result, &target);
            super::audit::audited(portal.get_ref().clone(), session.clone(), m.scope(), "merchant.refund", body.payment_order_id.clone(), after, work, outcome)
                .await?
        }
        Err(error) => {
            audit(&portal, &session, &m, "merchant.refund", &body.payment_order_id, after, Err(&error))?;
            Err(error)
        }
    };
    let outcome = match result {
        Ok(reply) if reply.is_ok() => Ok(reply),
        Ok(reply) => Err(crate::orders::rejection(reply.code)),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(reply) => {
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id));
            Ok(redirect(&format!("/portal/merchant/orders/{order}")))
        }
        Err(error) => {
            let body = html! {
                (notice("error", &complaint(&error)))
                p { a href=(format!("/portal/merchant/orders/{}", body.payment_order_id)) { "Back to the payment" } }
            };
            Ok(page(&session, "Refund", "/portal/merchant/refunds", body))
        }
    }
}

/// `GET /portal/merchant/refunds`: payments the merchant received (newest first), each with
/// its page where it is refunded.
async fn refunds(
    session: Session,
    query: web::Query<Fields>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, PortalError> {
    let m = merchant(&session, &platforms, &engine).await?;
    let before = crate::orders::parse_cursor(query.opt("cursor")).map_err(|_| PortalError::Api(ApiError::invalid("not a cursor this page gave", "cursor")))?;
    let filter = ledgers::Filter {
        platform: m.platform.id,
        accounts: Arc::new(m.accounts.clone()),
        kind: None,
        status: None,
        from: 0,
        to: u64::MAX,
        received_only: true,
    };
    let (orders, next) = ledgers::orders_page(&engine, clearing.channels(), filter, before, 50).await?;
    let body = html! {
        p { "Payments your accounts received. Open one to refund it, fully or in part." }
        (ledgers::orders_table(&orders))
        @if let Some(next) = &next { p { a.next href=(format!("/portal/merchant/refunds?cursor={next}")) { "Older payments" } } }
    };
    Ok(page(&session, "Refunds", "/portal/merchant/refunds", body))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/merchant", web::get().to(home))
        .route("/portal/merchant/kyc", web::get().to(kyc))
        .route("/portal/merchant/agreements/sign", web::post().to(sign_agreement))
        .route("/portal/merchant/agreements/{code}", web::get().to(agreement_page))
        .route("/portal/merchant/recharge", web::get().to(recharge_page))
        .route("/portal/merchant/recharge", web::post().to(recharge))
        .route("/portal/merchant/withdraw", web::get().to(withdraw_page))
        .route("/portal/merchant/withdraw/preview", web::post().to(withdraw_preview))
        .route("/portal/merchant/withdraw", web::post().to(withdraw))
        .route("/portal/merchant/refunds", web::get().to(refunds))
        .route("/portal/merchant/orders/{order_id}", web::get().to(order_page))
        .route("/portal/merchant/orders/{order_id}/refund", web::post().to(refund));
    ledgers::routes(config);
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_keep_only_the_ends() {
        assert_eq!(super::mask("11010519491231002X", 3, 4), "110***********002X");
        assert_eq!(super::mask("13800138000", 3, 4), "138****8000");
        assert_eq!(super::mask("abc", 3, 4), "***");
    }

    #[test]
    fn form_order_numbers_are_valid_and_new() {
        let (one, two) = (super::new_number("prc"), super::new_number("prc"));
        assert_ne!(one, two);
        assert!(engine::ledger::command::OutOrderNo::new(&one).is_some());
    }
}
