//! Money movement between accounts (API.md): balance and guarantee payments with splits,
//! staged confirm and cancel, refunds, freezes and their release. Each operation is a
//! `prepare_*` that checks the request and builds the engine command and response body (shared
//! by its endpoint and by `/v1/bulk`) and an endpoint that runs it.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{Leg, Legs, OrderDetail, OrderKind, DESCRIPTION_CHARS_MAX, LEGS_MAX, REASON_BYTES_MAX};
use engine::money::CurrencySpec;
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::orders::{account, amount, currency, out_order_no, parse_order_id, parse_time, public_order_id, read_order, respond, Fields, Prepared};
use crate::platforms::Platform;
use crate::signed::Signed;

/// A payee or split receiver as the API names it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegBody {
    pub account_id: String,
    pub amount: String,
}

/// Balance (credited at once) or guarantee (held in escrow until confirmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Balance,
    Guarantee,
}

/// Where a payment's money comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Funding {
    Balance,
    Channel,
}

/// `POST /v1/payments`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    pub out_order_no: String,
    pub payer_account_id: String,
    pub mode: Mode,
    pub funding: Option<Funding>,
    pub channel: Option<String>,
    pub amount: String,
    pub currency: String,
    pub payees: Vec<LegBody>,
    #[serde(default)]
    pub splits: Vec<LegBody>,
    pub payment_password: Option<String>,
    pub description: Option<String>,
}

fn legs(items: &[LegBody], spec: &CurrencySpec, param: &'static str) -> Result<Legs, ApiError> {
    items.iter().map(|leg| Ok(Leg { account: account(&leg.account_id, param)?, amount: amount(&leg.amount, spec, param)? })).collect()
}

/// Checked legs as an answer shows them: ids and amounts in their canonical form, so a replay
/// whose request wrote them otherwise (`1.5` for `1.50`: the same command) answers the same body
/// (before session 59 the answer echoed each request's own text).
fn legs_view(legs: &Legs, spec: &CurrencySpec) -> Vec<LegBody> {
    legs.iter().map(|leg| LegBody { account_id: crate::accounts::public_account_id(leg.account), amount: spec.format(leg.amount) }).collect()
}

/// Checks a payment request (whether a direct payment's channel takes it too:
/// `recharges::within_money_in_channel`) and builds its command and response body.
pub async fn prepare_payment(engine: &Arc<Engine>, clearing: &clearing_actor::Clearing, platform: &Platform, body: &PaymentBody) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let direct = body.funding == Some(Funding::Channel);
    if body.channel.is_some() && !direct {
        return Err(ApiError::invalid("a channel is named only with funding \"channel\"", "channel"));
    }
    if body.payees.is_empty() {
        return Err(ApiError::invalid("a payment needs at least one payee", "payees"));
    }
    if body.payees.len() + body.splits.len() > LEGS_MAX {
        return Err(ApiError::invalid("at most 32 payees and splits", "payees"));
    }
    if body.description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_CHARS_MAX) {
        return Err(ApiError::invalid("the description is at most 256 characters", "description"));
    }
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let total = amount(&body.amount, &spec, "amount")?;
    let payer = account(&body.payer_account_id, "payer_account_id")?;
    let payees = legs(&body.payees, &spec, "payees")?;
    let splits = legs(&body.splits, &spec, "splits")?;
    let guarantee = body.mode == Mode::Guarantee;
    let (payees_view, splits_view) = (legs_view(&payees, &spec), legs_view(&splits, &spec));
    let command = if direct {
        let mut probe = Envelope {
            platform: platform.id,
            out_order_no: Some(number),
            command: Command::RequestDirectPayment { payer, guarantee, currency: currency_id, amount: total, payees, splits, channel: 0 },
        };
        let channel = crate::recharges::resolve_money_in_channel(engine, &clearing.channels(), body.channel.as_deref(), spec.code_str(), &probe).await?;
        if let Command::RequestDirectPayment { channel: chosen, .. } = &mut probe.command {
            *chosen = channel;
        }
        probe.command
    } else {
        Command::Payment { payer, guarantee, currency: currency_id, amount: total, payees, splits }
    };
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no);
    view.value("kind", &"payment");
    view.value("mode", &body.mode);
    view.value("amount", &spec.format(total));
    view.value("currency", &body.currency);
    view.value("payer_account_id", &body.payer_account_id);
    view.value("payees", &payees_view).value("splits", &splits_view).value("funding", if direct { "channel" } else { "balance" });
    let mut envelope = Envelope { platform: platform.id, out_order_no: Some(number), command };
    if direct {
        crate::recharges::within_money_in_channel(engine, &clearing.channels(), clearing.now_micros(), &mut envelope, body.channel.is_none()).await?;
    }
    Ok(Prepared::new(envelope, view, true))
}

/// `POST /v1/payments/{order_id}/confirm` (and the bulk `confirm` operation, which names the order).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub out_order_no: String,
    pub releases: Option<Vec<LegBody>>,
}

/// `POST /v1/payments/{order_id}/cancel` (and the bulk `cancel` operation, which names the
/// order): all that is held, `amount` of it (off the receivers in their order), or the named
/// receivers' parts (`cancels`; `amount`, if given too, is their sum).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub out_order_no: String,
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancels: Option<Vec<LegBody>>,
}

/// `POST /v1/freezes/{order_id}/release` (and the bulk `release_freeze` operation).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub out_order_no: String,
    pub amount: Option<String>,
}

/// What an operation on an existing order needs to know of it.
struct Target {
    spec: CurrencySpec,
    kind: OrderKind,
    body: Fields,
}

/// Reads the order an operation acts on (404 when it is not the platform's).
async fn target(engine: &Arc<Engine>, platform: u32, order_id: &str) -> Result<(engine::ledger::types::OrderId, Target), ApiError> {
    let id = parse_order_id(order_id).ok_or(ApiError { param: Some("order_id".into()), ..ApiError::not_found() })?;
    let found = read_order(engine, platform, id, |state, order| {
        let spec = state.currencies[order.currency.0 as usize];
        let mut body = Fields::default();
        body.value("out_order_no", &order.out_order_no.map(|n| n.as_str().to_string()));
        body.value("kind", &crate::orders::kind_name(order.kind));
        body.value("amount", &spec.format(order.amount));
        body.value("currency", &spec.code_str());
        body.value("account_id", &crate::accounts::public_account_id(order.account));
        Target { spec, kind: order.kind, body }
    })
    .await?;
    found.map(|t| (id, t)).ok_or(ApiError { param: Some("order_id".into()), ..ApiError::not_found() })
}

/// Checks a confirmation of a guarantee payment.
pub async fn prepare_confirm(engine: &Arc<Engine>, platform: &Platform, order_id: &str, body: &ConfirmBody) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    if body.releases.as_ref().is_some_and(|r| r.len() > LEGS_MAX) {
        return Err(ApiError::invalid("at most 32 releases", "releases"));
    }
    let (order, target) = target(engine, platform.id, order_id).await?;
    if target.kind != OrderKind::Guarantee {
        return Err(crate::orders::rejection(engine::result::ResultCode::OrderStateInvalid));
    }
    let releases = match &body.releases {
        Some(releases) if releases.is_empty() => return Err(ApiError::invalid("releases, when given, name at least one receiver", "releases")),
        Some(releases) => legs(releases, &target.spec, "releases")?,
        None => Legs::new(),
    };
    let mut view = target.body;
    let shown = body.releases.as_ref().map(|_| legs_view(&releases, &target.spec));
    view.value("confirmation", &json!({"out_order_no": body.out_order_no, "releases": shown}));
    let command = Command::Confirm { order, releases };
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command }, view, false))
}

/// Checks a cancellation of (part of) a guarantee payment's unreleased escrow: all, an amount,
/// or named receivers' parts (`cancels`, since session 68: a partial cancel by amount comes off
/// the receivers in their order, helper 127).
pub async fn prepare_cancel(engine: &Arc<Engine>, platform: &Platform, order_id: &str, body: &CancelBody) -> Result<Prepared, ApiError> {
    let Some(cancels) = &body.cancels else {
        let partial = PartialBody { order_id: None, out_order_no: body.out_order_no.clone(), amount: body.amount.clone() };
        return prepare_partial(engine, platform, order_id, &partial, OrderKind::Guarantee, "cancellation", |order, amount| Command::Cancel { order, amount })
            .await;
    };
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    if cancels.is_empty() || cancels.len() > LEGS_MAX {
        return Err(ApiError::invalid("cancels, when given, name 1 to 32 receivers", "cancels"));
    }
    let (order, target) = target(engine, platform.id, order_id).await?;
    if target.kind != OrderKind::Guarantee {
        return Err(crate::orders::rejection(engine::result::ResultCode::OrderStateInvalid));
    }
    let cancels = legs(cancels, &target.spec, "cancels")?;
    // Each within the order's amount (checked by the engine against what each holds): no sum
    // of them overflows.
    let total: i128 = cancels.iter().map(|leg| i128::from(leg.amount)).sum();
    if let Some(text) = &body.amount {
        if i128::from(amount(text, &target.spec, "amount")?) != total {
            return Err(ApiError::invalid("amount, given with cancels, is their sum", "amount"));
        }
    }
    let mut view = target.body;
    let total = engine::money::Minor::try_from(total).map_err(|_| ApiError::invalid("the cancels sum past any amount", "cancels"))?;
    let shown = legs_view(&cancels, &target.spec);
    view.value("cancellation", &json!({"out_order_no": body.out_order_no, "amount": target.spec.format(total), "cancels": shown}));
    let command = Command::CancelLegs { order, cancels };
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command }, view, false))
}

/// The shared shape of cancel and release: an order of `kind`, all or `amount` of what it holds.
async fn prepare_partial(
    engine: &Arc<Engine>,
    platform: &Platform,
    order_id: &str,
    body: &PartialBody,
    kind: OrderKind,
    label: &'static str,
    command: impl FnOnce(engine::ledger::types::OrderId, Option<engine::money::Minor>) -> Command,
) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (order, target) = target(engine, platform.id, order_id).await?;
    if target.kind != kind {
        return Err(crate::orders::rejection(engine::result::ResultCode::OrderStateInvalid));
    }
    let part = body.amount.as_deref().map(|a| amount(a, &target.spec, "amount")).transpose()?;
    let mut view = target.body;
    view.value(label, &json!({"out_order_no": body.out_order_no, "amount": part.map(|part| target.spec.format(part))}));
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command: command(order, part) }, view, false))
}

/// `POST /v1/refunds`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    pub out_order_no: String,
    pub payment_order_id: String,
    pub amount: String,
    pub payee_account_id: Option<String>,
}

/// Whether a refund may wait for its payment's credit to land (`wait_for_credit`): the API's
/// and the pages' single refunds; a bulk request answers at once (a bulk of refunds waiting one
/// after another could take an hour).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CreditWait {
    Wait,
    AnswerNow,
}

/// Checks a refund: the payment must be the platform's; without `payee_account_id` it must have
/// exactly one receiver.
pub async fn prepare_refund(engine: &Arc<Engine>, platform: &Platform, body: &RefundBody, wait: CreditWait) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let payment = parse_order_id(&body.payment_order_id).ok_or(ApiError { param: Some("payment_order_id".into()), ..ApiError::not_found() })?;
    let named = body.payee_account_id.as_deref().map(|text| account(text, "payee_account_id")).transpose()?;
    let found = read_order(engine, platform.id, payment, move |state, order| {
        let receivers: Vec<_> = match &order.detail {
            OrderDetail::Payment { held, .. } => held.iter().map(|l| (l.account, l.released)).collect(),
            _ => Vec::new(),
        };
        // The credit in flight to the payee the refund names (or the one receiver), if any:
        // one outbox scanned.
        let payee = named.or_else(|| (receivers.len() == 1).then(|| receivers[0].0));
        let in_flight = payee.and_then(|payee| state.credit_in_flight(order.id, payee));
        (state.currencies[order.currency.0 as usize], receivers, in_flight)
    })
    .await?;
    let (spec, receivers, in_flight) = found.ok_or(ApiError { param: Some("payment_order_id".into()), ..ApiError::not_found() })?;
    if receivers.is_empty() {
        return Err(ApiError { param: Some("payment_order_id".into()), ..ApiError::not_found() });
    }
    let payee = match named {
        Some(payee) => payee,
        None if receivers.len() == 1 => receivers[0].0,
        None => return Err(ApiError::invalid("the payment has several receivers: name payee_account_id", "payee_account_id")),
    };
    if !receivers.iter().any(|(receiver, _)| *receiver == payee) {
        return Err(ApiError { param: Some("payee_account_id".into()), ..ApiError::not_found() });
    }
    let refund = amount(&body.amount, &spec, "amount")?;
    // Nothing released to the payee yet (a guarantee held or cancelled, a direct payment not
    // yet paid): nothing it can refund, which the payee's shard cannot tell from an unknown
    // payment (before session 61 this answered 404 for an order the platform can see). A
    // refund once accepted had its release, which never shrinks: a replay still passes.
    if receivers.iter().filter(|(receiver, _)| *receiver == payee).all(|(_, released)| *released == 0) {
        return Err(ApiError {
            param: Some("amount".into()),
            ..ApiError::new(422, "exceeds_refundable_amount", "nothing was released to this payee to refund")
        });
    }
    // A credit of the payment to this payee is still on its way to the payee's shard (the
    // payment, or a confirm, was answered before it landed): the payee's shard would refuse the
    // refund for good (no income yet, or not all of it), a refusal its number keeps (helper
    // 122#1-2). Not sent before it lands: waited for (milliseconds, normally), else 503 to
    // repeat with the same number.
    if let Some((target, sequence)) = in_flight {
        wait_for_credit(engine, payment, target, sequence, wait).await?;
    }
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no);
    view.value("kind", &"refund");
    view.value("amount", &spec.format(refund));
    view.value("currency", &spec.code_str());
    view.value("payment_order_id", &public_order_id(payment));
    view.value("payee_account_id", &crate::accounts::public_account_id(payee));
    let command = Command::Refund { payment, payee, amount: refund };
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command }, view, true))
}

/// How long a refund waits for its payment's credit to reach the payee's shard.
const CREDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until the payer's shard (`payment`'s) has had credit `sequence` toward shard `target`
/// acknowledged (applied by the payee's shard: `ShardState::credit_in_flight`), reading it
/// after 2, 4, 8 ... ms, at most `CREDIT_WAIT` in all (later credits of the same payment do not
/// lengthen it); then, or at once with `CreditWait::AnswerNow`, 503 `unavailable` with
/// `Retry-After`, to repeat with the same number (nothing was sent).
async fn wait_for_credit(engine: &Arc<Engine>, payment: engine::ledger::types::OrderId, target: u16, sequence: u64, wait: CreditWait) -> Result<(), ApiError> {
    let deadline = std::time::Instant::now() + CREDIT_WAIT;
    let mut pause = std::time::Duration::from_millis(2);
    while wait == CreditWait::Wait && std::time::Instant::now() + pause <= deadline {
        actix_web::rt::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(128));
        let (reading, shard) = (engine.clone(), payment.shard(engine.config().shard_count));
        let acknowledged = crate::error::blocking(move || reading.read_shard(shard, move |state| state.acknowledged_by(target))).await??;
        if acknowledged >= sequence {
            return Ok(());
        }
    }
    let message = "the payment's credit to this payee is still on its way to the payee's account: repeat this refund with the same out_order_no shortly";
    Err(ApiError { retry_after_seconds: Some(1), ..ApiError::unavailable(message.to_string()) })
}

/// `POST /v1/freezes`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    pub out_order_no: String,
    pub account_id: String,
    pub amount: String,
    pub currency: String,
    pub reason: String,
    pub expires_at: Option<String>,
}

/// Checks a freeze request.
pub fn prepare_freeze(engine: &Engine, platform: &Platform, body: &FreezeBody) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let frozen = amount(&body.amount, &spec, "amount")?;
    let target = account(&body.account_id, "account_id")?;
    if body.reason.is_empty() || body.reason.len() > REASON_BYTES_MAX {
        return Err(ApiError::invalid("a reason of 1 to 256 bytes (UTF-8) is required", "reason"));
    }
    let expires_at = body.expires_at.as_deref().map(|t| parse_time(t, "expires_at")).transpose()?;
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no);
    view.value("kind", &"freeze");
    view.value("amount", &spec.format(frozen));
    view.value("currency", &body.currency);
    view.value("account_id", &body.account_id);
    view.value("reason", &body.reason);
    view.value("expires_at", &expires_at.map(crate::orders::format_time));
    let command = Command::Freeze { account: target, currency: currency_id, amount: frozen, reason: body.reason.clone(), expires_at };
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command }, view, true))
}

/// Checks the release of (part of) a freeze.
pub async fn prepare_release(engine: &Arc<Engine>, platform: &Platform, order_id: &str, body: &PartialBody) -> Result<Prepared, ApiError> {
    prepare_partial(engine, platform, order_id, body, OrderKind::Freeze, "release", |order, amount| Command::ReleaseFreeze { order, amount }).await
}

/// One order of `POST /v1/batch-payments`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOrderBody {
    pub out_order_no: String,
    pub amount: String,
    pub payees: Vec<LegBody>,
    #[serde(default)]
    pub splits: Vec<LegBody>,
}

/// `POST /v1/batch-payments`: one payer, many orders, one password check, all or none.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub out_order_no: String,
    pub payer_account_id: String,
    pub mode: Mode,
    pub currency: String,
    pub payment_password: Option<String>,
    pub orders: Vec<BatchOrderBody>,
}

/// Checks a batch payment and builds its command and the members of its response body.
pub fn prepare_batch(engine: &Engine, platform: &Platform, body: &BatchBody) -> Result<Prepared, ApiError> {
    let number = out_order_no(&body.out_order_no, "out_order_no")?;
    if body.orders.is_empty() || body.orders.len() > engine::ledger::command::BATCH_ORDERS_MAX {
        return Err(ApiError::invalid("a batch carries 1 to 1000 orders", "orders"));
    }
    let (currency_id, spec) = currency(engine, &body.currency)?;
    let payer = account(&body.payer_account_id, "payer_account_id")?;
    let mut orders = Vec::with_capacity(body.orders.len());
    for order in &body.orders {
        if order.payees.is_empty() || order.payees.len() + order.splits.len() > LEGS_MAX {
            return Err(ApiError::invalid("each order has 1 to 32 payees and splits", "orders"));
        }
        orders.push(engine::ledger::command::BatchOrder {
            out_order_no: out_order_no(&order.out_order_no, "orders")?,
            amount: amount(&order.amount, &spec, "orders")?,
            payees: legs(&order.payees, &spec, "orders")?,
            splits: legs(&order.splits, &spec, "orders")?,
        });
    }
    // The batch's total, as every money-moving answer carries its amount (API.md; helper 110:
    // it had none). At most 1,000 orders of at most 10^15 minor units each: no overflow.
    let total = orders.iter().fold(0i64, |total, order| total.saturating_add(order.amount));
    let mut view = Fields::default();
    view.value("out_order_no", &body.out_order_no)
        .value("kind", "batch_payment")
        .value("mode", &body.mode)
        .value("amount", &spec.format(total))
        .value("currency", &body.currency)
        .value("payer_account_id", &body.payer_account_id);
    let command = Command::BatchPayment { payer, guarantee: body.mode == Mode::Guarantee, currency: currency_id, orders };
    Ok(Prepared::new(Envelope { platform: platform.id, out_order_no: Some(number), command }, view, true))
}

#[utoipa::path(post, path = "/v1/batch-payments", tag = "money", request_body = crate::payments::BatchBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/batch-payments")]
pub async fn create_batch(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    passwords: web::Data<Arc<crate::passwords::Passwords>>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<BatchBody>()?;
    let mut prepared = prepare_batch(&engine, &signed.platform, &body)?;
    crate::passwords::check_for_payment(&engine, &passwords, &signed.platform, &prepared.envelope, body.payment_password.as_deref()).await?;
    let reply = crate::accounts::execute(&engine, prepared.envelope.clone()).await?;
    if reply.is_ok() {
        // The batch's orders follow the first one on the payer's shard.
        let shard_count = engine.config().shard_count as u64;
        let status = reply.status.map_or("succeeded", |s| s.name());
        // Amounts and legs as checked, in their canonical form (a replay that wrote them
        // otherwise answers the same body, since session 59).
        let Command::BatchPayment { orders: checked, .. } = &prepared.envelope.command else {
            return Err(ApiError::corrupt("a batch payment's command"));
        };
        let (_, spec) = currency(&engine, &body.currency)?;
        let orders: Vec<serde_json::Value> = body
            .orders
            .iter()
            .zip(checked)
            .enumerate()
            .map(|(k, (order, checked))| {
                json!({"order_id": public_order_id(engine::ledger::types::OrderId(reply.id + k as u64 * shard_count)),
                    "out_order_no": order.out_order_no, "kind": "payment", "status": status, "amount": spec.format(checked.amount),
                    "payees": legs_view(&checked.payees, &spec), "splits": legs_view(&checked.splits, &spec)})
            })
            .collect();
        prepared.body.value("orders", &orders);
    }
    crate::orders::answer(prepared, &reply)
}

#[utoipa::path(post, path = "/v1/payments", tag = "money", request_body = crate::payments::PaymentBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/payments")]
pub async fn create_payment(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    passwords: web::Data<Arc<crate::passwords::Passwords>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PaymentBody>()?;
    let (prepared, reply) = pay(&engine, &passwords, &clearing, &signed.platform, &body).await?;
    crate::orders::answer(prepared, &reply)
}

/// Checks a payment and the payer's password (when the platform requires one), has the engine
/// apply it and sends a direct payment to its channel (the API and the cashier page share it);
/// a refusal is in the reply (render it with `orders::answer`).
pub async fn pay(
    engine: &Arc<Engine>,
    passwords: &Arc<crate::passwords::Passwords>,
    clearing: &clearing_actor::Clearing,
    platform: &Platform,
    body: &PaymentBody,
) -> Result<(Prepared, engine::ledger::types::Reply), ApiError> {
    let prepared = prepare_payment(engine, clearing, platform, body).await?;
    crate::passwords::check_for_payment(engine, passwords, platform, &prepared.envelope, body.payment_password.as_deref()).await?;
    let reply = crate::recharges::execute_and_dispatch(engine, clearing.bank(), prepared.envelope.clone()).await?;
    Ok((prepared, reply))
}

#[utoipa::path(post, path = "/v1/payments/{order_id}/confirm", tag = "money", request_body = crate::payments::ConfirmBody, params(("order_id" = String, Path, description = "Order id (ord_...)")), responses((status = 200, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/payments/{order_id}/confirm")]
pub async fn confirm(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<ConfirmBody>()?;
    if body.order_id.is_some() {
        return Err(ApiError::invalid("the order is named by the path", "order_id"));
    }
    let prepared = prepare_confirm(&engine, &signed.platform, &path, &body).await?;
    respond(&engine, prepared).await
}

#[utoipa::path(post, path = "/v1/payments/{order_id}/cancel", tag = "money", request_body = crate::payments::CancelBody, params(("order_id" = String, Path, description = "Order id (ord_...)")), responses((status = 200, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/payments/{order_id}/cancel")]
pub async fn cancel(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<CancelBody>()?;
    if body.order_id.is_some() {
        return Err(ApiError::invalid("the order is named by the path", "order_id"));
    }
    let prepared = prepare_cancel(&engine, &signed.platform, &path, &body).await?;
    respond(&engine, prepared).await
}

#[utoipa::path(post, path = "/v1/refunds", tag = "money", request_body = crate::payments::RefundBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/refunds")]
pub async fn create_refund(signed: Signed, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<RefundBody>()?;
    let prepared = prepare_refund(&engine, &signed.platform, &body, CreditWait::Wait).await?;
    respond(&engine, prepared).await
}

#[utoipa::path(post, path = "/v1/freezes", tag = "money", request_body = crate::payments::FreezeBody, responses((status = 201, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/freezes")]
pub async fn create_freeze(signed: Signed, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<FreezeBody>()?;
    let prepared = prepare_freeze(&engine, &signed.platform, &body)?;
    respond(&engine, prepared).await
}

#[utoipa::path(post, path = "/v1/freezes/{order_id}/release", tag = "money", request_body = crate::payments::PartialBody, params(("order_id" = String, Path, description = "Order id (ord_...)")), responses((status = 200, description = "Success", body = crate::schemas::OrderView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/freezes/{order_id}/release")]
pub async fn release(signed: Signed, path: web::Path<String>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<PartialBody>()?;
    if body.order_id.is_some() {
        return Err(ApiError::invalid("the order is named by the path", "order_id"));
    }
    let prepared = prepare_release(&engine, &signed.platform, &path, &body).await?;
    respond(&engine, prepared).await
}

/// Registers the money-movement routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(create_payment).service(create_batch).service(confirm).service(cancel).service(create_refund).service(create_freeze).service(release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::ledger::types::{AccountId, Limits, OrderId};
    use engine::money::CurrencyId;
    use std::sync::mpsc;

    /// A refund whose payment's credit is still on its way to the payee's shard is not sent
    /// (the payee's shard would refuse it for good, a refusal its number keeps: helper 122#1):
    /// it waits for the credit, then answers 503 to repeat; once the credit landed it goes on.
    /// The payee's shard is held by a read that waits, so the credit cannot land meanwhile.
    #[actix_web::test]
    async fn a_refund_waits_for_its_payments_credit_and_is_not_sent_before() {
        let store: Arc<dyn storage::Store> = Arc::new(storage::MemoryStore::new());
        let engine =
            Arc::new(Engine::start(engine::EngineConfig { shard_count: 2, ack_flush_ms: 1, ..engine::EngineConfig::default() }, store.clone()).unwrap());
        let platforms = crate::platforms::Platforms::load(store, crate::secrets::MasterKey::from_bytes([3; 32])).unwrap();
        let (platform, _, _) = platforms.create(crate::platforms::NewPlatform { name: "P".into(), ..crate::platforms::NewPlatform::default() }).unwrap();
        let run = |command| engine.execute_one(Envelope { platform: platform.id, out_order_no: None, command }).unwrap();
        let accounts: Vec<AccountId> =
            (0..16).map(|owner| AccountId(run(Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE }).id)).collect();
        let on = |shard: u16| *accounts.iter().find(|a| a.shard(2) == shard).unwrap();
        let (payer, payee) = (on(0), on(1));
        assert!(run(Command::Recharge { account: payer, currency: CurrencyId(0), amount: 10_000, channel: 1 }).is_ok());
        // Shard 1 held: the payment's credit stays in shard 0's outbox.
        let ((unhold, held), (holds, holding_now)) = (mpsc::channel::<()>(), mpsc::channel::<()>());
        let holding = engine.clone();
        let holder = std::thread::spawn(move || {
            holding
                .read_shard(1, move |_| {
                    holds.send(()).unwrap();
                    held.recv()
                })
                .unwrap()
        });
        holding_now.recv().unwrap();
        let legs: Legs = [Leg { account: payee, amount: 7_000 }].into_iter().collect();
        let payment = OrderId(run(Command::Payment { payer, guarantee: false, currency: CurrencyId(0), amount: 7_000, payees: legs, splits: Legs::new() }).id);
        let body = RefundBody {
            out_order_no: "refund-1".into(),
            payment_order_id: public_order_id(payment),
            amount: "20.00".into(),
            payee_account_id: Some(crate::accounts::public_account_id(payee)),
        };
        let started = std::time::Instant::now();
        let Err(waited) = prepare_refund(&engine, &platform, &body, CreditWait::Wait).await else { panic!("prepared while the credit was in flight") };
        assert_eq!((waited.status, waited.code, waited.retry_after_seconds), (503, "unavailable", Some(1)), "{waited}");
        assert!(started.elapsed() >= CREDIT_WAIT / 2, "it waited for the credit first");
        // A bulk request's refund answers at once.
        let started = std::time::Instant::now();
        let Err(now) = prepare_refund(&engine, &platform, &body, CreditWait::AnswerNow).await else { panic!("prepared while the credit was in flight") };
        assert!(now.status == 503 && started.elapsed() < CREDIT_WAIT / 2, "{now}");
        // Released while a refund waits: it goes on once the credit landed.
        let waiting = {
            let (engine, platform) = (engine.clone(), platform.clone());
            actix_web::rt::spawn(async move { prepare_refund(&engine, &platform, &body, CreditWait::Wait).await.map(|prepared| prepared.envelope) })
        };
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        unhold.send(()).unwrap();
        holder.join().unwrap().unwrap();
        let envelope = waiting.await.unwrap().expect("prepared once the credit landed");
        assert!(engine.execute_one(envelope).unwrap().is_ok(), "refunded");
        engine.shutdown();
    }
}
