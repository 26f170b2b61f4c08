//! The bank simulator's HTTP side: its signed callbacks (`POST /channels/simulator/callback`,
//! verified here and handed on: money-in verdicts to the engine, payout verdicts to the clearing
//! actor) and its pages (a card holder's view, a channel's daily statement file). The simulator
//! itself is the `banksim` crate.

use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use banksim::SignatureError;
use clearing_actor::payouts::PayoutVerdict;
use clearing_actor::Clearing;
use engine::ledger::command::{Command, Envelope};
use engine::result::ResultCode;
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::admin::AdminToken;
use crate::error::ApiError;
use crate::orders::parse_order_id;
use crate::platforms::Platforms;

pub use banksim::{signature_header, Simulator, DEPOSIT_REMARK};

/// The callback a bank sends when it has decided an order (as the gateway reads it).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// `recharge` (money in) or `withdrawal` (money out).
    pub kind: String,
    pub order_id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub amount: String,
    /// The channel the verdict is about (required for withdrawals since session 62): a verdict
    /// of a channel the order has left since (after a fallback) is stale and ignored.
    #[serde(default)]
    pub channel: Option<String>,
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The longest bank callback body read.
pub const CALLBACK_BYTES_MAX: usize = 4096;

/// `POST /channels/simulator/callback`: the bank's verdict on an order, signed with the channel key.
#[utoipa::path(post, path = "/channels/simulator/callback", tag = "simulator", request_body = crate::simulator::Callback, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("channel_signature" = [])))]
#[post("/channels/simulator/callback")]
pub async fn receive_callback(
    request: HttpRequest,
    payload: web::Payload,
    limits: web::Data<crate::signed::BodyLimits>,
    simulator: web::Data<Simulator>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    // A verdict is a few hundred bytes: anyone may post here, so no more is read before its
    // signature is checked (the server's limit for platforms' bodies is 16 MiB; helper 107).
    let body = crate::signed::bounded_body(&request, payload.into_inner(), CALLBACK_BYTES_MAX, limits.timeout).await?;
    let header = request.headers().get("X-Channel-Signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    banksim::verify_signature(simulator.key(), header, &body, unix_seconds()).map_err(|error| match error {
        SignatureError::Bad => ApiError::unauthenticated("missing or bad X-Channel-Signature"),
        SignatureError::OutOfWindow => ApiError::new(401, "timestamp_out_of_window", "the callback's timestamp is too far off"),
    })?;
    let callback: Callback = crate::signed::parse_json(&body)?;
    let order = parse_order_id(&callback.order_id).ok_or_else(ApiError::not_found)?;
    let succeeded = match callback.status.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => return Err(ApiError::invalid("status is succeeded or failed", "status")),
    };
    // The bank's amount is the order's: a verdict about another amount is not about this order
    // as we have it, and moves nothing (its statement line opens a case). Since session 62
    // (helper 98: the amount was read and never compared).
    let shard = order.shard(engine.config().shard_count);
    let reader = engine.get_ref().clone();
    let found = crate::error::blocking(move || {
        reader.read_shard(shard, move |state| state.platform_order(0, order).map(|o| (o.amount, state.currencies[o.currency.0 as usize])))
    })
    .await??;
    if let Some((amount, spec)) = found {
        if spec.parse(&callback.amount) != Some(amount) {
            return Err(ApiError::invalid("amount is not the order's amount", "amount"));
        }
    }
    match callback.kind.as_str() {
        "withdrawal" => {
            // A payout's verdict names its channel: one key signs for every channel, and after a
            // fallback a verdict without it would be taken for the current channel's (since
            // session 62; helper 98).
            let Some(channel) = callback.channel.filter(|name| !name.is_empty()) else {
                return Err(ApiError::invalid("channel is required for a withdrawal's verdict", "channel"));
            };
            let outcome = clearing.payout_verdict(PayoutVerdict { order, succeeded, channel: Some(channel) }).await?;
            Ok(HttpResponse::Ok().json(outcome))
        }
        "recharge" => {
            // The system acts (platform 0): verdicts are idempotent by order, so no order number.
            // A bank's verdict waits for room in a full mailbox (on a blocking thread, never an
            // async worker) rather than be refused `overloaded`: a platform's flood must not
            // leave another's recharges pending until the bank gives up retrying.
            let command = Command::CompleteRecharge { order, succeeded };
            let engine = engine.get_ref().clone();
            let clearing = clearing.get_ref().clone();
            let reply = crate::error::blocking(move || {
                // Its channel fee at the tariff now (the bank's, told of every change at once),
                // noted before the verdict: the nightly run books it, whatever the tariff is
                // then (helper 121#3).
                if succeeded {
                    clearing.note_money_in_fee(&engine, order)?;
                }
                Ok::<_, ApiError>(engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?)
            })
            .await??;
            match reply.code {
                ResultCode::Ok => Ok(HttpResponse::Ok().json(serde_json::json!({"received": true, "status": reply.status.map(|s| s.name())}))),
                code => Err(crate::orders::rejection(code)),
            }
        }
        _ => Err(ApiError::invalid("kind is recharge or withdrawal", "kind")),
    }
}

/// The simulator's pages are the bank's, not ours to show to anyone: each needs the operator
/// token, and with `[simulator] pages = false` none exists (404, before the token is looked at,
/// so nothing tells that they would exist).
fn page_allowed(request: &HttpRequest, simulator: &Simulator, token: &AdminToken) -> Result<(), ApiError> {
    if !simulator.pages() {
        return Err(ApiError::not_found());
    }
    token.check(request)
}

/// The longest life of a card holder's link, in seconds (an hour), and its default (10 min).
pub const CARD_LINK_SECONDS_MAX: i64 = 3_600;
const CARD_LINK_SECONDS_DEFAULT: i64 = 600;

/// The tag of a card holder's link to `card_no` valid until `expires` (unix seconds).
fn card_link_tag(platforms: &Platforms, card_no: &str, expires: i64) -> String {
    platforms.tag("sim-card-link", &format!("{card_no}|{expires}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardLinkQuery {
    expires: Option<String>,
    signature: Option<String>,
}

/// `GET /sim/cards/{card_no}/transactions`: what the card's holder sees at their bank, for the
/// operator (bearer token) or through a link the operator issued for this card that has not
/// expired (`?expires=&signature=`).
#[utoipa::path(get, path = "/sim/cards/{card_no}/transactions", tag = "simulator", params(("card_no" = String, Path, description = "Card number"), ("expires" = Option<String>, Query, description = "A card holder's link: its end (unix seconds)"), ("signature" = Option<String>, Query, description = "A card holder's link: its signature")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/sim/cards/{card_no}/transactions")]
pub async fn card_transactions(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<CardLinkQuery>,
    simulator: web::Data<Simulator>,
    token: web::Data<AdminToken>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    let linked = match (&query.expires, &query.signature) {
        (Some(expires), Some(signature)) => {
            let expires: i64 = expires.parse().map_err(|_| ApiError::unauthenticated("a bad or expired link"))?;
            let now = unix_seconds();
            let valid = expires > now
                && expires <= now.saturating_add(CARD_LINK_SECONDS_MAX)
                && crate::auth::constant_time_equal(card_link_tag(&platforms, &path, expires).as_bytes(), signature.as_bytes());
            if !valid || !simulator.pages() {
                return Err(if simulator.pages() { ApiError::unauthenticated("a bad or expired link") } else { ApiError::not_found() });
            }
            true
        }
        _ => false,
    };
    if !linked {
        page_allowed(&request, &simulator, &token)?;
    }
    // A card number: 12 to 19 digits ending in its Luhn check digit (as `cards::valid_card_no`,
    // which this module may not import: cards uses the simulator).
    let digits = path.as_bytes();
    if !(12..=19).contains(&digits.len())
        || !digits.iter().all(u8::is_ascii_digit)
        || crate::accounts::luhn_check_digit(&path[..path.len() - 1]) != digits[digits.len() - 1] - b'0'
    {
        return Err(ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
    }
    let (reading, card_no) = (simulator.get_ref().clone(), path.into_inner());
    let transactions = crate::error::blocking(move || reading.card_transactions(&card_no).map_err(ApiError::unavailable)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"transactions": transactions})))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardLinkBody {
    /// Seconds the link works (1 to 3600, default 600).
    seconds: Option<i64>,
}

/// `POST /admin/sim/cards/{card_no}/link` (operator token): a short-lived link to the card's
/// statement at the simulated bank, to hand to the card's holder (who reads the micro-deposit).
#[utoipa::path(post, path = "/admin/sim/cards/{card_no}/link", tag = "simulator", request_body = crate::simulator::CardLinkBody, params(("card_no" = String, Path, description = "Card number")), responses((status = 201, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/sim/cards/{card_no}/link")]
pub async fn card_link(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    simulator: web::Data<Simulator>,
    token: web::Data<AdminToken>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    page_allowed(&request, &simulator, &token)?;
    let asked: CardLinkBody = if body.iter().all(u8::is_ascii_whitespace) { CardLinkBody::default() } else { crate::signed::parse_json(&body)? };
    let seconds = asked.seconds.unwrap_or(CARD_LINK_SECONDS_DEFAULT);
    if !(1..=CARD_LINK_SECONDS_MAX).contains(&seconds) {
        return Err(ApiError::invalid("seconds must be 1 to 3600", "seconds"));
    }
    // The card number's shape (cards.rs checks it the same way; it imports this module).
    let digits = path.as_str();
    let shaped = (12..=19).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && crate::accounts::luhn_check_digit(&digits[..digits.len() - 1]) == digits.as_bytes()[digits.len() - 1] - b'0';
    if !shaped {
        return Err(ApiError { param: Some("card_no".into()), ..ApiError::new(400, "invalid_card_no", "the card number fails its Luhn check") });
    }
    let expires = unix_seconds() + seconds;
    let signature = card_link_tag(&platforms, &path, expires);
    let link = format!("/sim/cards/{}/transactions?expires={expires}&signature={signature}", path.as_str());
    Ok(HttpResponse::Created().json(serde_json::json!({"link": link, "expires": expires})))
}

/// `GET /sim/channels/{channel}/statements/{date}`: the simulated bank's statement file of a
/// channel and business date (CSV), as reconciliation reads it (operator token).
#[utoipa::path(get, path = "/sim/channels/{channel}/statements/{date}", tag = "simulator", params(("channel" = String, Path, description = "Channel name"), ("date" = String, Path, description = "YYYY-MM-DD")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/sim/channels/{channel}/statements/{date}")]
pub async fn statement_file(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    clearing: web::Data<Clearing>,
    simulator: web::Data<Simulator>,
    token: web::Data<AdminToken>,
) -> Result<HttpResponse, ApiError> {
    page_allowed(&request, &simulator, &token)?;
    let (name, date) = path.into_inner();
    let channel = clearing.channels().by_name(&name).map(|c| c.id).ok_or_else(ApiError::not_found)?;
    let day = clearing_actor::calendar::parse_date(&date).ok_or_else(|| ApiError::invalid("date is YYYY-MM-DD", "date"))?;
    let bank = clearing.bank().clone();
    let lines = crate::error::blocking(move || bank.statement(channel, day)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("text/csv").body(bank::statement::write(&lines)))
}

/// Registers the simulator's routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(receive_callback).service(card_transactions).service(card_link).service(statement_file);
}
