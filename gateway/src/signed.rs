//! The signed platform request: the `Signed` extractor (body within the limit, signature checked
//! against its exact bytes) and JSON bodies.

use std::sync::Arc;

use actix_web::{web, HttpRequest};
use serde::de::DeserializeOwned;

use crate::auth::{authenticate, NonceCache};
use crate::error::ApiError;
use crate::platforms::{Platform, Platforms};

/// Parses a JSON body; malformed JSON, wrong types and unknown fields are `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError { param: crate::error::json_error_param(body, &error), ..ApiError::new(400, "invalid_request", &error.to_string()) })
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Authenticates a `/v1` request against its exact body bytes.
pub fn platform_of(request: &HttpRequest, body: &[u8], platforms: &Platforms, nonces: &NonceCache) -> Result<Platform, ApiError> {
    authenticate(request, body, platforms, nonces, unix_seconds())
}

/// Extractor of a signed platform request: reads the body (within the body limit), checks the
/// signature against it, and hands the handler the platform and the body bytes.
pub struct Signed {
    pub platform: Platform,
    pub body: web::Bytes,
}

impl Signed {
    /// Parses the body as JSON (`invalid_request` on malformed JSON, wrong types, unknown fields).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }
}

impl actix_web::FromRequest for Signed {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Signed, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let body = web::Bytes::from_request(request, payload);
        let request = request.clone();
        Box::pin(async move {
            let body = body.await.map_err(|error| {
                let status = error.as_response_error().status_code().as_u16();
                let code = if status == 413 { "payload_too_large" } else { "invalid_request" };
                ApiError::new(status, code, &error.to_string())
            })?;
            let platforms = request.app_data::<web::Data<Arc<Platforms>>>().expect("platforms are registered");
            let nonces = request.app_data::<web::Data<NonceCache>>().expect("nonces are registered");
            let platform = platform_of(&request, &body, platforms, nonces)?;
            Ok(Signed { platform, body })
        })
    }
}
