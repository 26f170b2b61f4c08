//! The API's error shape: HTTP status plus `{"error": {"code", "message", "param"?}}` (API.md).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to a caller, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
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
        ApiError { status, code, message: message.to_string(), param: None }
    }

    /// 400 `invalid_request`, naming the field at fault.
    pub fn invalid(message: &str, param: &'static str) -> ApiError {
        ApiError { status: 400, code: "invalid_request", message: message.to_string(), param: Some(param) }
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: &str) -> ApiError {
        ApiError { status: 401, code: "unauthenticated", message: message.to_string(), param: None }
    }

    /// 404 `not_found` (never a hint that the object exists for someone else).
    pub fn not_found() -> ApiError {
        ApiError { status: 404, code: "not_found", message: "no such object".to_string(), param: None }
    }

    /// 503 `unavailable`: the engine (or one shard) has stopped.
    pub fn unavailable(message: String) -> ApiError {
        ApiError { status: 503, code: "unavailable", message, param: None }
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
        let body = Body { error: Inner { code: self.code, message: &self.message, param: self.param } };
        HttpResponse::build(self.status_code()).json(body)
    }
}

impl From<engine::EngineError> for ApiError {
    fn from(error: engine::EngineError) -> ApiError {
        ApiError::unavailable(error.to_string())
    }
}

/// Runs blocking work (store writes that sync, waits on shard threads) off the async workers.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    actix_web::web::block(work).await.map_err(|e| ApiError::unavailable(e.to_string()))
}
