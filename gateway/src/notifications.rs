//! Notifications to members (API.md: a withdrawal over 50,000.00 alerts its member). Each is
//! kept durably and shown at `GET /v1/members/{member_id}/notifications` (an addition to
//! API.md: newest first, paged with `limit` and `cursor` as API.md's lists are); the text is
//! what the member's SMS gateway would send to their phone.

use std::sync::{Arc, Mutex};

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::error::ApiError;
use crate::members::{Member, Members};
use crate::signed::Signed;

const PREFIX: &str = "n/";

/// One notification to a member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        let stripe = &self.sending[(member.id % SEND_STRIPES as u64) as usize];
        let _sending = stripe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write_next(member, kind, text, order_id)
    }

    /// Sends a notification of `kind` about `order_id` unless one is among `member`'s newest
    /// `window` (blocking): the check and the write under the member's lock, so two requests
    /// about one order (a request and its retry running at once) write it once. Answers
    /// whether it wrote one.
    pub fn send_once(&self, member: &Member, kind: &str, text: String, order_id: &str, window: usize) -> Result<bool, ApiError> {
        let stripe = &self.sending[(member.id % SEND_STRIPES as u64) as usize];
        let _sending = stripe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.sent_recently(member.id, kind, order_id, window) {
            Ok(true) => return Ok(false),
            Ok(false) => {}
            // An unreadable earlier notification: sent (a second alert rather than none).
            Err(error) => tracing::warn!(member = member.id, "notifications: {}; sent without the check", error.message),
        }
        self.write_next(member, kind, text, Some(order_id.to_string())).map(|()| true)
    }

    /// Writes the member's next notification (its stripe's lock held).
    fn write_next(&self, member: &Member, kind: &str, text: String, order_id: Option<String>) -> Result<(), ApiError> {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let notification = Notification { kind: kind.into(), phone: member.phone.clone(), text, order_id, time: crate::orders::format_time(at) };
        let (start, end) = member_range(member.id);
        let last = self.store.last_key_in(&start, &end).map_err(ApiError::store)?;
        let sequence = match last {
            None => 0,
            Some(key) => sequence_of(&key[start.len()..])?.checked_add(1).ok_or_else(|| ApiError::corrupt("a stored notification key"))?,
        };
        let key = notification_key(member.id, sequence);
        crate::records::put(self.store.as_ref(), &[(key, &notification)])
    }

    /// Whether one of `member`'s newest `window` notifications is of `kind` about `order_id`
    /// (blocking).
    pub fn sent_recently(&self, member: u64, kind: &str, order_id: &str, window: usize) -> Result<bool, ApiError> {
        let (newest, _) = self.page(member, None, window)?;
        Ok(newest.iter().any(|notification| notification.kind == kind && notification.order_id.as_deref() == Some(order_id)))
    }

    /// A page of `member`'s notifications, newest first: up to `limit` of those numbered below
    /// `before` (all for `None`), and the number to give as `before` for the next page (`None`
    /// at the oldest). Sequence numbers run from 0 without a gap (`send`), so a page is one
    /// backwards seek for the newest and one `get_many` of its keys, whatever the member's
    /// history holds (blocking). A `before` past the newest (a made-up cursor) starts at the
    /// newest, so every walk ends.
    pub fn page(&self, member: u64, before: Option<u64>, limit: usize) -> Result<(Vec<Notification>, Option<u64>), ApiError> {
        let (start, end) = member_range(member);
        let newest = match self.store.last_key_in(&start, &end).map_err(ApiError::store)? {
            None => return Ok((Vec::new(), None)),
            Some(key) => sequence_of(&key[start.len()..])?,
        };
        let upto = before.unwrap_or(u64::MAX).min(newest.saturating_add(1));
        let from = upto.saturating_sub(limit as u64);
        let keys: Vec<Vec<u8>> = (from..upto).rev().map(|sequence| notification_key(member, sequence)).collect();
        let borrowed: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut found = Vec::with_capacity(keys.len());
        for value in self.store.get_many(&borrowed).map_err(ApiError::store)?.into_iter().flatten() {
            found.push(serde_json::from_slice(&value).map_err(|_| ApiError::corrupt("a stored notification"))?);
        }
        Ok((found, (from > 0).then_some(from)))
    }
}

/// The key of `member`'s notification number `sequence`.
fn notification_key(member: u64, sequence: u64) -> Vec<u8> {
    format!("{PREFIX}{member}/{sequence:012}").into_bytes()
}

/// The sequence number a notification key ends with.
fn sequence_of(tail: &[u8]) -> Result<u64, ApiError> {
    std::str::from_utf8(tail).ok().and_then(|n| n.parse::<u64>().ok()).ok_or_else(|| ApiError::corrupt("a stored notification key"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// A `next_cursor` of this listing: the sequence number the next page stops below, in decimal
/// (0 is never one: the oldest page has none).
fn parse_cursor(text: &str) -> Result<u64, ApiError> {
    let valid = !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    valid.then(|| text.parse::<u64>().ok()).flatten().ok_or_else(|| ApiError::invalid("cursor is the next_cursor of the previous page", "cursor"))
}

#[utoipa::path(get, path = "/v1/members/{member_id}/notifications", operation_id = "list_notifications", tag = "members", params(("member_id" = String, Path, description = "Member id"), ("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/members/{member_id}/notifications")]
pub async fn list(
    signed: Signed,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    members: web::Data<Arc<Members>>,
    notifications: web::Data<Arc<Notifications>>,
) -> Result<HttpResponse, ApiError> {
    let limit = crate::orders::page_limit(query.limit.as_deref())?;
    let before = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let member = members.named(signed.platform.id, &path)?.ok_or_else(ApiError::not_found)?;
    let reading = notifications.get_ref().clone();
    let (found, next) = crate::error::blocking(move || reading.page(member.id, before, limit)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"notifications": found, "next_cursor": next.map(|n| n.to_string())})))
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
        let texts = |id| again.page(id, None, 500).unwrap().0.into_iter().map(|n| n.text).collect::<Vec<_>>();
        assert_eq!(texts(1), ["alert 3 of 1", "alert 2 of 1", "alert 1 of 1", "alert 0 of 1"], "newest first");
        assert_eq!(texts(10), ["alert 1 of 10", "alert 0 of 10"]);
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
        assert_eq!(again.page(11, None, 50).err().map(|e| e.status), Some(500));
    }

    /// A notification sent once about an order is written once by requests at the same time
    /// (a request and its retry: before session 59 each checked, then each wrote), and again
    /// only once it is no longer among the newest `window`.
    #[test]
    fn a_notification_sent_once_is_written_once_by_requests_at_the_same_time() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let notifications = Arc::new(Notifications::load(store).unwrap());
        let written: usize = std::thread::scope(|scope| {
            let senders: Vec<_> =
                (0..8).map(|_| scope.spawn(|| notifications.send_once(&member(4), "large_withdrawal_alert", "alert".into(), "ord_9", 100).unwrap())).collect();
            senders.into_iter().map(|s| usize::from(s.join().unwrap())).sum()
        });
        assert_eq!(written, 1);
        assert_eq!(notifications.page(4, None, 50).unwrap().0.len(), 1);
        notifications.send(&member(4), "other", "other".into(), None).unwrap();
        assert!(!notifications.send_once(&member(4), "large_withdrawal_alert", "alert".into(), "ord_9", 2).unwrap(), "still among the newest two");
        assert!(notifications.send_once(&member(4), "large_withdrawal_alert", "alert".into(), "ord_9", 1).unwrap(), "past the window");
    }

    /// Pages run newest first and end at the oldest: every notification once, whatever the
    /// page size, and a page past the newest (a cursor made up) holds only what exists.
    #[test]
    fn a_members_notifications_are_paged_newest_first() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let notifications = Notifications::load(store).unwrap();
        for n in 0..7 {
            notifications.send(&member(3), "large_withdrawal_alert", format!("{n}"), None).unwrap();
        }
        notifications.send(&member(30), "large_withdrawal_alert", "other".into(), None).unwrap();
        for limit in [1, 2, 3, 7, 8, 500] {
            let (mut seen, mut before, mut pages) = (Vec::new(), None, 0);
            loop {
                let (page, next) = notifications.page(3, before, limit).unwrap();
                assert!(page.len() <= limit);
                seen.extend(page.into_iter().map(|n| n.text));
                pages += 1;
                match next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, ["6", "5", "4", "3", "2", "1", "0"], "limit {limit}");
            assert_eq!(pages, 7usize.div_ceil(limit), "limit {limit}");
        }
        // A cursor past the newest starts at the newest: a walk from any cursor ends.
        let (page, next) = notifications.page(3, Some(u64::MAX), 3).unwrap();
        assert_eq!((page.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(), next), (vec!["6", "5", "4"], Some(4)));
        assert_eq!(notifications.page(4, None, 50).unwrap(), (Vec::new(), None), "no notifications");
        assert!(parse_cursor("0").is_err() && parse_cursor("007").is_err() && parse_cursor("-1").is_err() && parse_cursor("99999999999999999999").is_err());
        assert_eq!(parse_cursor("18446744073709551615").unwrap(), u64::MAX);
    }
}
