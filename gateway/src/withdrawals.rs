//! `POST /v1/withdrawals` (API.md): money out to a verified card. The account is debited
//! `amount + fee` from `withdrawable` at once (`processing`); the channel's callback makes the
//! order `succeeded`, or `failed` with the funds and fee returned. The clearing actor routes it
//! (the cheapest viable channel meeting the requested arrival), notes the decision with every
//! candidate and why it was or was not viable, submits it and hands it to the bank; the decision
//! is answered and kept with the order. Over 50,000.00 the member gets an alert.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use clearing_actor::channels::{AccountType, Arrival, ChannelSet, Direction};
use clearing_actor::payouts::PayoutRequest;
use clearing_actor::Clearing;
use engine::ledger::types::{OrderId, Reply};
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::accounts::account_of;
use crate::cards::Cards;
use crate::error::{blocking, ApiError};
use crate::members::Members;
use crate::notifications::Notifications;
use crate::orders::{account, amount, currency, out_order_no, Fields};
use crate::signed::Signed;

/// A replayed large withdrawal looks for its alert among the member's newest this many
/// notifications, and writes it if it is not there.
const ALERT_LOOKBACK: usize = 100;
/// Withdrawals above this many major units alert the member (API.md).
pub const ALERT_ABOVE_MAJOR: i64 = 50_000;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalBody {
    pub out_order_no: String,
    pub account_id: String,
    pub card_id: String,
    pub amount: String,
    pub currency: String,
    pub arrival: Option<String>,
}

#[utoipa::path(post, path = "/v1/withdrawals", tag = "money", request_body = crate::withdrawals::WithdrawalBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/withdrawals")]
#[allow(clippy::too_many_arguments)]
pub async fn create_withdrawal(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<WithdrawalBody>()?;
    let withdrawn = withdraw(&engine, &cards, &members, &notifications, &clearing, signed.platform.id, &body).await?;
    crate::orders::answer_fields(&withdrawn.view, true, &withdrawn.reply)
}

/// A payout the clearing actor routed and submitted: the order's response members, the
/// engine's reply (a refusal is in it) and the channel and fee routing chose.
pub struct Submitted {
    pub view: Fields,
    pub reply: Reply,
    pub channel: String,
    pub fee: engine::money::Minor,
}

/// Withdraws to a verified card of the account (the API and the pages share it): checked here,
/// routed, noted, submitted and sent to the bank by the clearing actor (a refusal is in the
/// reply; render it with `orders::answer_fields`).
pub async fn withdraw(
    engine: &Arc<Engine>,
    cards: &Arc<Cards>,
    members: &Arc<Members>,
    notifications: &Arc<Notifications>,
    clearing: &Clearing,
    platform: u32,
    body: &WithdrawalBody,
) -> Result<Submitted, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let minor = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    let arrival = parse_arrival(body.arrival.as_deref())?;
    let (owner, _, _) = account_of(engine, platform, target).await?;
    let card = match cards.verified(platform, target, &body.card_id, "withdrawals go only to verified cards").await {
        Ok(card) => card,
        Err(refusal) => {
            // A retry of a withdrawal this card was accepted for (unbound or locked since):
            // answered as its order is (before session 60, 404 or 422 for a payout on its way,
            // which a platform could take for "not done" and pay out again under another
            // number). The clearing actor checks the rest of the body against the note.
            let noted = clearing.notes(platform, vec![number.as_str().to_string()]).await?.pop().flatten();
            let probe = engine::ledger::command::Envelope {
                platform,
                out_order_no: Some(number),
                command: engine::ledger::command::Command::Withdraw { account: target, currency: currency_id, amount: 0, fee: 0, channel: 0 },
            };
            match (noted, cards.any_named(platform, target, &body.card_id).await?) {
                (Some(note), Some(card))
                    if note.card == card.id
                        && note.card_no.as_deref() == Some(card.card_no.as_str())
                        && crate::recharges::order_held(engine, &probe).await? =>
                {
                    card
                }
                _ => return Err(refusal),
            }
        }
    };
    let reading = members.clone();
    let member = crate::error::blocking(move || reading.get(platform, owner)).await??.ok_or_else(ApiError::not_found)?;
    let account_type = if member.kind == "enterprise" { AccountType::Corporate } else { AccountType::Personal };
    let payout = Payout {
        platform,
        number,
        target,
        minor,
        arrival,
        account_type,
        card_id: card.id,
        card_no: card.card_no.clone(),
        holder_name: None,
        alert: Some(member),
    };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "withdrawal")
        .value("amount", &spec.format(minor))
        .value("currency", &body.currency)
        .value("account_id", &body.account_id)
        .value("card_id", &body.card_id)
        .value("arrival", body.arrival.as_deref().unwrap_or("standard"));
    submit(clearing, notifications, currency_id, spec, payout, view).await
}

/// The channel a payout of `amount` (minor units of `spec`) would most likely take and its fee:
/// the cheapest enabled money-out channel whose currency, account type, order limits and
/// arrival fit (what a page shows before the member confirms; routing at submission also
/// weighs windows, daily caps and health, and its answer is the one that counts).
pub fn quote(
    channels: &ChannelSet,
    spec: &engine::money::CurrencySpec,
    amount: engine::money::Minor,
    arrival: Arrival,
    account_type: AccountType,
) -> Option<(String, engine::money::Minor)> {
    channels
        .all()
        .iter()
        .filter(|c| c.direction == Direction::Out && c.enabled && c.currency == spec.code_str())
        .filter(|c| match account_type {
            AccountType::Personal => c.serves_personal,
            AccountType::Corporate => c.serves_corporate,
        })
        .filter(|c| (c.order_min..=c.order_max).contains(&amount) && (arrival == Arrival::Standard || c.arrival == Arrival::Realtime))
        .min_by_key(|c| (c.fee(amount), c.eta_minutes, c.id))
        .map(|c| (c.name.clone(), c.fee(amount)))
}

/// A payout to a card: a member's verified card (withdrawal) or an outside one (代付).
struct Payout {
    platform: u32,
    number: engine::ledger::command::OutOrderNo,
    target: engine::ledger::types::AccountId,
    minor: engine::money::Minor,
    arrival: Arrival,
    account_type: AccountType,
    /// 0 for an outside card.
    card_id: u64,
    card_no: String,
    /// The outside card's holder (代付), as the platform named it.
    holder_name: Option<String>,
    /// The member alerted over 50,000.00 (withdrawals).
    alert: Option<crate::members::Member>,
}

/// Has the clearing actor route (or, for a repeated order number, reuse the first routing of) a
/// payout, note it, submit it and send it to the bank; answers the order with its routing.
async fn submit(
    clearing: &Clearing,
    notifications: &Arc<Notifications>,
    currency_id: engine::money::CurrencyId,
    spec: engine::money::CurrencySpec,
    payout: Payout,
    mut view: Fields,
) -> Result<Submitted, ApiError> {
    let Payout { platform, number, target, minor, arrival, account_type, card_id, card_no, holder_name, alert } = payout;
    let request = PayoutRequest {
        platform,
        number,
        account: target,
        currency: currency_id,
        spec,
        amount: minor,
        arrival,
        account_type,
        card_id,
        card_no: card_no.clone(),
        holder_name,
    };
    let outcome = clearing.payout(request).await?;
    // (A replay answers the routing as first decided; GET /v1/orders/{id} shows fallbacks.)
    view.value("channel", &outcome.channel).value("fee", &spec.format(outcome.fee)).value("routing", &outcome.routing);
    let reply = outcome.reply;
    if reply.is_ok() {
        if let (Some(member), true) = (alert, minor > ALERT_ABOVE_MAJOR * 10i64.pow(spec.exponent as u32)) {
            let text = format!(
                "Alert: a withdrawal of {} {} to your card ending {} is on its way.",
                spec.format(minor),
                spec.code_str(),
                &card_no[card_no.len().saturating_sub(4)..]
            );
            let order_id = crate::orders::public_order_id(OrderId(reply.id));
            let notifications = notifications.clone();
            // The alert is written after the payout: a replay writes it when the first request
            // did not (a stop in between, before session 58, lost it for good), and a request
            // and its retry at once write it once (the check and the write under the member's
            // lock, since session 59). The payout is accepted and durable: a failed alert is
            // logged, never answered as an error (before session 58 it was, and a member's page
            // offered a fresh form whose new order number withdrew a second time).
            let written = blocking(move || notifications.send_once(&member, "large_withdrawal_alert", text, &order_id, ALERT_LOOKBACK));
            match written.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!("withdrawals: the large withdrawal alert of order {} was not written: {}", reply.id, error.message),
                Err(_) => tracing::warn!("withdrawals: the large withdrawal alert of order {} was not written: the server is stopping", reply.id),
            }
        }
    }
    Ok(Submitted { view, reply, channel: outcome.channel, fee: outcome.fee })
}

/// `POST /v1/payouts` (代付, payment on behalf; an addition to API.md): from one of the
/// platform's accounts to an outside card (Luhn-checked, not bound), routed like a withdrawal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutBody {
    pub out_order_no: String,
    pub account_id: String,
    pub card_no: String,
    pub holder_name: String,
    pub amount: String,
    pub currency: String,
    pub arrival: Option<String>,
    /// personal (default) or corporate: which channels may serve the receiving account.
    pub account_type: Option<String>,
}

#[utoipa::path(post, path = "/v1/payouts", tag = "money", request_body = crate::withdrawals::PayoutBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/payouts")]
pub async fn create_payout(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    notifications: web::Data<Arc<Notifications>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PayoutBody>()?;
    let submitted = pay_out(&engine, &notifications, &clearing, signed.platform.id, &body).await?;
    crate::orders::answer_fields(&submitted.view, true, &submitted.reply)
}

/// A 代付 payout checked: what routing needs (`route`) and the order's response members.
pub struct CheckedPayout {
    payout: Payout,
    currency_id: engine::money::CurrencyId,
    pub spec: engine::money::CurrencySpec,
    pub view: Fields,
}

impl CheckedPayout {
    /// What the clearing actor routes on (for a read-only `Clearing::quote`).
    pub fn route(&self) -> clearing_actor::channels::RouteRequest {
        clearing_actor::channels::RouteRequest {
            amount: self.payout.minor,
            currency: self.spec,
            arrival: self.payout.arrival,
            account_type: self.payout.account_type,
        }
    }

    /// The account debited.
    pub fn account(&self) -> engine::ledger::types::AccountId {
        self.payout.target
    }
}

/// Checks a 代付 payout of `platform` (the account is the platform's, the card number passes
/// Luhn, the holder's name is 1 to 64 characters); the API and the pages share it.
pub async fn check_payout(engine: &Arc<Engine>, platform: u32, body: &PayoutBody) -> Result<CheckedPayout, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let minor = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    let arrival = parse_arrival(body.arrival.as_deref())?;
    let account_type = match body.account_type.as_deref() {
        None | Some("personal") => AccountType::Personal,
        Some("corporate") => AccountType::Corporate,
        Some(_) => return Err(ApiError::invalid("account_type is personal or corporate", "account_type")),
    };
    if !crate::cards::valid_card_no(&body.card_no) {
        return Err(ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
    }
    if !crate::plain_text(&body.holder_name, false) || body.holder_name.chars().count() > 64 {
        return Err(ApiError::invalid("holder_name must be 1 to 64 characters, not all blank, without control characters", "holder_name"));
    }
    account_of(engine, platform, target).await?;
    let holder_name = Some(body.holder_name.clone());
    let payout = Payout { platform, number, target, minor, arrival, account_type, card_id: 0, card_no: body.card_no.clone(), holder_name, alert: None };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "withdrawal")
        .value("payout", &true)
        .value("amount", &spec.format(minor))
        .value("currency", &body.currency)
        .value("account_id", &body.account_id)
        .value("card_no_masked", &masked_card_no(&body.card_no))
        .value("arrival", body.arrival.as_deref().unwrap_or("standard"));
    Ok(CheckedPayout { payout, currency_id, spec, view })
}

/// A card number as its first and last four digits (`6222****1234`).
pub fn masked_card_no(card_no: &str) -> String {
    let head: String = card_no.chars().take(4).collect();
    let tail: String = card_no.chars().skip(card_no.chars().count().saturating_sub(4)).collect();
    format!("{head}****{tail}")
}

/// Checks a 代付 payout and has the clearing actor route, note, submit and hand it to the bank
/// (the API and the pages share it; a refusal is in the reply).
pub async fn pay_out(
    engine: &Arc<Engine>,
    notifications: &Arc<Notifications>,
    clearing: &Clearing,
    platform: u32,
    body: &PayoutBody,
) -> Result<Submitted, ApiError> {
    let CheckedPayout { payout, currency_id, spec, view } = check_payout(engine, platform, body).await?;
    submit(clearing, notifications, currency_id, spec, payout, view).await
}

/// The requested arrival (`standard` when absent).
pub fn parse_arrival(text: Option<&str>) -> Result<Arrival, ApiError> {
    match text {
        None | Some("standard") => Ok(Arrival::Standard),
        Some("realtime") => Ok(Arrival::Realtime),
        Some(_) => Err(ApiError::invalid("arrival is realtime or standard", "arrival")),
    }
}

/// Registers the withdrawal route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_withdrawal).service(create_payout);
}
