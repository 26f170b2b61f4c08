//! The merchant operators' portal. Every page here requires a merchant operator's session
//! (`Session::require_kind("merchant")`); another kind of operator gets 404.

use actix_web::{web, HttpResponse};
use maud::html;

use super::{page, PortalError, Session};

/// This portal's navigation: (label, path).
pub const NAV: &[(&str, &str)] = &[("Dashboard", "/portal/merchant"), ("Operators", "/portal/operators"), ("Audit log", "/portal/audit")];

async fn home(session: Session) -> Result<HttpResponse, PortalError> {
    session.require_kind("merchant")?;
    let body = html! {
        section.card {
            p { "Signed in as " (session.operator.display_name) " for " (session.operator.scope.describe()) "." }
        }
    };
    Ok(page(&session, "Dashboard", "/portal/merchant", body))
}

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/portal/merchant", web::get().to(home));
}
