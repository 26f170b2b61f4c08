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
    let arrival = match body.arrival.as_deref() {
        None | Some("standard") => Arrival::Standard,
        Some("realtime") => Arrival::Realtime,
        Some(_) => return Err(ApiError::invalid("arrival is realtime or standard", "arrival")),
    };
    let (owner, _, _) = account_of(&engine, platform, target).await?;
    let card = crate::ids::parse_prefixed(&body.card_id, "card_")
        .and_then(|id| cards.get(platform, target, id))
        .filter(|c| c.status != "unbound")
        .ok_or(ApiError { param: Some("card_id"), ..ApiError::not_found() })?;
    if card.status != "verified" {
        return Err(ApiError { param: Some("card_id"), ..ApiError::new(422, "card_not_verified", "withdrawals go only to verified cards") });
    }
    let member = members.get(platform, owner).ok_or_else(ApiError::not_found)?;
    // A repeated order number keeps its first routing (the engine then replays or refuses it);
    // a new one is routed now, and the decision is noted durably before the order is submitted.
    let (noted, routed_now) = match cards.withdrawal(platform, number.as_str()) {
        Some(noted) if noted.card != card.id => {
            return Err(ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"));
        }
        Some(noted) => (noted, false),
        None => {
            let account_type = if member.kind == "enterprise" { AccountType::Corporate } else { AccountType::Personal };
            let decision = channels.route(minor, spec.code_str(), spec.exponent, arrival, account_type, micros_now());
            let routing = serde_json::to_value(&decision).expect("decisions serialize");
            let Some(channel) = decision.chosen_id else {
                let reasons: Vec<String> = decision.candidates.iter().map(|c| format!("{}: {}", c.channel, c.rejected_because.unwrap_or("viable"))).collect();
                return Err(ApiError::new(422, "no_channel_available", &format!("no channel can pay this out now ({})", reasons.join("; "))));
            };
            let noted = WithdrawalCard { card: card.id, channel: Some(channel), fee: decision.fee_minor, routing: Some(routing) };
            let (noting, record) = (cards.get_ref().clone(), noted.clone());
            if let Err(error) = blocking(move || noting.note_withdrawal(platform, number.as_str(), record)).await? {
                channels.release(channel, minor, micros_now());
                return Err(error);
            }
            (noted, true)
        }
    };
    let channel = noted.channel.ok_or_else(|| ApiError::unavailable("a withdrawal was noted without a channel".into()))?;
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "withdrawal")
        .value("amount", &spec.format(minor))
        .value("currency", &body.currency)
        .value("account_id", &body.account_id)
        .value("card_id", &body.card_id)
        .value("channel", &crate::channels::name(channel))
        .value("fee", &spec.format(noted.fee))
        .value("arrival", body.arrival.as_deref().unwrap_or("standard"))
        .value("routing", &noted.routing);
    let command = Command::Withdraw { account: target, currency: currency_id, amount: minor, fee: noted.fee, channel };
    let prepared = Prepared::new(Envelope { platform, out_order_no: Some(number), command }, view, true);
    let reply = crate::accounts::execute(&engine, prepared.envelope.clone()).await?;
    if !reply.is_ok() && routed_now {
        channels.release(channel, minor, micros_now());
    }
    if reply.is_ok() && !reply.replayed {
        simulator.submit(Work::Withdrawal { order: OrderId(reply.id), card_no: card.card_no.clone(), channel }, spec.format(minor));
        if minor > ALERT_ABOVE_MAJOR * 10i64.pow(spec.exponent as u32) {
            let text = format!("Alert: a withdrawal of {} {} to your card ending {} is on its way.", spec.format(minor), spec.code_str(), &card.card_no[card.card_no.len() - 4..]);
            let order_id = Some(crate::orders::public_order_id(OrderId(reply.id)));
            let notifications = notifications.get_ref().clone();
            blocking(move || notifications.send(&member, "large_withdrawal_alert", text, order_id)).await??;
        }
    }
    crate::orders::answer(prepared, &reply)
}

fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Registers the withdrawal route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_withdrawal);
}
