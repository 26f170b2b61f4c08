//! The cashier page (`/h5/cashier`): shows the payment a cashier session carries (payer,
//! payees, amount, description) and takes the member's 6-digit payment password. The password
//! is always checked here, whatever the platform's `require_payment_password` (that is what a
//! cashier is for); five wrong in a row lock payments (`passwords`). The payment's own order
//! number makes a second submission the same order.

use std::sync::Arc;

use crate::error::ApiError;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use engine::Engine;
use maud::{html, Markup};

use crate::h5::{checked_form, ok_page, session_for, H5Sessions, PageError, Purpose, Session};
use crate::h5_text::{notice, page, t, Locale};
use crate::members::{Member, Members};
use crate::passwords::{Passwords, FAILURES_MAX};
use crate::platforms::Platforms;

/// A payee as the cashier shows it: account id and its member's name.
/// An account that is not the platform's shows no name; a member that cannot be read is an
/// error (a 5xx), not a blank.
async fn payee_names(engine: &Arc<Engine>, members: &Members, platform: u32, session: &Session) -> Result<Vec<(String, String, String)>, ApiError> {
    let Some(payment) = &session.grant.payment else { return Ok(Vec::new()) };
    let mut shown = Vec::new();
    for leg in &payment.payees {
        let owner = match crate::accounts::parse_account_id(&leg.account_id) {
            Some(id) => crate::accounts::owner_of(engine, platform, id).await.ok(),
            None => None,
        };
        let name = match owner {
            Some(owner) => members.get(platform, owner)?.map(|m| m.name),
            None => None,
        };
        shown.push((leg.account_id.clone(), name.unwrap_or_default(), leg.amount.clone()));
    }
    Ok(shown)
}

/// The cashier page, with a notice (an error and the tries left, or the payment done).
async fn cashier_page(
    engine: &Arc<Engine>,
    members: &Members,
    passwords: &Passwords,
    session: &Session,
    message: Option<Markup>,
) -> Result<HttpResponse, PageError> {
    let locale = session.locale;
    let payment = session.grant.payment.as_ref().ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let payer = members.get(session.grant.platform, session.grant.member).map_err(|e| PageError::api(e, locale))?.map(|m: Member| m.name).unwrap_or_default();
    let payees = payee_names(engine, members, session.grant.platform, session).await.map_err(|e| PageError::api(e, locale))?;
    let payer_account = crate::accounts::parse_account_id(&payment.payer_account_id);
    let failures = payer_account.map_or(Ok(None), |a| passwords.failures(a)).map_err(|e| PageError::api(e, locale))?.unwrap_or(0);
    let body = html! {
        @if let Some(message) = message { (message) }
        section {
            p.amount { (payment.amount) " " (payment.currency) }
            dl {
                dt { (t(locale, "payer")) } dd { (payer) " · " (payment.payer_account_id) }
                dt { (t(locale, "payees")) }
                dd { @for (account, name, amount) in &payees { div { (name) " · " (account) " · " (amount) } } }
                @if let Some(description) = &payment.description { dt { (t(locale, "description")) } dd { (description) } }
                dt { (t(locale, "order")) } dd { (payment.out_order_no) }
            }
        }
        @if let Some(order) = &session.paid_order {
            (notice("ok", t(locale, "paid")))
            p.muted { (t(locale, "order")) ": " span #order-id { (order) } }
        } @else if failures < FAILURES_MAX {
            form method="post" action="/h5/cashier" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="password" { (t(locale, "enter_password")) }
                input.pin #password type="password" name="password" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" minlength="6" autocomplete="off" required;
                @if failures > 0 { p.muted { (t(locale, "tries_left")) ": " span #tries-left { (FAILURES_MAX - failures) } } }
                button #pay type="submit" { (t(locale, "pay")) }
            }
        }
        @if let Some(url) = &session.grant.return_url { p { a.button.secondary href=(url) { (t(locale, "back_to_platform")) } } }
    };
    Ok(ok_page(page(locale, t(locale, "cashier"), body)))
}

/// `GET /h5/cashier`.
#[get("/h5/cashier")]
pub async fn show(
    request: HttpRequest,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
    passwords: web::Data<Arc<Passwords>>,
) -> Result<HttpResponse, PageError> {
    let (_, session) = session_for(&request, &sessions, &[Purpose::Cashier])?;
    let failures = payer_failures(&passwords, &session)?;
    let message =
        (failures >= FAILURES_MAX && session.paid_order.is_none()).then(|| notice("error", &crate::h5_text::error_text(session.locale, "payment_locked", "")));
    cashier_page(&engine, &members, &passwords, &session, message).await
}

fn payer_failures(passwords: &Passwords, session: &Session) -> Result<u8, PageError> {
    let payer = session.grant.payment.as_ref().and_then(|p| crate::accounts::parse_account_id(&p.payer_account_id));
    Ok(payer.map_or(Ok(None), |a| passwords.failures(a)).map_err(|e| PageError::api(e, session.locale))?.unwrap_or(0))
}

fn error_notice(locale: Locale, error: &crate::error::ApiError) -> Markup {
    let text = crate::h5_text::error_text(locale, error.code, &error.message);
    html! { (notice("error", &text)) p.muted { "code: " span.code { (error.code) } } }
}

/// `POST /h5/cashier`: checks the password, then submits the payment.
#[post("/h5/cashier")]
#[allow(clippy::too_many_arguments)]
pub async fn pay(
    request: HttpRequest,
    body: crate::h5::FormBody,
    sessions: web::Data<Arc<H5Sessions>>,
    engine: web::Data<Arc<Engine>>,
    members: web::Data<Arc<Members>>,
    passwords: web::Data<Arc<Passwords>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, PageError> {
    let (cookie, session) = session_for(&request, &sessions, &[Purpose::Cashier])?;
    let form = checked_form(&body, &session)?;
    let locale = session.locale;
    let payment = session.grant.payment.clone().ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let platform = platforms.get(session.grant.platform).ok_or_else(|| PageError::new(404, "not_found", locale))?;
    let password = form.get("password").to_string();
    if !crate::passwords::valid_password(&password) {
        let error = crate::error::ApiError::new(400, "invalid_payment_password", "a payment password is exactly 6 digits");
        return cashier_page(&engine, &members, &passwords, &session, Some(error_notice(locale, &error))).await;
    }
    let body = payment.with_password(Some(password.clone()));
    let outcome = async {
        let prepared = crate::payments::prepare_payment(&engine, &clearing, &platform, &body).await?;
        let payer = crate::accounts::parse_account_id(&payment.payer_account_id).ok_or_else(crate::error::ApiError::not_found)?;
        // A number the engine holds an order under (a resubmitted form after the payment went
        // through) is answered by the engine, as the API does (helper 111).
        if !crate::recharges::order_held(&engine, &prepared.envelope).await? {
            let checking = passwords.get_ref().clone();
            // argon2 takes tens of milliseconds of CPU: off the async workers.
            crate::passwords::hashing(u64::from(platform.id), move || checking.verify(payer, Some(&password))).await??;
            // The ledger keeps its refusal with the session's order number (journal format 5),
            // so a payment the payer's funds plainly cannot cover is not submitted: the member
            // may top up and pay again within the session. (One the ledger refuses all the
            // same, funds spent meanwhile, stays refused: the platform makes a new session.)
            // After the password: whoever holds the session learns nothing of the balance
            // without it, and a locked payer reads `payment_locked` (helper 117#5).
            if let engine::ledger::command::Command::Payment { payer, amount, .. } = prepared.envelope.command {
                let (reading, shard) = (engine.get_ref().clone(), payer.shard(engine.config().shard_count));
                let available = crate::error::blocking(move || reading.read_shard(shard, move |state| state.account(payer).map(|a| a.available()))).await??;
                if available.is_some_and(|available| available < amount) {
                    return Err(crate::orders::rejection(engine::result::ResultCode::InsufficientFunds));
                }
            }
        }
        let reply = crate::recharges::execute_and_dispatch(&engine, clearing.bank(), prepared.envelope.clone()).await?;
        if !reply.is_ok() {
            return Err(crate::orders::rejection(reply.code));
        }
        Ok::<String, crate::error::ApiError>(crate::orders::public_order_id(engine::ledger::types::OrderId(reply.id)))
    }
    .await;
    match outcome {
        Ok(order) => {
            sessions.update(&cookie, |s| s.paid_order = Some(order.clone()));
            let mut session = session;
            session.paid_order = Some(order);
            cashier_page(&engine, &members, &passwords, &session, None).await
        }
        Err(error) => cashier_page(&engine, &members, &passwords, &session, Some(error_notice(locale, &error))).await,
    }
}

/// Registers the cashier.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(show).service(pay);
}
