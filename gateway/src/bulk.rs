//! `POST /v1/bulk` (API.md): up to 8,189 operations in one request, each answered with its own
//! status and body. All accepted operations go to the engine in one submission, so each shard
//! applies its part in one batch with one fsync: this is the high-throughput path.

use std::sync::Arc;

use actix_web::{post, web, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::orders::{render_into, Prepared};
use crate::passwords::{check_for_payment, Passwords};
use crate::payments::*;
use crate::platforms::Platform;
use crate::recharges::{dispatch, prepare_recharge, RechargeBody};
use crate::signed::{parse_json, Signed};
use clearing_actor::Clearing;

/// The most operations one bulk request may carry (one engine batch).
pub const OPERATIONS_MAX: usize = 8189;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody<'a> {
    #[serde(borrow)]
    operations: Vec<Operation<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Operation<'a> {
    op: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The names of the operations `/v1/bulk` takes.
pub const OPERATION_NAMES: [&str; 7] = ["payment", "recharge", "refund", "freeze", "confirm", "cancel", "release_freeze"];

fn order_named(id: &Option<String>) -> Result<&str, ApiError> {
    id.as_deref().ok_or_else(|| ApiError::invalid("this operation names its order_id in the body", "order_id"))
}

/// Checks one operation and builds its command (the same checks as its own endpoint).
pub async fn prepare(
    engine: &Arc<Engine>,
    clearing: &Clearing,
    passwords: &Arc<Passwords>,
    platform: &Platform,
    op: &str,
    body: &str,
) -> Result<Prepared, ApiError> {
    let body = body.as_bytes();
    match op {
        "payment" => {
            let request = parse_json::<PaymentBody>(body)?;
            let prepared = prepare_payment(engine, clearing, platform, &request).await?;
            check_for_payment(engine, passwords, platform, &prepared.envelope, request.payment_password.as_deref()).await?;
            Ok(prepared)
        }
        "recharge" => prepare_recharge(engine, clearing, platform, &parse_json::<RechargeBody>(body)?, None).await,
        "freeze" => prepare_freeze(engine, platform, &parse_json::<FreezeBody>(body)?),
        "refund" => prepare_refund(engine, platform, &parse_json::<RefundBody>(body)?, crate::payments::CreditWait::AnswerNow).await,
        "confirm" => {
            let request = parse_json::<ConfirmBody>(body)?;
            prepare_confirm(engine, platform, order_named(&request.order_id)?, &request).await
        }
        "cancel" => {
            let request = parse_json::<crate::payments::CancelBody>(body)?;
            prepare_cancel(engine, platform, order_named(&request.order_id)?, &request).await
        }
        "release_freeze" => {
            let request = parse_json::<PartialBody>(body)?;
            prepare_release(engine, platform, order_named(&request.order_id)?, &request).await
        }
        _ => Err(ApiError::invalid("unknown op (payment, recharge, refund, freeze, confirm, cancel, release_freeze)", "op")),
    }
}

fn error_result(error: &ApiError) -> Value {
    let mut inner = json!({"code": error.code, "message": error.message});
    if let Some(param) = &error.param {
        inner["param"] = json!(param);
    }
    let mut result = json!({"status": error.status, "body": {"error": inner}});
    // The ledger's kept refusal of an earlier request with the same number (helper 118#6).
    if error.replayed {
        result["replayed"] = json!(true);
    }
    result
}

#[utoipa::path(post, path = "/v1/bulk", tag = "money", request_body = crate::schemas::BulkRequest, responses((status = 200, description = "Success", body = crate::schemas::BulkResponse), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/bulk")]
pub async fn bulk(
    signed: Signed,
    engine: web::Data<Arc<Engine>>,
    passwords: web::Data<Arc<Passwords>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    let request: BulkBody = serde_json::from_slice(&signed.body).map_err(|error| ApiError::new(400, "invalid_request", &error.to_string()))?;
    if request.operations.is_empty() {
        return Err(ApiError::invalid("operations must not be empty", "operations"));
    }
    if request.operations.len() > OPERATIONS_MAX {
        let mut error = ApiError::new(400, "too_many_operations", "a bulk request carries at most 8189 operations");
        error.param = Some("operations".into());
        return Err(error);
    }
    let count = request.operations.len();
    let mut errors: Vec<Option<ApiError>> = Vec::new();
    let mut prepared = Vec::with_capacity(count);
    let mut positions = Vec::with_capacity(count);
    for (index, operation) in request.operations.iter().enumerate() {
        match prepare(&engine, &clearing, &passwords, &signed.platform, &operation.op, operation.body.get()).await {
            Ok(ready) => {
                positions.push(index);
                prepared.push(ready);
            }
            Err(error) => {
                errors.resize(count, None);
                errors[index] = Some(error);
            }
        }
    }
    let mut replies = Vec::new();
    if !prepared.is_empty() {
        // The commands move to the engine; what rendering needs of them stays behind.
        let envelopes = prepared.iter_mut().map(|p| p.take_envelope()).collect();
        // The money-in orders among them go to their bank with the engine's answer, on a task
        // of its own: a request cut short in between (its client gone) would leave new
        // recharges unsent, which its retry, the engine's replay, never sends (before session
        // 60 they waited for a start).
        let money_in: Vec<(usize, engine::ledger::command::Envelope)> =
            prepared.iter().enumerate().filter_map(|(i, p)| p.recharge.clone().map(|e| (i, e))).collect();
        let (engine, bank) = (engine.get_ref().clone(), clearing.bank().clone());
        replies = actix_web::rt::spawn(async move {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            // Each part answers for itself: a stopped shard's operations answer 503 while the
            // others' answer and their recharges go to the bank (helper 108#2).
            engine.submit_each(
                envelopes,
                Box::new(move |result| {
                    let _ = sender.send(result);
                }),
            );
            let replies = receiver.await.map_err(|_| ApiError::unavailable("the engine dropped the request".into()))??;
            for (index, envelope) in &money_in {
                if let Some(reply) = replies.get(*index) {
                    dispatch(&engine, bank.as_ref(), envelope, reply);
                }
            }
            Ok::<Vec<engine::ledger::types::Reply>, ApiError>(replies)
        })
        .await
        .map_err(|_| ApiError::unavailable("the server is stopping".into()))??;
    }
    // A plain recharge replaying a collection an earlier build took is a conflict
    // (`recharges::earlier_builds_collection`): the replayed recharges' notes, one read.
    let replayed: Vec<(usize, String)> = prepared
        .iter()
        .zip(&replies)
        .enumerate()
        .filter(|(_, (ready, reply))| {
            reply.is_ok() && reply.replayed && matches!(ready.recharge, Some(Envelope { command: Command::RequestRecharge { .. }, .. }))
        })
        .filter_map(|(i, (ready, _))| ready.recharge.as_ref().and_then(|e| e.out_order_no).map(|number| (i, number.as_str().to_string())))
        .collect();
    if !replayed.is_empty() {
        let (asking, platform_id, numbers) = (clearing.get_ref().clone(), signed.platform.id, replayed.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
        let notes = crate::error::blocking(move || asking.collection_notes(platform_id, &numbers)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
        for ((index, _), note) in replayed.iter().zip(notes) {
            if note.is_some_and(|note| note.card.is_none()) {
                replies[*index] = engine::ledger::types::Reply::rejected(engine::result::ResultCode::IdempotencyConflict);
            }
        }
    }
    // The answer is written straight into one buffer, in the order of the operations.
    let mut out = Vec::with_capacity(count * 256 + 16);
    out.extend_from_slice(b"{\"results\":[");
    let mut accepted = prepared.iter().zip(&replies).zip(&positions).peekable();
    for index in 0..count {
        if index > 0 {
            out.push(b',');
        }
        let refused = match accepted.next_if(|(_, position)| **position == index) {
            Some(((ready, reply), _)) => {
                let start = out.len();
                out.extend_from_slice(b"{\"status\":000,\"body\":");
                match render_into(&mut out, ready, reply) {
                    Ok(status) => {
                        out[start + 10..start + 13].copy_from_slice(status.to_string().as_bytes());
                        out.extend_from_slice(if reply.replayed { b",\"replayed\":true}" } else { b",\"replayed\":false}" });
                        None
                    }
                    Err(error) => {
                        out.truncate(start);
                        Some(error)
                    }
                }
            }
            None => Some(errors.get_mut(index).and_then(Option::take).expect("an operation not accepted was refused")),
        };
        if let Some(error) = refused {
            serde_json::to_writer(&mut out, &error_result(&error)).expect("writing to memory");
        }
    }
    out.extend_from_slice(b"]}");
    Ok(HttpResponse::Ok().content_type("application/json").body(out))
}

/// Registers the bulk route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(bulk);
}
