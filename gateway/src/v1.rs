//! The signed platform API under `/v1` (API.md). So far: `GET /v1/platform`, which tells a
//! platform who it is authenticated as (an addition to API.md, for integrators to test signing).

use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use serde::Serialize;

use crate::error::{blocking, ApiError};
use crate::members::{Members, NewMember};

pub use crate::signed::{parse_json, Signed};

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

#[utoipa::path(get, path = "/v1/platform", tag = "platform", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
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
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = crate::members::NewMember, responses((status = 201, description = "Success", body = crate::schemas::MemberView), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
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
