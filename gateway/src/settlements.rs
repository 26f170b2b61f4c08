//! The settlement run over HTTP (`POST /admin/settlements`, run by the clearing actor; see
//! `clearing_actor::settlement`), the daily schedule's state (`GET /admin/settlements`), and the
//! settlement statements as CSV.

use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use clearing_actor::calendar::{date_text, parse_date};
use clearing_actor::settlement::PlatformTerms;
use clearing_actor::Clearing;
use engine::{Engine, EngineError};
use serde::Deserialize;

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};
use crate::platforms::{Platform, Platforms};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettlementBody {
    business_date: String,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn day_number(text: &str) -> Option<u32> {
    parse_date(text)
}

/// Each platform's terms for the run of business day `day`: its cycles and the settlement rule in
/// force (the rule's period starts from that day).
pub fn terms(engine: &Engine, platforms: &[Platform], day: u32) -> Vec<PlatformTerms> {
    platforms
        .iter()
        .map(|platform| PlatformTerms {
            id: platform.id,
            public_id: platform.public_id(),
            auto_confirm_days: platform.auto_confirm_days,
            settlement_cycle_days: platform.settlement_cycle_days,
            rule: crate::commission::rule_for_run(engine, platform, day),
        })
        .collect()
}

#[utoipa::path(post, path = "/admin/settlements", tag = "operator", request_body = crate::settlements::SettlementBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/settlements")]
pub async fn settle(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    clearing: web::Data<Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: SettlementBody = crate::signed::parse_json(&body)?;
    let day = day_number(&body.business_date).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let summary = clearing.settle(day, terms(&engine, &platforms.all(), day)).await?;
    Ok(HttpResponse::Ok().json(summary))
}

/// `GET /admin/settlements`: the daily settlement schedule: its cut-off, the next business date
/// it runs, the last that succeeded, and failed runs (a failed run is tried again a minute later,
/// for the same date, until it succeeds).
#[utoipa::path(get, path = "/admin/settlements", tag = "operator", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/settlements")]
pub async fn schedule(request: HttpRequest, token: web::Data<AdminToken>, clearing: web::Data<Clearing>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body = match clearing.schedule().await? {
        None => serde_json::json!({"scheduled": false}),
        Some(s) => serde_json::json!({
            "scheduled": true,
            "cutoff": format!("{:02}:{:02}", s.cutoff_minute / 60, s.cutoff_minute % 60),
            "next_business_date": date_text(s.next_day),
            "last_success": s.last_success_day.map(date_text),
            "failures_total": s.failures_total,
            "failures_in_a_row": s.failures_in_a_row,
            "last_error": s.last_error,
        }),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// The settlement statement of a business date as CSV: an `income` line per account whose income
/// the run of that date made withdrawable, with what the platform's rule charged on it
/// (commission, service fee) and what stayed (`net_amount`), then a `commission` line per
/// receiver with what it received (`platform` limits it to one platform, `account` to one
/// account: a merchant's own statement). `count` is the income credits matured on an income
/// line, and the accounts the commission came from on a commission line.
pub fn statement_csv(engine: &Engine, platforms: &[Platform], day: u32, account: Option<engine::ledger::types::AccountId>) -> Result<String, EngineError> {
    let mut rows: Vec<[String; 15]> = Vec::new();
    let wanted: Vec<(u32, u32)> = platforms.iter().filter_map(|p| day.checked_sub(p.settlement_cycle_days as u32).map(|through| (p.id, through))).collect();
    let mut receivers: std::collections::BTreeMap<(u32, u64, u8), (i64, u32, u32)> = std::collections::BTreeMap::new();
    for shard in 0..engine.config().shard_count {
        let wanted = wanted.clone();
        let (lines, received) = engine.read_shard(shard, move |state| {
            let due = |platform: u32, through: u32| wanted.iter().any(|(p, t)| *p == platform && *t == through);
            // The days' rows only (`DayRuns`): chunks of other days are not read.
            let mut days: Vec<u32> = wanted.iter().map(|(_, through)| *through).collect();
            days.sort_unstable();
            days.dedup();
            let mut lines = Vec::new();
            days.iter().for_each(|through| {
                state.settled_runs.visit(&state.settled, *through, |row| {
                    if !due(row.platform, row.through_day) || account.is_some_and(|a| a != row.account) {
                        return;
                    }
                    let spec = state.currencies[row.currency.0 as usize];
                    let owner = state.account(row.account).map_or(0, |a| a.owner);
                    // A tier measure only where a commission rate applied: a commission receiver
                    // pays the service fee (journal format 6) but has no measure (helper 123#4).
                    let charged = row.commission > 0 || row.rate_ppm > 0;
                    lines.push([
                        date_text(day),
                        format!("plt_{}", row.platform),
                        "income".to_string(),
                        crate::accounts::public_account_id(row.account),
                        crate::members::Member::public_id_of(owner),
                        spec.code_str().to_string(),
                        date_text(row.through_day),
                        spec.format(row.amount),
                        row.credits.to_string(),
                        if charged { row.period_measure.to_string() } else { String::new() },
                        crate::commission::format_rate(row.rate_ppm),
                        spec.format(row.commission),
                        spec.format(row.service_fee),
                        spec.format(row.amount - row.commission - row.service_fee),
                        crate::orders::format_time(row.at),
                    ]);
                })
            });
            let mut received = Vec::new();
            days.iter().for_each(|through| {
                state.commission_runs.visit(&state.commissions, *through, |row| {
                    if due(row.platform, row.through_day) && account.is_none_or(|a| a == row.receiver) {
                        received.push(((row.platform, row.receiver.0, row.currency.0), (row.amount, row.accounts, row.through_day)));
                    }
                })
            });
            (lines, received)
        })?;
        rows.extend(lines);
        for (key, (amount, accounts, through_day)) in received {
            let sum = receivers.entry(key).or_insert((0, 0, through_day));
            // Saturating as the engine's own rows are (a row past 10^18 is no real day's).
            sum.0 = sum.0.saturating_add(amount);
            sum.1 = sum.1.saturating_add(accounts);
        }
    }
    for ((platform, receiver, currency), (amount, accounts, through_day)) in receivers {
        let spec = engine.config().currencies[currency as usize];
        let receiver = engine::ledger::types::AccountId(receiver);
        let shard = receiver.shard(engine.config().shard_count);
        let owner = engine.read_shard(shard, move |state| state.account(receiver).map_or(0, |a| a.owner))?;
        rows.push([
            date_text(day),
            format!("plt_{platform}"),
            "commission".to_string(),
            crate::accounts::public_account_id(receiver),
            crate::members::Member::public_id_of(owner),
            spec.code_str().to_string(),
            date_text(through_day),
            String::new(),
            accounts.to_string(),
            String::new(),
            String::new(),
            spec.format(amount),
            String::new(),
            spec.format(amount),
            String::new(),
        ]);
    }
    // The csv crate writes it (quoting whatever a field may ever hold).
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(128 * (rows.len() + 1)));
    writer.write_record(STATEMENT_COLUMNS).expect("writing to memory cannot fail");
    for row in &rows {
        writer.write_record(row).expect("writing to memory cannot fail");
    }
    let bytes = writer.into_inner().expect("writing to memory cannot fail");
    Ok(String::from_utf8(bytes).expect("the csv writer writes the UTF-8 it is given"))
}

/// The columns of a settlement statement.
pub const STATEMENT_COLUMNS: [&str; 15] = [
    "business_date",
    "platform_id",
    "line",
    "account_id",
    "member_id",
    "currency",
    "income_through",
    "matured_amount",
    "count",
    "period_measure",
    "rate",
    "commission",
    "service_fee",
    "net_amount",
    "settled_at",
];

/// `GET /admin/settlements/{business_date}/statement.csv?platform_id=`: the operator's statement.
#[utoipa::path(get, path = "/admin/settlements/{business_date}/statement.csv", tag = "operator", params(("business_date" = String, Path, description = "YYYY-MM-DD"), ("platform_id" = Option<String>, Query, description = "One platform only")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/settlements/{business_date}/statement.csv")]
pub async fn operator_statement(
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StatementQuery>,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let day = day_number(&path).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let mut all = platforms.all();
    if let Some(id) = &query.platform_id {
        let id = Platform::parse_public_id(id).ok_or_else(ApiError::not_found)?;
        all.retain(|p| p.id == id);
    }
    let engine = engine.get_ref().clone();
    let csv = blocking(move || statement_csv(&engine, &all, day, None)).await??;
    Ok(HttpResponse::Ok().content_type("text/csv").body(csv))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    platform_id: Option<String>,
    account_id: Option<String>,
}

/// `GET /v1/settlements/{business_date}/statement.csv?account_id=`: a platform's statement of a
/// date, or one merchant's (an addition to API.md).
#[utoipa::path(get, path = "/v1/settlements/{business_date}/statement.csv", tag = "accounts", params(("business_date" = String, Path, description = "YYYY-MM-DD"), ("account_id" = Option<String>, Query, description = "One account only")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/settlements/{business_date}/statement.csv")]
pub async fn platform_statement(
    signed: crate::signed::Signed,
    path: web::Path<String>,
    query: web::Query<StatementQuery>,
    engine: web::Data<Arc<Engine>>,
) -> Result<HttpResponse, ApiError> {
    let day = day_number(&path).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let account = match &query.account_id {
        None => None,
        Some(text) => {
            let id = crate::accounts::parse_account_id(text).ok_or_else(ApiError::not_found)?;
            crate::accounts::owner_of(&engine, signed.platform.id, id).await?;
            Some(id)
        }
    };
    let (engine, platform) = (engine.get_ref().clone(), signed.platform);
    let csv = blocking(move || statement_csv(&engine, &[platform], day, account)).await??;
    Ok(HttpResponse::Ok().content_type("text/csv").body(csv))
}

/// Registers the settlement route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(settle).service(schedule).service(operator_statement).service(platform_statement);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_table() {
        assert_eq!(day_number("1970-01-02"), Some(1));
        assert_eq!(day_number("2026-11-22"), Some(20_779));
        assert_eq!(day_number("2026-02-30"), None);
        assert_eq!(day_number("22/11/2026"), None);
    }
}
