//! The system operators' portal. Every page here requires a system operator's session
//! (`Session::require_kind("system")`); another kind of operator gets 404.
//!
//! This file: the navigation, the dashboard, platforms (register, suspend/resume, the settlement
//! rule, the rotate-secret proposal) and the configuration views (currencies, chart of accounts,
//! account types). `system_ops.rs`: channels, shards, settlement, reconciliation and cases,
//! invariants and the reserve check.

#[path = "system_ops.rs"]
mod ops;

use std::sync::{Arc, OnceLock};

use actix_web::{web, HttpRequest, HttpResponse};
use engine::Engine;
use maud::{html, Markup};

use super::operators::{Role, Scope};
use super::{check_form, csrf_field, notice, page, Fields, Portal, PortalError, Session};
use crate::error::blocking;
use crate::platforms::{NewPlatform, Platform, Platforms};

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] = &[
    ("Dashboard", "/portal/system"),
    ("Platforms", "/portal/system/platforms"),
    ("Channels", "/portal/system/channels"),
    ("Shards", "/portal/system/shards"),
    ("Settlement", "/portal/system/settlement"),
    ("Reconciliation", "/portal/system/reconciliation"),
    ("Invariants", "/portal/system/invariants"),
    ("Configuration", "/portal/system/configuration"),
    ("Approvals", "/portal/approvals"),
    ("Operators", "/portal/operators"),
    ("Audit log", "/portal/audit"),
];

type PortalData = web::Data<Arc<Portal>>;
type EngineData = web::Data<Arc<Engine>>;
type PlatformsData = web::Data<Arc<Platforms>>;

/// The chart of accounts as the configuration file set it, published by the binary at start
/// (the gateway does not read the configuration file itself).
static CHART: OnceLock<engine::chart::ChartOfAccounts> = OnceLock::new();

/// Publishes the configured chart of accounts for the configuration page (once, at start).
pub fn publish_chart(chart: engine::chart::ChartOfAccounts) {
    let _ = CHART.set(chart);
}

/// A system operator's session, or 404.
fn system(session: &Session) -> Result<(), PortalError> {
    session.require_kind("system")
}

fn metric(label: &str, value: String, path: &str) -> Markup {
    html! { a.metric href=(path) { div.label { (label) } div.value { (value) } } }
}

/// Open cases the dashboard's chart reads at most (one page, by id).
const CASES_CHARTED: usize = 1000;

async fn home(
    session: Session,
    portal: PortalData,
    engine: EngineData,
    platforms: PlatformsData,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let all = platforms.all();
    let suspended = all.iter().filter(|p| p.suspended).count();
    let shards: Vec<_> = (0..engine.config().shard_count).filter_map(|s| crate::admin::shard_view(&engine, s)).collect();
    let stopped = shards.iter().filter(|s| s.stopped).count();
    let accounts: u64 = shards.iter().map(|s| s.accounts).sum();
    // The count of every open case; the chart of the first page of them (by id), read from the
    // store: open cases are not held in memory.
    let open_cases = clearing.figures().await.map_err(crate::error::ApiError::from)?.cases_open;
    let first = clearing.cases_page(clearing_actor::cases::CaseFilter::Open, None, CASES_CHARTED).await.map_err(crate::error::ApiError::from)?;
    let mut reasons: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for case in &first.cases {
        *reasons.entry(case.reason.as_str()).or_default() += 1;
    }
    let reasons: Vec<(String, i64)> = reasons.into_iter().map(|(reason, count)| (reason.replace('_', " "), count)).collect();
    let title =
        if first.next_cursor.is_some() { format!("Open cases by reason (the first {CASES_CHARTED} by id)") } else { "Open cases by reason".to_string() };
    let cases_chart = crate::charts::horizontal_bars(&crate::charts::Frame { id: "chart-cases", title: &title, unit: crate::charts::Unit::Count }, &reasons);
    let pending = portal.approvals.list(&session.scope(), Some(super::approvals::Status::Pending), 1000)?.len();
    let checked = engine.get_ref().clone();
    let invariants = blocking(move || engine::invariants::check_engine(&checked)).await?.map(|r| r.ok);
    let charts = ops::dashboard_charts(&engine, &clearing).await;
    let body = html! {
        div.cards {
            (metric(&format!("Platforms ({suspended} suspended)"), all.len().to_string(), "/portal/system/platforms"))
            (metric("Accounts", accounts.to_string(), "/portal/system/shards"))
            (metric("Shards up / stopped", format!("{} / {}", shards.len() - stopped, stopped), "/portal/system/shards"))
            (metric("Invariants", match invariants { Ok(true) => "ok".to_string(), Ok(false) => "FAILING".to_string(), Err(_) => "unreadable".to_string() }, "/portal/system/invariants"))
            (metric("Open cases", open_cases.to_string(), "/portal/system/reconciliation"))
            (metric("Pending approvals", pending.to_string(), "/portal/approvals"))
        }
        (charts)
        // Trusted SVG: crate::charts escapes every text it writes.
        div.charts { section.card { (maud::PreEscaped(cases_chart)) } }
    };
    Ok(page(&session, "Dashboard", "/portal/system", body))
}

// ---- Platforms -------------------------------------------------------------------------------

fn status_badge(platform: &Platform) -> Markup {
    if platform.suspended {
        html! { span.badge.bad { "suspended" } }
    } else {
        html! { span.badge.ok { "active" } }
    }
}

fn platforms_page(session: &Session, platforms: &Platforms, message: Option<(&str, &str)>) -> HttpResponse {
    let all = platforms.all();
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        table.data #platforms {
            thead { tr { th { "Id" } th { "Name" } th.num { "Settlement cycle (days)" } th.num { "Auto-confirm (days)" } th { "Payment password" } th { "Status" } th.num { "Secret version" } th { "Settlement rule" } } }
            tbody {
                @for p in &all {
                    tr data-platform=(p.public_id()) {
                        td { a href=(format!("/portal/system/platforms/{}", p.public_id())) { (p.public_id()) } }
                        td { (p.name) }
                        td.num { (p.settlement_cycle_days) }
                        td.num { (p.auto_confirm_days) }
                        td { @if p.require_payment_password { "required" } @else { "not required" } }
                        td { (status_badge(p)) }
                        td.num { (p.secret_version) }
                        td { @if p.settlement_rule.is_some() { "set" } @else { span.muted { "none" } } }
                    }
                }
                @if all.is_empty() { tr { td colspan="8" .muted { "No platform yet." } } }
            }
        }
        @if session.has(Role::Operator) {
            section.card {
                h2 { "Register a platform" }
                form method="post" action="/portal/system/platforms" #register {
                    (csrf_field(session))
                    // Made with the form: submitting it twice registers one platform.
                    input type="hidden" name="out_order_no" value=(super::platform::new_out_order_no());
                    label { "Name" input name="name" required maxlength="128"; }
                    label { "Settlement cycle in days (T+n, 0 to 30)" input name="settlement_cycle_days" value="1" inputmode="numeric"; }
                    label { "Auto-confirm guarantee payments after days (1 to 90)" input name="auto_confirm_days" value="15" inputmode="numeric"; }
                    label.check { input type="checkbox" name="require_payment_password" value="true"; "Members need a payment password" }
                    p { button type="submit" { "Register" } }
                }
                p.muted { "The platform's secret is shown once, on the next page." }
            }
        }
    };
    page(session, "Platforms", "/portal/system/platforms", body)
}

async fn platforms_list(session: Session, platforms: PlatformsData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    Ok(platforms_page(&session, &platforms, None))
}

/// A small number field of a form: empty means the default.
fn small_number(fields: &Fields, name: &str) -> Result<Option<u8>, String> {
    match fields.opt(name) {
        None => Ok(None),
        Some(text) => text.parse::<u8>().map(Some).map_err(|_| format!("{name} must be a whole number")),
    }
}

async fn register(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: PlatformsData,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    check_form(&request, &session, &form)?;
    session.require(Role::Operator)?;
    let parsed = (small_number(&form, "settlement_cycle_days"), small_number(&form, "auto_confirm_days"));
    let (settlement_cycle_days, auto_confirm_days) = match parsed {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => return Ok(platforms_page(&session, &platforms, Some(("error", &why)))),
    };
    let new = NewPlatform {
        name: form.get("name").to_string(),
        settlement_cycle_days,
        auto_confirm_days,
        require_payment_password: Some(form.get("require_payment_password") == "true"),
        out_order_no: form.opt("out_order_no").map(str::to_string),
        created_by: Some(format!("operator:{}", session.operator.id)),
    };
    let request_shown = serde_json::json!({"name": new.name, "settlement_cycle_days": new.settlement_cycle_days, "auto_confirm_days": new.auto_confirm_days,
        "require_payment_password": new.require_payment_password, "out_order_no": new.out_order_no});
    portal.audit.begin(&session, Scope::System, "platform.register", new.out_order_no.as_deref().unwrap_or_default(), &request_shown)?;
    let store = platforms.get_ref().clone();
    let (platform, secret, replayed) = match blocking(move || store.create(new)).await? {
        Ok(created) => created,
        Err(error) if error.status < 500 => {
            let refused = format!("refused: {}", error.code);
            portal.audit.record(&session, Scope::System, "platform.register", "", serde_json::Value::Null, serde_json::Value::Null, &refused)?;
            return Ok(platforms_page(&session, &platforms, Some(("error", &error.message))));
        }
        Err(error) => return Err(error.into()),
    };
    // The audit record has the platform, never its secret.
    let after = serde_json::json!({"platform_id": platform.public_id(), "name": platform.name, "settlement_cycle_days": platform.settlement_cycle_days,
        "auto_confirm_days": platform.auto_confirm_days, "require_payment_password": platform.require_payment_password});
    portal.audit.record(
        &session,
        Scope::Platform { platform: platform.id },
        "platform.register",
        &platform.public_id(),
        serde_json::Value::Null,
        after,
        if replayed { "replayed" } else { "ok" },
    )?;
    let body = html! {
        (notice("ok", &format!("Platform {} registered{}.", platform.public_id(), if replayed { " (the form was sent again: the same platform)" } else { "" })))
        section.card #secret {
            h2 { "The platform's secret" }
            p { "Give it to the platform now: it is shown only on this page and never again (a new one needs a rotation)." }
            dl.facts {
                dt { "Platform id" } dd { code #platform-id { (platform.public_id()) } }
                dt { "Secret" } dd { code #platform-secret { (secret) } }
            }
        }
        p { a href=(format!("/portal/system/platforms/{}", platform.public_id())) { "Open the platform" } " · " a href="/portal/system/platforms" { "All platforms" } }
    };
    Ok(page(&session, "Platform registered", "/portal/system/platforms", body))
}

fn platform_of(platforms: &Platforms, text: &str) -> Result<Platform, PortalError> {
    Platform::parse_public_id(text).and_then(|id| platforms.get(id)).ok_or(PortalError::NotFound)
}

async fn platform_page(session: &Session, engine: &Arc<Engine>, platform: &Platform, message: Option<(&str, &str)>) -> HttpResponse {
    let id = platform.public_id();
    let rule = platform
        .settlement_rule
        .as_ref()
        .and_then(|config| crate::orders::currency(engine, &config.currency).ok().map(|(_, spec)| crate::commission::view(config, &spec)));
    let rule_text = rule.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default()).unwrap_or_default();
    let example = r#"{"currency": "CNY", "basis": "amount", "period": "month", "tiers": [{"from": "0", "rate": "0.006"}], "receivers": [{"account_id": "acc_...", "share": 1}], "service_fee_rate": "0.001"}"#;
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        section.card {
            dl.facts {
                dt { "Id" } dd { code { (id) } }
                dt { "Name" } dd { (platform.name) }
                dt { "Status" } dd #status { (status_badge(platform)) }
                dt { "Settlement cycle" } dd { "T+" (platform.settlement_cycle_days) }
                dt { "Auto-confirm" } dd { (platform.auto_confirm_days) " days" }
                dt { "Payment password" } dd { @if platform.require_payment_password { "required" } @else { "not required" } }
                dt { "Secret version" } dd { (platform.secret_version)
                    @if let Some(previous) = platform.previous_secret { " (version " (previous.version) " still verifies until " (super::format_time(previous.valid_until)) ")" } }
                dt { "Webhook" } dd { (platform.webhook_url.clone().unwrap_or_else(|| "none".into())) }
            }
        }
        @if session.has(Role::Operator) {
            section.card {
                h2 { "Suspend or resume" }
                @if platform.suspended {
                    p { "The platform is suspended: every signed API request is refused with " code { "platform_suspended" } "." }
                    form.inline method="post" action=(format!("/portal/system/platforms/{id}/resume")) { (csrf_field(session)) button type="submit" #resume { "Resume" } }
                } @else {
                    p { "Suspending refuses the platform's signed API requests at once (403 " code { "platform_suspended" } "); its money and orders stay as they are." }
                    form.inline method="post" action=(format!("/portal/system/platforms/{id}/suspend")) { (csrf_field(session)) button.danger type="submit" #suspend { "Suspend" } }
                }
            }
            section.card {
                h2 { "Rotate the secret (four eyes)" }
                p.muted { "A proposal: another operator with the approver role approves it; the new secret is shown once to the approver." }
                form method="post" action="/portal/approvals" #rotate {
                    (csrf_field(session))
                    input type="hidden" name="kind" value="rotate_secret";
                    input type="hidden" name="platform" value=(id);
                    label { "Seconds the current secret keeps verifying (empty: the configured default, at most 604800)" input name="overlap_seconds" inputmode="numeric"; }
                    label { "Note" input name="note" maxlength="200"; }
                    button type="submit" { "Propose a rotation" }
                }
            }
        }
        section.card #rule {
            h2 { "Settlement rule" }
            @if let Some(_) = &rule { pre { code #rule-json { (rule_text) } } } @else { p.muted #rule-json { "No rule: income only matures." } }
            @if session.has(Role::Operator) {
                p.muted { "A change is a proposal (four eyes): another system operator with the approver role approves it, then runs from then on apply it." }
                form method="post" action="/portal/approvals" #rule-form {
                    (csrf_field(session))
                    input type="hidden" name="kind" value="settlement_rule";
                    input type="hidden" name="platform" value=(id);
                    label { "The rule as JSON (the body of PUT /admin/platforms/{id}/settlement-rule), e.g. " code { (example) }
                        textarea name="rule" rows="8" { (rule_text) } }
                    label { "Note" input name="note" maxlength="200"; }
                    button type="submit" { "Propose the rule" }
                }
                @if rule.is_some() {
                    form.inline method="post" action="/portal/approvals" #rule-remove {
                        (csrf_field(session))
                        input type="hidden" name="kind" value="settlement_rule";
                        input type="hidden" name="platform" value=(id);
                        input type="hidden" name="remove" value="true";
                        button.secondary type="submit" { "Propose removing the rule" }
                    }
                }
            }
        }
    };
    page(session, &format!("Platform {}", platform.name), "/portal/system/platforms", body)
}

async fn platform_detail(session: Session, path: web::Path<String>, engine: EngineData, platforms: PlatformsData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    let platform = platform_of(&platforms, &path)?;
    Ok(platform_page(&session, &engine, &platform, None).await)
}

#[allow(clippy::too_many_arguments)]
async fn set_status(
    request: HttpRequest,
    session: Session,
    path: web::Path<(String, String)>,
    portal: PortalData,
    engine: EngineData,
    platforms: PlatformsData,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    check_form(&request, &session, &form)?;
    let (id, verb) = path.into_inner();
    let suspend = match verb.as_str() {
        "suspend" => true,
        "resume" => false,
        _ => return Err(PortalError::NotFound),
    };
    let platform = platform_of(&platforms, &id)?;
    session.require(Role::Operator)?;
    let action = if suspend { "platform.suspend" } else { "platform.resume" };
    portal.audit.begin(&session, Scope::Platform { platform: platform.id }, action, &platform.public_id(), &serde_json::json!({"suspended": suspend}))?;
    let store = platforms.get_ref().clone();
    let changed = blocking(move || store.set_suspended(platform.id, suspend)).await??;
    portal.audit.record(
        &session,
        Scope::Platform { platform: platform.id },
        if suspend { "platform.suspend" } else { "platform.resume" },
        &platform.public_id(),
        serde_json::json!({"suspended": platform.suspended}),
        serde_json::json!({"suspended": changed.suspended}),
        "ok",
    )?;
    let text = if suspend { "Platform suspended: its signed requests are refused." } else { "Platform resumed." };
    Ok(platform_page(&session, &engine, &changed, Some(("ok", text))).await)
}

// ---- Configuration ---------------------------------------------------------------------------

async fn configuration(session: Session, engine: EngineData) -> Result<HttpResponse, PortalError> {
    system(&session)?;
    use engine::ledger::types::{AccountKind, SystemRole};
    let config = engine.config();
    let chart = CHART.get();
    let subject = |kind: AccountKind| chart.map(|c| c.subject(kind).clone());
    let mut kinds: Vec<(String, &str, Option<engine::chart::Subject>)> =
        vec![("customer".into(), "Members' and merchants' accounts (balances: settled, unsettled, frozen)", subject(AccountKind::Customer))];
    for role in SystemRole::ALL {
        let what = match role {
            SystemRole::Reserve => "Reserve at the bank (debit-normal)",
            SystemRole::InTransit => "Cross-shard clearing: credits on their way to another shard",
            SystemRole::Escrow => "Guarantee payments held for payees",
            SystemRole::PayoutPending => "Withdrawals sent to a channel, not yet confirmed",
            SystemRole::FeeIncome => "Fees charged to customers",
            SystemRole::Suspense => "Credits that could not land, for an operator",
        };
        kinds.push((format!("system: {}", role.name()), what, subject(AccountKind::System(role))));
    }
    let body = html! {
        p.notice.warn { "These are set in the configuration file ([[currencies]], [chart_of_accounts], [engine]) and read at start; change them there and restart." }
        section.card {
            h2 { "Currencies" }
            table.data #currencies {
                thead { tr { th { "Code" } th.num { "Decimals (exponent)" } th { "Smallest amount" } } }
                tbody { @for spec in &config.currencies { tr { td { (spec.code_str()) } td.num { (spec.exponent) } td { (spec.format(1)) } } } }
            }
        }
        section.card {
            h2 { "Account types and the chart of accounts" }
            table.data #chart {
                thead { tr { th { "Account type" } th { "What it holds" } th { "Subject code" } th { "Subject name" } } }
                tbody {
                    @for (kind, what, subject) in &kinds {
                        tr { td { code { (kind) } } td { (what) }
                            @if let Some(subject) = subject { td { (subject.code) } td { (subject.name) } } @else { td.muted colspan="2" { "not published by this server" } } }
                    }
                }
            }
        }
        section.card {
            h2 { "Engine" }
            dl.facts {
                dt { "Shards" } dd { (config.shard_count) }
                dt { "Mailbox capacity" } dd { (config.mailbox_capacity) }
                dt { "Largest batch" } dd { (config.batch_size_max) }
                dt { "Business day offset" } dd { (config.utc_offset_seconds) " s from UTC" }
            }
        }
    };
    Ok(page(&session, "Configuration", "/portal/system/configuration", body))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/system", web::get().to(home))
        .route("/portal/system/platforms", web::get().to(platforms_list))
        .route("/portal/system/platforms", web::post().to(register))
        .route("/portal/system/platforms/{id}", web::get().to(platform_detail))
        .route("/portal/system/platforms/{id}/{verb}", web::post().to(set_status))
        .route("/portal/system/configuration", web::get().to(configuration));
    ops::routes(config);
}
