//! The wallet pages of a member's H5 session (`/h5/wallet...`) and the agreement page
//! (`/h5/agreement`): balances, entries (cursor paging), cards; recharge; withdraw (the expected
//! channel and fee shown before the member confirms); bind, verify, unbind and change a card;
//! set or reset the payment password; close the account; sign an agreement. Each page acts on
//! an account of the session's member only (another member's account is 404). Every form
//! carries the session's CSRF token; each money form carries an order number made when the
//! form was shown, so submitting it twice is one order.
//!
//! Resetting a payment password already set needs a second factor: the member's id number and
//! phone as the platform registered them. Setting the first one needs only the session.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use clearing_actor::channels::{AccountType, Arrival};
use engine::ledger::types::AccountId;
use engine::Engine;
use maud::{html, Markup};
use serde::Deserialize;
use storage::Store;

use crate::accounts::AccountSummary;
use crate::agreements::{Agreements, Channel, SignRequest};
use crate::cards::{BindBody, Card, Cards};
use crate::error::{blocking, ApiError};
use crate::h5::{checked_form, form_order_no, member_account, ok_page, session_for, H5Sessions, PageError, Purpose, Session};
use crate::h5_text::{error_text, notice, page, t, Locale};
use crate::members::Members;
use crate::notifications::Notifications;
use crate::passwords::Passwords;
use crate::platforms::Platforms;

/// Entries on one page of the wallet.
const ENTRIES_PER_PAGE: &str = "10";

/// The account a wallet page acts on and its balances.
struct Wallet {
    cookie: String,
    session: Session,
    account: AccountId,
    summary: AccountSummary,
}

/// The session's account: the one the request names (the member's, or 404), else the link's,
/// else the member's first.
async fn wallet(request: &HttpRequest, sessions: &H5Sessions, engine: &Arc<Engine>, named: &str) -> Result<Wallet, PageError> {
    let (cookie, session) = session_for(request, sessions, &[Purpose::Wallet])?;
    let (platform, member, locale) = (session.grant.platform, session.grant.member, session.locale);
    let account = if !named.is_empty() {
        member_account(engine, platform, member, named, "account").await.map_err(|e| PageError::api(e, locale))?
    } else if let Some(account) = session.grant.account {
        account
    } else {
        let owned = crate::accounts::accounts_of_member(engine, platform, member).await.map_err(|e| PageError::api(e, locale))?;
        *owned.first().ok_or_else(|| PageError::new(404, "not_found", locale))?
    };
    let summary = crate::accounts::summary(engine, platform, account)
        .await
        .map_err(|e| PageError::api(e, locale))?
        .ok_or_else(|| PageError::new(404, "not_found", locale))?;
    Ok(Wallet { cookie, session, account, summary })
}

fn hidden(session: &Session, summary: &AccountSummary) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(session.csrf);
        input type="hidden" name="account" value=(summary.account_id);
    }
}

fn back(locale: Locale, summary: &AccountSummary) -> Markup {
    let href = format!("/h5/wallet?account={}", summary.account_id);
    html! { p { a.button.secondary href=(href) { (t(locale, "to_wallet")) } } }
}

/// The wallet's member's name as its pages show it: each word's first character, the rest
/// masked (`Z**** S**`, `张*`), so a member who opened another member's link (which replaces its
/// session) sees it is not its own wallet before paying into it.
async fn holder(members: &Arc<Members>, session: &Session) -> Result<String, PageError> {
    let (platform, member, locale) = (session.grant.platform, session.grant.member, session.locale);
    let members = members.clone();
    let found = blocking(move || members.get(platform, member)).await.map_err(|e| PageError::api(e, locale))?.map_err(|e| PageError::api(e, locale))?;
    let name = found.ok_or_else(|| PageError::new(404, "not_found", locale))?.name;
    Ok(masked_name(&name))
}

fn masked_name(name: &str) -> String {
    name.split_whitespace().map(|word| word.chars().enumerate().map(|(i, c)| if i == 0 { c } else { '*' }).collect::<String>()).collect::<Vec<_>>().join(" ")
}

/// The refusal of an identity check after too many wrong answers (`H5Sessions::identity_try`).
fn identity_locked() -> ApiError {
    ApiError::new(429, "identity_locked", "too many wrong identity answers; try again tomorrow")
}

fn api_notice(locale: Locale, error: &ApiError) -> Markup {
    html! {
        (notice("error", &error_text(locale, error.code, &error.message)))
        p.muted { "code: " span.code { (error.code) } }
        // A card bind or a withdrawal before any payment password: the way to set one.
        @if error.code == "payment_password_not_set" { p { a.button.secondary #set-password href="/h5/wallet/password" { (t(locale, "password")) } } }
    }
}

fn card_status(locale: Locale, card: &Card) -> &'static str {
    match card.status.as_str() {
        "verified" => t(locale, "verified"),
        "locked" => t(locale, "locked"),
        _ => t(locale, "pending_verification"),
    }
}

#[derive(Deserialize)]
struct AccountQuery {
    account: Option<String>,
    cursor: Option<String>,
}

/// `GET /h5/wallet`: balances, recent entries, cards and what the member can do.
#[get("/h5/wallet")]
#[allow(clippy::too_many_arguments)]
pub async fn home(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    store: web::Data<Arc<dyn Store>>,
    platforms: web::Data<Arc<Platforms>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    let (locale, platform) = (w.session.locale, w.session.grant.platform);
    let holder = holder(&members, &w.session).await?;
    let (lines, next) = crate::entries::page(&engine, &store, &platforms, platform, w.account, Some(ENTRIES_PER_PAGE), query.cursor.as_deref())
        .await
        .map_err(|e| PageError::api(e, locale))?;
    let bound: Vec<Card> = crate::cards::cards_of(&engine, &cards, platform, w.account)
        .await
        .map_err(|e| PageError::api(e, locale))?
        .into_iter()
        .filter(|c| c.status != "unbound")
        .collect();
    let older = next.map(|cursor| {
        let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("account", &w.summary.account_id).append_pair("cursor", &cursor).finish();
        format!("/h5/wallet?{query}")
    });
    let s = &w.summary;
    let link = |path: &str| format!("/h5/wallet/{path}?account={}", s.account_id);
    let body = html! {
        section #balances {
            div.muted { (t(locale, "available")) " (" (s.currency) ")" }
            div.balance #available { (s.available) }
            dl {
                dt { (t(locale, "withdrawable")) } dd #withdrawable { (s.withdrawable) }
                dt { (t(locale, "frozen")) } dd { (s.frozen) }
                dt { (t(locale, "unsettled")) } dd { (s.unsettled) }
                dt { (t(locale, "account_holder")) } dd #holder { (holder) }
                dt { (t(locale, "account")) } dd { (s.account_id) " · " (s.status) }
                dt { (t(locale, "virtual_account_no")) } dd { (s.virtual_account_no) }
            }
        }
        nav.actions {
            a href=(link("recharge")) { (t(locale, "recharge")) }
            a href=(link("withdraw")) { (t(locale, "withdraw")) }
            a href=(link("card")) { (t(locale, "change_card")) }
            a href=(link("password")) { (t(locale, "password")) }
            a href="/h5/agreement" { (t(locale, "agreements")) }
            a href=(link("close")) { (t(locale, "close_account")) }
        }
        h2 { (t(locale, "cards")) }
        section {
            @if bound.is_empty() { p.muted { (t(locale, "no_cards")) } }
            ul.list { @for card in &bound { li { span { (card.masked()) } span.muted { (card_status(locale, card)) } } } }
        }
        h2 { (t(locale, "entries")) }
        section {
            @if lines.is_empty() { p.muted { (t(locale, "no_entries")) } }
            ul.list #entries {
                @for line in &lines {
                    @let credit = line["direction"] == "credit";
                    li.entry {
                        span { (line["kind"].as_str().unwrap_or_default()) br; span.muted { (line["created_at"].as_str().unwrap_or_default()) } }
                        span class=(if credit { "credit" } else { "debit" }) { (if credit { "+" } else { "-" }) (line["amount"].as_str().unwrap_or_default()) }
                    }
                }
            }
            @if let Some(href) = &older { p { a #older href=(href) { (t(locale, "older")) } } }
        }
        @if let Some(url) = &w.session.grant.return_url { p { a.button.secondary href=(url) { (t(locale, "back_to_platform")) } } }
    };
    Ok(ok_page(page(locale, t(locale, "wallet"), body)))
}

/// `GET /h5/wallet/recharge`.
#[get("/h5/wallet/recharge")]
pub async fn recharge_form(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    let holder = holder(&members, &w.session).await?;
    Ok(ok_page(recharge_page(&w, &holder, None)))
}

fn recharge_page(w: &Wallet, holder: &str, message: Option<Markup>) -> Markup {
    let locale = w.session.locale;
    let body = html! {
        @if let Some(message) = message { (message) }
        p.muted { (t(locale, "account_holder")) ": " span #holder { (holder) } }
        form method="post" action="/h5/wallet/recharge" {
            (hidden(&w.session, &w.summary))
            input type="hidden" name="order" value=(form_order_no("h5r"));
            label for="amount" { (t(locale, "amount")) " (" (w.summary.currency) ")" }
            input #amount name="amount" inputmode="decimal" autocomplete="off" required;
            button #submit type="submit" { (t(locale, "recharge")) }
        }
        (back(locale, &w.summary))
    };
    page(locale, t(locale, "recharge"), body)
}

/// `POST /h5/wallet/recharge`: money in through the first money-in channel.
#[post("/h5/wallet/recharge")]
pub async fn recharge(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<clearing_actor::Clearing>,
    members: web::Data<Arc<Members>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let locale = w.session.locale;
    let platform = platforms.get(w.session.grant.platform).ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let order = crate::recharges::RechargeBody {
        out_order_no: crate::h5::members_order_no(&form, &w.session)?,
        account_id: w.summary.account_id.clone(),
        amount: form.get("amount").to_string(),
        currency: w.summary.currency.clone(),
        channel: None,
    };
    let outcome = crate::recharges::recharge(&engine, &clearing, &platform, &order).await.and_then(|(_, reply)| {
        if reply.is_ok() {
            Ok(reply)
        } else {
            Err(crate::orders::rejection(reply.code))
        }
    });
    match outcome {
        Ok(reply) => {
            let order_id = crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id));
            let status = reply.status.map_or("succeeded", |s| s.name());
            let body = html! {
                (notice("ok", t(locale, "recharge_pending")))
                section { dl {
                    dt { (t(locale, "order")) } dd #order-id { (order_id) }
                    dt { (t(locale, "amount")) } dd { (order.amount) " " (order.currency) }
                    dt { (t(locale, "status")) } dd #status { (status) }
                } }
                (back(locale, &w.summary))
            };
            Ok(ok_page(page(locale, t(locale, "recharge"), body)))
        }
        Err(error) => Ok(ok_page(recharge_page(&w, &holder(&members, &w.session).await?, Some(api_notice(locale, &error))))),
    }
}

/// `GET /h5/wallet/withdraw`.
#[get("/h5/wallet/withdraw")]
pub async fn withdraw_form(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    withdraw_page(&w, &engine, &cards, None).await
}

async fn verified_cards(w: &Wallet, engine: &Arc<Engine>, cards: &Arc<Cards>) -> Result<Vec<Card>, PageError> {
    let all = crate::cards::cards_of(engine, cards, w.session.grant.platform, w.account).await.map_err(|e| PageError::api(e, w.session.locale))?;
    Ok(all.into_iter().filter(|c| c.status == "verified").collect())
}

async fn withdraw_page(w: &Wallet, engine: &Arc<Engine>, cards: &Arc<Cards>, message: Option<Markup>) -> Result<HttpResponse, PageError> {
    let locale = w.session.locale;
    let verified = verified_cards(w, engine, cards).await?;
    let body = html! {
        @if let Some(message) = message { (message) }
        section { dl { dt { (t(locale, "withdrawable")) } dd { (w.summary.withdrawable) " " (w.summary.currency) } } }
        @if verified.is_empty() {
            (notice("error", t(locale, "no_verified_card")))
        } @else {
            form method="post" action="/h5/wallet/withdraw" {
                (hidden(&w.session, &w.summary))
                input type="hidden" name="step" value="quote";
                label for="amount" { (t(locale, "amount")) " (" (w.summary.currency) ")" }
                input #amount name="amount" inputmode="decimal" autocomplete="off" required;
                label for="card" { (t(locale, "card")) }
                select #card name="card" { @for card in &verified { option value=(card.public_id()) { (card.masked()) } } }
                label for="arrival" { (t(locale, "arrival")) }
                select #arrival name="arrival" {
                    option value="standard" { (t(locale, "standard")) }
                    option value="realtime" { (t(locale, "realtime")) }
                }
                button #quote type="submit" { (t(locale, "quote")) }
            }
        }
        (back(locale, &w.summary))
    };
    Ok(ok_page(page(locale, t(locale, "withdraw"), body)))
}

/// `POST /h5/wallet/withdraw`: `step=quote` shows the expected channel and fee with a confirm
/// form; `step=confirm` submits the withdrawal.
#[post("/h5/wallet/withdraw")]
#[allow(clippy::too_many_arguments)]
pub async fn withdraw(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
    clearing: web::Data<clearing_actor::Clearing>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let (locale, platform) = (w.session.locale, w.session.grant.platform);
    let (_, spec) = crate::orders::currency(&engine, &w.summary.currency).map_err(|e| PageError::api(e, locale))?;
    let checked = (|| -> Result<(i64, Card, Arrival), ApiError> {
        let minor = crate::orders::amount(form.get("amount"), &spec, "amount")?;
        let card = cards
            .named(platform, w.account, form.get("card"))?
            .filter(|c| c.status == "verified")
            .ok_or(ApiError { param: Some("card_id".into()), ..ApiError::not_found() })?;
        let arrival = crate::withdrawals::parse_arrival(Some(form.get("arrival")).filter(|a| !a.is_empty()))?;
        Ok((minor, card, arrival))
    })();
    let (minor, card, arrival) = match checked {
        Ok(checked) => checked,
        Err(error) => return withdraw_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await,
    };
    let arrival_name = if arrival == Arrival::Realtime { "realtime" } else { "standard" };
    if form.get("step") != "confirm" {
        let member = members.get(platform, w.session.grant.member).map_err(|e| PageError::api(e, locale))?;
        let account_type = if member.is_some_and(|m| m.kind == "enterprise") { AccountType::Corporate } else { AccountType::Personal };
        let Some((channel, fee)) = crate::withdrawals::quote(&clearing.channels(), &spec, minor, arrival, account_type) else {
            return withdraw_page(&w, &engine, &cards, Some(notice("error", t(locale, "no_channel")))).await;
        };
        let total = minor.checked_add(fee).map(|t| spec.format(t)).unwrap_or_default();
        let body = html! {
            section { dl {
                dt { (t(locale, "amount")) } dd #quote-amount { (spec.format(minor)) " " (w.summary.currency) }
                dt { (t(locale, "card")) } dd { (card.masked()) }
                dt { (t(locale, "arrival")) } dd { (t(locale, if arrival == Arrival::Realtime { "realtime" } else { "standard" })) }
                dt { (t(locale, "channel")) } dd #quote-channel { (channel) }
                dt { (t(locale, "fee")) } dd #quote-fee { (spec.format(fee)) }
                dt { (t(locale, "total_debited")) } dd { (total) }
            } }
            p.muted { (t(locale, "quote_note")) }
            form method="post" action="/h5/wallet/withdraw" {
                (hidden(&w.session, &w.summary))
                input type="hidden" name="step" value="confirm";
                input type="hidden" name="order" value=(form_order_no("h5w"));
                input type="hidden" name="amount" value=(spec.format(minor));
                input type="hidden" name="card" value=(card.public_id());
                input type="hidden" name="arrival" value=(arrival_name);
                label for="password" { (t(locale, "enter_password")) }
                input.pin #password type="password" name="password" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" minlength="6" autocomplete="off" required;
                button #confirm type="submit" { (t(locale, "confirm")) }
            }
            (back(locale, &w.summary))
        };
        return Ok(ok_page(page(locale, t(locale, "withdraw"), body)));
    }
    // Money out to a card is the member's to allow: its payment password, counted like the
    // cashier's (five wrong lock the account's payments), so a stolen wallet session alone
    // takes nothing out (before session 58 it could). One not set yet is set first.
    let (checking, account, typed) = (passwords.get_ref().clone(), w.account, form.get("password").to_string());
    if let Err(error) = crate::passwords::hashing(u64::from(platform), move || checking.verify(account, Some(typed.as_str()))).await.and_then(|checked| checked)
    {
        return withdraw_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await;
    }
    let order = crate::withdrawals::WithdrawalBody {
        out_order_no: crate::h5::members_order_no(&form, &w.session)?,
        account_id: w.summary.account_id.clone(),
        card_id: card.public_id(),
        amount: spec.format(minor),
        currency: w.summary.currency.clone(),
        arrival: Some(arrival_name.to_string()),
    };
    let outcome = crate::withdrawals::withdraw(&engine, &cards, &members, &notifications, &clearing, platform, &order).await.and_then(|submitted| {
        if submitted.reply.is_ok() {
            Ok(submitted)
        } else {
            Err(crate::orders::rejection(submitted.reply.code))
        }
    });
    match outcome {
        Ok(submitted) => {
            let order_id = crate::orders::public_order_id(engine::ledger::types::OrderId(submitted.reply.id));
            let body = html! {
                (notice("ok", t(locale, "withdrawal_submitted")))
                section { dl {
                    dt { (t(locale, "order")) } dd #order-id { (order_id) }
                    dt { (t(locale, "amount")) } dd { (order.amount) " " (order.currency) }
                    dt { (t(locale, "channel")) } dd #channel { (submitted.channel) }
                    dt { (t(locale, "fee")) } dd #fee { (spec.format(submitted.fee)) }
                    dt { (t(locale, "status")) } dd #status { (submitted.reply.status.map_or("succeeded", |s| s.name())) }
                } }
                (back(locale, &w.summary))
            };
            Ok(ok_page(page(locale, t(locale, "withdraw"), body)))
        }
        Err(error) => withdraw_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await,
    }
}

/// `GET /h5/wallet/card`: the cards, a verify form for a card waiting, the bind form.
#[get("/h5/wallet/card")]
pub async fn card_form(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    card_page(&w, &engine, &cards, None).await
}

async fn card_page(w: &Wallet, engine: &Arc<Engine>, cards: &Arc<Cards>, message: Option<Markup>) -> Result<HttpResponse, PageError> {
    let locale = w.session.locale;
    let all = crate::cards::cards_of(engine, cards, w.session.grant.platform, w.account).await.map_err(|e| PageError::api(e, locale))?;
    let bound: Vec<&Card> = all.iter().filter(|c| c.status != "unbound").collect();
    let replaces = bound.iter().find(|c| c.status == "verified").map(|c| c.public_id());
    let body = html! {
        @if let Some(message) = message { (message) }
        section {
            @if bound.is_empty() { p.muted { (t(locale, "no_cards")) } }
            ul.list {
                @for card in &bound {
                    li {
                        span { (card.masked()) br; span.muted { (card_status(locale, card)) } }
                        form method="post" action="/h5/wallet/card/unbind" {
                            (hidden(&w.session, &w.summary))
                            input type="hidden" name="card" value=(card.public_id());
                            button.secondary type="submit" { (t(locale, "unbind")) }
                        }
                    }
                    @if card.status == "pending_verification" {
                        li { form method="post" action="/h5/wallet/card/verify" {
                            (hidden(&w.session, &w.summary))
                            input type="hidden" name="card" value=(card.public_id());
                            label for={"deposit-" (card.id)} { (t(locale, "deposit_amount")) }
                            input id={"deposit-" (card.id)} name="amount" inputmode="decimal" autocomplete="off" required;
                            button type="submit" { (t(locale, "verify")) }
                        } }
                    }
                }
            }
        }
        h2 { (t(locale, "bind")) }
        section {
            @if replaces.is_some() { p.muted { (t(locale, "replace_note")) } }
            form method="post" action="/h5/wallet/card/bind" {
                (hidden(&w.session, &w.summary))
                input type="hidden" name="order" value=(form_order_no("h5c"));
                @if let Some(old) = &replaces { input type="hidden" name="replaces" value=(old); }
                label for="card_no" { (t(locale, "card_no")) }
                input #card_no name="card_no" inputmode="numeric" autocomplete="off" required;
                label for="holder_name" { (t(locale, "holder_name")) }
                input #holder_name name="holder_name" autocomplete="off" required;
                label for="id_number" { (t(locale, "id_number")) }
                input #id_number name="id_number" autocomplete="off" required;
                label for="phone" { (t(locale, "phone")) }
                input #phone name="phone" inputmode="tel" autocomplete="off" required;
                label for="password" { (t(locale, "enter_password")) }
                input.pin #password type="password" name="password" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" minlength="6" autocomplete="off" required;
                button type="submit" { (t(locale, "bind")) }
            }
        }
        (back(locale, &w.summary))
    };
    Ok(ok_page(page(locale, t(locale, "change_card"), body)))
}

/// `POST /h5/wallet/card/bind`: the four-element check and the micro-deposit; with `replaces`,
/// that card is unbound once this one is verified (changing the card).
#[post("/h5/wallet/card/bind")]
#[allow(clippy::too_many_arguments)]
pub async fn card_bind(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    platforms: web::Data<Arc<Platforms>>,
    agreements: web::Data<Arc<Agreements>>,
    clearing: web::Data<clearing_actor::Clearing>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let (locale, platform) = (w.session.locale, w.session.grant.platform);
    let platform = platforms.get(platform).ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let bind = BindBody {
        out_order_no: crate::h5::members_order_no(&form, &w.session)?,
        card_no: form.get("card_no").replace(' ', ""),
        holder_name: form.get("holder_name").to_string(),
        id_number: form.get("id_number").to_string(),
        phone: form.get("phone").to_string(),
    };
    let replaces = crate::ids::parse_prefixed::<u64>(form.get("replaces"), "card_");
    // The checks that cost nothing first: a form that cannot bind costs no password hash (one
    // member's flood of them queued every member's password checks of the platform behind
    // it, helper 131#2).
    if !crate::cards::valid_card_no(&bind.card_no) {
        let error = ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") };
        return card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await;
    }
    if !crate::identity::valid_phone(&bind.phone) {
        let error = ApiError::invalid("phone must be a mainland mobile number of 11 digits", "phone");
        return card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await;
    }
    // A card is where withdrawals go: binding one is the member's to allow, with its payment
    // password (counted like the cashier's), so a stolen wallet session that knows the member's
    // id number cannot bind the thief's card (before session 59 it could). One not set yet is
    // set first, and setting it asks the id number and phone.
    let (checking, account, typed) = (passwords.get_ref().clone(), w.account, form.get("password").to_string());
    if let Err(error) =
        crate::passwords::hashing(u64::from(platform.id), move || checking.verify(account, Some(typed.as_str()))).await.and_then(|checked| checked)
    {
        return card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await;
    }
    // The identity answer is a try, taken before it is compared (counted if wrong).
    let member = w.session.grant.member;
    if !sessions.identity_try(platform.id, member, Instant::now()) {
        return card_page(&w, &engine, &cards, Some(api_notice(locale, &identity_locked()))).await;
    }
    let bound = crate::cards::bind_card(&engine, &members, &agreements, &cards, clearing.bank(), &platform, w.account, &bind).await;
    if !matches!(&bound, Err(error) if error.code == "identity_mismatch") {
        sessions.identity_passed(platform.id, member);
    }
    match bound {
        Ok((card, _)) => {
            sessions.update(&w.cookie, |s| s.replacing = replaces.filter(|old| *old != card.id));
            card_page(&w, &engine, &cards, Some(notice("ok", t(locale, "card_bound")))).await
        }
        Err(error) => card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await,
    }
}

/// `POST /h5/wallet/card/verify`: the micro-deposit's amount; a card being replaced is unbound
/// once its successor is verified.
#[post("/h5/wallet/card/verify")]
pub async fn card_verify(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let (locale, platform) = (w.session.locale, w.session.grant.platform);
    match crate::cards::verify_card(&engine, &cards, platform, w.account, form.get("card"), form.get("amount")).await {
        Ok(card) => {
            if let Some(old) = w.session.replacing.filter(|old| *old != card.id) {
                // The old card may be gone already (unbound by hand): nothing to do then.
                let _ = crate::cards::unbind_card(&engine, &cards, platform, w.account, &format!("card_{old}")).await;
                sessions.update(&w.cookie, |s| s.replacing = None);
            }
            card_page(&w, &engine, &cards, Some(notice("ok", t(locale, "card_verified")))).await
        }
        Err(error) => card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await,
    }
}

/// `POST /h5/wallet/card/unbind`.
#[post("/h5/wallet/card/unbind")]
pub async fn card_unbind(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let locale = w.session.locale;
    match crate::cards::unbind_card(&engine, &cards, w.session.grant.platform, w.account, form.get("card")).await {
        Ok(_) => card_page(&w, &engine, &cards, Some(notice("ok", t(locale, "card_unbound")))).await,
        Err(error) => card_page(&w, &engine, &cards, Some(api_notice(locale, &error))).await,
    }
}

/// `GET /h5/wallet/password`.
#[get("/h5/wallet/password")]
pub async fn password_form(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    Ok(ok_page(password_page(&w, &passwords, None)?))
}

fn password_page(w: &Wallet, passwords: &Passwords, message: Option<Markup>) -> Result<Markup, PageError> {
    let locale = w.session.locale;
    let reset = passwords.failures(w.account).map_err(|e| PageError::api(e, locale))?.is_some();
    let body = html! {
        @if let Some(message) = message { (message) }
        form method="post" action="/h5/wallet/password" {
            (hidden(&w.session, &w.summary))
            p.muted { (t(locale, if reset { "reset_note" } else { "first_password_note" })) }
            label for="id_number" { (t(locale, "id_number")) }
            input #id_number name="id_number" autocomplete="off" required;
            label for="phone" { (t(locale, "phone")) }
            input #phone name="phone" inputmode="tel" autocomplete="off" required;
            label for="password" { (t(locale, "new_password")) }
            input.pin #password type="password" name="password" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" autocomplete="off" required;
            label for="repeat" { (t(locale, "repeat_password")) }
            input.pin #repeat type="password" name="repeat" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" autocomplete="off" required;
            button #submit type="submit" { (t(locale, "submit")) }
        }
        (back(locale, &w.summary))
    };
    Ok(page(locale, t(locale, "password"), body))
}

/// `POST /h5/wallet/password`: sets the first password, or resets one with the member's id
/// number and phone as a second factor (the count of wrong passwords starts again).
#[post("/h5/wallet/password")]
pub async fn password(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let locale = w.session.locale;
    if form.get("password") != form.get("repeat") {
        return Ok(ok_page(password_page(&w, &passwords, Some(notice("error", t(locale, "passwords_differ"))))?));
    }
    // The member's id number and phone, a second factor, for the first password as for a reset:
    // before session 59 whoever held a live session of a member who had never set one could set
    // it, then withdraw with it.
    let (platform, member) = (w.session.grant.platform, w.session.grant.member);
    if !sessions.identity_try(platform, member, Instant::now()) {
        return Ok(ok_page(password_page(&w, &passwords, Some(api_notice(locale, &identity_locked())))?));
    }
    let member = match members.get(platform, member) {
        Ok(Some(found)) => found,
        // Never compared: the try is given back.
        Ok(None) => {
            sessions.identity_passed(platform, member);
            return Err(PageError::new(404, "not_found", locale));
        }
        Err(error) => {
            sessions.identity_passed(platform, member);
            return Err(PageError::api(error, locale));
        }
    };
    let id_right = crate::auth::constant_time_equal(form.get("id_number").to_ascii_uppercase().as_bytes(), member.id_number.as_bytes());
    let phone_right = crate::auth::constant_time_equal(form.get("phone").as_bytes(), member.phone.as_bytes());
    if !(id_right && phone_right) {
        return Ok(ok_page(password_page(&w, &passwords, Some(notice("error", t(locale, "second_factor_failed"))))?));
    }
    sessions.identity_passed(platform, member.id);
    match crate::passwords::set_password_of(&engine, &passwords, w.session.grant.platform, w.account, form.get("password").to_string()).await {
        Ok(()) => {
            let body = html! { (notice("ok", t(locale, "password_set"))) (back(locale, &w.summary)) };
            Ok(ok_page(page(locale, t(locale, "password"), body)))
        }
        Err(error) => Ok(ok_page(password_page(&w, &passwords, Some(api_notice(locale, &error)))?)),
    }
}

/// `GET /h5/wallet/close`.
#[get("/h5/wallet/close")]
pub async fn close_form(
    request: HttpRequest,
    query: web::Query<AccountQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
) -> Result<HttpResponse, PageError> {
    let w = wallet(&request, &sessions, &engine, query.account.as_deref().unwrap_or_default()).await?;
    Ok(ok_page(close_page(&w, None)))
}

fn close_page(w: &Wallet, message: Option<Markup>) -> Markup {
    let locale = w.session.locale;
    let body = html! {
        @if let Some(message) = message { (message) }
        section { dl {
            dt { (t(locale, "account")) } dd { (w.summary.account_id) }
            dt { (t(locale, "available")) } dd { (w.summary.available) " " (w.summary.currency) }
            dt { (t(locale, "frozen")) } dd { (w.summary.frozen) }
            dt { (t(locale, "unsettled")) } dd { (w.summary.unsettled) }
        } }
        p.muted { (t(locale, "close_note")) }
        form method="post" action="/h5/wallet/close" {
            (hidden(&w.session, &w.summary))
            input type="hidden" name="order" value=(form_order_no("h5x"));
            button.danger #close type="submit" { (t(locale, "close_account")) }
        }
        (back(locale, &w.summary))
    };
    page(locale, t(locale, "close_account"), body)
}

/// `POST /h5/wallet/close`: closes the account (its balances must all be zero).
#[post("/h5/wallet/close")]
pub async fn close(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, PageError> {
    let form = crate::h5::Form::parse(&body);
    let w = wallet(&request, &sessions, &engine, form.get("account")).await?;
    let form = checked_form(&body, &w.session)?;
    let locale = w.session.locale;
    let platform = platforms.get(w.session.grant.platform).ok_or_else(|| PageError::new(404, "not_found", locale))?;
    match crate::accounts::close(&engine, &platform, w.account, &crate::h5::members_order_no(&form, &w.session)?).await {
        Ok(_) => {
            let body = html! { (notice("ok", t(locale, "account_closed"))) @if let Some(url) = &w.session.grant.return_url { p { a.button.secondary href=(url) { (t(locale, "back_to_platform")) } } } };
            Ok(ok_page(page(locale, t(locale, "close_account"), body)))
        }
        Err(error) => Ok(ok_page(close_page(&w, Some(api_notice(locale, &error))))),
    }
}

#[derive(Deserialize)]
struct AgreementQuery {
    code: Option<String>,
    version: Option<u32>,
}

/// `GET /h5/agreement`: an agreement session shows its one version; a wallet session lists the
/// latest version of each code with whether the member signed it, and shows one to sign.
#[get("/h5/agreement")]
pub async fn agreement(
    request: HttpRequest,
    query: web::Query<AgreementQuery>,
    sessions: web::Data<Arc<H5Sessions>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, PageError> {
    let (_, session) = session_for(&request, &sessions, &[Purpose::Wallet, Purpose::Agreement])?;
    let chosen = match &session.grant.agreement {
        Some(named) => Some((named.code.clone(), named.version)),
        None => query
            .code
            .clone()
            .map(|code| (code.clone(), query.version.or_else(|| agreements.latest(session.grant.platform, &code).map(|t| t.version)).unwrap_or(0))),
    };
    agreement_page(&session, &agreements, chosen, None)
}

fn agreement_page(session: &Session, agreements: &Agreements, chosen: Option<(String, u32)>, message: Option<Markup>) -> Result<HttpResponse, PageError> {
    let (locale, platform, member) = (session.locale, session.grant.platform, session.grant.member);
    let signed = agreements.signatures_of(platform, member).map_err(|e| PageError::api(e, locale))?;
    let is_signed = |code: &str, version: u32| signed.iter().find(|s| s.code == code && s.version == version).map(|s| s.signed_at);
    let body = match chosen {
        Some((code, version)) => {
            let template = agreements.template(platform, &code, version).ok_or_else(|| PageError::new(404, "not_found", locale))?;
            let template = agreements.with_text(template).map_err(|e| PageError::api(e, locale))?;
            let signed_at = is_signed(&template.code, template.version);
            html! {
                @if let Some(message) = message { (message) }
                h2 { (template.title) " · " (t(locale, "version")) " " (template.version) }
                pre.agreement #agreement-text { (template.text) }
                p.muted { "SHA-256: " span #agreement-sha256 { (template.sha256) } }
                @if signed_at.is_some() {
                    (notice("ok", t(locale, "signed")))
                } @else {
                    form method="post" action="/h5/agreement" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="code" value=(template.code);
                        input type="hidden" name="version" value=(template.version);
                        input type="hidden" name="sha256" value=(template.sha256);
                        button #sign type="submit" { (t(locale, "sign")) }
                    }
                }
                @if session.grant.purpose == Purpose::Wallet { p { a.button.secondary href="/h5/agreement" { (t(locale, "back")) } } }
                @if let Some(url) = &session.grant.return_url { p { a.button.secondary href=(url) { (t(locale, "back_to_platform")) } } }
            }
        }
        None => {
            let mut latest: Vec<crate::agreements::Template> = Vec::new();
            for template in agreements.templates(platform) {
                match latest.last_mut() {
                    Some(last) if last.code == template.code => *last = template,
                    _ => latest.push(template),
                }
            }
            html! {
                @if let Some(message) = message { (message) }
                section { ul.list {
                    @for template in &latest {
                        @let href = format!("/h5/agreement?code={}&version={}", template.code, template.version);
                        li {
                            a href=(href) { (template.title) " · " (t(locale, "version")) " " (template.version) }
                            span.muted { (t(locale, if is_signed(&template.code, template.version).is_some() { "signed" } else { "not_signed" })) }
                        }
                    }
                } }
                p { a.button.secondary href="/h5/wallet" { (t(locale, "to_wallet")) } }
            }
        }
    };
    Ok(ok_page(page(locale, t(locale, "agreement"), body)))
}

/// `POST /h5/agreement`: signs the version shown, recording the SHA-256 of exactly the text the
/// page showed (sent back with the form and checked against the version's text).
#[post("/h5/agreement")]
pub async fn sign(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    members: web::Data<Arc<Members>>,
    agreements: web::Data<Arc<Agreements>>,
) -> Result<HttpResponse, PageError> {
    let (_, session) = session_for(&request, &sessions, &[Purpose::Wallet, Purpose::Agreement])?;
    let form = checked_form(&body, &session)?;
    let locale = session.locale;
    let code = form.get("code").to_string();
    let version: u32 = form.get("version").parse().map_err(|_| PageError::new(404, "not_found", locale))?;
    if let Some(named) = &session.grant.agreement {
        if named.code != code || named.version != version {
            return Err(PageError::new(403, "wrong_purpose", locale));
        }
    }
    let member = members
        .get(session.grant.platform, session.grant.member)
        .map_err(|e| PageError::api(e, locale))?
        .ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let (signing, shown, address) = (agreements.get_ref().clone(), form.get("sha256").to_string(), crate::agreements::client_address(&request));
    let code_signed = code.clone();
    let outcome = blocking(move || {
        let request =
            SignRequest { code: &code_signed, version, channel: Channel::H5, client_address: address, shown_sha256: Some(&shown), out_order_no: None };
        signing.sign(&member, &request, crate::signed::unix_seconds())
    })
    .await
    .and_then(|result| result);
    let message = match outcome {
        Ok(_) => notice("ok", t(locale, "signature_recorded")),
        Err(error) => api_notice(locale, &error),
    };
    agreement_page(&session, &agreements, Some((code, version)), Some(message))
}

/// Registers the wallet and agreement pages.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(home)
        .service(recharge_form)
        .service(recharge)
        .service(withdraw_form)
        .service(withdraw)
        .service(card_form)
        .service(card_bind)
        .service(card_verify)
        .service(card_unbind)
        .service(password_form)
        .service(password)
        .service(close_form)
        .service(close)
        .service(agreement)
        .service(sign);
}

#[cfg(test)]
mod tests {
    use super::masked_name;

    #[test]
    fn a_members_name_is_shown_by_each_words_first_character() {
        for (name, shown) in [("Zhang San", "Z**** S**"), ("张三", "张*"), ("欧阳娜娜", "欧***"), (" Li  Si ", "L* S*"), ("", "")] {
            assert_eq!(masked_name(name), shown, "{name:?}");
        }
    }
}
