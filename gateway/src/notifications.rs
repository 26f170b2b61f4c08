//! Notifications to members (API.md: a withdrawal over 50,000.00 alerts its member). Each is
//! kept durably and shown at `GET /v1/members/{member_id}/notifications` (an addition to
//! API.md); the text is what the member's SMS gateway would send to their phone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ApiError;
use crate::members::{Member, Members};
use crate::signed::Signed;

const PREFIX: &str = "n/";

/// One notification to a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub kind: String,
    pub phone: String,
    pub text: String,
    pub order_id: Option<String>,
    pub time: String,
}

/// Every member's notifications, loaded at start and written through.
pub struct Notifications {
    store: Arc<dyn Store>,
    by_member: Mutex<HashMap<u64, Vec<Notification>>>,
}

impl Notifications {
    /// Loads every stored notification.
    pub fn load(store: Arc<dyn Store>) -> Result<Notifications, String> {
        let mut by_member: HashMap<u64, Vec<Notification>> = HashMap::new();
        for (rest, notification) in crate::records::load_all::<Notification>(store.as_ref(), PREFIX.as_bytes())? {
            let rest = String::from_utf8_lossy(&rest).into_owned();
            let member: u64 = rest.split('/').next().and_then(|m| m.parse().ok()).ok_or("corrupt notification key")?;
            by_member.entry(member).or_default().push(notification);
        }
        Ok(Notifications { store, by_member: Mutex::new(by_member) })
    }

    /// Durably records a notification to `member`.
    pub fn send(&self, member: &Member, kind: &str, text: String, order_id: Option<String>) -> Result<(), ApiError> {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let notification = Notification { kind: kind.into(), phone: member.phone.clone(), text, order_id, time: crate::orders::format_time(at) };
        let mut by_member = self.by_member.lock().expect("notifications lock");
        let sequence = by_member.get(&member.id).map_or(0, Vec::len);
        let key = format!("{PREFIX}{}/{sequence:012}", member.id).into_bytes();
        crate::records::put(self.store.as_ref(), &[(key, &notification)])?;
        by_member.entry(member.id).or_default().push(notification);
        Ok(())
    }

    /// A member's notifications, oldest first.
    pub fn of(&self, member: u64) -> Vec<Notification> {
        self.by_member.lock().expect("notifications lock").get(&member).cloned().unwrap_or_default()
    }
}

#[utoipa::path(get, path = "/v1/members/{member_id}/notifications", operation_id = "list_notifications", tag = "members", params(("member_id" = String, Path, description = "Member id")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/members/{member_id}/notifications")]
pub async fn list(
    signed: Signed,
    path: web::Path<String>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
) -> Result<HttpResponse, ApiError> {
    let member = members.named(signed.platform.id, &path)?.ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"notifications": notifications.of(member.id)})))
}

/// Registers the notification route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list);
}
