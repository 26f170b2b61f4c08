//! The system portal's operations pages: channels (parameters, caps used, health, a
//! `change_channel` proposal each), live shard state, settlement (schedule, a run for a date,
//! statements as CSV), reconciliation (a run against the simulator's statement or a pasted file,
//! the cases with a `resolve_case` proposal each), invariants and the reserve check, and the
//! dashboard's charts.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use clearing_actor::calendar::{date_text, parse_date};
use clearing_actor::cases::{CaseFilter, CasePage};
use clearing_actor::Clearing;
use engine::Engine;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::super::operators::{Role, Scope};
use super::super::{check_form, csrf_field, notice, page, Fields, PortalError, Session};
use super::{system, EngineData, PlatformsData, PortalData};
use crate::charts::{Frame, Series, Unit};
use crate::error::{blocking, ApiError};
use crate::platforms::Platform;

type ClearingData = web::Data<Clearing>;

// ---- Dashboard charts ------------------------------------------------------------------------

/// Days the dashboard's charts cover.
const CHART_DAYS: u32 = 14;

/// The dashboard's charts (trusted SVG from `crate::charts`, which escapes every text it is
/// given): orders per day by kind, balances held, channels' success rate, settlement totals.
pub(super) async fn dashboard_charts(engine: &Arc<Engine>, clearing: &Clearing) -> Markup {
    let today = crate::stats::today(engine);
    let days = today.saturating_sub(CHART_DAYS - 1)..=today;
    let labels: Vec<String> = days.clone().map(|d| date_text(d)[5..].to_string()).collect();
    let mut charts: Vec<String> = Vec::new();
    if let Ok(volume) = crate::stats::daily_volume(engine, None, days.clone()).await {
        let mut kinds: Vec<&str> = volume.iter().map(|v| v.kind).collect();
        kinds.sort();
        kinds.dedup();
        let series: Vec<Series> = kinds
            .iter()
            .map(|kind| Series {
                name: kind.to_string(),
                values: days.clone().map(|d| volume.iter().filter(|v| v.day == d && v.kind == *kind).map(|v| v.count as i64).sum()).collect(),
            })
            .collect();
        let frame = Frame { id: "chart-volume", title: "Orders per day by kind", unit: Unit::Count };
        charts.push(crate::charts::stacked_bars(&frame, &labels, &series));
    }
    if let Ok(held) = crate::stats::balances_held(engine, None).await {
        for balance in held.iter().take(2) {
            let Some((_, spec)) = crate::orders::currency(engine, &balance.currency).ok() else { continue };
            let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            let bars = vec![
                ("settled".to_string(), clamp(balance.settled)),
                ("unsettled".to_string(), clamp(balance.unsettled)),
                ("frozen".to_string(), clamp(balance.frozen)),
                ("escrow".to_string(), clamp(balance.escrow)),
                ("suspense".to_string(), clamp(balance.suspense.unwrap_or(0))),
            ];
            let title = format!("Balances held ({})", balance.currency);
            let id = format!("chart-held-{}", balance.currency);
            charts.push(crate::charts::horizontal_bars(&Frame { id: &id, title: &title, unit: Unit::Money(spec) }, &bars));
        }
    }
    if let Ok(report) = clearing.report().await {
        charts.extend(channel_charts(&report));
    }
    if let Ok(settled) = crate::stats::settlement_days(engine, None, days.clone()).await {
        if let Some(first) = settled.first() {
            if let Ok((_, spec)) = crate::orders::currency(engine, &first.currency) {
                let of = |pick: fn(&crate::stats::SettlementDay) -> i128| -> Vec<i64> {
                    days.clone()
                        .map(|d| {
                            settled.iter().filter(|s| s.day == d && s.currency == first.currency).map(pick).sum::<i128>().clamp(0, i64::MAX as i128) as i64
                        })
                        .collect()
                };
                let series = vec![
                    Series { name: "commissions".into(), values: of(|s| s.commissions) },
                    Series { name: "service fees".into(), values: of(|s| s.service_fees) },
                    Series { name: "channel fees".into(), values: of(|s| s.channel_fees.unwrap_or(0)) },
                ];
                let title = format!("Settlement charges per day ({})", first.currency);
                charts.push(crate::charts::stacked_bars(&Frame { id: "chart-settlement", title: &title, unit: Unit::Money(spec) }, &labels, &series));
            }
        }
    }
    html! {
        div.charts {
            @for svg in &charts { section.card { (PreEscaped(svg)) } }
        }
    }
}

// ---- Channels --------------------------------------------------------------------------------

/// The channels' charts: the success rate of each channel's recent verdicts (its health window),
/// and the latency of payouts from handing them to the bank to the verdict (p50 and p95 of the
/// recent ones, money-out channels with a verdict only: money in does not pass the clearing actor).
pub(super) fn channel_charts(report: &[clearing_actor::channels::ChannelReport]) -> [String; 2] {
    let rates: Vec<(String, i64)> = report
        .iter()
        .map(|c| {
            let h = &c.health;
            let rate = (h.recent_outcomes.saturating_sub(h.recent_failures) * 10_000).checked_div(h.recent_outcomes).map_or(10_000, |r| r as i64);
            (c.name.clone(), rate)
        })
        .collect();
    let clamp = |ms: Option<u64>| ms.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let latencies: Vec<(String, i64)> = report
        .iter()
        .filter(|c| c.latency.samples > 0)
        .flat_map(|c| [(format!("{} p50", c.name), clamp(c.latency.p50_ms)), (format!("{} p95", c.name), clamp(c.latency.p95_ms))])
        .collect();
    [
        crate::charts::horizontal_bars(&Frame { id: "chart-channels", title: "Channels' recent success rate", unit: Unit::BasisPoints }, &rates),
        crate::charts::horizontal_bars(&Frame { id: "chart-latency", title: "Payout latency to the bank's verdict (ms)", unit: Unit::Count }, &latencies),
    ]
}

fn channels_page(session: &Session, report: &[clearing_actor::channels::ChannelReport]) -> HttpResponse {
    let charts = channel_charts(report);
    let body = html! {
        // Trusted SVG: crate::charts escapes every text it writes.
        div.charts { @for svg in &charts { section.card { (PreEscaped(svg)) } } }
        table.data #channels {
            thead { tr {
                th { "Channel" } th { "Kind" } th { "Direction" } th { "Currency" } th { "Fee (fixed + bps, min–max)" } th { "Order min–max" }
                th.num { "Daily cap" } th.num { "Used today" } th { "Window" } th { "Enabled" } th { "Health" } th { "Verdicts (ok / failed)" } th { "Latency p50 / p95 / max" } th { "Simulator" }
            } }
            tbody {
                @for c in report {
                    @let h = &c.health;
                    @let rate = if h.recent_outcomes == 0 { "no outcome yet".to_string() } else { format!("{:.1}% of {}", h.recent_outcomes.saturating_sub(h.recent_failures) as f64 * 100.0 / h.recent_outcomes as f64, h.recent_outcomes) };
                    tr data-channel=(c.name) {
                        td { (c.name) } td { (c.kind) } td { (c.direction) } td { (c.currency) }
                        td.fee { (c.fee.fixed) " + " (c.fee.rate_bps) " bps (" (c.fee.min) "–" (c.fee.max) ")" }
                        td { (c.order_min) "–" (c.order_max) }
                        td.num { (c.daily_cap) } td.num { (c.used_today) }
                        td { (c.window) @if c.business_days_only { " business days" } }
                        td { @if c.enabled { span.badge.ok { "enabled" } } @else { span.badge.bad { "disabled" } } }
                        td { span class=(format!("badge {}", if h.circuit == "closed" { "ok" } else { "bad" })) { "circuit " (h.circuit) } " " (rate) @if h.probing { " (probing)" } }
                        td.num.verdicts { (c.latency.verdicts_succeeded) " / " (c.latency.verdicts_failed) }
                        td.latency {
                            @match (c.latency.p50_ms, c.latency.p95_ms, c.latency.max_ms) {
                                (Some(p50), Some(p95), Some(max)) => { (p50) " / " (p95) " / " (max) " ms (last " (c.latency.samples) ")" }
                                _ => { span.muted { "no verdict yet" } }
                            }
                        }
                        td.small { (c.simulator.latency_ms) " ms, fails " (c.simulator.failure_per_mille) "‰, drops " (c.simulator.drop_per_mille) "‰" }
                    }
                }
            }
        }
        @if session.has(Role::Operator) {
            h2 { "Change a channel (four eyes)" }
            p.muted { "Each form proposes a change; another operator with the approver role approves it on the approvals page, and it applies from the next order on. Empty fields stay as they are; amounts are decimal (\"1.50\")." }
            div.channel-forms {
                @for c in report {
                    form.card.channel-change method="post" action="/portal/approvals" data-channel=(c.name) {
                        (csrf_field(session))
                        input type="hidden" name="kind" value="change_channel";
                        input type="hidden" name="channel" value=(c.name);
                        h2 { (c.name) }
                        label { "Enabled" select name="enabled" { option value="" { "unchanged" } option value="true" { "enabled" } option value="false" { "disabled" } } }
                        label { "Fixed fee (now " (c.fee.fixed) ")" input name="fee_fixed"; }
                        label { "Fee rate in bps (now " (c.fee.rate_bps) ")" input name="fee_rate_bps" inputmode="numeric"; }
                        label { "Fee min (now " (c.fee.min) ")" input name="fee_min"; }
                        label { "Fee max (now " (c.fee.max) ")" input name="fee_max"; }
                        label { "Order min (now " (c.order_min) ")" input name="order_min"; }
                        label { "Order max (now " (c.order_max) ")" input name="order_max"; }
                        label { "Daily cap (now " (c.daily_cap) ")" input name="daily_cap"; }
                        label { "Window HH:MM-HH:MM (now " (c.window) ")" input name="window"; }
                        label { "Note" input name="note" maxlength="200"; }
                        button type="submit" { "Propose" }
                    }
                }
            }
        }
    };
    page(session, "Channels", "/portal/system/channels", body)
}

async fn channels(session: Session, clearing: ClearingData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let report = clearing.report().await.map_err(ApiError::from)?;
    Ok(channels_page(&session, &report))
}

// ---- Shards ----------------------------------------------------------------------------------

async fn shards(session: Session, engine: EngineData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let views: Vec<_> = (0..engine.config().shard_count).filter_map(|s| crate::admin::shard_view(&engine, s)).collect();
    let checkpoint = |at_us: u64| if at_us == 0 { "none yet".to_string() } else { super::super::format_time((at_us / 1_000_000) as i64) };
    let state_checkpoint = |s: &crate::admin::ShardView| match (s.checkpoint_sequence, s.checkpoint_at_us) {
        (0, _) => "none yet".to_string(),
        (sequence, 0) => format!("batch {sequence} (loaded at start)"),
        (sequence, at) => format!(
            "batch {sequence} at {}, {} KiB, held {} µs",
            super::super::format_time((at / 1_000_000) as i64),
            s.checkpoint_bytes / 1024,
            s.checkpoint_hold_us_last
        ),
    };
    let body = html! {
        meta http-equiv="refresh" content=(format!("5; url=/portal/system/shards?{}", crate::portal::sessions::AUTO_REFRESH));
        p.muted { "Live figures, refreshed every 5 seconds (a refresh does not keep your session open). Fsync times are of the shard's durable batch writes (RocksDB WAL sync). A checkpoint is the shard's whole state at a batch: a start loads the newest and replays only the journal after it." }
        table.data #shards {
            thead { tr {
                th.num { "Shard" } th { "State" } th.num { "Accounts" } th.num { "Mailbox" } th.num { "Inbound" } th.num { "Outbox pending" }
                th.num { "Batches" } th.num { "Commands" } th.num { "Last / largest batch" } th.num { "Fsync last / mean / max (µs)" } th.num { "Last sequence" } th { "Last durable batch" } th { "Last checkpoint" }
            } }
            tbody {
                @for s in &views {
                    tr data-shard=(s.shard) {
                        td.num { (s.shard) }
                        td { @if s.stopped { span.badge.bad { "stopped" } @if let Some(why) = &s.failure { " " span.small { (why) } } } @else { span.badge.ok { "running" } } }
                        td.num { (s.accounts) } td.num { (s.mailbox_depth) } td.num { (s.inbound_depth) } td.num { (s.outbox_pending) }
                        td.num { (s.batches) } td.num { (s.commands) }
                        td.num { (s.last_batch_size) " / " (s.largest_batch_size) }
                        td.num { (s.fsync_us_last) " / " (s.fsync_us_mean) " / " (s.fsync_us_max) }
                        td.num { (s.last_sequence) }
                        td { (checkpoint(s.last_batch_at_us)) }
                        td.checkpoint { (state_checkpoint(s)) }
                    }
                }
            }
        }
    };
    Ok(page(&session, "Shards", "/portal/system/shards", body))
}

// ---- Settlement ------------------------------------------------------------------------------

async fn settlement_page(session: &Session, clearing: &Clearing, platforms: &[Platform], result: Option<Markup>) -> Result<HttpResponse, PortalError> {
    let schedule = clearing.schedule().await.map_err(ApiError::from)?;
    let yesterday = crate::stats::date_of(
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400).saturating_sub(1) as u32,
    );
    let body = html! {
        @if let Some(result) = result { (result) }
        section.card #schedule {
            h2 { "Daily schedule" }
            @match &schedule {
                None => p.muted { "No daily run is scheduled ([settlement] cutoff is not set): runs are started here or by POST /admin/settlements." },
                Some(s) => dl.facts {
                    dt { "Cut-off" } dd { (format!("{:02}:{:02}", s.cutoff_minute / 60, s.cutoff_minute % 60)) }
                    dt { "Next business date" } dd { (date_text(s.next_day)) }
                    dt { "Last success" } dd { (s.last_success_day.map(date_text).unwrap_or_else(|| "none yet".into())) }
                    dt { "Failures" } dd { (s.failures_total) " in all, " (s.failures_in_a_row) " in a row" }
                    @if let Some(error) = &s.last_error { dt { "Last error" } dd.error { (error) } }
                },
            }
        }
        @if session.has(Role::Operator) {
            section.card {
                h2 { "Run the settlement of a business date" }
                form.filters method="post" action="/portal/system/settlement" #settle {
                    (csrf_field(session))
                    label { "Business date" input name="business_date" value=(yesterday) placeholder="YYYY-MM-DD"; }
                    button type="submit" { "Run" }
                }
                p.muted { "Matures each platform's income due by its cycle, charges its settlement rule, books channel fees. Running a date again changes nothing already settled." }
            }
        }
        section.card {
            h2 { "Statement" }
            form.filters method="get" action="/portal/system/settlement/statement.csv" #statement {
                label { "Business date" input name="business_date" value=(yesterday); }
                label { "Platform" select name="platform_id" { option value="" { "all platforms" } @for p in platforms { option value=(p.public_id()) { (p.public_id()) " " (p.name) } } } }
                button type="submit" { "Download CSV" }
            }
        }
    };
    Ok(page(session, "Settlement", "/portal/system/settlement", body))
}

async fn settlement(session: Session, clearing: ClearingData, platforms: PlatformsData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    settlement_page(&session, &clearing, &platforms.all(), None).await
}

#[allow(clippy::too_many_arguments)]
async fn settle(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    engine: EngineData,
    platforms: PlatformsData,
    clearing: ClearingData,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    check_form(&request, &session, &form)?;
    session.require(Role::Operator)?;
    let all = platforms.all();
    let date = form.get("business_date").trim().to_string();
    let Some(day) = crate::settlements::day_number(&date) else {
        return settlement_page(&session, &clearing, &all, Some(notice("error", "business_date must be a date YYYY-MM-DD"))).await;
    };
    let (settling, terms) = (clearing.get_ref().clone(), crate::settlements::terms(&engine, &all, day));
    let work = async move { settling.settle(day, terms).await.map_err(ApiError::from) };
    let outcome = crate::portal::audit::summary_outcome(date.clone(), |summary: &clearing_actor::settlement::SettlementSummary, after| {
        *after = serde_json::to_value(summary).unwrap_or_default();
    });
    let outcome = crate::portal::audit::audited(
        portal.get_ref().clone(),
        session.clone(),
        Scope::System,
        "settlement.run",
        date.clone(),
        serde_json::Value::Null,
        work,
        outcome,
    )
    .await?;
    let result = match &outcome {
        Ok(summary) => {
            html! {
                (notice(if summary.invariants_ok { "ok" } else { "error" }, &format!("Settlement of {} done{}.", summary.business_date, if summary.invariants_ok { "" } else { ": INVARIANTS FAIL" })))
                section.card #summary {
                    h2 { "Summary of " (summary.business_date) }
                    table.data {
                        thead { tr { th { "Platform" } th.num { "Matured accounts" } th.num { "Auto-confirmed orders" } th { "Income through" } th { "Totals" } th { "Statement" } } }
                        tbody { @for p in &summary.platforms { tr {
                            td { (p.platform_id) } td.num { (p.matured_accounts) } td.num { (p.auto_confirmed_orders) }
                            td { (p.income_through.clone().unwrap_or_default()) }
                            td.small { @for t in p.totals.iter().flatten() { (serde_json::to_string(t).unwrap_or_default()) br; } }
                            td { a.statement href=(format!("/portal/system/settlement/statement.csv?business_date={}&platform_id={}", summary.business_date, p.platform_id)) { "CSV" } }
                        } } }
                    }
                    @if !summary.channel_fees.is_empty() {
                        h2 { "Channel fees" }
                        table.data { thead { tr { th { "Channel" } th { "Date" } th.num { "Shard" } th { "Currency" } th.num { "Orders" } th.num { "Fees" } th.num { "Booked now" } } }
                            tbody { @for f in &summary.channel_fees { tr { td { (f.channel) } td { (f.business_date) } td.num { (f.shard) } td { (f.currency) } td.num { (f.orders) } td.num { (f.fees) } td.num { (f.booked_now) } } } } }
                    }
                    p { "Expired freezes released: " (summary.expired_freezes) }
                }
            }
        }
        Err(error) => notice("error", &format!("The run failed: {}", error.message)),
    };
    settlement_page(&session, &clearing, &all, Some(result)).await
}

#[derive(Deserialize)]
struct StatementQuery {
    business_date: Option<String>,
    platform_id: Option<String>,
}

async fn statement(session: Session, query: web::Query<StatementQuery>, engine: EngineData, platforms: PlatformsData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let date = query.business_date.clone().unwrap_or_default();
    let day = crate::settlements::day_number(date.trim()).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let mut all = platforms.all();
    if let Some(id) = query.platform_id.as_deref().filter(|t| !t.is_empty()) {
        let id = Platform::parse_public_id(id).filter(|id| all.iter().any(|p| p.id == *id)).ok_or(PortalError::NotFound)?;
        all.retain(|p| p.id == id);
    }
    let name = format!("statement-{}-{}.csv", date_text(day), query.platform_id.as_deref().filter(|t| !t.is_empty()).unwrap_or("all"));
    let engine = engine.get_ref().clone();
    let csv = blocking(move || crate::settlements::statement_csv(&engine, &all, day, None)).await?.map_err(ApiError::from)?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("Cache-Control", "no-store"))
        .body(csv))
}

// ---- Reconciliation and cases ----------------------------------------------------------------

#[derive(Deserialize)]
struct CasesQuery {
    status: Option<String>,
    cursor: Option<String>,
}

/// Cases one page of the reconciliation page lists.
const CASES_PER_PAGE: usize = 200;

async fn reconciliation_page(
    session: &Session,
    clearing: &Clearing,
    status: &str,
    after: Option<String>,
    result: Option<Markup>,
) -> Result<HttpResponse, PortalError> {
    let filter = CaseFilter::parse(status).unwrap_or(CaseFilter::Open);
    let CasePage { cases, next_cursor } = clearing.cases_page(filter, after, CASES_PER_PAGE).await.map_err(ApiError::from)?;
    let next_link = next_cursor.map(|next| {
        format!("/portal/system/reconciliation?status={status}&cursor={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>())
    });
    let channels: Vec<String> = clearing.channels().all().iter().map(|c| c.name.clone()).collect();
    let body = html! {
        @if let Some(result) = result { (result) }
        @if session.has(Role::Operator) {
            section.card {
                h2 { "Reconcile a channel's day" }
                form method="post" action="/portal/system/reconciliation" #reconcile {
                    (csrf_field(session))
                    div.filters {
                        label { "Channel" select name="channel" { @for name in &channels { option value=(name) { (name) } } } }
                        label { "Business date" input name="business_date" placeholder="YYYY-MM-DD"; }
                    }
                    label { "Statement file (CSV with its header). Empty: the simulated bank's statement of that channel and date." textarea name="file" rows="5" {} }
                    button type="submit" { "Reconcile" }
                }
            }
        }
        h2 { "Cases" }
        p.tabs { @for name in ["open", "resolved", "all"] { a href=(format!("/portal/system/reconciliation?status={name}")) class=(if name == status { "active" } else { "" }) { (name) } } }
        table.data #cases {
            thead { tr { th { "Case" } th { "Reason" } th { "Line" } th { "Status" } th { "Opened" } th { "Resolution" } } }
            tbody {
                @for case in &cases {
                    tr data-case=(case.case_id) {
                        td { code { (case.case_id) } } td { (case.reason) } td.small { (case.line.to_string()) }
                        td { @if case.status == "open" { span.badge.warn { "open" } } @else { span.badge.ok { (case.status) } } }
                        td.nowrap { (case.created_at) }
                        td {
                            @if let Some(resolution) = &case.resolution { (resolution) " — " (case.resolved_by.clone().unwrap_or_default()) " " (case.resolved_at.clone().unwrap_or_default()) @if let Some(hold) = &case.hold { " (hold: " (hold) ")" } }
                            @else if session.has(Role::Operator) {
                                @if let Some(hold) = &case.hold { p.small { "Hold decided: " (hold) " (its resolution must " (hold) " it)" } }
                                form.resolve method="post" action="/portal/approvals" {
                                    (csrf_field(session))
                                    input type="hidden" name="kind" value="resolve_case";
                                    input type="hidden" name="case_id" value=(case.case_id);
                                    input name="resolution" placeholder="what was done" required maxlength="1024";
                                    @if !case.line["hold_order_id"].is_null() {
                                        " " label { input type="checkbox" name="capture"; " take the hold into suspense (the money is not the account's: the member was paid, or it never came)" }
                                    } @else if case.case_id.starts_with("case_paid_by_left_channel_") {
                                        " " label { input type="checkbox" name="left_wrong"; " its word was wrong: the payout may go on to another channel (else it goes no further, and a failure is held)" }
                                    }
                                    " " button.secondary type="submit" { "Propose" }
                                }
                            }
                        }
                    }
                }
                @if cases.is_empty() { tr { td colspan="6" .muted { "No " (status) " case." } } }
            }
        }
        @if let Some(link) = &next_link { p { a.next href=(link) { "Next page →" } } }
    };
    Ok(page(session, "Reconciliation", "/portal/system/reconciliation", body))
}

async fn reconciliation(session: Session, clearing: ClearingData, query: web::Query<CasesQuery>) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let status = match query.status.as_deref() {
        None | Some("open") => "open",
        Some("resolved") => "resolved",
        Some("all") => "all",
        Some(_) => return reconciliation_page(&session, &clearing, "open", None, Some(notice("error", "status is open, resolved or all"))).await,
    };
    reconciliation_page(&session, &clearing, status, query.cursor.clone(), None).await
}

async fn reconcile(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    clearing: ClearingData,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    check_form(&request, &session, &form)?;
    session.require(Role::Operator)?;
    let name = form.get("channel").to_string();
    let date = form.get("business_date").trim().to_string();
    let (Some(channel), Some(day)) = (clearing.channels().by_name(&name).map(|c| c.id), parse_date(&date)) else {
        return reconciliation_page(&session, &clearing, "open", None, Some(notice("error", "choose a channel and a business date YYYY-MM-DD"))).await;
    };
    let (file, source) = match form.opt("file") {
        Some(text) => (text.as_bytes().to_vec(), "pasted file"),
        None => {
            let bank = clearing.bank().clone();
            let lines = blocking(move || bank.statement(channel, day)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
            (bank::statement::write(&lines).into_bytes(), "simulated bank's statement")
        }
    };
    // A pasted statement is checked, not taken as the bank's verdicts (one operator alone
    // would complete or fail waiting orders by typing lines): those become cases.
    // The records name the file by its size, lines and SHA-256 (not its text).
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&file).iter().map(|byte| format!("{byte:02x}")).collect()
    };
    let request =
        serde_json::json!({"source": source, "bytes": file.len(), "lines": file.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), "sha256": digest});
    let reconciling = clearing.get_ref().clone();
    let work = async move {
        let reconciled =
            if source == "pasted file" { reconciling.reconcile_by_hand(channel, day, file).await } else { reconciling.reconcile(channel, day, file).await };
        reconciled.map_err(ApiError::from)
    };
    let outcome = crate::portal::audit::summary_outcome(format!("{name} {date}"), |report: &clearing_actor::reconcile::ReconcileReport, after| {
        after["counts"] = serde_json::to_value(&report.counts).unwrap_or_default();
    });
    let reconciled = crate::portal::audit::audited(
        portal.get_ref().clone(),
        session.clone(),
        Scope::System,
        "reconciliation.run",
        format!("{name} {date}"),
        request,
        work,
        outcome,
    )
    .await?;
    let result = match reconciled {
        Ok(report) => {
            let details = serde_json::to_value(&report.details).unwrap_or_default();
            html! {
                (notice("ok", &format!("Reconciled {} of {} against the {source}.", report.channel, report.business_date)))
                section.card #report {
                    h2 { "Counts by class" }
                    table.data { thead { tr { th { "Class" } th.num { "Count" } } }
                        tbody { @for (class, count) in &report.counts { tr { td { (serde_json::to_value(class).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) } td.num { (count) } } } } }
                    @if !report.details.is_empty() {
                        h2 { "Findings" }
                        table.data { tbody { @for finding in details.as_array().into_iter().flatten() { tr { td.small { (finding.to_string()) } } } } }
                    }
                }
            }
        }
        Err(error) => notice("error", &format!("Reconciliation refused: {}", error.message)),
    };
    reconciliation_page(&session, &clearing, "open", None, Some(result)).await
}

// ---- Invariants and the reserve --------------------------------------------------------------

async fn invariants(session: Session, engine: EngineData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let checked = engine.get_ref().clone();
    let report = blocking(move || engine::invariants::check_engine(&checked)).await?.map_err(ApiError::from)?;
    let mut reserves = Vec::new();
    for (index, spec) in engine.config().currencies.iter().enumerate() {
        let (engine, currency) = (engine.get_ref().clone(), engine::money::CurrencyId(index as u8));
        let reserve =
            blocking(move || clearing_actor::reserve::check(&engine, currency, clearing_actor::reserve::BankFigure::None)).await?.map_err(ApiError::from)?;
        reserves.push((*spec, reserve));
    }
    let wide = clearing_actor::reserve::format_wide;
    let body = html! {
        section.card #invariants {
            h2 { "Ledger invariants " @if report.ok { span.badge.ok { "ok" } } @else { span.badge.bad { "FAILING" } } }
            table.data {
                thead { tr { th { "Currency" } th.num { "Sum of all accounts" } th.num { "In transit" } th.num { "In flight" } } }
                tbody { @for c in &report.currencies { tr { td { (c.currency) } td.num { (c.sum_minor) } td.num { (c.in_transit_minor) } td.num { (c.in_flight_minor) } } } }
            }
            @for failure in &report.failures { p.error { (failure) } }
        }
        section.card #reserve {
            h2 { "Reserve check" }
            p.muted { "Our reserve (money the bank holds for us, by our books) must equal customer funds + in transit + escrow + payouts sent + fees + suspense." }
            table.data {
                thead { tr { th { "Currency" } th.num { "Reserve" } th.num { "Customer funds" } th.num { "In transit" } th.num { "Escrow" } th.num { "Payouts sent" } th.num { "Fees" } th.num { "Suspense" } th.num { "Liabilities" } th { "" } } }
                tbody { @for (spec, r) in &reserves { tr {
                    td { (spec.code_str()) } td.num { (wide(spec, r.reserve)) } td.num { (wide(spec, r.customer_funds)) } td.num { (wide(spec, r.in_transit)) }
                    td.num { (wide(spec, r.escrow)) } td.num { (wide(spec, r.payouts_sent)) } td.num { (wide(spec, r.fees)) } td.num { (wide(spec, r.suspense)) }
                    td.num { (wide(spec, r.liabilities())) }
                    td { @if r.ok() { span.badge.ok { "covered" } } @else { span.badge.bad { "difference" } } }
                } } }
            }
        }
    };
    Ok(page(&session, "Invariants and reserve", "/portal/system/invariants", body))
}

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/system/channels", web::get().to(channels))
        .route("/portal/system/shards", web::get().to(shards))
        .route("/portal/system/settlement", web::get().to(settlement))
        .route("/portal/system/settlement", web::post().to(settle))
        .route("/portal/system/settlement/statement.csv", web::get().to(statement))
        .route("/portal/system/reconciliation", web::get().to(reconciliation))
        .route("/portal/system/reconciliation", web::post().to(reconcile))
        .route("/portal/system/invariants", web::get().to(invariants));
}
