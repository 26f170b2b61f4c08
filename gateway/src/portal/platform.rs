//! The platform operators' portal. Every page here requires a platform operator's session
//! (`Session::require_kind("platform")`); another kind of operator gets 404.

use actix_web::{web, HttpResponse};
use maud::html;

use super::{page, PortalError, Session};

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] =
    &[("Dashboard", "/portal/platform"), ("Approvals", "/portal/approvals"), ("Operators", "/portal/operators"), ("Audit log", "/portal/audit")];

async fn home(session: Session) -> Result<HttpResponse, PortalError> {
    session.require_kind("platform")?;
    let body = html! {
        section.card {
            p { "Signed in as " (session.operator.display_name) " for " (session.operator.scope.describe()) "." }
        }
    };
    Ok(page(&session, "Dashboard", "/portal/platform", body))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/portal/platform", web::get().to(home));
}
