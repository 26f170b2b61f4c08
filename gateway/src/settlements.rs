//! `POST /admin/settlements` (API.md, the minimal run of the gateway issue): for a business
//! date, each platform's unsettled income credited on or before `business_date -
//! settlement_cycle_days` becomes withdrawable, its guarantee payments created on or before
//! `business_date - auto_confirm_days` are confirmed, and expired freezes are released. Every
//! step is idempotent, so re-running a date changes nothing. Tiered splits, fees, statements and
//! the schedule are the clearing issue's.

use std::sync::Arc;

use actix_web::{post, web, HttpRequest, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};
use crate::platforms::Platforms;

/// How long a settlement run waits for cross-shard credits to land.
const QUIESCENT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettlementBody {
    business_date: String,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn day_number(text: &str) -> Option<u32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).ok()?;
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("valid");
    u32::try_from((date - epoch).whole_days()).ok()
}

/// The first microsecond of business day `day` in a time zone `offset_seconds` east of UTC.
fn day_start_micros(day: i64, offset_seconds: i32) -> u64 {
    u64::try_from((day * 86_400 - offset_seconds as i64) * 1_000_000).unwrap_or(0)
}

#[utoipa::path(post, path = "/admin/settlements", tag = "operator", request_body = crate::settlements::SettlementBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/settlements")]
pub async fn settle(request: HttpRequest, body: web::Bytes, token: web::Data<AdminToken>, engine: web::Data<Arc<Engine>>, platforms: web::Data<Arc<Platforms>>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: SettlementBody = crate::v1::parse_json(&body)?;
    let day = day_number(&body.business_date).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let offset = engine.config().utc_offset_seconds;
    let (engine, platforms) = (engine.get_ref().clone(), platforms.all());
    let summary = blocking(move || -> Result<serde_json::Value, ApiError> {
        let mut rows = Vec::new();
        for platform in platforms {
            // Auto-confirm first: what it releases is income that the maturing may then cover.
            let created_before = day_start_micros(day as i64 - platform.auto_confirm_days as i64 + 1, offset);
            let envelope = Envelope { platform: platform.id, out_order_no: None, command: Command::AutoConfirm { created_before } };
            let confirmed: u64 = engine.broadcast(envelope)?.iter().map(|r| r.id).sum();
            // Released income travels to receivers on other shards: let it land before maturing.
            engine.wait_quiescent(QUIESCENT_WAIT)?;
            let through_day = day.checked_sub(platform.settlement_cycle_days as u32);
            let matured: u64 = match through_day {
                Some(through_day) => {
                    let envelope = Envelope { platform: platform.id, out_order_no: None, command: Command::Mature { through_day } };
                    engine.broadcast(envelope)?.iter().map(|r| r.id).sum()
                }
                None => 0,
            };
            rows.push(json!({"platform_id": platform.public_id(), "matured_accounts": matured, "auto_confirmed_orders": confirmed}));
        }
        let envelope = Envelope { platform: 0, out_order_no: None, command: Command::ExpireFreezes };
        let expired: u64 = engine.broadcast(envelope)?.iter().map(|r| r.id).sum();
        Ok(json!({"business_date": body.business_date, "platforms": rows, "expired_freezes": expired}))
    })
    .await??;
    Ok(HttpResponse::Ok().json(summary))
}

/// Registers the settlement route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(settle);
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
        assert_eq!(day_start_micros(1, 8 * 3600), 16 * 3600 * 1_000_000);
    }
}
