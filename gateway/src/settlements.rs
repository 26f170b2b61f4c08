//! `POST /admin/settlements` (API.md, the minimal run of the gateway issue): for a business
//! date, each platform's unsettled income credited on or before `business_date -
//! settlement_cycle_days` becomes withdrawable, its guarantee payments created on or before
//! `business_date - auto_confirm_days` are confirmed, and expired freezes are released. Every
//! step is idempotent, so re-running a date changes nothing. Tiered splits, fees, statements and
//! the schedule are the clearing issue's.

use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::{Engine, EngineError};
use serde::Deserialize;
use serde_json::json;

use std::collections::HashMap;

use engine::ledger::types::{OrderDetail, OrderStatus};
use engine::money::{CurrencyId, Minor};

use crate::admin::AdminToken;
use crate::channels::Channels;
use crate::error::{blocking, ApiError};
use crate::platforms::{Platform, Platforms};

/// How long a settlement run waits for the cross-shard credits sent before it to land.
const CREDITS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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

/// Runs the settlement of business day `day` (days since 1970-01-01) for every platform, calling
/// `progress` after each platform; returns the summary. Blocking: waits on the shards.
pub fn run(
    engine: &Engine,
    platforms: &[Platform],
    channels: &Channels,
    day: u32,
    progress: &mut dyn FnMut(usize, &serde_json::Value),
) -> Result<serde_json::Value, EngineError> {
    let offset = engine.config().utc_offset_seconds;
    let mut rows = Vec::new();
    for (index, platform) in platforms.iter().enumerate() {
        // Auto-confirm first: what it releases is income that the maturing may then cover.
        let created_before = day_start_micros(day as i64 - platform.auto_confirm_days as i64 + 1, offset);
        let envelope = Envelope { platform: platform.id, out_order_no: None, command: Command::AutoConfirm { created_before } };
        let confirmed: u64 = engine.broadcast(envelope)?.iter().map(|r| r.id).sum();
        // Released income travels to receivers on other shards: let it land before maturing.
        engine.wait_credits_applied(CREDITS_WAIT)?;
        let through_day = day.checked_sub(platform.settlement_cycle_days as u32);
        let rule = crate::commission::rule_for_run(engine, platform, day);
        let matured: u64 = match through_day {
            Some(through_day) => {
                let envelope = Envelope { platform: platform.id, out_order_no: None, command: Command::Settle { through_day, rule } };
                engine.broadcast(envelope)?.iter().map(|r| r.id).sum()
            }
            None => 0,
        };
        let mut row = json!({"platform_id": platform.public_id(), "matured_accounts": matured, "auto_confirmed_orders": confirmed, "income_through": through_day.map(date_text)});
        if let Some(through_day) = through_day {
            row["totals"] = totals(engine, platform.id, through_day)?;
        }
        progress(index + 1, &row);
        rows.push(row);
    }
    // Commissions travel to receivers on other shards: let them land before the statement.
    engine.wait_credits_applied(CREDITS_WAIT)?;
    // The channels' charges for the day's orders (and the day before's, for orders that came in
    // after that run): the bank takes them from the reserve.
    let mut fees = Vec::new();
    for row in channel_fees(engine, channels, [day.saturating_sub(1), day])? {
        let command = Command::ChargeChannelFees { shard: row.shard, channel: row.channel, day: row.day, currency: row.currency, total: row.total };
        let reply = engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
        let spec = engine.config().currencies[row.currency.0 as usize];
        fees.push(json!({"channel": crate::channels::name(row.channel), "business_date": date_text(row.day), "shard": row.shard, "currency": spec.code_str(), "orders": row.orders, "fees": spec.format(row.total), "booked_now": spec.format(reply.id as i64)}));
    }
    let envelope = Envelope { platform: 0, out_order_no: None, command: Command::ExpireFreezes };
    let expired: u64 = engine.broadcast(envelope)?.iter().map(|r| r.id).sum();
    let invariants = engine::invariants::check_engine(engine)?;
    Ok(json!({"business_date": date_text(day), "platforms": rows, "channel_fees": fees, "expired_freezes": expired, "invariants_ok": invariants.ok}))
}

/// One channel's charges for one shard's orders of a day.
struct ChannelFeeRow {
    day: u32,
    shard: u16,
    channel: u16,
    currency: CurrencyId,
    total: Minor,
    orders: u64,
}

/// What each channel charges (its tariff) for each shard's orders of the business `days` that
/// it carried out: payouts at the fee we booked with them, money in at the channel's fee model.
/// One pass over each shard's orders; only rows with a positive total, in day order.
fn channel_fees(engine: &Engine, channels: &Channels, days: [u32; 2]) -> Result<Vec<ChannelFeeRow>, EngineError> {
    let tariffs: HashMap<u16, crate::channels::Channel> = channels.all().into_iter().map(|c| (c.id, c)).collect();
    let tariffs = Arc::new(tariffs);
    let offset = engine.config().utc_offset_seconds as i64;
    let mut rows = Vec::new();
    for shard in 0..engine.config().shard_count {
        let tariffs = tariffs.clone();
        let sums = engine.read_shard(shard, move |state| {
            let mut sums: std::collections::BTreeMap<(u32, u16, u8), (Minor, u64)> = std::collections::BTreeMap::new();
            for order in state.orders.iter() {
                let Some(channel) = crate::reconcile::channel_of(&order.detail) else { continue };
                if matches!(order.status, OrderStatus::Pending | OrderStatus::Processing | OrderStatus::Failed) {
                    continue;
                }
                let created_day = ((order.created_at / 1_000_000) as i64 + offset).div_euclid(86_400);
                let Some(day) = days.iter().copied().find(|d| *d as i64 == created_day) else { continue };
                let fee = match order.detail {
                    OrderDetail::Withdrawal { fee, .. } => fee,
                    _ => tariffs.get(&channel).map_or(0, |c| c.fee(order.amount)),
                };
                let sum = sums.entry((day, channel, order.currency.0)).or_default();
                sum.0 += fee;
                sum.1 += 1;
            }
            sums
        })?;
        for ((day, channel, currency), (total, orders)) in sums {
            if total > 0 {
                rows.push(ChannelFeeRow { day, shard, channel, currency: CurrencyId(currency), total, orders });
            }
        }
    }
    rows.sort_by_key(|r| (r.day, r.shard, r.channel, r.currency.0));
    Ok(rows)
}

/// What the settlement of `through_day`'s income charged a platform's accounts, per currency:
/// matured income, commission, service fee and what stayed with the accounts (from every run of
/// that date, so a re-run shows the same figures).
fn totals(engine: &Engine, platform: u32, through_day: u32) -> Result<serde_json::Value, EngineError> {
    let mut sums: std::collections::BTreeMap<u8, [i128; 4]> = std::collections::BTreeMap::new();
    for shard in 0..engine.config().shard_count {
        let part = engine.read_shard(shard, move |state| {
            let mut part: Vec<(u8, [i128; 4])> = Vec::new();
            for row in state.settled.iter().filter(|r| r.platform == platform && r.through_day == through_day) {
                let net = row.amount - row.commission - row.service_fee;
                part.push((row.currency.0, [row.amount as i128, row.commission as i128, row.service_fee as i128, net as i128]));
            }
            part
        })?;
        for (currency, figures) in part {
            let sum = sums.entry(currency).or_default();
            for (total, figure) in sum.iter_mut().zip(figures) {
                *total += figure;
            }
        }
    }
    let currencies = engine.config().currencies.clone();
    let rows: Vec<_> = sums
        .into_iter()
        .map(|(currency, [matured, commission, service_fee, net])| {
            let spec = currencies[currency as usize];
            json!({"currency": spec.code_str(), "matured": spec.format(matured as i64), "commission": spec.format(commission as i64), "service_fee": spec.format(service_fee as i64), "net": spec.format(net as i64)})
        })
        .collect();
    Ok(json!(rows))
}

/// `YYYY-MM-DD` of a day number.
pub fn date_text(day: u32) -> String {
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).expect("valid");
    let date = epoch + time::Duration::days(day as i64);
    format!("{:04}-{:02}-{:02}", date.year(), date.month() as u8, date.day())
}

#[utoipa::path(post, path = "/admin/settlements", tag = "operator", request_body = crate::settlements::SettlementBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/settlements")]
pub async fn settle(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
    channels: web::Data<Arc<Channels>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: SettlementBody = crate::v1::parse_json(&body)?;
    let day = day_number(&body.business_date).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let (engine, platforms, channels) = (engine.get_ref().clone(), platforms.all(), channels.get_ref().clone());
    let summary = blocking(move || run(&engine, &platforms, &channels, day, &mut |_, _| {})).await??;
    Ok(HttpResponse::Ok().json(summary))
}

/// The settlement statement of a business date as CSV: an `income` line per account whose income
/// the run of that date made withdrawable, with what the platform's rule charged on it
/// (commission, service fee) and what stayed (`net_amount`), then a `commission` line per
/// receiver with what it received (`platform` limits it to one platform, `account` to one
/// account: a merchant's own statement). `count` is the income credits matured on an income
/// line, and the accounts the commission came from on a commission line.
fn statement_csv(engine: &Engine, platforms: &[Platform], day: u32, account: Option<engine::ledger::types::AccountId>) -> Result<String, EngineError> {
    let mut csv = String::from("business_date,platform_id,line,account_id,member_id,currency,income_through,matured_amount,count,period_measure,rate,commission,service_fee,net_amount,settled_at\n");
    let wanted: Vec<(u32, u32)> = platforms.iter().filter_map(|p| day.checked_sub(p.settlement_cycle_days as u32).map(|through| (p.id, through))).collect();
    let mut receivers: std::collections::BTreeMap<(u32, u64, u8), (i64, u32, u32)> = std::collections::BTreeMap::new();
    for shard in 0..engine.config().shard_count {
        let wanted = wanted.clone();
        let (lines, received) = engine.read_shard(shard, move |state| {
            let due = |platform: u32, through: u32| wanted.iter().any(|(p, t)| *p == platform && *t == through);
            let mut lines = Vec::new();
            for row in state.settled.iter() {
                if !due(row.platform, row.through_day) || account.is_some_and(|a| a != row.account) {
                    continue;
                }
                let spec = state.currencies[row.currency.0 as usize];
                let owner = state.account(row.account).map_or(0, |a| a.owner);
                let charged = row.commission > 0 || row.service_fee > 0 || row.rate_ppm > 0;
                lines.push(format!(
                    "{},plt_{},income,{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    date_text(day),
                    row.platform,
                    crate::accounts::public_account_id(row.account),
                    crate::members::Member::public_id_of(owner),
                    spec.code_str(),
                    date_text(row.through_day),
                    spec.format(row.amount),
                    row.credits,
                    if charged { row.period_measure.to_string() } else { String::new() },
                    crate::commission::format_rate(row.rate_ppm),
                    spec.format(row.commission),
                    spec.format(row.service_fee),
                    spec.format(row.amount - row.commission - row.service_fee),
                    crate::orders::format_time(row.at)
                ));
            }
            let mut received = Vec::new();
            for row in state.commissions.iter() {
                if due(row.platform, row.through_day) && account.is_none_or(|a| a == row.receiver) {
                    received.push(((row.platform, row.receiver.0, row.currency.0), (row.amount, row.accounts, row.through_day)));
                }
            }
            (lines, received)
        })?;
        csv.extend(lines);
        for (key, (amount, accounts, through_day)) in received {
            let sum = receivers.entry(key).or_insert((0, 0, through_day));
            sum.0 += amount;
            sum.1 += accounts;
        }
    }
    for ((platform, receiver, currency), (amount, accounts, through_day)) in receivers {
        let spec = engine.config().currencies[currency as usize];
        let receiver = engine::ledger::types::AccountId(receiver);
        let shard = receiver.shard(engine.config().shard_count);
        let owner = engine.read_shard(shard, move |state| state.account(receiver).map_or(0, |a| a.owner))?;
        csv.push_str(&format!(
            "{},plt_{platform},commission,{},{},{},{},,{accounts},,,{},,{},\n",
            date_text(day),
            crate::accounts::public_account_id(receiver),
            crate::members::Member::public_id_of(owner),
            spec.code_str(),
            date_text(through_day),
            spec.format(amount),
            spec.format(amount),
        ));
    }
    Ok(csv)
}

/// `GET /admin/settlements/{business_date}/statement.csv?platform_id=`: the operator's statement.
#[utoipa::path(get, path = "/admin/settlements/{business_date}/statement.csv", tag = "operator", params(("business_date" = String, Path, description = "YYYY-MM-DD"), ("platform_id" = Option<String>, Query, description = "One platform only")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
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
#[utoipa::path(get, path = "/v1/settlements/{business_date}/statement.csv", tag = "accounts", params(("business_date" = String, Path, description = "YYYY-MM-DD"), ("account_id" = Option<String>, Query, description = "One account only")), responses((status = 200, description = "CSV", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/settlements/{business_date}/statement.csv")]
pub async fn platform_statement(
    signed: crate::v1::Signed,
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

/// Runs the settlement every day at the cut-off (business-local "HH:MM"), for that business day.
pub fn start_schedule(engine: Arc<Engine>, platforms: Arc<Platforms>, channels: Arc<Channels>, cutoff_minute: u32) -> std::io::Result<()> {
    std::thread::Builder::new().name("settlement".into()).spawn(move || loop {
        let offset = engine.config().utc_offset_seconds as i64;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) + offset;
        let (today, minute) = (now.div_euclid(86_400), now.rem_euclid(86_400) / 60);
        let next = if minute < cutoff_minute as i64 { today * 86_400 + cutoff_minute as i64 * 60 } else { (today + 1) * 86_400 + cutoff_minute as i64 * 60 };
        std::thread::sleep(std::time::Duration::from_secs((next - now).max(1) as u64));
        let day = (next.div_euclid(86_400)) as u32;
        match run(&engine, &platforms.all(), &channels, day, &mut |_, _| {}) {
            Ok(summary) => println!("settlement of {}: {summary}", date_text(day)),
            Err(error) => {
                eprintln!("settlement of {} failed: {error}", date_text(day));
                return;
            }
        }
    })?;
    Ok(())
}

/// Registers the settlement route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(settle).service(operator_statement).service(platform_statement);
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
