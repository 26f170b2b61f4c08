//! The API's error shape: HTTP status plus `{"error": {"code", "message", "param"?}}` (API.md).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use engine::result::ResultCode;
use serde::Serialize;
use std::borrow::Cow;

/// An error answered to a caller, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The field at fault: one of the API's names, or a name the caller sent (an unknown field),
    /// owned then, so that no table of names grows with what callers send.
    pub param: Option<Cow<'static, str>>,
    /// Seconds the caller should wait before trying again (`Retry-After`), for 429 and 503.
    pub retry_after_seconds: Option<u32>,
    /// Whether this is the engine's kept refusal of an earlier request with the same order
    /// number (`Idempotent-Replay: true`, as a replayed success has; `refused`).
    pub replayed: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: u16, code: &'static str, message: &str) -> ApiError {
        ApiError { status, code, message: message.to_string(), param: None, retry_after_seconds: None, replayed: false }
    }

    /// 400 `invalid_request`, naming the field at fault.
    pub fn invalid(message: &str, param: &'static str) -> ApiError {
        ApiError {
            status: 400,
            code: "invalid_request",
            message: message.to_string(),
            param: Some(Cow::Borrowed(param)),
            retry_after_seconds: None,
            replayed: false,
        }
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: &str) -> ApiError {
        ApiError { status: 401, code: "unauthenticated", message: message.to_string(), param: None, retry_after_seconds: None, replayed: false }
    }

    /// 404 `not_found` (never a hint that the object exists for someone else).
    pub fn not_found() -> ApiError {
        ApiError { status: 404, code: "not_found", message: "no such object".to_string(), param: None, retry_after_seconds: None, replayed: false }
    }

    /// 503 `unavailable`: the engine (or one shard) has stopped.
    pub fn unavailable(message: String) -> ApiError {
        ApiError { status: 503, code: "unavailable", message, param: None, retry_after_seconds: None, replayed: false }
    }

    /// 503 `unavailable`: the store could not be read or written.
    pub fn store(error: storage::StorageError) -> ApiError {
        ApiError::unavailable(error.to_string())
    }

    /// 500 `internal_error`: `what`, a stored record, does not read back as it was written.
    pub fn corrupt(what: &str) -> ApiError {
        ApiError::new(500, "internal_error", &format!("{what} is corrupt"))
    }

    /// 429 `rate_limited`: the platform is over one of its quotas; it may try again after
    /// `retry_after_seconds` (at least 1). Other platforms are not affected.
    pub fn rate_limited(message: &str, retry_after_seconds: u32) -> ApiError {
        ApiError {
            status: 429,
            code: "rate_limited",
            message: message.to_string(),
            param: None,
            retry_after_seconds: Some(retry_after_seconds.max(1)),
            replayed: false,
        }
    }

    /// 503 `overloaded`: a full queue refused the request before anything changed; answered
    /// with `Retry-After`.
    pub fn overloaded(message: &str) -> ApiError {
        ApiError {
            status: 503,
            code: "overloaded",
            message: message.to_string(),
            param: None,
            retry_after_seconds: Some(OVERLOADED_RETRY_AFTER_SECONDS),
            replayed: false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let body = Body { error: Inner { code: self.code, message: &self.message, param: self.param.as_deref() } };
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds));
        }
        if self.replayed {
            response.insert_header(("Idempotent-Replay", "true"));
        }
        response.json(body)
    }
}

/// What `Retry-After` says on a 503 `overloaded`: queues drain in milliseconds, so soon.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u32 = 1;

impl From<engine::EngineError> for ApiError {
    fn from(error: engine::EngineError) -> ApiError {
        match error {
            engine::EngineError::Overloaded(_) => ApiError::overloaded(&error.to_string()),
            _ => ApiError::unavailable(error.to_string()),
        }
    }
}

/// The API error for a command the engine refused (one table for every endpoint).
pub fn rejection(code: ResultCode) -> ApiError {
    let (status, name, message, param): (u16, &'static str, &str, Option<&'static str>) = match code {
        ResultCode::Ok => unreachable!("not a rejection"),
        ResultCode::IdempotencyConflict => (409, "idempotency_conflict", "this out_order_no was used with another body", Some("out_order_no")),
        ResultCode::InvalidAmount => (400, "invalid_amount", "amounts must be positive", Some("amount")),
        ResultCode::AmountTooLarge => (400, "invalid_amount", "the amount is too large", Some("amount")),
        ResultCode::CurrencyUnknown => (400, "invalid_request", "unknown currency", Some("currency")),
        ResultCode::AccountNotFound => return ApiError::not_found(),
        ResultCode::PayeeNotFound => (404, "not_found", "no such receiver", Some("payees")),
        ResultCode::CurrencyMismatch => (422, "currency_mismatch", "the account holds another currency", Some("currency")),
        ResultCode::LegsUnbalanced => (400, "invalid_request", "payees and splits must sum to the amount", Some("payees")),
        ResultCode::TooManyLegs => (400, "invalid_request", "too many payees and splits", Some("payees")),
        ResultCode::AccountClosed => (422, "account_closed", "the account is closed", None),
        ResultCode::AccountFrozen => (422, "account_frozen", "the account is frozen", None),
        ResultCode::InsufficientFunds => (422, "insufficient_funds", "the balance is short", Some("amount")),
        ResultCode::ExceedsPerOrderLimit => (422, "exceeds_per_order_limit", "over the account's per-order limit", Some("amount")),
        ResultCode::ExceedsDailyLimit => (422, "exceeds_daily_limit", "over the account's daily limit", Some("amount")),
        ResultCode::OrderNotFound => return ApiError::not_found(),
        ResultCode::OrderStateInvalid => (409, "order_state_invalid", "the order is not in a state that allows this", None),
        ResultCode::ExceedsHeldAmount => (422, "exceeds_held_amount", "more than is still held", Some("amount")),
        ResultCode::ExceedsRefundableAmount => (422, "exceeds_refundable_amount", "more than can still be refunded", Some("amount")),
        ResultCode::ExceedsFrozenAmount => (422, "exceeds_frozen_amount", "more than is still frozen", Some("amount")),
        ResultCode::AccountNotEmpty => (422, "account_not_empty", "the account still holds funds", None),
        ResultCode::AccountExists => (409, "account_exists", "the member already has an account in this currency", None),
        ResultCode::PayeeIsPayer => (400, "invalid_request", "the payer cannot receive its own payment", Some("payees")),
        ResultCode::DuplicateLeg => (400, "invalid_request", "an account appears twice among payees and splits", Some("payees")),
        ResultCode::InvalidFee => (500, "internal_error", "the channel's fee is invalid", None),
        ResultCode::AccountCreditBlocked => (422, "account_credit_blocked", "the receiving account takes no credits", None),
        ResultCode::ReasonTooLong => (400, "invalid_request", "the reason is too long", Some("reason")),
        ResultCode::InvalidExpiry => (400, "invalid_request", "the expiry must be in the future", Some("expires_at")),
        ResultCode::NotRoutable => (500, "internal_error", "the command could not be routed", None),
        ResultCode::InvalidBatch => (400, "invalid_request", "a batch carries 1 to 1000 orders with distinct order numbers", Some("orders")),
        ResultCode::InvalidRule => (400, "invalid_request", "the settlement rule breaks its shape", Some("rule")),
        ResultCode::ChannelChanged => (409, "order_state_invalid", "the payout has moved to another channel", None),
        ResultCode::BalanceLimitExceeded => {
            (422, "balance_limit_exceeded", "the receiving account's balance would pass the largest balance an account may hold", Some("amount"))
        }
        ResultCode::Overloaded => {
            return ApiError::overloaded(
                "the shard is busy (its queue is full, or its batch has read back all the history one batch may); nothing was applied; try again shortly",
            )
        }
        ResultCode::ShardStopped => {
            return ApiError::unavailable(
                "the shard holding this operation's account stopped before it answered: its outcome is unknown until the shard starts again; retry with the same out_order_no"
                    .into(),
            )
        }
        ResultCode::ReasonMissing => (400, "invalid_request", "an adjustment needs a reason", Some("reason")),
        ResultCode::ApprovalInvalid => {
            (422, "approval_invalid", "an adjustment needs a proposer and a different approver, each named in at most 64 bytes", Some("approver"))
        }
    };
    ApiError { status, code: name, message: message.to_string(), param: param.map(Cow::Borrowed), retry_after_seconds: None, replayed: false }
}

/// The API error of a refused reply: its code's (`rejection`), marked `Idempotent-Replay: true`
/// when the engine answered it from the refusal the order number keeps (journal format 5: a
/// repeat of a refused request is answered the same refusal, API.md's idempotency).
pub fn refused(reply: &engine::ledger::types::Reply) -> ApiError {
    ApiError { replayed: reply.replayed, ..rejection(reply.code) }
}

/// The one table from clearing's errors to API errors.
impl From<clearing_actor::ClearingError> for ApiError {
    fn from(error: clearing_actor::ClearingError) -> ApiError {
        use clearing_actor::ClearingError as E;
        match error {
            E::Invalid { message, param } => ApiError::invalid(&message, param),
            E::NotFound => ApiError::not_found(),
            E::IdempotencyConflict => ApiError::new(409, "idempotency_conflict", "this out_order_no was used with another body"),
            error @ E::NoChannel(_) => ApiError::new(422, "no_channel_available", &error.to_string()),
            E::Refused(code) => rejection(code),
            E::FutureBusinessDate(message) => ApiError { param: Some("business_date".into()), ..ApiError::new(422, "business_date_in_future", &message) },
            E::Busy => ApiError::new(409, "settlement_running", "a settlement run is in progress; try again when it has finished"),
            E::Overloaded => ApiError::overloaded("clearing is overloaded; try again shortly"),
            E::Engine(error) => ApiError::from(error),
            E::CaseResolved => ApiError::new(409, "order_state_invalid", "the case is already resolved"),
            error @ E::HoldDecided(_) => ApiError::new(409, "order_state_invalid", &error.to_string()),
            E::Bank(error) => ApiError::unavailable(error.to_string()),
            E::Storage(message) => ApiError::unavailable(message),
            E::Internal(message) => ApiError::new(500, "internal_error", &message),
        }
    }
}

/// The field a JSON body's value error is about (`{"auto_confirm_days": 300}` → `auto_confirm_days`),
/// so that a number past its type (or of the wrong type) answers 400 with the param named.
/// serde_json reports where the value ends; the key is the string before the `:` before it.
pub fn json_error_param(body: &[u8], error: &serde_json::Error) -> Option<Cow<'static, str>> {
    if !matches!(error.classify(), serde_json::error::Category::Data) {
        return None;
    }
    // An unknown or missing field is named in the message (API.md: `param` when one field is
    // at fault; helper 110: these had none).
    let message = error.to_string();
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return named_in(&message);
    }
    let line_start = if error.line() <= 1 { 0 } else { body.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(error.line() - 2).map(|(i, _)| i + 1)? };
    let end = line_start.checked_add(error.column())?.min(body.len());
    let bytes = &body[..end];
    let mut i = bytes.len();
    let skip_space = |mut i: usize| {
        while i > 0 && bytes[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        i
    };
    i = skip_space(i);
    if i > 0 && bytes[i - 1] == b'"' {
        // A string value (without escaped quotes: a value with them names no param).
        i -= 1;
        i = bytes[..i].iter().rposition(|b| *b == b'"')?;
    } else {
        while i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"+-.".contains(&bytes[i - 1])) {
            i -= 1;
        }
    }
    i = skip_space(i);
    if i == 0 || bytes[i - 1] != b':' {
        return None;
    }
    i = skip_space(i - 1);
    if i == 0 || bytes[i - 1] != b'"' {
        return None;
    }
    let key_end = i - 1;
    let key_start = bytes[..key_end].iter().rposition(|b| *b == b'"')? + 1;
    param_named(std::str::from_utf8(&bytes[key_start..key_end]).ok()?)
}

/// A field name a caller sent, for `ApiError::param`: only names shaped like the API's fields
/// (lower-case words joined by `_`, at most 40 bytes); anything else names no param. Owned, each
/// error its own: a table of names kept for the process (as before, 512 at most) could be filled
/// by one caller's made-up field names, after which every caller's errors lost their param.
fn param_named(name: &str) -> Option<Cow<'static, str>> {
    let shaped = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    shaped.then(|| Cow::Owned(name.to_string()))
}

/// A query string that does not parse into the handler's filters: 400 `invalid_request` naming
/// the parameter when serde says which (an unknown one, or one of the wrong type).
pub fn query_error(error: &actix_web::error::QueryPayloadError) -> ApiError {
    let message = error.to_string();
    ApiError { param: named_in(&message), ..ApiError::new(400, "invalid_request", &message) }
}

/// A path segment that does not parse (a shard number past its type): 400 `invalid_request`.
pub fn path_error(error: &actix_web::error::PathError) -> ApiError {
    ApiError::new(400, "invalid_request", &format!("the path does not parse: {error}"))
}

/// A JSON body actix refused before a handler saw it: its status (413 past the limit, 415 for
/// another content type, 400 otherwise) in the API's error shape.
pub fn json_config_error(error: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match error {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(413, "payload_too_large", &error.to_string()),
        E::ContentType => ApiError::new(415, "invalid_request", "the body must be application/json"),
        _ => ApiError::new(400, "invalid_request", &error.to_string()),
    }
}

/// The field a serde message names between backquotes (`unknown field \`colour\``,
/// `missing field \`name\``), if it is shaped like one of the API's.
fn named_in(message: &str) -> Option<Cow<'static, str>> {
    let start = message.find("field `")? + "field `".len();
    let end = start + message[start..].find('`')?;
    // The name ends where the message goes on (`, expected ...`, ` at line ...`) or ends: a
    // name holding a backquote is not cut short into another field's name (helper 112).
    let rest = &message[end + 1..];
    if !(rest.is_empty() || rest.starts_with(',') || rest.starts_with(" at line")) {
        return None;
    }
    param_named(&message[start..end])
}

/// Runs blocking work (store writes that sync, waits on shard threads) off the async workers.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    actix_web::web::block(work).await.map_err(|e| ApiError::unavailable(e.to_string()))
}

/// Gives errors that actix produces itself (a body over the limit, a malformed request line) the
/// API's JSON error shape; responses that already are JSON pass unchanged.
pub fn json_errors<B: actix_web::body::MessageBody + 'static>(
    response: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let is_json =
        response.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let is_page = response.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    // Portal pages answer their errors as pages (a person reads them, not a client).
    if is_json || is_page {
        return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
    }
    let status = response.status();
    let code = match status.as_u16() {
        413 => "payload_too_large",
        404 => "not_found",
        405 => "method_not_allowed",
        400..=499 => "invalid_request",
        _ => "internal_error",
    };
    let message = status.canonical_reason().unwrap_or("error");
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let (request, _) = response.into_parts();
    let replaced = HttpResponse::build(status).json(body).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(actix_web::dev::ServiceResponse::new(request, replaced)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
        days: Option<u8>,
        millis: Option<u64>,
        receivers: Option<Vec<Receiver>>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Receiver {
        share: u32,
    }

    #[test]
    fn value_errors_name_their_field() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"days": 300}"#, Some("days")),
            (r#"{"name": "x", "days": -1}"#, Some("days")),
            (r#"{"days" :  256 , "name": "x"}"#, Some("days")),
            ("{\n  \"name\": \"x\",\n  \"millis\": 18446744073709551616\n}", Some("millis")),
            (r#"{"millis": 1e30}"#, Some("millis")),
            (r#"{"millis": "12"}"#, Some("millis")),
            (r#"{"millis": true}"#, Some("millis")),
            (r#"{"receivers": [{"share": 4294967296}]}"#, Some("share")),
            (r#"{"name": 5}"#, Some("name")),
            // Regression (helper 110): an unknown or a missing field is named too.
            (r#"{"colour": 1}"#, Some("colour")),
            (r#"{"receivers": [{}]}"#, Some("share")),
            (r#"{"amount`x": 1}"#, None),
            (r#"{"days": 3"#, None),
            (r#"not json"#, None),
        ];
        for (body, param) in cases {
            let error = serde_json::from_str::<Body>(body).expect_err(body);
            assert_eq!(json_error_param(body.as_bytes(), &error).as_deref(), *param, "{body}: {error}");
        }
    }

    /// However many made-up names came before, the next is named (no table of names fills):
    /// a query's unknown parameter, and a body's value of the wrong type.
    #[test]
    fn every_made_up_name_is_named() {
        for i in 0..2_000 {
            assert_eq!(named_in(&format!("unknown field `made_up_{i}`, expected one of `a`")).as_deref(), Some(format!("made_up_{i}").as_str()));
            let body = format!(r#"{{"made_up_{i}": 1}}"#);
            let error = serde_json::from_str::<std::collections::HashMap<String, String>>(&body).expect_err(&body);
            assert_eq!(json_error_param(body.as_bytes(), &error).as_deref(), Some(format!("made_up_{i}").as_str()), "{error}");
        }
        let (forty, forty_one) = ("a".repeat(40), "a".repeat(41));
        assert_eq!(named_in(&format!("unknown field `{forty}`")).as_deref(), Some(forty.as_str()));
        assert_eq!(named_in(&format!("unknown field `{forty_one}`")), None);
    }
}
