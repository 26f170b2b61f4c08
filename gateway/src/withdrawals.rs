//! `POST /v1/withdrawals` (API.md): money out to a verified card. The account is debited
//! `amount + fee` from `withdrawable` at once (`processing`); the channel's callback makes the
//! order `succeeded`, or `failed` with the funds and fee returned. The channel is routed
//! (`channels::Channels::route`: the cheapest viable channel meeting the requested arrival) and the
//! decision, with every candidate and why it was or was not viable, is answered and kept with the
//! order. Over 50,000.00 the member gets an alert.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::OrderId;
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::accounts::account_of;
use crate::cards::{Cards, WithdrawalCard};
use crate::channels::{AccountType, Arrival, Channels};
use crate::error::{blocking, ApiError};
use crate::members::Members;
use crate::notifications::Notifications;
use crate::orders::{account, amount, currency, out_order_no, Fields, Prepared};
use crate::simulator::{Simulator, Work};
use crate::v1::Signed;

/// Withdrawals above this many major units alert the member (API.md).
pub const ALERT_ABOVE_MAJOR: i64 = 50_000;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WithdrawalBody {
    out_order_no: String,
    account_id: String,
    card_id: String,
    amount: String,
    currency: String,
    arrival: Option<String>,
}

#[utoipa::path(post, path = "/v1/withdrawals", tag = "money", request_body = crate::withdrawals::WithdrawalBody, responses((status = 201, description = "Success", body = crate::openapi::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/withdrawals")]
#[allow(clippy::too_many_arguments)]
pub async fn create_withdrawal(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
    simulator: web::Data<Simulator>,
    channels: web::Data<Arc<Channels>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<WithdrawalBody>()?;
    let platform = signed.platform.id;
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(&engine, &body.currency)?;
    let minor = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    let arrival = parse_arrival(body.arrival.as_deref())?;
    let (owner, _, _) = account_of(&engine, platform, target).await?;
    let card = crate::ids::parse_prefixed(&body.card_id, "card_")
        .and_then(|id| cards.get(platform, target, id))
        .filter(|c| c.status != "unbound")
        .ok_or(ApiError { param: Some("card_id"), ..ApiError::not_found() })?;
    if card.status != "verified" {
        return Err(ApiError { param: Some("card_id"), ..ApiError::new(422, "card_not_verified", "withdrawals go only to verified cards") });
    }
    let member = members.get(platform, owner).ok_or_else(ApiError::not_found)?;
    let account_type = if member.kind == "enterprise" { AccountType::Corporate } else { AccountType::Personal };
    let payout = Payout { platform, number, target, minor, arrival, account_type, card_id: card.id, card_no: card.card_no.clone(), alert: Some(member) };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "withdrawal")
        .value("amount", &spec.format(minor))
        .value("currency", &body.currency)
        .value("account_id", &body.account_id)
        .value("card_id", &body.card_id)
        .value("arrival", body.arrival.as_deref().unwrap_or("standard"));
    submit(&engine, &cards, &notifications, &simulator, &channels, currency_id, spec, payout, view).await
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
    /// The member alerted over 50,000.00 (withdrawals).
    alert: Option<crate::members::Member>,
}

/// Routes (or, for a repeated order number, reuses the first routing of) a payout, notes it,
/// submits it and sends it to the bank.
#[allow(clippy::too_many_arguments)]
async fn submit(
    engine: &Arc<Engine>,
    cards: &Arc<Cards>,
    notifications: &Arc<Notifications>,
    simulator: &Simulator,
    channels: &Channels,
    currency_id: engine::money::CurrencyId,
    spec: engine::money::CurrencySpec,
    payout: Payout,
    mut view: Fields,
) -> Result<HttpResponse, ApiError> {
    let Payout { platform, number, target, minor, arrival, account_type, card_id, card_no, alert } = payout;
    // A repeated order number keeps its first routing (the engine then replays or refuses it);
    // a new one is routed now, and the decision is noted durably before the order is submitted.
    let (noted, routed_now) = match cards.withdrawal(platform, number.as_str()) {
        Some(noted) if noted.card != card_id || noted.card_no.as_ref().is_some_and(|n| *n != card_no) => {
            return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
        }
        Some(noted) => (noted, false),
        None => {
            let decision = channels.route(minor, spec.code_str(), spec.exponent, arrival, account_type, micros_now());
            let routing = serde_json::to_value(&decision).expect("decisions serialize");
            let Some(channel) = decision.chosen_id else {
                let reasons: Vec<String> = decision.candidates.iter().map(|c| format!("{}: {}", c.channel, c.rejected_because.unwrap_or("viable"))).collect();
                return Err(ApiError::new(422, "no_channel_available", &format!("no channel can pay this out now ({})", reasons.join("; "))));
            };
            let noted = WithdrawalCard {
                card: card_id,
                card_no: (card_id == 0).then(|| card_no.clone()),
                channel: Some(channel),
                fee: decision.fee_minor,
                routing: Some(routing),
                arrival: Some(arrival),
                account_type: Some(account_type),
                tried: vec![channel],
            };
            let (noting, record) = (cards.clone(), noted.clone());
            if let Err(error) = blocking(move || noting.note_withdrawal(platform, number.as_str(), record)).await? {
                channels.release(channel, minor, micros_now());
                return Err(error);
            }
            (noted, true)
        }
    };
    let channel = noted.channel.ok_or_else(|| ApiError::unavailable("a withdrawal was noted without a channel".into()))?;
    view.value("channel", &crate::channels::name(channel)).value("fee", &spec.format(noted.fee)).value("routing", &noted.routing);
    // (A replay answers the routing as first decided; GET /v1/orders/{id} shows fallbacks.)
    let command = Command::Withdraw { account: target, currency: currency_id, amount: minor, fee: noted.fee, channel };
    let prepared = Prepared::new(Envelope { platform, out_order_no: Some(number), command }, view, true);
    let reply = crate::accounts::execute(engine, prepared.envelope.clone()).await?;
    if !reply.is_ok() && routed_now {
        channels.release(channel, minor, micros_now());
    }
    if reply.is_ok() && !reply.replayed {
        simulator.submit(Work::Withdrawal { order: OrderId(reply.id), card_no: card_no.clone(), channel }, spec.format(minor));
        if let (Some(member), true) = (alert, minor > ALERT_ABOVE_MAJOR * 10i64.pow(spec.exponent as u32)) {
            let text = format!(
                "Alert: a withdrawal of {} {} to your card ending {} is on its way.",
                spec.format(minor),
                spec.code_str(),
                &card_no[card_no.len() - 4..]
            );
            let order_id = Some(crate::orders::public_order_id(OrderId(reply.id)));
            let notifications = notifications.clone();
            blocking(move || notifications.send(&member, "large_withdrawal_alert", text, order_id)).await??;
        }
    }
    crate::orders::answer(prepared, &reply)
}

/// `POST /v1/payouts` (代付, payment on behalf; an addition to API.md): from one of the
/// platform's accounts to an outside card (Luhn-checked, not bound), routed like a withdrawal.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayoutBody {
    out_order_no: String,
    account_id: String,
    card_no: String,
    holder_name: String,
    amount: String,
    currency: String,
    arrival: Option<String>,
    /// personal (default) or corporate: which channels may serve the receiving account.
    account_type: Option<String>,
}

#[utoipa::path(post, path = "/v1/payouts", tag = "money", request_body = crate::withdrawals::PayoutBody, responses((status = 201, description = "Success", body = crate::openapi::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/payouts")]
#[allow(clippy::too_many_arguments)]
pub async fn create_payout(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    cards: web::Data<Arc<Cards>>,
    notifications: web::Data<Arc<Notifications>>,
    simulator: web::Data<Simulator>,
    channels: web::Data<Arc<Channels>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PayoutBody>()?;
    let platform = signed.platform.id;
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(&engine, &body.currency)?;
    let minor = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    let arrival = parse_arrival(body.arrival.as_deref())?;
    let account_type = match body.account_type.as_deref() {
        None | Some("personal") => AccountType::Personal,
        Some("corporate") => AccountType::Corporate,
        Some(_) => return Err(ApiError::invalid("account_type is personal or corporate", "account_type")),
    };
    if !crate::cards::valid_card_no(&body.card_no) {
        return Err(ApiError { param: Some("card_no"), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
    }
    if body.holder_name.trim().is_empty() || body.holder_name.chars().count() > 64 {
        return Err(ApiError::invalid("holder_name must be 1 to 64 characters", "holder_name"));
    }
    account_of(&engine, platform, target).await?;
    let payout = Payout { platform, number, target, minor, arrival, account_type, card_id: 0, card_no: body.card_no.clone(), alert: None };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "withdrawal")
        .value("payout", &true)
        .value("amount", &spec.format(minor))
        .value("currency", &body.currency)
        .value("account_id", &body.account_id)
        .value("card_no_masked", &format!("{}****{}", &body.card_no[..4], &body.card_no[body.card_no.len() - 4..]))
        .value("arrival", body.arrival.as_deref().unwrap_or("standard"));
    submit(&engine, &cards, &notifications, &simulator, &channels, currency_id, spec, payout, view).await
}

/// The requested arrival (`standard` when absent).
fn parse_arrival(text: Option<&str>) -> Result<Arrival, ApiError> {
    match text {
        None | Some("standard") => Ok(Arrival::Standard),
        Some("realtime") => Ok(Arrival::Realtime),
        Some(_) => Err(ApiError::invalid("arrival is realtime or standard", "arrival")),
    }
}

fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Registers the withdrawal route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_withdrawal).service(create_payout);
}

/// Routing's fallback (the clearing issue, item 2): a channel failed withdrawal `order`
/// (`reason`: `failed`, or `timeout` when it never received it); if
/// another channel can pay it out now, the order moves there (`RerouteWithdrawal`, fee
/// difference settled with the account) and the bank is asked again. Returns the new channel's
/// name, or `None` when nothing else can take it (the order then fails, funds back).
pub async fn fall_back(
    engine: &Arc<Engine>,
    channels: &Channels,
    cards: &Arc<Cards>,
    simulator: &Simulator,
    order: OrderId,
    reason: &'static str,
) -> Result<Option<String>, ApiError> {
    let found = crate::orders::read_order(engine, 0, order, |state, o| match o.detail {
        engine::ledger::types::OrderDetail::Withdrawal { channel, .. } if o.status == engine::ledger::types::OrderStatus::Processing => {
            Some((o.platform, o.out_order_no, channel, o.amount, state.currencies[o.currency.0 as usize]))
        }
        _ => None,
    })
    .await?
    .flatten();
    let Some((platform, Some(number), failed, amount, spec)) = found else { return Ok(None) };
    let Some(mut noted) = cards.withdrawal(platform, number.as_str()) else { return Ok(None) };
    let (Some(arrival), Some(account_type)) = (noted.arrival, noted.account_type) else { return Ok(None) };
    if !noted.tried.contains(&failed) {
        noted.tried.push(failed);
    }
    let decision = channels.route_excluding(amount, spec.code_str(), spec.exponent, arrival, account_type, micros_now(), &noted.tried);
    let Some(next) = decision.chosen_id else { return Ok(None) };
    let command = Command::RerouteWithdrawal { order, channel: next, fee: decision.fee_minor };
    let reply = crate::accounts::execute(engine, Envelope { platform: 0, out_order_no: None, command }).await?;
    if !reply.is_ok() {
        channels.release(next, amount, micros_now());
        return Ok(None);
    }
    noted.tried.push(next);
    noted.channel = Some(next);
    noted.fee = decision.fee_minor;
    let fallback = serde_json::json!({"from": crate::channels::name(failed), "to": crate::channels::name(next), "reason": reason, "fee": spec.format(decision.fee_minor), "candidates": decision.candidates});
    if let Some(routing) = noted.routing.as_mut() {
        routing["chosen"] = serde_json::json!(crate::channels::name(next));
        match routing.get_mut("fallbacks").and_then(|f| f.as_array_mut()) {
            Some(list) => list.push(fallback),
            None => routing["fallbacks"] = serde_json::json!([fallback]),
        }
    }
    let card_no = cards.withdrawal_card_no(platform, number.as_str()).unwrap_or_default();
    let (noting, record) = (cards.clone(), noted);
    blocking(move || noting.note_withdrawal(platform, number.as_str(), record)).await??;
    simulator.submit(Work::Withdrawal { order, card_no, channel: next }, spec.format(amount));
    Ok(Some(crate::channels::name(next)))
}
