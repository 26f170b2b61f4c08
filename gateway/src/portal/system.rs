//! The system operators' portal. Every page here requires a system operator's session
//! (`Session::require_kind("system")`); another kind of operator gets 404.

use actix_web::{web, HttpResponse};
use maud::html;

use super::{page, PortalError, Session};

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] =
    &[("Dashboard", "/portal/system"), ("Approvals", "/portal/approvals"), ("Operators", "/portal/operators"), ("Audit log", "/portal/audit")];

async fn home(session: Session) -> Result<HttpResponse, PortalError> {
    session.require_kind("system")?;
    let body = html! {
        section.card {
            p { "Signed in as " (session.operator.display_name) " for " (session.operator.scope.describe()) "." }
        }
    };
    Ok(page(&session, "Dashboard", "/portal/system", body))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/portal/system", web::get().to(home));
}
