//! The pages every operator has: sign in and out, the own account (password, second factor),
//! operators of the scope (admin role), the audit log (search, CSV), and approvals (four-eyes).

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::approvals::{Action, Status};
use super::audit::Query;
use super::operators::{now_seconds, LoginRefusal, NewOperator, Role, Scope};
use super::sessions::{peer, same_origin, COOKIE};
use super::{bare, check_form, csrf_field, format_time, notice, page, redirect, respond, Fields, Portal, PortalError, Session};
use crate::error::blocking;

type PortalData = web::Data<Arc<Portal>>;

fn login_page(status: StatusCode, message: Option<&str>) -> HttpResponse {
    let body = html! {
        main.narrow {
            h1 { "Sign in" }
            @if let Some(message) = message { (notice("error", message)) }
            form.card method="post" action="/portal/login" autocomplete="off" {
                label { "User name" input name="username" required autofocus maxlength="32"; }
                label { "Password" input name="password" type="password" required maxlength="128"; }
                label { "Authenticator code (if you turned it on)" input name="totp" inputmode="numeric" maxlength="8"; }
                button type="submit" { "Sign in" }
            }
            p.muted { "Operators of the service, of a platform or of a merchant. Five wrong tries lock the user for 15 minutes." }
        }
    };
    respond(status, bare("Sign in", body))
}

async fn login_form() -> HttpResponse {
    login_page(StatusCode::OK, None)
}

/// What a refused sign-in says, whatever the reason (a wrong name or password, a disabled or a
/// locked operator), so that the page tells nothing of which names exist.
const WRONG_SIGN_IN: &str = "Wrong user name or password. After five wrong tries a user is locked for 15 minutes.";
/// What an address that failed to sign in too often in 15 minutes is told.
const TOO_MANY_FROM_HERE: &str = "Too many failed sign-ins from this address; try again in 15 minutes.";

async fn login(request: HttpRequest, portal: PortalData, form: web::Form<Fields>) -> Result<HttpResponse, PortalError> {
    if !same_origin(&request) {
        return Err(PortalError::Csrf);
    }
    let fields = form.into_inner();
    let (username, password, code) = (fields.get("username").trim().to_string(), fields.get("password").to_string(), fields.opt("totp").map(str::to_string));
    if username.is_empty() || password.is_empty() || username.len() > 32 || password.len() > 512 {
        return Ok(login_page(StatusCode::UNAUTHORIZED, Some(WRONG_SIGN_IN)));
    }
    let from = peer(&request);
    let limited = super::sessions::limit_key(&from);
    let now = now_seconds();
    if !portal.address_failures.allows(&limited, now) {
        // Before any hashing: an address that failed too often this window (guessing names,
        // each a few times under its lockout) is refused, whoever it names.
        return Ok(login_page(StatusCode::TOO_MANY_REQUESTS, Some(TOO_MANY_FROM_HERE)));
    }
    let checking = portal.get_ref().clone();
    let name = username.clone();
    let known = portal.operators.named(&username);
    let outcome = crate::passwords::hashing(crate::passwords::PORTAL_HASHING, move || checking.operators.login(&name, &password, code.as_deref(), now)).await?;
    match outcome {
        Ok(operator) => {
            let token = portal.sessions.open(&operator);
            portal.audit.append(
                operator.id,
                &operator.username,
                &operator.role_names(),
                operator.scope,
                "session.login",
                &operator.username,
                serde_json::Value::Null,
                serde_json::Value::Null,
                &from,
                "ok",
            )?;
            let limits = portal.sessions.limits();
            let cookie = Cookie::build(COOKIE, token)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(limits.secure_cookies)
                .max_age(actix_web::cookie::time::Duration::seconds(limits.absolute_seconds))
                .finish();
            Ok(HttpResponse::SeeOther().cookie(cookie).insert_header(("Location", "/portal/")).insert_header(("Cache-Control", "no-store")).finish())
        }
        Err(refusal) => {
            // A lockout reads as a wrong password: a page that said "locked" told anyone who
            // tried five times whether the name exists (before session 57).
            let (message, outcome) = match refusal {
                LoginRefusal::Wrong | LoginRefusal::Disabled => (WRONG_SIGN_IN.to_string(), "wrong password"),
                LoginRefusal::Locked { .. } => (WRONG_SIGN_IN.to_string(), "locked"),
                LoginRefusal::TotpRequired => ("Enter the code of your authenticator.".to_string(), "second factor missing"),
                LoginRefusal::TotpWrong => ("Wrong authenticator code.".to_string(), "second factor wrong"),
                LoginRefusal::Busy => ("Too many sign-ins are being checked at once; try again in a moment.".to_string(), "busy"),
            };
            // Failures are recorded for existing operators only (an unknown name writes nothing),
            // and tries against a lock that was already there once per lockout.
            let noted_before = match (&known, &refusal) {
                (Some(operator), LoginRefusal::Locked { until }) if operator.locked_until > now => {
                    portal.locked_noted.lock().expect("lockout notes lock").insert(operator.id, *until) == Some(*until)
                }
                // Nothing was compared: a flood of these is not a flood of audit records.
                (_, LoginRefusal::Busy) => true,
                _ => false,
            };
            // A refusal that compared a password (or a code) counts against the address.
            let counted = matches!(refusal, LoginRefusal::Wrong | LoginRefusal::Disabled | LoginRefusal::Locked { .. } | LoginRefusal::TotpWrong);
            if counted && portal.address_failures.failed(&limited, now) {
                // Once a window per address, whatever names it tried (unknown names write
                // nothing else to the log).
                portal.audit.append(
                    0,
                    "",
                    "",
                    Scope::System,
                    "session.address_limited",
                    &from,
                    serde_json::Value::Null,
                    serde_json::Value::Null,
                    &from,
                    "too many failed sign-ins",
                )?;
            }
            if let Some(operator) = known.filter(|_| !noted_before) {
                portal.audit.append(
                    operator.id,
                    &operator.username,
                    &operator.role_names(),
                    operator.scope,
                    "session.login_failed",
                    &operator.username,
                    serde_json::Value::Null,
                    serde_json::Value::Null,
                    &from,
                    outcome,
                )?;
            }
            let status = if refusal == LoginRefusal::Busy { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::UNAUTHORIZED };
            Ok(login_page(status, Some(&message)))
        }
    }
}

async fn logout(request: HttpRequest, session: Session, portal: PortalData, form: web::Form<Fields>) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    portal.sessions.close(&session.token);
    portal.audit.record(&session, session.scope(), "session.logout", &session.operator.username, serde_json::Value::Null, serde_json::Value::Null, "ok")?;
    let expired = Cookie::build(COOKIE, "").path("/").http_only(true).same_site(SameSite::Strict).max_age(actix_web::cookie::time::Duration::ZERO).finish();
    Ok(HttpResponse::SeeOther().cookie(expired).insert_header(("Location", "/portal/login")).finish())
}

async fn home(session: Session) -> HttpResponse {
    redirect(match session.scope() {
        Scope::System => "/portal/system",
        Scope::Platform { .. } => "/portal/platform",
        Scope::Merchant { .. } => "/portal/merchant",
    })
}

fn account_page(session: &Session, message: Option<(&str, &str)>, enrolling: Option<(&str, &str)>) -> HttpResponse {
    let operator = &session.operator;
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        @if !operator.own_password && operator.has(Role::Approver) {
            (notice("error", "Your password was chosen by the operator who made you: choose your own below before you approve proposals."))
        }
        section.card {
            h2 { "You" }
            dl.facts {
                dt { "User name" } dd { (operator.username) }
                dt { "Scope" } dd { (operator.scope.describe()) }
                dt { "Roles" } dd { (operator.role_names()) }
                dt { "Second factor" } dd { @if operator.totp_secret.is_some() { "on (authenticator app)" } @else { "off" } }
            }
        }
        section.card {
            h2 { "Change password" }
            form method="post" action="/portal/account/password" {
                (csrf_field(session))
                label { "Current password" input type="password" name="current" required; }
                label { "New password (12 to 128 characters)" input type="password" name="password" required minlength="12" maxlength="128"; }
                button type="submit" { "Change password" }
            }
        }
        section.card {
            h2 { "Second factor (TOTP)" }
            @if let Some((secret, url)) = enrolling {
                p { "Add this key to your authenticator app, then enter the code it shows." }
                p { code id="totp-secret" { (secret) } }
                p.muted { code { (url) } }
                form method="post" action="/portal/account/totp" {
                    (csrf_field(session))
                    input type="hidden" name="secret" value=(secret);
                    label { "Your password" input type="password" name="current" required; }
                    label { "Code" input name="code" inputmode="numeric" required maxlength="8"; }
                    button type="submit" { "Turn on" }
                }
            } @else if operator.totp_secret.is_none() {
                form method="post" action="/portal/account/totp" {
                    (csrf_field(session))
                    button type="submit" { "Set up an authenticator" }
                }
            } @else {
                p { "On. Ask an admin of your scope to reset it if you lose the device." }
            }
        }
    };
    page(session, "My account", "", body)
}

async fn account(session: Session) -> HttpResponse {
    account_page(&session, None, None)
}

async fn change_password(request: HttpRequest, session: Session, portal: PortalData, form: web::Form<Fields>) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let (current, new) = (form.get("current").to_string(), form.get("password").to_string());
    let same = new == current;
    if let Some(refused) = confirm_own_password(&session, &portal, current).await? {
        return Ok(refused);
    }
    if same {
        return Ok(account_page(&session, Some(("error", "choose a new password, not the one you have")), None));
    }
    let id = session.operator.id;
    let changing = portal.get_ref().clone();
    match crate::passwords::hashing(crate::passwords::PORTAL_HASHING, move || changing.operators.set_password(id, &new)).await? {
        Ok(_) => {
            portal.audit.record(
                &session,
                session.scope(),
                "operator.password",
                &session.operator.username,
                serde_json::Value::Null,
                serde_json::Value::Null,
                "ok",
            )?;
            // Every session of the operator ended with the change (its generation moved on).
            Ok(redirect("/portal/login"))
        }
        Err(error) => Ok(account_page(&session, Some(("error", &error.message)), None)),
    }
}

/// Confirms the session's operator's own password (`Operators::confirm_password`, counted like
/// a sign-in): `None` when right, else the page to answer (the account page saying so, or the
/// sign-in page once five wrong tries locked the operator and ended its sessions).
async fn confirm_own_password(session: &Session, portal: &PortalData, password: String) -> Result<Option<HttpResponse>, PortalError> {
    let (checking, id, now) = (portal.get_ref().clone(), session.operator.id, now_seconds());
    let outcome = crate::passwords::hashing(crate::passwords::PORTAL_HASHING, move || checking.operators.confirm_password(id, &password, now)).await?;
    let (result, answer) = match outcome {
        Ok(()) => return Ok(None),
        Err(LoginRefusal::Locked { .. }) => ("locked", redirect("/portal/login")),
        Err(LoginRefusal::Busy) => ("busy", account_page(session, Some(("error", "Too many checks of your password at once; try again in a moment.")), None)),
        Err(_) => (
            "wrong password",
            account_page(session, Some(("error", "The current password is wrong (five wrong tries lock you out and end your sessions).")), None),
        ),
    };
    portal.audit.record(
        session,
        session.scope(),
        "session.login_failed",
        &session.operator.username,
        serde_json::Value::Null,
        serde_json::Value::Null,
        result,
    )?;
    Ok(Some(answer))
}

async fn totp(request: HttpRequest, session: Session, portal: PortalData, form: web::Form<Fields>) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    if session.operator.totp_secret.is_some() {
        return Ok(account_page(&session, Some(("error", "The second factor is on already.")), None));
    }
    let Some(secret) = form.opt("secret").map(str::to_string) else {
        let secret = super::operators::new_totp_secret();
        let url = super::operators::totp(&secret, &session.operator.username).and_then(|t| t.to_url().ok()).unwrap_or_default();
        return Ok(account_page(&session, None, Some((&secret, &url))));
    };
    // The password too: a session alone (a stolen one) cannot put its own second factor on.
    if let Some(refused) = confirm_own_password(&session, &portal, form.get("current").to_string()).await? {
        return Ok(refused);
    }
    let valid = super::operators::totp(&secret, &session.operator.username).is_some_and(|t| t.check(form.get("code").trim(), now_seconds() as u64).is_some());
    if !valid {
        let url = super::operators::totp(&secret, &session.operator.username).and_then(|t| t.to_url().ok()).unwrap_or_default();
        return Ok(account_page(&session, Some(("error", "That code is not right; try the next one.")), Some((&secret, &url))));
    }
    let (before, after) = portal.operators.update(session.operator.id, |operator| {
        operator.totp_secret = Some(secret);
        Ok(())
    })?;
    portal.audit.record(&session, session.scope(), "operator.totp_on", &session.operator.username, before.public_view(), after.public_view(), "ok")?;
    let session = Session { operator: after, ..session };
    Ok(account_page(&session, Some(("ok", "The second factor is on: sign-ins now ask for a code.")), None))
}

/// Parses the scope of a new operator from a form, within the creator's scope.
fn scope_of(session: &Session, fields: &Fields) -> Result<Scope, String> {
    let platform = || fields.opt("platform").and_then(crate::platforms::Platform::parse_public_id).ok_or("name the platform (plt_N)".to_string());
    let member = || fields.opt("member").and_then(crate::members::Member::parse_public_id).ok_or("name the merchant (mem_N)".to_string());
    let scope = match fields.get("kind") {
        "system" => Scope::System,
        "platform" => Scope::Platform { platform: session.scope().platform().map_or_else(platform, Ok)? },
        "merchant" => {
            Scope::Merchant { platform: session.scope().platform().map_or_else(platform, Ok)?, member: session.scope().member().map_or_else(member, Ok)? }
        }
        _ => return Err("choose the kind of operator".into()),
    };
    if session.scope().contains(&scope) {
        Ok(scope)
    } else {
        Err("you can only make operators within your own scope".into())
    }
}

fn operators_page(session: &Session, portal: &Portal, message: Option<(&str, &str)>) -> HttpResponse {
    let list = portal.operators.within(&session.scope());
    let kinds: &[&str] = match session.scope() {
        Scope::System => &["system", "platform", "merchant"],
        Scope::Platform { .. } => &["platform", "merchant"],
        Scope::Merchant { .. } => &["merchant"],
    };
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        table.data {
            thead { tr { th { "Id" } th { "User" } th { "Name" } th { "Scope" } th { "Roles" } th { "2FA" } th { "State" } th {} } }
            tbody {
                @for operator in &list {
                    tr {
                        td { (operator.id) } td { (operator.username) } td { (operator.display_name) } td { (operator.scope.describe()) }
                        td { (operator.role_names()) } td { @if operator.totp_secret.is_some() { "on" } @else { "off" } }
                        td { @if operator.disabled { "disabled" } @else if operator.locked_until > now_seconds() { "locked" } @else { "active" } }
                        td {
                            @if session.has(Role::Admin) && operator.id != session.operator.id {
                                form.inline method="post" action=(format!("/portal/operators/{}/disable", operator.id)) {
                                    (csrf_field(session))
                                    button.link type="submit" { @if operator.disabled { "Enable" } @else { "Disable" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if session.has(Role::Admin) {
            section.card {
                h2 { "New operator" }
                form method="post" action="/portal/operators" autocomplete="off" {
                    (csrf_field(session))
                    label { "User name" input name="username" required maxlength="32" pattern="[a-z0-9_.\\-]{3,32}"; }
                    label { "Display name" input name="display_name" required maxlength="64"; }
                    label { "Kind" select name="kind" { @for kind in kinds { option value=(kind) { (kind) } } } }
                    @if session.scope().platform().is_none() { label { "Platform (plt_N, for platform and merchant operators)" input name="platform"; } }
                    @if session.scope().member().is_none() { label { "Merchant (mem_N, for merchant operators)" input name="member"; } }
                    fieldset { legend { "Roles" }
                        @for role in Role::ALL { label.check { input type="checkbox" name="role" value=(role.name()); (role.name()) } }
                    }
                    label { "First password (12 to 128 characters; tell it to the operator apart)" input type="password" name="password" required minlength="12"; }
                    button type="submit" { "Create operator" }
                }
            }
        }
    };
    page(session, "Operators", "/portal/operators", body)
}

async fn operators(session: Session, portal: PortalData) -> HttpResponse {
    operators_page(&session, &portal, None)
}

async fn create_operator(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    members: web::Data<Arc<crate::members::Members>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    session.require(Role::Admin)?;
    let scope = match scope_of(&session, &form) {
        Ok(scope) => scope,
        Err(message) => return Ok(operators_page(&session, &portal, Some(("error", &message)))),
    };
    // A merchant operator's member must be its platform's (helper 126: another platform's member
    // was taken; such an operator saw nothing, every lookup being by platform and member).
    if let Scope::Merchant { platform, member } = scope {
        if members.get(platform, member)?.is_none() {
            return Ok(operators_page(&session, &portal, Some(("error", "no such merchant (mem_N) on that platform"))));
        }
    }
    let roles = form.all("role").filter_map(Role::parse).collect();
    let new = NewOperator {
        username: form.get("username").trim().to_string(),
        display_name: form.get("display_name").to_string(),
        scope,
        roles,
        password: form.get("password").to_string(),
    };
    let (creating, by) = (portal.get_ref().clone(), session.operator.username.clone());
    match crate::passwords::hashing(crate::passwords::PORTAL_HASHING, move || creating.operators.create(new, &by)).await? {
        Ok(operator) => {
            portal.audit.record(&session, scope, "operator.create", &operator.username, serde_json::Value::Null, operator.public_view(), "ok")?;
            Ok(operators_page(&session, &portal, Some(("ok", &format!("Operator {} created.", operator.username)))))
        }
        Err(error) => Ok(operators_page(&session, &portal, Some(("error", &error.message)))),
    }
}

async fn disable_operator(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    path: web::Path<u64>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    session.require(Role::Admin)?;
    let id = path.into_inner();
    let target = portal
        .operators
        .get(id)
        .filter(|operator| session.scope().contains(&operator.scope) && operator.id != session.operator.id)
        .ok_or(PortalError::NotFound)?;
    let (before, after) = portal.operators.update(target.id, |operator| {
        operator.disabled = !operator.disabled;
        operator.generation += 1;
        Ok(())
    })?;
    portal.sessions.close_all_of(target.id);
    let action = if after.disabled { "operator.disable" } else { "operator.enable" };
    portal.audit.record(&session, target.scope, action, &target.username, before.public_view(), after.public_view(), "ok")?;
    Ok(redirect("/portal/operators"))
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    operator: Option<String>,
    action: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    format: Option<String>,
}

fn day_start(text: &str) -> Option<i64> {
    let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

async fn audit(session: Session, portal: PortalData, query: web::Query<AuditQuery>) -> Result<HttpResponse, PortalError> {
    let filled = |value: &Option<String>| value.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty() && v.len() <= 200);
    let bad_date = |value: &Option<String>| filled(value).is_some_and(|v| day_start(&v).is_none());
    let csv = query.format.as_deref() == Some("csv");
    let cursor = match filled(&query.cursor) {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| crate::error::ApiError::invalid("cursor is not one of ours", "cursor"))?),
    };
    if bad_date(&query.from) || bad_date(&query.to) {
        return Err(crate::error::ApiError::invalid("dates are YYYY-MM-DD", "from").into());
    }
    let search = Query {
        operator: filled(&query.operator),
        action: filled(&query.action),
        text: filled(&query.q),
        from_at: filled(&query.from).and_then(|v| day_start(&v)),
        to_at: filled(&query.to).and_then(|v| day_start(&v)).map(|start| start + 86_400),
        before_sequence: cursor,
        limit: if csv { 500 } else { 50 },
    };
    // Reads the store (up to 100,000 records a page): off the async workers.
    let (reading, scope) = (portal.clone(), session.scope());
    let (records, next) = crate::error::blocking(move || reading.audit.search(&scope, &search)).await??;
    if csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("Content-Disposition", "attachment; filename=\"audit.csv\""))
            .insert_header(("Cache-Control", "no-store"))
            .body(super::audit::csv(&records)));
    }
    let keep = |name: &str, value: &Option<String>| {
        filled(value).map(|v| format!("&{name}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>())).unwrap_or_default()
    };
    let filters = format!(
        "{}{}{}{}{}",
        keep("operator", &query.operator),
        keep("action", &query.action),
        keep("q", &query.q),
        keep("from", &query.from),
        keep("to", &query.to)
    );
    let body = html! {
        form.filters method="get" action="/portal/audit" {
            label { "Operator" input name="operator" value=[filled(&query.operator)]; }
            label { "Action starts with" input name="action" value=[filled(&query.action)] placeholder="e.g. approval."; }
            label { "Text" input name="q" value=[filled(&query.q)]; }
            label { "From" input type="date" name="from" value=[filled(&query.from)]; }
            label { "To" input type="date" name="to" value=[filled(&query.to)]; }
            button type="submit" { "Search" }
            a.button href=(format!("/portal/audit?format=csv{filters}")) { "Export CSV" }
        }
        table.data id="audit" {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "Roles" } th { "Scope" } th { "Action" } th { "Target" } th { "Before" } th { "After" } th { "From" } th { "Outcome" } } }
            tbody {
                @for record in &records {
                    tr {
                        td { (record.sequence) } td.nowrap { (format_time(record.at)) } td { (record.operator) } td { (record.roles) } td { (record.scope.describe()) }
                        td { code { (record.action) } } td { (record.target) } td.small { (record.before) } td.small { (record.after) } td { (record.from) } td { (record.outcome) }
                    }
                }
            }
        }
        @if records.is_empty() { p.muted { "Nothing matches." } }
        @if let Some(next) = next { p { a href=(format!("/portal/audit?cursor={next}{filters}")) { "Older records →" } } }
    };
    Ok(page(&session, "Audit log", "/portal/audit", body))
}

fn status_filter(text: Option<&str>) -> Option<Status> {
    match text {
        Some("pending") | None => Some(Status::Pending),
        Some("approved") => Some(Status::Approved),
        Some("executed") => Some(Status::Executed),
        Some("failed") => Some(Status::Failed),
        Some("rejected") => Some(Status::Rejected),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct ApprovalsQuery {
    status: Option<String>,
}

async fn approvals_page(
    session: &Session,
    portal: &Arc<Portal>,
    status: Option<Status>,
    message: Option<(&str, &str)>,
    secret: Option<&str>,
) -> Result<HttpResponse, PortalError> {
    // Pending proposals are in memory; decided ones are read from the store (up to
    // `LIST_SCAN_MAX` examined): off the HTTP worker.
    let listed = if status == Some(Status::Pending) {
        portal.approvals.list(&session.scope(), status, 200)
    } else {
        let (reading, scope) = (portal.clone(), session.scope());
        crate::error::blocking(move || reading.approvals.list(&scope, status, 200)).await.and_then(|listed| listed)
    };
    let list = match listed {
        Ok(list) => list,
        // A secret shown once is shown whatever became of the list.
        Err(error) if secret.is_some() => {
            tracing::warn!("portal: the approvals list under a new secret: {}", error.message);
            Vec::new()
        }
        Err(error) => return Err(error.into()),
    };
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        @if let Some(secret) = secret {
            section.card.secret {
                h2 { "New secret (shown once)" }
                p { code id="new-secret" { (secret) } }
                p.muted { "Give it to the platform's developers now: it is not stored in a form anyone can read back." }
            }
        }
        p.tabs {
            @for name in ["pending", "approved", "executed", "failed", "rejected", "all"] {
                a href=(format!("/portal/approvals?status={name}")) class=@if status.map_or("all", |s| s.name()) == name { "active" } @else { "" } { (name) }
            }
        }
        table.data id="approvals" {
            thead { tr { th { "#" } th { "Proposed" } th { "By" } th { "Scope" } th { "What" } th { "Note" } th { "Status" } th { "Decided by" } th { "Outcome" } th {} } }
            tbody {
                @for proposal in &list {
                    tr data-id=(proposal.id) {
                        td { (proposal.id) } td.nowrap { (format_time(proposal.proposed_at)) } td { (proposal.proposer) } td { (proposal.scope.describe()) }
                        td { (proposal.action.summary()) } td { (proposal.note) } td { (proposal.status.name()) }
                        td { (proposal.decider.clone().unwrap_or_default()) } td.small { (proposal.outcome) }
                        td {
                            @if proposal.status == Status::Pending && session.has(Role::Approver) && proposal.proposed_by != session.operator.id {
                                form.inline method="post" action=(format!("/portal/approvals/{}/approve", proposal.id)) { (csrf_field(session)) button type="submit" { "Approve" } }
                                form.inline method="post" action=(format!("/portal/approvals/{}/reject", proposal.id)) { (csrf_field(session)) button.secondary type="submit" { "Reject" } }
                            } @else if proposal.status == Status::Pending && proposal.proposed_by == session.operator.id {
                                span.muted { "waiting for another approver" }
                            } @else if proposal.status == Status::Approved && portal.approvals.is_carrying(proposal.id) {
                                span.muted { "being carried out" }
                            } @else if proposal.status == Status::Approved {
                                span.muted { "approved, but its outcome was never stored (the server stopped while it was carried out)" }
                                @if session.has(Role::Approver) && proposal.proposed_by != session.operator.id && proposal.retryable(now_seconds()) {
                                    form.inline method="post" action=(format!("/portal/approvals/{}/retry", proposal.id)) { (csrf_field(session)) button type="submit" { "Carry out again" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.is_empty() { p.muted { "No proposals here." } }
    };
    Ok(page(session, "Approvals", "/portal/approvals", body))
}

async fn approvals(session: Session, portal: PortalData, query: web::Query<ApprovalsQuery>) -> Result<HttpResponse, PortalError> {
    approvals_page(&session, portal.get_ref(), status_filter(query.status.as_deref()), None, None).await
}

/// The server's parts a decision's task owns while it carries the action out.
pub struct Executors {
    pub engine: Arc<engine::Engine>,
    pub platforms: Arc<crate::platforms::Platforms>,
    pub clearing: clearing_actor::Clearing,
    pub notifications: Arc<crate::notifications::Notifications>,
}

/// Why an approved action was not carried out: `unknown` when it may have been (the engine or
/// clearing did not answer): the proposal then stays approved, to be carried out again (a money
/// action's order number makes that a replay), not stored as failed (before session 58 it was,
/// and a payout or adjustment proposed again took a new number: the money could move twice).
pub struct NotDone {
    pub text: String,
    pub unknown: bool,
}

impl From<String> for NotDone {
    fn from(text: String) -> NotDone {
        NotDone { text, unknown: false }
    }
}

impl From<&str> for NotDone {
    fn from(text: &str) -> NotDone {
        NotDone { text: text.to_string(), unknown: false }
    }
}

/// A money action's refusal: not known to be done when the server's side failed (5xx).
fn money_not_done(error: crate::error::ApiError) -> NotDone {
    NotDone { text: format!("{}: {}", error.code, error.message), unknown: error.status >= 500 }
}

/// Carries out an approved action; the text is the outcome to store (never a secret), the
/// second value a secret to show once.
pub async fn execute(executors: &Executors, proposal: &super::approvals::Proposal) -> Result<(String, Option<String>), NotDone> {
    match &proposal.action {
        Action::RotateSecret { platform, overlap_seconds, from_version } => {
            let (platforms, id, overlap, from, proposal_id) = (executors.platforms.clone(), *platform, *overlap_seconds, *from_version, proposal.id);
            let rotated = blocking(move || {
                let request = crate::platforms::RotateSecret { overlap_seconds: overlap, from_version: None };
                match from {
                    Some(from) => platforms.rotate_secret_from(id, request, from, proposal_id, now_seconds()),
                    None => platforms.rotate_secret(id, request, now_seconds()).map(|(platform, secret)| crate::platforms::Rotation::Rotated(platform, secret)),
                }
            })
            .await;
            match rotated {
                Ok(Ok(crate::platforms::Rotation::Rotated(platform, secret))) => {
                    Ok((format!("secret version {} issued", platform.secret_version), Some(secret)))
                }
                Ok(Ok(crate::platforms::Rotation::Shown(platform, secret))) => {
                    Ok((format!("secret version {} issued (before a stop; shown again)", platform.secret_version), Some(secret)))
                }
                Ok(Ok(crate::platforms::Rotation::Changed)) => {
                    Err("the platform's secret was rotated since this rotation was proposed; propose it again".into())
                }
                Ok(Err(error)) => Err(error.message.into()),
                Err(_) => Err("the server is stopping".into()),
            }
        }
        Action::ChangeChannel { channel, change } => {
            let change: clearing_actor::channels::ChannelChange = serde_json::from_value(change.clone()).map_err(|e| e.to_string())?;
            let channel = executors.clearing.update_channel(channel.clone(), change).await.map_err(|e| crate::error::ApiError::from(e).message)?;
            Ok((format!("channel {} changed", channel.name), None))
        }
        Action::ResolveCase { case_id, resolution, capture, left_wrong } => {
            let operator = format!("{} (approved by {})", proposal.proposer, proposal.decider.clone().unwrap_or_default());
            let resolution = clearing_actor::cases::Resolution { resolution: resolution.clone(), operator };
            let resolved = match (capture, left_wrong) {
                (true, _) => executors.clearing.resolve_case_with(case_id.clone(), resolution, clearing_actor::cases::HoldFate::Capture).await,
                (false, true) => executors.clearing.resolve_case_with(case_id.clone(), resolution, clearing_actor::cases::HoldFate::Release).await,
                // No fate said: a hold is released, a left channel's mark stays.
                (false, false) => executors.clearing.resolve_case(case_id.clone(), resolution).await,
            };
            let case = resolved.map_err(|e| crate::error::ApiError::from(e).message)?;
            Ok((format!("case {} resolved", case.case_id), None))
        }
        Action::Adjustment { platform, from, to, amount, currency, reason } => {
            let request = crate::adjustments::AdjustmentRequest {
                from: from.clone(),
                to: to.clone(),
                amount: amount.clone(),
                currency: currency.clone(),
                reason: reason.clone(),
                out_order_no: proposal.out_order_no(),
                proposer: proposal.proposer.clone(),
                approver: proposal.decider.clone().unwrap_or_default(),
            };
            let order = crate::adjustments::adjust_approved(&executors.engine, *platform, &request).await.map_err(money_not_done)?;
            Ok((format!("order {} {}", order["order_id"].as_str().unwrap_or(""), order["status"].as_str().unwrap_or("")), None))
        }
        Action::SetLimits { platform, account, limits } => {
            let field = |name: &str| limits.get(name).cloned();
            let request = crate::adjustments::LimitsRequest {
                payment_per_order_max: field("payment_per_order_max"),
                payment_daily_max: field("payment_daily_max"),
                withdrawal_per_order_max: field("withdrawal_per_order_max"),
                withdrawal_daily_max: field("withdrawal_daily_max"),
            };
            let now = crate::adjustments::set_limits(&executors.engine, *platform, account, &request, &proposal.out_order_no())
                .await
                .map_err(|e| format!("{}: {}", e.code, e.message))?;
            Ok((format!("limits of {account} now {now}"), None))
        }
        Action::Payout { platform, payout, .. } => {
            let submitted = crate::withdrawals::pay_out(&executors.engine, &executors.notifications, &executors.clearing, *platform, payout)
                .await
                .map_err(money_not_done)?;
            let order = crate::orders::public_order_id(engine::ledger::types::OrderId(submitted.reply.id));
            if !submitted.reply.is_ok() {
                return Err(money_not_done(crate::error::rejection(submitted.reply.code)));
            }
            let replayed = if submitted.reply.replayed { ", a replay of its order number" } else { "" };
            Ok((format!("order {order} paid out through {}{replayed}", submitted.channel), None))
        }
        Action::SetSettlementRule { platform, rule } => {
            let config = match rule {
                Some(rule) => Some(checked_rule(&executors.engine, *platform, rule).await?),
                None => None,
            };
            let (platforms, id, removing) = (executors.platforms.clone(), *platform, config.is_none());
            match blocking(move || platforms.set_settlement_rule(id, config)).await {
                Ok(Ok(_)) if removing => Ok((format!("settlement rule of plt_{id} removed: income of later runs only matures"), None)),
                Ok(Ok(_)) => Ok((format!("settlement rule of plt_{id} set: runs from now on apply it"), None)),
                Ok(Err(error)) => Err(error.message.into()),
                Err(_) => Err("the server is stopping".into()),
            }
        }
    }
}

/// A proposed settlement rule checked against the engine now (currency, tiers, receivers that
/// are the platform's open accounts): its stored form, or why not.
async fn checked_rule(engine: &Arc<engine::Engine>, platform: u32, rule: &serde_json::Value) -> Result<clearing_actor::commission::RuleConfig, String> {
    let body: crate::commission::RuleBody = serde_json::from_value(rule.clone()).map_err(|e| format!("the rule is not valid JSON of a rule: {e}"))?;
    crate::commission::validate(engine, platform, body).await.map_err(|e| e.message)
}

/// The channel settings a proposal may change (`PATCH /admin/channels/{name}`'s fields).
const CHANNEL_FIELDS: &[&str] = &[
    "enabled",
    "fee_fixed",
    "fee_rate_bps",
    "fee_min",
    "fee_max",
    "order_min",
    "order_max",
    "daily_cap",
    "window",
    "business_days_only",
    "eta_minutes",
    "sim_latency_ms",
    "sim_failure_per_mille",
    "sim_drop_per_mille",
    "timeout_ms",
];
/// The caps of an account a proposal may set.
pub const LIMIT_FIELDS: &[&str] = &["payment_per_order_max", "payment_daily_max", "withdrawal_per_order_max", "withdrawal_daily_max"];

/// Reads a proposal from a form (`kind` and its fields) within the proposer's scope: the
/// action and the scope it concerns. Checks what can be checked before anyone approves.
fn proposal_of(session: &Session, platforms: &crate::platforms::Platforms, fields: &Fields) -> Result<(Scope, Action), String> {
    let platform = || -> Result<u32, String> {
        let id = match session.scope().platform() {
            Some(own) => own,
            None => fields.opt("platform").and_then(crate::platforms::Platform::parse_public_id).ok_or("name the platform (plt_N)")?,
        };
        platforms.get(id).map(|p| p.id).ok_or_else(|| "no such platform".to_string())
    };
    let text = |name: &str, max: usize| -> Result<String, String> {
        let value = fields.get(name).trim();
        if value.is_empty() || value.chars().count() > max {
            Err(format!("{name} must be 1 to {max} characters"))
        } else {
            Ok(value.to_string())
        }
    };
    match fields.get("kind") {
        "rotate_secret" => {
            let overlap_seconds = match fields.opt("overlap_seconds") {
                None => None,
                Some(text) => Some(
                    text.parse::<u64>().ok().filter(|s| *s <= crate::platforms::ROTATION_OVERLAP_SECONDS_MAX).ok_or("overlap_seconds must be 0 to 604800")?,
                ),
            };
            let platform = platform()?;
            let from_version = platforms.get(platform).map(|p| p.secret_version);
            Ok((Scope::Platform { platform }, Action::RotateSecret { platform, overlap_seconds, from_version }))
        }
        "change_channel" => {
            let mut change = serde_json::Map::new();
            for name in CHANNEL_FIELDS {
                if let Some(value) = fields.opt(name) {
                    let value = match value {
                        "true" => serde_json::Value::Bool(true),
                        "false" => serde_json::Value::Bool(false),
                        number
                            if number.bytes().all(|b| b.is_ascii_digit())
                                && !matches!(*name, "fee_fixed" | "fee_min" | "fee_max" | "order_min" | "order_max" | "daily_cap") =>
                        {
                            serde_json::Value::Number(number.parse::<u64>().map_err(|_| format!("{name} is too large"))?.into())
                        }
                        other => serde_json::Value::String(other.to_string()),
                    };
                    change.insert(name.to_string(), value);
                }
            }
            if change.is_empty() {
                return Err("change at least one setting".into());
            }
            let change = serde_json::Value::Object(change);
            serde_json::from_value::<clearing_actor::channels::ChannelChange>(change.clone()).map_err(|e| e.to_string())?;
            Ok((Scope::System, Action::ChangeChannel { channel: text("channel", 64)?, change }))
        }
        "resolve_case" => Ok((
            Scope::System,
            Action::ResolveCase {
                case_id: text("case_id", 128)?,
                resolution: text("resolution", 1024)?,
                capture: fields.opt("capture") == Some("on"),
                left_wrong: fields.opt("left_wrong") == Some("on"),
            },
        )),
        "adjustment" => {
            let platform = platform()?;
            let (from, to) = (text("from", 32)?, text("to", 32)?);
            // Suspense belongs to the service: only system operators propose (and approve)
            // movements into or out of it.
            let touches_suspense = [&from, &to].iter().any(|side| side.starts_with("suspense"));
            if touches_suspense && session.scope() != Scope::System {
                return Err("only system operators move money into or out of suspense".into());
            }
            let scope = if touches_suspense { Scope::System } else { Scope::Platform { platform } };
            let action = Action::Adjustment {
                platform,
                from,
                to,
                amount: text("amount", 32)?,
                currency: text("currency", 8)?,
                reason: text("reason", super::approvals::REASON_CHARS_MAX)?,
            };
            Ok((scope, action))
        }
        "set_limits" => {
            let platform = platform()?;
            let limits: std::collections::BTreeMap<String, String> =
                LIMIT_FIELDS.iter().filter_map(|name| fields.opt(name).map(|value| (name.to_string(), value.to_string()))).collect();
            if limits.is_empty() {
                return Err("set at least one limit".into());
            }
            // Held in memory while pending: amounts, not any text (helper 103, session 63).
            if let Some((name, _)) = limits.iter().find(|(_, value)| value.chars().count() > 32) {
                return Err(format!("{name} must be an amount of at most 32 characters"));
            }
            Ok((Scope::Platform { platform }, Action::SetLimits { platform, account: text("account", 32)?, limits }))
        }
        "settlement_rule" => {
            // What a platform pays the service is the service's to set: system operators propose
            // and approve it, never the platform's own.
            if session.scope() != Scope::System {
                return Err("only system operators change a platform's settlement rule".into());
            }
            let platform = platform()?;
            let rule = match fields.get("remove") {
                "true" => None,
                _ => Some(serde_json::from_str(fields.get("rule")).map_err(|e| format!("the rule is not valid JSON: {e}"))?),
            };
            Ok((Scope::System, Action::SetSettlementRule { platform, rule }))
        }
        _ => Err("unknown kind of proposal".into()),
    }
}

/// `POST /portal/approvals`: proposes an action (the forms of the portals' pages post here).
async fn propose(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
    engine: web::Data<Arc<engine::Engine>>,
    form: web::Form<Fields>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    session.require(Role::Operator)?;
    let (scope, action) = match proposal_of(&session, &platforms, &form) {
        Ok(found) => found,
        Err(message) => return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("error", &message)), None).await,
    };
    // A rule is checked when proposed too, so that the approver sees only rules that apply
    // (and checked again when carried out: accounts may close in between).
    if let Action::SetSettlementRule { platform, rule: Some(rule) } = &action {
        if let Err(message) = checked_rule(&engine, *platform, rule).await {
            return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("error", &message)), None).await;
        }
    }
    let note = form.get("note").to_string();
    let proposal = match portal.approvals.propose(&session, scope, action, &note) {
        Ok(proposal) => proposal,
        Err(error) if error.status == 404 => return Err(PortalError::NotFound),
        Err(error) => return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("error", &error.message)), None).await,
    };
    portal.audit.record(
        &session,
        scope,
        "approval.propose",
        &format!("proposal {}", proposal.id),
        serde_json::Value::Null,
        serde_json::json!({"action": proposal.action.summary(), "note": proposal.note}),
        "pending",
    )?;
    let message = format!("Proposal {} recorded: {}. Another operator with the approver role must approve it.", proposal.id, proposal.action.summary());
    approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("ok", &message)), None).await
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    request: HttpRequest,
    session: Session,
    portal: PortalData,
    path: web::Path<(u64, String)>,
    form: web::Form<Fields>,
    engine: web::Data<Arc<engine::Engine>>,
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
    clearing: web::Data<clearing_actor::Clearing>,
    notifications: web::Data<Arc<crate::notifications::Notifications>>,
) -> Result<HttpResponse, PortalError> {
    check_form(&request, &session, &form)?;
    let (id, verb) = path.into_inner();
    // Four eyes are two people: neither operator made the other (or one that made it), since the
    // maker chose its password (before session 57 an admin could make a second operator with the
    // approver role and approve its own proposals, or propose as one it made and approve).
    if (verb == "approve" || verb == "retry") && !session.operator.own_password {
        // The password its maker chose is known to the maker, who could approve as this one
        // what it proposed as another it made (two operators of one admin, session 58).
        let message = "choose your own password first (My account): the one the operator who made you chose is known to them";
        return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("error", message)), None).await;
    }
    if verb == "approve" || verb == "retry" {
        let proposer = portal.approvals.get(&session.scope(), id)?.map(|proposal| proposal.proposed_by);
        let me = session.operator.id;
        if proposer.is_some_and(|proposer| portal.operators.made_by(me, proposer) || portal.operators.made_by(proposer, me)) {
            let message = "an operator made by the proposer, or that made it, does not approve its proposals: four eyes are two people";
            return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("error", message)), None).await;
        }
    }
    let decision = match verb.as_str() {
        "approve" => portal.approvals.decide(&session, id, true),
        "reject" => portal.approvals.decide(&session, id, false),
        "retry" => portal.approvals.retry(&session, id),
        _ => return Err(PortalError::NotFound),
    };
    let decided = match decision {
        Ok(decided) => decided,
        Err(error) if error.status == 404 => return Err(PortalError::NotFound),
        Err(error) => {
            let listed = if verb == "retry" { Some(Status::Approved) } else { Some(Status::Pending) };
            return approvals_page(&session, portal.get_ref(), listed, Some(("error", &error.message)), None).await;
        }
    };
    let action = match verb.as_str() {
        "approve" => "approval.approve",
        "reject" => "approval.reject",
        _ => "approval.retry",
    };
    let recorded = portal.audit.record(
        &session,
        decided.scope,
        action,
        &format!("proposal {}", decided.id),
        serde_json::Value::Null,
        serde_json::json!({"action": decided.action.summary()}),
        "ok",
    );
    if decided.status == Status::Rejected {
        recorded?;
        return approvals_page(&session, portal.get_ref(), Some(Status::Pending), Some(("ok", &format!("Proposal {id} rejected."))), None).await;
    }
    if let Err(error) = recorded {
        // Not carried out without its audit record: it stays approved, for a retry.
        portal.approvals.release(id);
        return Err(error.into());
    }
    // Carried out on a task of its own: a request cut short (the approver's browser closed, a
    // proxy's timeout) drops this handler at its next await, not the action halfway, so the
    // outcome is stored whatever becomes of the answer.
    let carrying = carry_out(
        session.clone(),
        portal.get_ref().clone(),
        Executors {
            engine: engine.get_ref().clone(),
            platforms: platforms.get_ref().clone(),
            clearing: clearing.get_ref().clone(),
            notifications: notifications.get_ref().clone(),
        },
        decided,
    );
    let (finished, secret) =
        actix_web::rt::spawn(carrying).await.map_err(|_| PortalError::from(crate::error::ApiError::unavailable("the server is stopping".into())))??;
    let message = format!("Proposal {id} approved: {} ({}).", finished.outcome, finished.status.name());
    let kind = if finished.status == Status::Executed { "ok" } else { "error" };
    approvals_page(&session, portal.get_ref(), None, Some((kind, &message)), secret.as_deref()).await
}

/// Carries out an approved (or retried) proposal and stores its outcome and audit record: the
/// finished proposal and a secret to show once.
async fn carry_out(
    session: Session,
    portal: Arc<Portal>,
    executors: Executors,
    decided: super::approvals::Proposal,
) -> Result<(super::approvals::Proposal, Option<String>), PortalError> {
    // However this ends (a panic in the carrying out included), it is no longer carried out.
    let _carrying = portal.approvals.carrying(decided.id);
    let (stored, secret) = match execute(&executors, &decided).await {
        Ok((text, secret)) => (Ok(text), secret),
        Err(NotDone { text, unknown: true }) => {
            // Left approved with no outcome: "Carry out again" replays its order number (once
            // this carrying out has ended, with `_carrying`: a retry's mark is never ended by
            // this one's).
            let outcome = format!("{text}; not known whether it was carried out: carry it out again");
            portal.audit.record(
                &session,
                decided.scope,
                "approval.unknown",
                &format!("proposal {}", decided.id),
                serde_json::Value::Null,
                serde_json::json!({"action": decided.action.summary()}),
                &outcome,
            )?;
            return Ok((super::approvals::Proposal { outcome, ..decided }, None));
        }
        Err(NotDone { text, .. }) => (Err(text), None),
    };
    let finished = portal.approvals.finish(decided.id, stored)?;
    portal.audit.record(
        &session,
        finished.scope,
        &format!("approval.{}", finished.status.name()),
        &format!("proposal {}", finished.id),
        serde_json::Value::Null,
        serde_json::json!({"action": finished.action.summary()}),
        &finished.outcome,
    )?;
    Ok((finished, secret))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/portal/login", web::get().to(login_form))
        .route("/portal/login", web::post().to(login))
        .route("/portal/logout", web::post().to(logout))
        .route("/portal", web::get().to(home))
        .route("/portal/", web::get().to(home))
        .route("/portal/account", web::get().to(account))
        .route("/portal/account/password", web::post().to(change_password))
        .route("/portal/account/totp", web::post().to(totp))
        .route("/portal/operators", web::get().to(operators))
        .route("/portal/operators", web::post().to(create_operator))
        .route("/portal/operators/{id}/disable", web::post().to(disable_operator))
        .route("/portal/audit", web::get().to(audit))
        .route("/portal/approvals", web::get().to(approvals))
        .route("/portal/approvals", web::post().to(propose))
        .route("/portal/approvals/{id}/{verb}", web::post().to(decide));
}
