//! The system operator's API: bearer token, shard state, invariants.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{get, web, HttpRequest, HttpResponse};
use engine::invariants::check_engine;
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{blocking, ApiError};
use crate::secrets::{random_hex, write_private};

/// The system operator's token as the server holds it.
pub struct AdminToken(String);

/// Where the token came from, for the start-up message.
pub enum TokenSource {
    Environment,
    /// Generated now and written to this file (shown once).
    Generated(std::path::PathBuf),
    /// Read from the file an earlier start wrote.
    File(std::path::PathBuf),
}

impl AdminToken {
    /// `CLEARING_ADMIN_TOKEN` when set (non-empty); else the token in `<data_dir>/admin-token`,
    /// generated (32 random bytes, hex) and written with mode 0600 on first start.
    pub fn load(data_dir: &Path) -> std::io::Result<(AdminToken, TokenSource)> {
        if let Ok(token) = std::env::var("CLEARING_ADMIN_TOKEN") {
            if !token.is_empty() {
                return Ok((AdminToken(token), TokenSource::Environment));
            }
        }
        let path = data_dir.join("admin-token");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let token = text.trim().to_string();
            if !token.is_empty() {
                return Ok((AdminToken(token), TokenSource::File(path)));
            }
        }
        let token = random_hex();
        write_private(&path, &token)?;
        Ok((AdminToken(token), TokenSource::Generated(path)))
    }

    /// The token's text (to print once on first start).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Checks `Authorization: Bearer <token>`, comparing in constant time.
    pub fn check(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let header = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let offered = header.strip_prefix("Bearer ").unwrap_or("");
        if crate::auth::constant_time_equal(self.0.as_bytes(), offered.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthenticated("missing or wrong operator token"))
        }
    }
}

/// One shard as `/admin/shards` shows it.
#[derive(Serialize)]
pub struct ShardView {
    pub shard: u16,
    pub accounts: u64,
    pub mailbox_depth: usize,
    pub last_sequence: u64,
    pub outbox_pending: u64,
    pub batches: u64,
    pub commands: u64,
    pub last_batch_size: u64,
    pub largest_batch_size: u64,
    pub fsync_us_last: u64,
    pub fsync_us_mean: u64,
    pub fsync_us_max: u64,
    pub stopped: bool,
    /// `running` or `stopped`.
    pub state: &'static str,
    /// Why the shard stopped (a failed write, or a panic); absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Messages (credits, acknowledgements) queued from the other shards.
    pub inbound_depth: usize,
    /// When the last durable batch was written (microseconds since the epoch; 0 before the first).
    pub last_batch_at_us: u64,
}

/// The published figures of one shard.
pub fn shard_view(engine: &Engine, shard: u16) -> Option<ShardView> {
    let c = engine.counters().get(shard as usize)?;
    let batches = c.batches.load(Ordering::Relaxed);
    let failure = c.failure().map(|f| f.to_string());
    Some(ShardView {
        shard,
        accounts: c.accounts.load(Ordering::Relaxed),
        mailbox_depth: engine.mailbox_depth(shard),
        last_sequence: c.last_sequence.load(Ordering::Relaxed),
        outbox_pending: c.outbox_pending.load(Ordering::Relaxed),
        batches,
        commands: c.commands.load(Ordering::Relaxed),
        last_batch_size: c.last_batch_size.load(Ordering::Relaxed),
        largest_batch_size: c.largest_batch_size.load(Ordering::Relaxed),
        fsync_us_last: c.last_fsync_us.load(Ordering::Relaxed),
        fsync_us_mean: c.total_fsync_us.load(Ordering::Relaxed).checked_div(batches).unwrap_or(0),
        fsync_us_max: c.largest_fsync_us.load(Ordering::Relaxed),
        stopped: c.stopped.load(Ordering::Relaxed),
        state: if c.stopped.load(Ordering::Relaxed) { "stopped" } else { "running" },
        failure,
        inbound_depth: engine.inbound_depth(shard),
        last_batch_at_us: c.last_batch_at.load(Ordering::Relaxed),
    })
}

#[derive(Serialize)]
struct ShardsBody {
    shards: Vec<ShardView>,
}

#[utoipa::path(get, path = "/admin/shards", tag = "operator", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/shards")]
pub async fn list_shards(request: HttpRequest, engine: web::Data<Arc<Engine>>, token: web::Data<AdminToken>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let count = engine.config().shard_count;
    let shards = (0..count).filter_map(|s| shard_view(&engine, s)).collect();
    Ok(HttpResponse::Ok().json(ShardsBody { shards }))
}

#[utoipa::path(get, path = "/admin/shards/{shard}", tag = "operator", params(("shard" = u16, Path, description = "Shard number")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/shards/{shard}")]
pub async fn one_shard(
    request: HttpRequest,
    path: web::Path<String>,
    engine: web::Data<Arc<Engine>>,
    token: web::Data<AdminToken>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let view = path.parse::<u16>().ok().and_then(|s| shard_view(&engine, s)).ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Serialize)]
struct CurrencyBody {
    currency: String,
    sum_minor: String,
    in_transit_minor: String,
    in_flight_minor: String,
}

#[derive(Serialize)]
struct InvariantsBody {
    ok: bool,
    currencies: Vec<CurrencyBody>,
    failures: Vec<String>,
}

#[utoipa::path(get, path = "/admin/invariants", tag = "operator", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/invariants")]
pub async fn check_invariants(request: HttpRequest, engine: web::Data<Arc<Engine>>, token: web::Data<AdminToken>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let engine = engine.get_ref().clone();
    // Reading the shards waits on their threads: off the async workers.
    let report = blocking(move || check_engine(&engine)).await??;
    // Sums are i128: sent as decimal strings so that no JSON reader loses precision.
    let currencies = report
        .currencies
        .iter()
        .map(|c| CurrencyBody {
            currency: c.currency.clone(),
            sum_minor: c.sum_minor.to_string(),
            in_transit_minor: c.in_transit_minor.to_string(),
            in_flight_minor: c.in_flight_minor.to_string(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(InvariantsBody { ok: report.ok, currencies, failures: report.failures }))
}

/// Registers the operator routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(list_shards)
        .service(one_shard)
        .service(check_invariants)
        .service(create_platform)
        .service(set_account_status)
        .service(list_channels)
        .service(change_channel)
        .service(add_channel);
}

#[derive(Serialize)]
struct CreatedPlatform {
    platform_id: String,
    secret: String,
    name: String,
    settlement_cycle_days: u8,
    auto_confirm_days: u8,
    require_payment_password: bool,
}

/// `POST /admin/platforms`: the secret is in this response only.
#[utoipa::path(post, path = "/admin/platforms", tag = "operator", request_body = crate::platforms::NewPlatform, responses((status = 201, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::post("/admin/platforms")]
pub async fn create_platform(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let new: crate::platforms::NewPlatform = crate::signed::parse_json(&body)?;
    let platforms = platforms.get_ref().clone();
    // The store write syncs to disk: off the async workers.
    let (platform, secret) = blocking(move || platforms.create(new)).await??;
    Ok(HttpResponse::Created().json(CreatedPlatform {
        platform_id: platform.public_id(),
        secret,
        name: platform.name,
        settlement_cycle_days: platform.settlement_cycle_days,
        auto_confirm_days: platform.auto_confirm_days,
        require_payment_password: platform.require_payment_password,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    /// normal, debit_blocked (no debits: `account_frozen`) or credit_blocked (no credits).
    status: String,
}

/// `POST /admin/accounts/{account_id}/status` (an addition to API.md): the operator blocks or
/// unblocks an account (closing is the platform's `POST /v1/accounts/{id}/close`).
#[utoipa::path(post, path = "/admin/accounts/{account_id}/status", tag = "operator", request_body = crate::admin::StatusBody, params(("account_id" = String, Path, description = "Account id (acc_...)")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::post("/admin/accounts/{account_id}/status")]
pub async fn set_account_status(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: StatusBody = crate::signed::parse_json(&body)?;
    let account = crate::accounts::parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let status = match body.status.as_str() {
        "normal" => engine::ledger::types::AccountStatus::Normal,
        "debit_blocked" => engine::ledger::types::AccountStatus::DebitBlocked,
        "credit_blocked" => engine::ledger::types::AccountStatus::CreditBlocked,
        _ => return Err(ApiError::invalid("status is normal, debit_blocked or credit_blocked", "status")),
    };
    let command = engine::ledger::command::Command::SetAccountStatus { account, status };
    let reply = crate::accounts::execute(&engine, engine::ledger::command::Envelope { platform: 0, out_order_no: None, command }).await?;
    if !reply.is_ok() {
        return Err(crate::error::rejection(reply.code));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"account_id": crate::accounts::public_account_id(account), "status": body.status})))
}

/// `PATCH /admin/channels/{name}` (the clearing issue): changes a channel at run time (fees,
/// limits, daily cap, window, calendar, enabled, the simulator's behaviour); stored, so it
/// outlives restarts; routing uses it from the next order on. Answers the channel's report.
#[utoipa::path(patch, path = "/admin/channels/{name}", tag = "operator", request_body = clearing_actor::channels::ChannelChange, params(("name" = String, Path, description = "Channel name")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::patch("/admin/channels/{name}")]
pub async fn change_channel(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let change: clearing_actor::channels::ChannelChange = crate::signed::parse_json(&body)?;
    let name = path.into_inner();
    clearing.update_channel(name.clone(), change).await?;
    Ok(HttpResponse::Ok().json(channel_row(&clearing, &name).await?))
}

/// `POST /admin/channels` (the clearing issue): adds a channel at run time, in the shape of a
/// `[[channels]]` entry of the configuration file; stored, so it outlives restarts. Answers
/// 201 with the channel's report.
#[utoipa::path(post, path = "/admin/channels", tag = "operator", request_body = clearing_actor::channels::ChannelSpec, responses((status = 201, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::post("/admin/channels")]
pub async fn add_channel(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let spec: clearing_actor::channels::ChannelSpec = crate::signed::parse_json(&body)?;
    let name = spec.name.clone();
    clearing.add_channel(spec).await?;
    Ok(HttpResponse::Created().json(channel_row(&clearing, &name).await?))
}

/// One channel's row of the report, as `GET /admin/channels` shows it.
async fn channel_row(clearing: &clearing_actor::Clearing, name: &str) -> Result<serde_json::Value, ApiError> {
    let report = clearing.report().await?;
    Ok(report.into_iter().find(|r| r.name == name).map(|row| serde_json::to_value(row).expect("reports serialize")).unwrap_or_default())
}

/// `GET /admin/channels` (the clearing issue): every channel's configuration, today's use of its
/// daily cap, and its health (recent outcomes, circuit state).
#[utoipa::path(get, path = "/admin/channels", tag = "operator", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/channels")]
pub async fn list_channels(
    request: HttpRequest,
    token: web::Data<AdminToken>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"channels": clearing.report().await?})))
}
