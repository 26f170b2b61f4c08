//! The system operator's API: bearer token, shard state, invariants.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{get, web, HttpRequest, HttpResponse};
use engine::invariants::check_engine;
use engine::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{blocking, ApiError};
use crate::secrets::{random_hex, read_secret_file, write_private, SecretError, SecretPlaces, SecretSource};

/// The system operator's token as the server holds it.
pub struct AdminToken(String);

/// The environment variable that holds the operator token.
pub const ADMIN_TOKEN_VARIABLE: &str = "CLEARING_ADMIN_TOKEN";
/// The operator token's file in the data directory (the zero-setup default).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The shortest operator token accepted, in characters: a token is a password nobody types, and
/// 32 characters of hex carry 128 bits.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 32;

impl AdminToken {
    /// `CLEARING_ADMIN_TOKEN` when set (non-empty); else the file `admin_token_file` names; else
    /// `<data_dir>/admin-token`, generated (32 random bytes, hex) and written with mode 0600 on
    /// first start (again when an older version left it empty). A token shorter than
    /// `ADMIN_TOKEN_CHARS_MIN` characters is refused, wherever it comes from.
    pub fn load(data_dir: &Path, places: &SecretPlaces) -> Result<(AdminToken, SecretSource), SecretError> {
        AdminToken::load_with(data_dir, places, std::env::var(ADMIN_TOKEN_VARIABLE).ok())
    }

    /// `load` with the environment variable's value given (tests).
    fn load_with(data_dir: &Path, places: &SecretPlaces, variable: Option<String>) -> Result<(AdminToken, SecretSource), SecretError> {
        let (token, source) = match variable {
            Some(token) if !token.is_empty() => (token, SecretSource::Environment),
            _ => match &places.admin_token_file {
                Some(path) => (read_secret_file(path, "operator token")?, SecretSource::File(path.clone())),
                None => {
                    let path = data_dir.join(ADMIN_TOKEN_FILE);
                    let existing = match std::fs::metadata(&path) {
                        Ok(_) => read_secret_file(&path, "operator token")?,
                        Err(_) => String::new(),
                    };
                    if existing.is_empty() {
                        let token = random_hex();
                        write_private(&path, &token).map_err(|e| SecretError(format!("writing the operator token to {}: {e}", path.display())))?;
                        (token, SecretSource::Generated(path))
                    } else {
                        (existing, SecretSource::DataDirectory(path))
                    }
                }
            },
        };
        let origin = match &source {
            SecretSource::Environment => ADMIN_TOKEN_VARIABLE.to_string(),
            SecretSource::File(path) | SecretSource::DataDirectory(path) | SecretSource::Generated(path) => path.display().to_string(),
        };
        if token.chars().count() < ADMIN_TOKEN_CHARS_MIN || token.chars().any(char::is_whitespace) {
            return Err(SecretError(format!(
                "the operator token in {origin} must be at least {ADMIN_TOKEN_CHARS_MIN} characters without spaces (for example 64 hex digits: `openssl rand -hex 32`)"
            )));
        }
        Ok((AdminToken(token), source))
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

/// Checks the operator token of every request under `/admin` before anything reads its body
/// (SECURITY.md: a network client cannot make the server read bodies): the handlers extracted
/// the body first and checked the token after, so anyone could have the server buffer up to the
/// body limit a connection for the body timeout (helper 102, session 63). A wrong or missing
/// token is answered 401 at once; the handlers still check it too.
pub async fn token_first(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    // The path the router matches (decoded: `/%61dmin/...` is routed to `/admin/...`; helper
    // 104), and the raw one too.
    let operator = |path: &str| path == "/admin" || path.starts_with("/admin/");
    // Only a request that announces a body is answered here: one without goes on to the
    // router and the handler's own check (so a method a path does not take stays 405).
    let headers = request.headers();
    let length = headers.get(actix_web::http::header::CONTENT_LENGTH).map(|value| value.to_str().map(str::trim).unwrap_or("?"));
    let announced = headers.contains_key(actix_web::http::header::TRANSFER_ENCODING) || length.is_some_and(|length| length != "0");
    if announced && (operator(request.match_info().as_str()) || operator(request.path())) {
        if let Some(token) = request.app_data::<web::Data<AdminToken>>() {
            if let Err(error) = token.check(request.request()) {
                let response = actix_web::ResponseError::error_response(&error);
                return Ok(request.into_response(response));
            }
        }
    }
    next.call(request).await.map(actix_web::dev::ServiceResponse::map_into_boxed_body)
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
    /// The batch of the newest checkpoint of the shard's state (written, or loaded at start);
    /// 0 when there is none.
    pub checkpoint_sequence: u64,
    /// When this process wrote it (microseconds since the epoch; 0: loaded at start, or none).
    pub checkpoint_at_us: u64,
    /// Checkpoints this process wrote.
    pub checkpoints: u64,
    /// Bytes of encoded state in the newest checkpoint written.
    pub checkpoint_bytes: u64,
    /// How long the last and the longest checkpoint held the shard's thread (copying its state).
    pub checkpoint_hold_us_last: u64,
    pub checkpoint_hold_us_max: u64,
    /// How long the last checkpoint took to encode and write (off the shard's thread).
    pub checkpoint_write_us_last: u64,
    /// Idempotency records in memory (those since the last checkpoint, and any a checkpoint in
    /// flight is writing to the store).
    pub idempotency_in_memory: u64,
    /// Idempotency records this process's checkpoints moved to the store.
    pub idempotency_evicted: u64,
    /// Order numbers read from the store before batches (not in memory), and the time it took.
    pub cold_probes: u64,
    pub cold_probe_us: u64,
    /// Pieces of history (chunks of orders, income blocks, batch index blocks) out of memory.
    pub history_cold: u64,
    /// Turns of the loop in which client requests waited for a checkpoint that lagged behind.
    pub checkpoint_lag_holds: u64,
    /// How long checkpoint threads waited for the shard's batches since start (a checkpoint
    /// gives way while the shard works, until the shard is a quarter of the way to the next).
    pub checkpoint_gave_way_us_total: u64,
    /// Client commands answered `overloaded` because their batch had read back all the history
    /// one batch may.
    pub history_reads_refused: u64,
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
        checkpoint_sequence: c.checkpoint_sequence.load(Ordering::Relaxed),
        checkpoint_at_us: c.checkpoint_at.load(Ordering::Relaxed),
        checkpoints: c.checkpoints.load(Ordering::Relaxed),
        checkpoint_bytes: c.checkpoint_bytes.load(Ordering::Relaxed),
        checkpoint_hold_us_last: c.checkpoint_hold_us.load(Ordering::Relaxed),
        checkpoint_hold_us_max: c.largest_checkpoint_hold_us.load(Ordering::Relaxed),
        checkpoint_write_us_last: c.checkpoint_write_us.load(Ordering::Relaxed),
        idempotency_in_memory: c.idempotency_in_memory.load(Ordering::Relaxed),
        idempotency_evicted: c.idempotency_evicted.load(Ordering::Relaxed),
        cold_probes: c.cold_probes.load(Ordering::Relaxed),
        cold_probe_us: c.cold_probe_us.load(Ordering::Relaxed),
        history_cold: c.history_cold.load(Ordering::Relaxed),
        checkpoint_lag_holds: c.checkpoint_lag_holds.load(Ordering::Relaxed),
        checkpoint_gave_way_us_total: c.checkpoint_gave_way_us_total.load(Ordering::Relaxed),
        history_reads_refused: c.history_reads_refused.load(Ordering::Relaxed),
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
    // Checked after the token, so a caller without one learns nothing; a number past u16 is not a
    // shard number at all (400), a shard number the engine does not have is 404.
    let shard = path.parse::<u16>().map_err(|_| ApiError::invalid("shard must be a shard number (0-65535)", "shard"))?;
    let view = shard_view(&engine, shard).ok_or_else(ApiError::not_found)?;
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
        .service(rotate_secret)
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
    let (platform, secret, replayed) = blocking(move || platforms.create(new)).await??;
    let mut answer = HttpResponse::Created();
    if replayed {
        answer.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(answer.json(CreatedPlatform {
        platform_id: platform.public_id(),
        secret,
        name: platform.name,
        settlement_cycle_days: platform.settlement_cycle_days,
        auto_confirm_days: platform.auto_confirm_days,
        require_payment_password: platform.require_payment_password,
    }))
}

#[derive(Serialize)]
struct RotatedSecret {
    platform_id: String,
    secret: String,
    secret_version: u32,
    /// Until when (RFC 3339, UTC) the previous secret still verifies; null: it no longer does.
    previous_secret_valid_until: Option<String>,
}

/// `POST /admin/platforms/{platform_id}/rotate-secret` (an addition to API.md): issues the
/// platform's next secret, shown in this answer only; the current one keeps verifying for the
/// overlap (`overlap_seconds`, default `[secrets] rotation_overlap_seconds`), then only the new
/// one does. Durable: the version and the overlap's end outlive restarts. With `from_version`
/// a repeated request (its answer lost) shows the same secret again instead of rotating twice.
#[utoipa::path(post, path = "/admin/platforms/{platform_id}/rotate-secret", tag = "operator", request_body = crate::platforms::RotateSecret, params(("platform_id" = String, Path, description = "Platform id (plt_...)")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::post("/admin/platforms/{platform_id}/rotate-secret")]
pub async fn rotate_secret(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let rotate: crate::platforms::RotateSecret = if body.iter().all(u8::is_ascii_whitespace) { Default::default() } else { crate::signed::parse_json(&body)? };
    let id = crate::platforms::Platform::parse_public_id(&path).ok_or_else(ApiError::not_found)?;
    let platforms = platforms.get_ref().clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    // The store write syncs to disk: off the async workers.
    let (platform, secret) = blocking(move || match rotate.from_version {
        None => platforms.rotate_secret(id, rotate, now),
        Some(from) => match platforms.rotate_secret_from(id, rotate, from, crate::platforms::ROTATED_BY_OPERATOR_API, now)? {
            crate::platforms::Rotation::Rotated(platform, secret) => Ok((platform, secret)),
            // Shown again only while the secret it replaced still verifies (a retry soon after
            // a lost answer), not at any later time to whoever asks.
            crate::platforms::Rotation::Shown(platform, secret) if platform.previous_secret.is_some_and(|p| p.valid_until > now) => Ok((platform, secret)),
            crate::platforms::Rotation::Shown(..) | crate::platforms::Rotation::Changed => {
                Err(ApiError::new(409, "idempotency_conflict", "the secret was rotated from another version since: read the platform's secret_version"))
            }
        },
    })
    .await??;
    let until = platform.previous_secret.map(|p| {
        time::OffsetDateTime::from_unix_timestamp(p.valid_until)
            .map_or_else(|_| p.valid_until.to_string(), |t| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default())
    });
    Ok(HttpResponse::Ok().json(RotatedSecret {
        platform_id: platform.public_id(),
        secret,
        secret_version: platform.secret_version,
        previous_secret_valid_until: until,
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
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
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
    if status == engine::ledger::types::AccountStatus::CreditBlocked {
        // A commission receiver of its platform's rule is not credit-blocked (its commission
        // would go to suspense, one case per merchant each night: helper 121#2).
        let (reading, shard) = (engine.get_ref().clone(), account.shard(engine.config().shard_count));
        let owner = blocking(move || reading.read_shard(shard, move |state| state.account(account).map(|a| a.platform))).await??;
        if owner.and_then(|owner| platforms.get(owner)).is_some_and(|platform| crate::accounts::names_as_receiver(&platform, account)) {
            return Err(crate::accounts::receiver_refusal());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_tokens_are_long_private_and_an_empty_file_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let none = SecretPlaces::default();
        // An empty token file (an older version crashed while writing it): a new token.
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "").expect("empty");
        std::fs::set_permissions(dir.path().join(ADMIN_TOKEN_FILE), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (token, source) = AdminToken::load_with(dir.path(), &none, None).expect("generated");
        assert_eq!((token.0.len(), source), (64, SecretSource::Generated(dir.path().join(ADMIN_TOKEN_FILE))));
        let (again, source) = AdminToken::load_with(dir.path(), &none, None).expect("read back");
        assert_eq!((again.0, source), (token.0.clone(), SecretSource::DataDirectory(dir.path().join(ADMIN_TOKEN_FILE))));
        // (token from the environment, accepted)
        let cases = [
            ("tok", false),
            ("0123456789abcdef0123456789abcde", false),
            ("0123456789abcdef0123456789abcdef", true),
            ("0123456789abcdef 0123456789abcdef", false),
        ];
        for (offered, accepted) in cases {
            assert_eq!(AdminToken::load_with(dir.path(), &none, Some(offered.to_string())).is_ok(), accepted, "{offered}");
        }
        let error = AdminToken::load_with(dir.path(), &none, Some("tok".into())).err().expect("refused");
        assert!(error.0.contains("CLEARING_ADMIN_TOKEN") && error.0.contains("at least 32 characters"), "{error}");
    }
}
