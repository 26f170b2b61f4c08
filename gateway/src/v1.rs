//! The signed platform API under `/v1` (API.md). So far: `GET /v1/platform`, which tells a
//! platform who it is authenticated as (an addition to API.md, for integrators to test signing).

use std::sync::Arc;

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{authenticate, NonceCache};
use crate::error::{blocking, ApiError};
use crate::members::{Members, NewMember};
use crate::platforms::{Platform, Platforms};

/// Parses a JSON body; malformed JSON, wrong types and unknown fields are `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::new(400, "invalid_request", &error.to_string()))
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

#[derive(Serialize)]
struct PlatformBody {
    platform_id: String,
    name: String,
    settlement_cycle_days: u8,
    auto_confirm_days: u8,
    require_payment_password: bool,
    /// The commission tiers, receivers and service fee the settlement run charges (null: none).
    settlement_rule: Option<serde_json::Value>,
}

#[utoipa::path(get, path = "/v1/platform", tag = "platform", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/platform")]
pub async fn whoami(signed: Signed, engine: web::Data<std::sync::Arc<engine::Engine>>) -> Result<HttpResponse, ApiError> {
    let platform = signed.platform;
    let settlement_rule = platform
        .settlement_rule
        .as_ref()
        .and_then(|rule| crate::orders::currency(&engine, &rule.currency).ok().map(|(_, spec)| crate::commission::view(rule, &spec)));
    Ok(HttpResponse::Ok().json(PlatformBody {
        settlement_rule,
        platform_id: platform.public_id(),
        name: platform.name,
        settlement_cycle_days: platform.settlement_cycle_days,
        auto_confirm_days: platform.auto_confirm_days,
        require_payment_password: platform.require_payment_password,
    }))
}

/// `POST /v1/members`: 201 with the member; a repeated order number replays the first answer.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = crate::members::NewMember, responses((status = 201, description = "Success", body = crate::openapi::MemberView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[actix_web::post("/v1/members")]
pub async fn create_member(signed: Signed, members: web::Data<Arc<Members>>) -> Result<HttpResponse, ApiError> {
    let (platform, new) = (signed.platform.clone(), signed.json::<NewMember>()?);
    let members = members.get_ref().clone();
    // The store write syncs to disk: off the async workers.
    let created = blocking(move || members.create(platform.id, new)).await??;
    let mut response = HttpResponse::Created();
    if created.replayed {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(created.member.view()))
}

/// Registers the `/v1` routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(whoami).service(create_member);
}
