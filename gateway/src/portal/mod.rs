//! The operators' portals (system, platform, merchant), server-rendered with maud: sessions,
//! roles and scopes, CSRF, the audit log, four-eyes approvals, and one layout. Every page starts
//! with the `Session` extractor; every form carries the session's CSRF token and comes from our
//! own origin; every action is in the audit log before its answer.
//!
//! Files: `operators` (users, roles, scopes, argon2id, lockout, TOTP), `sessions` (cookies,
//! timeouts, CSRF, the extractor), `audit` (hash-chained append-only log), `approvals`
//! (propose/approve by two different operators), `pages` (login, logout, own account, operators,
//! audit, approvals), `system`, `platform`, `merchant` (each portal's pages).

pub mod approvals;
pub mod audit;
pub mod merchant;
pub mod operators;
pub mod pages;
pub mod platform;
pub mod sessions;
pub mod system;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use maud::{html, Markup, DOCTYPE};
use storage::Store;

use crate::error::ApiError;
pub use operators::{Operator, Operators, Role, Scope};
pub use sessions::{Fields, Session, SessionLimits, Sessions};

/// The portals' shared state, one per server.
pub struct Portal {
    pub operators: Operators,
    pub sessions: Sessions,
    pub audit: audit::Audit,
    pub approvals: approvals::Approvals,
    /// Per operator, the lockout whose sign-in attempts the audit log already holds one of:
    /// tries against a lock are recorded once per lockout, so that a client without a password
    /// cannot grow the log (and its synced writes) by hammering the sign-in page.
    pub locked_noted: std::sync::Mutex<std::collections::HashMap<u64, i64>>,
    /// Failed sign-ins per client address (`[portal] sign_in_failures_per_address`).
    pub address_failures: sessions::AddressFailures,
    /// Proxies whose `X-Forwarded-For` names the client (`[portal] trusted_proxies`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The platform dashboard's figures that walk every account (`platform::HomeFigures`).
    pub home_figures: platform::HomeFigures,
}

/// The first system operator, made at the first start.
pub struct FirstOperator {
    pub username: String,
    pub password: String,
    /// False when the password came from `CLEARING_OPERATOR_PASSWORD`.
    pub generated: bool,
}

impl Portal {
    /// Loads operators, the audit log (its chain checked) and proposals. With no operator yet,
    /// makes the first system operator `admin` (every role) with the password from
    /// `CLEARING_OPERATOR_PASSWORD` or a new random one, returned to be printed once.
    pub fn load(store: Arc<dyn Store>, limits: SessionLimits, trusted_proxies: Vec<std::net::IpAddr>) -> Result<(Portal, Option<FirstOperator>), String> {
        let operators = Operators::load(store.clone())?;
        let audit = audit::Audit::load(store.clone())?;
        let approvals = approvals::Approvals::load(store)?;
        let mut first = None;
        if operators.is_empty() {
            let (password, generated) = match std::env::var("CLEARING_OPERATOR_PASSWORD") {
                Ok(password) => (password, false),
                Err(_) => (random_password(), true),
            };
            let operator = operators
                .create(
                    operators::NewOperator {
                        username: "admin".into(),
                        display_name: "First system operator".into(),
                        scope: Scope::System,
                        roles: Role::ALL.to_vec(),
                        password: password.clone(),
                    },
                    "start",
                )
                .map_err(|e| format!("the first operator: {}", e.message))?;
            audit
                .append(
                    0,
                    "start",
                    "",
                    Scope::System,
                    "operator.create",
                    &operator.username,
                    serde_json::Value::Null,
                    operator.public_view(),
                    "local",
                    "first system operator",
                )
                .map_err(|e| e.message)?;
            first = Some(FirstOperator { username: operator.username, password, generated });
        }
        let address_failures = sessions::AddressFailures::new(limits.sign_in_failures_per_address);
        Ok((
            Portal {
                operators,
                sessions: Sessions::new(limits),
                audit,
                approvals,
                locked_noted: Default::default(),
                address_failures,
                trusted_proxies,
                home_figures: Default::default(),
            },
            first,
        ))
    }
}

/// 20 characters from a 32-letter alphabet without look-alikes (100 bits).
fn random_password() -> String {
    use rand::Rng;
    const LETTERS: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789AB";
    let mut rng = rand::thread_rng();
    (0..20).map(|_| LETTERS[rng.gen_range(0..32)] as char).collect()
}

/// Why a portal request was refused; rendered as a page (or a redirect to the login page).
#[derive(Debug)]
pub enum PortalError {
    LoginNeeded,
    Forbidden(String),
    NotFound,
    Csrf,
    Api(ApiError),
}

impl From<ApiError> for PortalError {
    fn from(error: ApiError) -> PortalError {
        PortalError::Api(error)
    }
}

impl From<actix_web::error::BlockingError> for PortalError {
    fn from(_: actix_web::error::BlockingError) -> PortalError {
        PortalError::Api(ApiError::unavailable("the server is stopping".into()))
    }
}

impl std::fmt::Display for PortalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortalError::LoginNeeded => write!(f, "please sign in"),
            PortalError::Forbidden(why) => write!(f, "not allowed: {why}"),
            PortalError::NotFound => write!(f, "no such page"),
            PortalError::Csrf => write!(f, "the form expired or did not come from this site; open the page again"),
            PortalError::Api(error) => write!(f, "{}", error.message),
        }
    }
}

impl ResponseError for PortalError {
    fn status_code(&self) -> StatusCode {
        match self {
            PortalError::LoginNeeded => StatusCode::SEE_OTHER,
            PortalError::Forbidden(_) | PortalError::Csrf => StatusCode::FORBIDDEN,
            PortalError::NotFound => StatusCode::NOT_FOUND,
            PortalError::Api(error) => StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let PortalError::LoginNeeded = self {
            return HttpResponse::SeeOther().insert_header(("Location", "/portal/login")).insert_header(("Cache-Control", "no-store")).finish();
        }
        let code = match self {
            PortalError::Api(error) => error.code,
            PortalError::Csrf => "csrf_failed",
            PortalError::Forbidden(_) => "forbidden",
            _ => "not_found",
        };
        let body = html! {
            main.narrow {
                h1 { (self.status_code().as_u16()) " " (self.status_code().canonical_reason().unwrap_or("")) }
                p.error data-code=(code) { (self.to_string()) }
                p { a href="/portal/" { "Back to the portal" } }
            }
        };
        respond(self.status_code(), bare("Error", body))
    }
}

/// Headers every portal page carries: no caching, no framing, scripts and styles only from here.
pub fn respond(status: StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ))
        .body(page.into_string())
}

/// A page without the portal's navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Clearing" }
                link rel="stylesheet" href="/portal/assets/portal.css";
            }
            body.bare {
                header.top { span.brand { "Clearing" } span.muted { "virtual accounts" } }
                (body)
            }
        }
    }
}

/// The navigation of each kind of operator: (label, path).
pub fn nav(scope: &Scope) -> &'static [(&'static str, &'static str)] {
    match scope {
        Scope::System => system::NAV,
        Scope::Platform { .. } => platform::NAV,
        Scope::Merchant { .. } => merchant::NAV,
    }
}

/// A portal page: the top bar (who is signed in, in which scope, sign out), the navigation of
/// the operator's kind with `active` marked, and `body`.
pub fn page(session: &Session, title: &str, active: &str, body: Markup) -> HttpResponse {
    let operator = &session.operator;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Clearing" }
                link rel="stylesheet" href="/portal/assets/portal.css";
            }
            body {
                header.top {
                    a.brand href="/portal/" { "Clearing" }
                    span.scope data-scope=(operator.scope.kind()) { (operator.scope.describe()) }
                    span.grow {}
                    a.who href="/portal/account" { (operator.display_name) " (" (operator.username) ")" }
                    span.roles { (operator.role_names()) }
                    form.inline method="post" action="/portal/logout" {
                        (csrf_field(session))
                        button.link type="submit" { "Sign out" }
                    }
                }
                div.frame {
                    nav.side {
                        @for (label, path) in nav(&operator.scope) {
                            a href=(path) class=@if *path == active { "active" } @else { "" } { (label) }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            }
        }
    };
    respond(StatusCode::OK, markup)
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A flash line above a page's content (`ok` or `error`).
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { p class=(format!("notice {kind}")) role="status" { (text) } }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_time(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).ok())
        .map(|text| text + " UTC")
        .unwrap_or_else(|| at.to_string())
}

/// Checks a state-changing request: same origin and the session's CSRF token; and, for the
/// operators of a suspended platform (its own and its merchants'), that it is their signing out
/// or their own account's security: a suspension stops what the platform's signed requests
/// would do, and its portals too (before session 57 they went on paying out, refunding...).
pub fn check_form(request: &actix_web::HttpRequest, session: &Session, fields: &Fields) -> Result<(), PortalError> {
    if !sessions::same_origin(request) {
        return Err(PortalError::Csrf);
    }
    session.check_csrf(fields)?;
    let own_account = request.path() == "/portal/logout" || request.path().starts_with("/portal/account/");
    if let (Some(platform), false) = (session.scope().platform(), own_account) {
        let platforms = request.app_data::<actix_web::web::Data<std::sync::Arc<crate::platforms::Platforms>>>();
        if platforms.and_then(|platforms| platforms.get(platform)).is_none_or(|platform| platform.suspended) {
            return Err(PortalError::Forbidden("this platform is suspended; ask the system operator".into()));
        }
    }
    Ok(())
}

/// 303 to `path` (after a successful POST).
pub fn redirect(path: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", path)).insert_header(("Cache-Control", "no-store")).finish()
}

/// The `dt`/`dd` lines of a routing preview: the channel routing would choose, its fee and the
/// total debited (nothing when no channel can take the payout).
pub fn routing_facts(quote: &clearing_actor::channels::Decision, spec: &engine::money::CurrencySpec, amount: engine::money::Minor) -> Markup {
    let code = spec.code_str();
    html! {
        @if let Some((_, fee)) = quote.chosen {
            dt { "Channel" } dd.channel { (quote.routing.chosen.clone().unwrap_or_default()) }
            dt { "Fee" } dd.fee { (spec.format(fee)) " " (code) }
            dt { "Total debited" } dd.total { (crate::stats::format_wide(spec, i128::from(amount) + i128::from(fee))) " " (code) }
        }
    }
}

/// A routing preview's candidates: every channel considered, its fee and ETA, and why it was
/// or was not chosen (`Clearing::quote`, read-only; routing decides again at submission).
pub fn routing_candidates(quote: &clearing_actor::channels::Decision) -> Markup {
    html! {
        h3 { "Candidates" }
        table.data.candidates {
            thead { tr { th { "Channel" } th.num { "Fee" } th.num { "ETA (minutes)" } th { "Decision" } } }
            tbody {
                @for c in &quote.routing.candidates {
                    @let chosen = quote.routing.chosen.as_deref() == Some(c.channel.as_str());
                    tr.chosen[chosen] data-channel=(c.channel) {
                        td { (c.channel) }
                        td.num { (c.fee) }
                        td.num { (c.eta_minutes) }
                        td.why {
                            @match (&c.rejected_because, chosen) {
                                (Some(why), _) => { span.badge.bad { "not viable: " (why.replace('_', " ")) } }
                                (None, true) => { span.badge.ok { "chosen: the cheapest viable" } }
                                (None, false) => { span.badge.warn { "viable, dearer or slower" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

const CSS: &str = include_str!("portal.css");

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").insert_header(("Cache-Control", "public, max-age=3600")).body(CSS)
}

/// Money for pages: minor units as a decimal string of the currency's exponent.
pub fn money(minor: i128, exponent: u8) -> String {
    let negative = minor < 0;
    let digits = minor.unsigned_abs().to_string();
    let exponent = exponent as usize;
    let text = if exponent == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = exponent + 1);
        let (whole, fraction) = padded.split_at(padded.len() - exponent);
        format!("{whole}.{fraction}")
    };
    if negative {
        format!("-{text}")
    } else {
        text
    }
}

/// Pages one CSV export reads at most (each within its own scan and cold-read budget): a
/// filter that matches little no longer walks the whole history in one request.
pub const EXPORT_PAGES_MAX: usize = 20;

/// The last row of an export that stopped before the listing's end: where to go on from.
pub fn export_stopped_row(columns: usize, cursor: &str) -> Vec<String> {
    let mut row = vec![String::new(); columns.max(1)];
    row[0] = format!("(more rows: this export stopped here; export again with cursor={cursor})");
    row
}

/// A portal's CSV export (header first, quoted by the csv crate) with every cell safe to open in
/// a spreadsheet: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return and is
/// not a plain number (`-12.50` stays a number) gets a leading `'`, so a name or order number a
/// platform or merchant chose cannot become a formula on an operator's machine.
pub fn csv_file<R: AsRef<[String]>>(header: &[&str], rows: impl IntoIterator<Item = R>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(header);
    for row in rows {
        for cell in row.as_ref() {
            let _ = writer.write_field(spreadsheet_cell(cell).as_bytes());
        }
        let _ = writer.write_record(None::<&[u8]>);
    }
    writer.into_inner().unwrap_or_default()
}

/// `cell`, with a leading `'` if a spreadsheet would read it as a formula (see `csv_file`).
pub fn spreadsheet_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = |text: &str| {
        let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
        !whole.is_empty() && !fraction.is_empty() && whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
    };
    if risky && !number(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/portal/assets/portal.css", web::get().to(stylesheet));
    pages::routes(config);
    system::routes(config);
    platform::routes(config);
    merchant::routes(config);
}

#[cfg(test)]
mod tests {
    use super::{csv_file, spreadsheet_cell};

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_get_a_quote() {
        for (cell, written) in [
            ("=HYPERLINK(\"https://evil/\",\"x\")", "'=HYPERLINK(\"https://evil/\",\"x\")"),
            ("+1+1", "'+1+1"),
            ("-1+1", "'-1+1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\r=1", "'\r=1"),
            ("-12.50", "-12.50"),
            ("+3", "+3"),
            ("-", "'-"),
            ("-.5", "'-.5"),
            ("12.50", "12.50"),
            ("Zhang San", "Zhang San"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_cell(cell), written, "{cell:?}");
        }
        let file = String::from_utf8(csv_file(&["a", "b"], [vec!["=1+1".to_string(), "-5".to_string()]])).unwrap();
        assert_eq!(file, "a,b\n'=1+1,-5\n");
    }

    #[test]
    fn money_is_formatted_exactly() {
        assert_eq!(super::money(0, 2), "0.00");
        assert_eq!(super::money(5, 2), "0.05");
        assert_eq!(super::money(-12345, 2), "-123.45");
        assert_eq!(super::money(7, 0), "7");
        assert_eq!(super::money(i128::MAX, 2).len(), 40);
    }
}
