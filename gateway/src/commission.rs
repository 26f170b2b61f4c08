//! Platforms' settlement rules over HTTP (the rule itself is `clearing_actor::commission`): tiered commission by the merchant's
//! cumulative income amount or number of income credits over a period, split among several
//! receivers (e.g. the platform and an agent), and the operator's service fee. The operator sets
//! a rule with `PUT /admin/platforms/{id}/settlement-rule`; every settlement run hands the
//! platform's current rule to the shards inside the `SettleChunk` steps (`Settle` before
//! session 62), which charge it on the income they mature (engine `ops::settle`).

use std::sync::Arc;

use actix_web::{delete, get, put, web, HttpRequest, HttpResponse};
use engine::ledger::types::{AccountId, AccountKind, AccountStatus, SettlementRule};
use engine::money::CurrencySpec;
use engine::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};
use crate::platforms::{Platform, Platforms};

pub use clearing_actor::commission::{format_rate, parse_rate, Basis, Period, RuleConfig, RECEIVERS_MAX, TIERS_MAX};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TierBody {
    /// From this cumulative figure on: an amount ("100000.00") for `amount`, a number of income
    /// credits ("100") for `count`. The first tier is from "0".
    from: String,
    /// Commission rate as a decimal fraction with up to 6 places ("0.006" is 0.6 %).
    rate: String,
}

/// The largest weight of one receiver's part.
const SHARE_MAX: u32 = 1_000_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiverBody {
    account_id: String,
    /// Weight of this receiver's part of each commission (parts are proportional to shares).
    share: u32,
}

/// `PUT /admin/platforms/{platform_id}/settlement-rule` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBody {
    currency: String,
    /// `amount` or `count`.
    basis: Basis,
    /// `day`, `week` (from Monday) or `month`: the span the tier measure accumulates over.
    period: Period,
    tiers: Vec<TierBody>,
    receivers: Vec<ReceiverBody>,
    /// The operator's service fee rate on matured income (default "0").
    service_fee_rate: Option<String>,
}

/// Validates a rule against the engine (currency, receivers are the platform's open accounts in
/// it) and returns its stored form.
pub(crate) async fn validate(engine: &Arc<Engine>, platform: u32, body: RuleBody) -> Result<RuleConfig, ApiError> {
    let (currency, spec) = crate::orders::currency(engine, &body.currency)?;
    if body.tiers.is_empty() || body.tiers.len() > TIERS_MAX {
        return Err(ApiError::invalid("tiers holds 1 to 16 tiers", "tiers"));
    }
    let mut tiers = Vec::with_capacity(body.tiers.len());
    for tier in &body.tiers {
        let from = match body.basis {
            Basis::Amount => spec.parse(&tier.from).filter(|m| *m >= 0),
            Basis::Count => tier.from.parse::<u32>().ok().map(i64::from),
        }
        .ok_or_else(|| ApiError::invalid("a tier's from is a non-negative amount (basis amount) or count (basis count)", "tiers"))?;
        let rate = parse_rate(&tier.rate).ok_or_else(|| ApiError::invalid("a rate is a decimal fraction from 0 to 1 with up to 6 places", "tiers"))?;
        tiers.push((from, rate));
    }
    if body.receivers.len() > RECEIVERS_MAX {
        return Err(ApiError::invalid("receivers holds at most 8 accounts", "receivers"));
    }
    let mut receivers = Vec::with_capacity(body.receivers.len());
    for receiver in &body.receivers {
        let account = crate::accounts::parse_account_id(&receiver.account_id).ok_or_else(|| ApiError::invalid("unknown receiver account", "receivers"))?;
        let found = receiver_account(engine, platform, account).await?;
        if found != Some(currency) {
            return Err(ApiError::invalid(
                "a receiver is an open account of this platform in the rule's currency that takes credits (not closed nor credit-blocked)",
                "receivers",
            ));
        }
        if !(1..=SHARE_MAX).contains(&receiver.share) {
            return Err(ApiError::invalid("a receiver's share is 1 to 1000000", "receivers"));
        }
        receivers.push((account.0, receiver.share as i64));
    }
    let service_fee_ppm = match &body.service_fee_rate {
        None => 0,
        Some(text) => parse_rate(text).ok_or_else(|| ApiError::invalid("a rate is a decimal fraction from 0 to 1 with up to 6 places", "service_fee_rate"))?,
    };
    let config = RuleConfig { currency: body.currency, basis: body.basis, period: body.period, tiers, receivers, service_fee_ppm };
    let check = config.engine_rule(currency, 0).check();
    check.map_err(|why| ApiError::invalid(why, if why.contains("receiver") { "receivers" } else { "tiers" }))?;
    Ok(config)
}

/// The currency of `account` when it is an open customer account of `platform` that takes
/// credits (a closed or credit-blocked receiver would send its commission to suspense).
async fn receiver_account(engine: &Arc<Engine>, platform: u32, account: AccountId) -> Result<Option<engine::money::CurrencyId>, ApiError> {
    let shard = account.shard(engine.config().shard_count);
    let engine = engine.clone();
    Ok(blocking(move || {
        engine.read_shard(shard, move |state| {
            state
                .account(account)
                .filter(|a| {
                    a.kind == AccountKind::Customer && a.platform == platform && !matches!(a.status, AccountStatus::Closed | AccountStatus::CreditBlocked)
                })
                .map(|a| a.currency)
        })
    })
    .await??)
}

/// The rule a settlement run of business day `day` applies for `platform` (`None`: income only
/// matures). A rule whose currency is no longer configured applies to nothing.
pub fn rule_for_run(engine: &Engine, platform: &Platform, day: u32) -> Option<Box<SettlementRule>> {
    let config = platform.settlement_rule.as_ref()?;
    let (currency, _) = crate::orders::currency(engine, &config.currency).ok()?;
    Some(config.for_run(currency, day))
}

/// A stored rule as the API shows it.
pub fn view(config: &RuleConfig, spec: &CurrencySpec) -> serde_json::Value {
    let tiers: Vec<_> = config
        .tiers
        .iter()
        .map(|(from, rate)| {
            let from = match config.basis {
                Basis::Amount => spec.format(*from),
                Basis::Count => from.to_string(),
            };
            json!({"from": from, "rate": format_rate(*rate)})
        })
        .collect();
    let receivers: Vec<_> = config
        .receivers
        .iter()
        .map(|(account, share)| json!({"account_id": crate::accounts::public_account_id(AccountId(*account)), "share": share}))
        .collect();
    json!({"currency": config.currency, "basis": config.basis, "period": config.period, "tiers": tiers, "receivers": receivers, "service_fee_rate": format_rate(config.service_fee_ppm)})
}

fn platform_of(platforms: &Platforms, text: &str) -> Result<Platform, ApiError> {
    Platform::parse_public_id(text).and_then(|id| platforms.get(id)).ok_or_else(ApiError::not_found)
}

fn shown(engine: &Engine, platform: &Platform) -> Result<HttpResponse, ApiError> {
    let config = platform.settlement_rule.as_ref().ok_or_else(ApiError::not_found)?;
    let (_, spec) = crate::orders::currency(engine, &config.currency)?;
    let mut body = view(config, &spec);
    body["platform_id"] = json!(platform.public_id());
    Ok(HttpResponse::Ok().json(body))
}

/// `PUT /admin/platforms/{platform_id}/settlement-rule`: sets the platform's rule; settlement
/// runs from now on apply it (what earlier runs charged stays as it was).
#[utoipa::path(put, path = "/admin/platforms/{platform_id}/settlement-rule", tag = "operator", request_body = crate::commission::RuleBody, params(("platform_id" = String, Path, description = "plt_...")), responses((status = 200, description = "The rule", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[put("/admin/platforms/{platform_id}/settlement-rule")]
pub async fn put_rule(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let platform = platform_of(&platforms, &path)?;
    let body: RuleBody = crate::signed::parse_json(&body)?;
    let config = validate(&engine, platform.id, body).await?;
    let store = platforms.get_ref().clone();
    let platform = blocking(move || store.set_settlement_rule(platform.id, Some(config))).await??;
    shown(&engine, &platform)
}

/// `GET /admin/platforms/{platform_id}/settlement-rule`: the platform's rule (404 when none).
#[utoipa::path(get, path = "/admin/platforms/{platform_id}/settlement-rule", tag = "operator", params(("platform_id" = String, Path, description = "plt_...")), responses((status = 200, description = "The rule", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/platforms/{platform_id}/settlement-rule")]
pub async fn get_rule(
    request: HttpRequest,
    path: web::Path<String>,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    shown(&engine, &platform_of(&platforms, &path)?)
}

/// `DELETE /admin/platforms/{platform_id}/settlement-rule`: income of later runs only matures.
#[utoipa::path(delete, path = "/admin/platforms/{platform_id}/settlement-rule", tag = "operator", params(("platform_id" = String, Path, description = "plt_...")), responses((status = 204, description = "Removed"), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[delete("/admin/platforms/{platform_id}/settlement-rule")]
pub async fn delete_rule(
    request: HttpRequest,
    path: web::Path<String>,
    token: web::Data<AdminToken>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let platform = platform_of(&platforms, &path)?;
    let store = platforms.get_ref().clone();
    blocking(move || store.set_settlement_rule(platform.id, None)).await??;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the rule routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(put_rule).service(get_rule).service(delete_rule);
}
