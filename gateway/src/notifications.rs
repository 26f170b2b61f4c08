//! Notifications to members (API.md: a withdrawal over 50,000.00 alerts its member). Each is
//! kept durably and shown at `GET /v1/members/{member_id}/notifications` (an addition to
//! API.md); the text is what the member's SMS gateway would send to their phone.

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

/// Members' notifications, kept in the store (`n/{member}/{sequence:012}`) and read from it
/// where shown: nothing is held in memory.
pub struct Notifications {
    store: Arc<dyn Store>,
    /// Serialize a member's sends (its next sequence number is read and written as one step):
    /// `SEND_STRIPES` locks by member, so one member's synced write does not queue another's.
    sending: Vec<Mutex<()>>,
}

/// Locks `Notifications::sending` has.
const SEND_STRIPES: usize = 64;

/// The key range of `member`'s notifications: `n/{member}/` up to `n/{member}0`.
fn member_range(member: u64) -> (Vec<u8>, Vec<u8>) {
    let start = format!("{PREFIX}{member}/").into_bytes();
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = b'0';
    }
    (start, end)
}

impl Notifications {
    /// Opens the notifications in `store` (nothing is read until asked for).
    pub fn load(store: Arc<dyn Store>) -> Result<Notifications, String> {
        Ok(Notifications { store, sending: (0..SEND_STRIPES).map(|_| Mutex::new(())).collect() })
    }

    /// Durably records a notification to `member` (blocking: a read and a synced write).
    pub fn send(&self, member: &Member, kind: &str, text: String, order_id: Option<String>) -> Result<(), ApiError> {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let notification = Notification { kind: kind.into(), phone: member.phone.clone(), text, order_id, time: crate::orders::format_time(at) };
        let stripe = &self.sending[(member.id % SEND_STRIPES as u64) as usize];
        let _sending = stripe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, end) = member_range(member.id);
        let last = self.store.last_key_in(&start, &end).map_err(ApiError::store)?;
        let sequence = match last {
            None => 0,
            Some(key) => std::str::from_utf8(&key[start.len()..])
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .and_then(|n| n.checked_add(1))
                .ok_or_else(|| ApiError::corrupt("a stored notification key"))?,
        };
        let key = format!("{PREFIX}{}/{sequence:012}", member.id).into_bytes();
        crate::records::put(self.store.as_ref(), &[(key, &notification)])
    }

    /// A member's notifications, oldest first, read from the store (blocking).
    pub fn of(&self, member: u64) -> Result<Vec<Notification>, ApiError> {
        let (start, end) = member_range(member);
        let mut found = Vec::new();
        let mut corrupt = false;
        self.store
            .scan(&start, &end, &mut |_, value| match serde_json::from_slice(value) {
                Ok(notification) => {
                    found.push(notification);
                    true
                }
                Err(_) => {
                    corrupt = true;
                    false
                }
            })
            .map_err(ApiError::store)?;
        if corrupt {
            return Err(ApiError::corrupt("a stored notification"));
        }
        Ok(found)
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
    let reading = notifications.get_ref().clone();
    let found = crate::error::blocking(move || reading.of(member.id)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"notifications": found})))
}

/// Registers the notification route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id,
            platform: 1,
            kind: "individual".into(),
            name: "Zhang San".into(),
            id_number: "11010519491231002X".into(),
            phone: "13800138000".into(),
            status: "active".into(),
        }
    }

    /// Each member's notifications are their own key range (member 1's range must not take
    /// member 10's or 11's, whose decimal ids begin alike), numbered on after a restart.
    #[test]
    fn a_members_notifications_are_read_from_its_own_range_and_numbered_on() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let notifications = Notifications::load(store.clone()).unwrap();
        for (id, count) in [(1u64, 3usize), (10, 2), (11, 1)] {
            for n in 0..count {
                notifications.send(&member(id), "large_withdrawal_alert", format!("alert {n} of {id}"), None).unwrap();
            }
        }
        let again = Notifications::load(store.clone()).unwrap();
        again.send(&member(1), "large_withdrawal_alert", "alert 3 of 1".into(), None).unwrap();
        let texts = |id| again.of(id).unwrap().into_iter().map(|n| n.text).collect::<Vec<_>>();
        assert_eq!(texts(1), ["alert 0 of 1", "alert 1 of 1", "alert 2 of 1", "alert 3 of 1"]);
        assert_eq!(texts(10), ["alert 0 of 10", "alert 1 of 10"]);
        assert_eq!(texts(11), ["alert 0 of 11"]);
        assert!(texts(2).is_empty());
        let mut keys = Vec::new();
        store
            .scan(b"n/", b"n0", &mut |key, _| {
                keys.push(String::from_utf8_lossy(key).into_owned());
                true
            })
            .unwrap();
        assert_eq!(keys[..4], ["n/1/000000000000", "n/1/000000000001", "n/1/000000000002", "n/1/000000000003"]);
        // A corrupt record is an error, not a panic or a silent gap.
        store.write(&[(&b"n/11/000000000000"[..], &b"{"[..])]).unwrap();
        assert_eq!(again.of(11).err().map(|e| e.status), Some(500));
    }
}
