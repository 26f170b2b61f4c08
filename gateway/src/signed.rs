//! The signed platform request: the `Signed` extractor and JSON bodies.
//!
//! Order of the checks (DESIGN.md invariant 12: authentication before the body is read):
//! 1. the headers alone (`auth::check_head`: platform known, nonce and signature well-formed,
//!    timestamp within the window), the platform's request rate (without taking a token) and its
//!    body limit against `Content-Length` — a client refused here is answered before it sent a
//!    byte of body;
//! 2. the body, within the platform's limit and under `body_timeout` (a client that announces a
//!    body and sends nothing is answered 408 and its connection closed);
//! 3. the signature over the exact body, then the platform's quotas (a token of its rate, a place
//!    among its requests in flight), then its nonce (within its share of the cache), and for a
//!    request without an order number the nonce durably (`replay`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest};
use serde::de::DeserializeOwned;

use crate::auth::{check_head, check_nonce, check_signature, NonceCache};
use crate::error::{blocking, ApiError};
use crate::platforms::{Platform, Platforms};
use crate::quotas::{InFlight, Quotas};
use crate::replay::DurableNonces;

/// Parses a JSON body; malformed JSON, wrong types and unknown fields are `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every body of the API is an object: serde would also fill a struct from an array of its
    // fields in order (`[null, null]`), which the contract does not allow.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(400, "invalid_request", "the body must be a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError { param: crate::error::json_error_param(body, &error), ..ApiError::new(400, "invalid_request", &error.to_string()) })
}

/// The server's clock, unix seconds.
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How the extractor reads bodies (registered as app data by `server::bind`).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// How long a client may take to send a body once its head is in.
    pub timeout: Duration,
    /// The largest body of any platform (a platform's quota may be lower).
    pub bytes_max: usize,
}

/// Extractor of a signed platform request: checks the headers, reads the body (within the
/// platform's limit and the body timeout), checks the signature against it and the platform's
/// quotas, and hands the handler the platform and the body bytes. The request counts among the
/// platform's requests in flight until the handler's answer is built (this value is dropped).
pub struct Signed {
    pub platform: Platform,
    pub body: web::Bytes,
    _in_flight: InFlight,
}

impl Signed {
    /// Parses the body as JSON (`invalid_request` on malformed JSON, wrong types, unknown fields).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }
}

/// The announced `Content-Length`, if any (a malformed one is `invalid_request`).
fn content_length(request: &HttpRequest) -> Result<Option<usize>, ApiError> {
    match request.headers().get(actix_web::http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(400, "invalid_request", "Content-Length must be a number of bytes")),
    }
}

/// How long a refusal for a quota (429 `rate_limited`) is held before it is answered. A client
/// that resends at once (a flood) then gets at most a few refusals a second per connection, so
/// refusing it costs the cores other platforms share next to nothing; a client that waits as
/// `Retry-After` says loses nothing (it waits at least a second anyway).
pub const QUOTA_REFUSAL_PAUSE: Duration = Duration::from_millis(250);

/// Holds a quota refusal for `QUOTA_REFUSAL_PAUSE` before it is answered.
async fn paced<T>(result: Result<T, ApiError>) -> Result<T, ApiError> {
    if result.as_ref().is_err_and(|error| error.code == "rate_limited") {
        actix_web::rt::time::sleep(QUOTA_REFUSAL_PAUSE).await;
    }
    result
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(413, "payload_too_large", &format!("the body is larger than the limit of {limit} bytes"))
}

/// Why a body was not read (`read_body`).
pub enum BodyError {
    /// It did not arrive within the body timeout.
    Timeout,
    /// It is longer than the limit.
    TooLarge,
    /// The connection failed while it was read.
    Read(String),
}

/// A request's body of at most `limit` bytes (its announced length checked before a byte is
/// read), within `timeout`, or the error a client is answered.
pub async fn bounded_body(request: &HttpRequest, payload: actix_web::dev::Payload, limit: usize, timeout: Duration) -> Result<web::Bytes, ApiError> {
    if content_length(request)?.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    match read_body(payload, limit, timeout).await {
        Ok(body) => Ok(body),
        Err(BodyError::Timeout) => Err(ApiError::new(408, "request_timeout", "the body did not arrive within the body timeout")),
        Err(BodyError::TooLarge) => Err(too_large(limit)),
        Err(BodyError::Read(error)) => Err(ApiError::new(400, "invalid_request", &format!("reading the body: {error}"))),
    }
}

/// Reads a request's body, at most `limit` bytes, within `timeout` (the signed API and the H5
/// forms: each after checking who asks).
pub async fn read_body(payload: actix_web::dev::Payload, limit: usize, timeout: Duration) -> Result<web::Bytes, BodyError> {
    match actix_web::rt::time::timeout(timeout, actix_web::body::to_bytes_limited(actix_web::body::BodyStream::new(payload), limit)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Ok(Ok(Err(error))) => Err(BodyError::Read(error.to_string())),
        Ok(Ok(Ok(body))) => Ok(body),
    }
}

impl actix_web::FromRequest for Signed {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Signed, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let request = request.clone();
        let payload = payload.take();
        Box::pin(async move {
            let platforms = request.app_data::<web::Data<Arc<Platforms>>>().expect("platforms are registered");
            let nonces = request.app_data::<web::Data<NonceCache>>().expect("nonces are registered");
            let quotas = request.app_data::<web::Data<Quotas>>().expect("quotas are registered");
            let limits = request.app_data::<web::Data<BodyLimits>>().expect("body limits are registered");
            // 1. Headers only: nothing of the body has been read.
            let head = check_head(&request, platforms, unix_seconds())?;
            let tenant = quotas.tenant(head.platform.id);
            paced(tenant.check_rate(Instant::now())).await?;
            // 2. The body, bounded in size (the platform's limit) and time.
            let limit = tenant.limits().body_bytes_max.min(limits.bytes_max);
            let body = bounded_body(&request, payload, limit, limits.timeout).await?;
            // 3. The signature, the platform's quotas, its nonce.
            check_signature(&request, &head, &body, platforms)?;
            if head.platform.suspended {
                return Err(ApiError::new(403, "platform_suspended", "this platform is suspended; ask the system operator"));
            }
            paced(tenant.take_token(Instant::now())).await?;
            let in_flight = paced(tenant.enter()).await?;
            paced(check_nonce(&head, nonces, unix_seconds(), tenant.limits().nonces_max as usize)).await?;
            if !crate::replay::applied_once_by_order_number(request.method(), request.path()) {
                let durable = request.app_data::<web::Data<Arc<DurableNonces>>>().expect("durable nonces are registered").get_ref().clone();
                // One synced write: off the async workers.
                let head = blocking(move || durable.record(&head).map(|()| head)).await??;
                return Ok(Signed { platform: head.platform, body, _in_flight: in_flight });
            }
            Ok(Signed { platform: head.platform, body, _in_flight: in_flight })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_quota_refusal_is_held_before_it_is_answered_and_nothing_else_is() {
        let started = Instant::now();
        let refused = paced::<()>(Err(ApiError::rate_limited("over the rate", 1))).await.unwrap_err();
        assert_eq!((refused.status, refused.code, refused.retry_after_seconds), (429, "rate_limited", Some(1)));
        assert!(started.elapsed() >= QUOTA_REFUSAL_PAUSE, "a flood's refusals are paced");
        assert_eq!(paced(Ok(7)).await.unwrap(), 7);
        assert_eq!(paced::<()>(Err(ApiError::unauthenticated("bad signature"))).await.unwrap_err().code, "unauthenticated");
    }
}
