//! No signed request is applied twice, restart or not.
//!
//! Within one process the nonce cache refuses a replay. Across a restart (a kill -9 within the
//! 300 s window), a request that carries an order number (`out_order_no`) is answered from its
//! idempotency record: a replay returns the first result and moves nothing. The few state
//! changes without an order number (a payment password, a card's verification or unbinding, the
//! webhook, anything added later) record their nonce durably (one synced store write, under
//! `q/`) after the signature is checked and before the handler runs; at start the nonces still
//! within the window are put back into the cache. So the hot path (orders, bulk, reads) pays
//! nothing, and the rule is safe by default: a new `/v1` route that is not a GET is durable
//! unless it is added to `applied_once_by_order_number`. Records a day past the window are
//! deleted (`DurableNonces::prune`, at start and at most hourly after), so they do not pile up
//! for the life of the data directory.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix_web::http::Method;
use storage::Store;

use crate::auth::{NonceCache, SignedHead, TIMESTAMP_WINDOW_SECONDS};
use crate::error::ApiError;

const PREFIX: &[u8] = b"q/";

/// How long past the window a record is kept before `prune` deletes it. Past the window no start
/// reads it (a request that old is refused by its timestamp); a day more keeps the records a
/// start would read after the server's clock was set back by up to a day.
const KEPT_PAST_WINDOW_SECONDS: i64 = 86_400;

/// How often `record` prunes (by the server's clock), besides the prune of each start.
const PRUNE_EVERY_SECONDS: i64 = 3_600;

/// `q/` + timestamp (order-preserving) + platform + nonce hash.
fn key(timestamp: i64, platform: u32, hash: u128) -> [u8; 30] {
    let mut key = [0u8; 30];
    key[..2].copy_from_slice(PREFIX);
    key[2..10].copy_from_slice(&ordered(timestamp).to_be_bytes());
    key[10..14].copy_from_slice(&platform.to_be_bytes());
    key[14..].copy_from_slice(&hash.to_be_bytes());
    key
}

/// An i64 as a u64 that sorts the same way.
fn ordered(timestamp: i64) -> u64 {
    (timestamp as u64) ^ (1 << 63)
}

/// Nonces recorded in the store.
pub struct DurableNonces {
    store: Arc<dyn Store>,
    /// The server's clock at the last prune (`i64::MIN`: none yet).
    pruned_at: AtomicI64,
}

impl DurableNonces {
    /// Nonces kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> DurableNonces {
        DurableNonces { store, pruned_at: AtomicI64::new(i64::MIN) }
    }

    /// Puts the recorded nonces still within the window of `now` back into `cache`; returns how
    /// many. Reads only the keys of the window (they are ordered by timestamp).
    pub fn restore(&self, cache: &NonceCache, now: i64) -> Result<usize, String> {
        let start = key(now.saturating_sub(TIMESTAMP_WINDOW_SECONDS), 0, 0);
        let end = [b'q', b'/' + 1];
        let mut restored = 0;
        self.store
            .scan(&start, &end, &mut |key, _| {
                if key.len() == 30 {
                    let timestamp = (u64::from_be_bytes(key[2..10].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
                    let platform = u32::from_be_bytes(key[10..14].try_into().expect("4 bytes"));
                    let hash = u128::from_be_bytes(key[14..30].try_into().expect("16 bytes"));
                    cache.restore(platform, hash, timestamp, now);
                    restored += 1;
                }
                true
            })
            .map_err(|e| format!("reading the recorded nonces: {e}"))?;
        self.prune(now).map_err(|e| format!("deleting the recorded nonces past the window: {e}"))?;
        Ok(restored)
    }

    /// Deletes the records more than `KEPT_PAST_WINDOW_SECONDS` past the window of `now` (one
    /// synced range deletion, whatever it holds).
    pub fn prune(&self, now: i64) -> Result<(), storage::StorageError> {
        self.pruned_at.store(now, Ordering::Relaxed);
        let end = key(now.saturating_sub(TIMESTAMP_WINDOW_SECONDS).saturating_sub(KEPT_PAST_WINDOW_SECONDS), 0, 0);
        self.store.delete_range(PREFIX, &end)
    }

    /// Records a request's nonce durably (one synced write); call off the async workers.
    pub fn record(&self, head: &SignedHead) -> Result<(), ApiError> {
        let key = key(head.timestamp, head.platform.id, head.nonce_hash);
        self.store.write(&[(&key, b"1")]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        // At most one caller an interval prunes; the request does not wait on its outcome (a
        // record left stays harmless, and a store that failed refuses the next write anyway).
        let last = self.pruned_at.load(Ordering::Relaxed);
        if head.now.saturating_sub(last) >= PRUNE_EVERY_SECONDS && self.pruned_at.compare_exchange(last, head.now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let _ = self.prune(head.now);
        }
        Ok(())
    }
}

/// Whether a signed request is applied at most once by its order number (an idempotency record
/// answers its replay, restart or not) or changes nothing (GET): such a request's nonce need not
/// outlive the process. Every other request records its nonce durably before it is applied.
pub fn applied_once_by_order_number(method: &Method, path: &str) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    if method != Method::POST {
        return false;
    }
    let Some(rest) = path.strip_prefix("/v1/") else { return false };
    let mut parts = rest.split('/');
    let segments = [parts.next(), parts.next(), parts.next(), parts.next()];
    match segments {
        // Each of these bodies requires `out_order_no`.
        [Some(
            "members" | "accounts" | "payments" | "batch-payments" | "refunds" | "freezes" | "recharges" | "collections" | "withdrawals" | "payouts" | "bulk",
        ), None, ..] => true,
        [Some("accounts"), Some(id), Some("close" | "cards"), None] => !id.is_empty(),
        [Some("payments"), Some(id), Some("confirm" | "cancel"), None] => !id.is_empty(),
        [Some("freezes"), Some(id), Some("release"), None] => !id.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_record_their_nonce_durably() {
        let cases: &[(Method, &str, bool)] = &[
            (Method::GET, "/v1/accounts/acc_1", true),
            (Method::POST, "/v1/payments", true),
            (Method::POST, "/v1/bulk", true),
            (Method::POST, "/v1/members", true),
            (Method::POST, "/v1/accounts", true),
            (Method::POST, "/v1/accounts/acc_1/close", true),
            (Method::POST, "/v1/accounts/acc_1/cards", true),
            (Method::POST, "/v1/payments/ord_1/confirm", true),
            (Method::POST, "/v1/freezes/ord_1/release", true),
            (Method::POST, "/v1/accounts/acc_1/password", false),
            (Method::POST, "/v1/accounts/acc_1/cards/card_1/verify", false),
            (Method::DELETE, "/v1/accounts/acc_1/cards/card_1", false),
            (Method::POST, "/v1/webhook", false),
            (Method::POST, "/v1/payments/ord_1/confirm/extra", false),
            (Method::POST, "/v1/accounts//close", false),
            (Method::PUT, "/v1/payments", false),
            (Method::POST, "/v1/something-new", false),
        ];
        for (method, path, once) in cases {
            assert_eq!(applied_once_by_order_number(method, path), *once, "{method} {path}");
        }
    }

    #[test]
    fn recorded_nonces_come_back_within_the_window_only() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let durable = DurableNonces::new(store);
        // From JSON, as it is stored: fields added later have defaults.
        let platform: crate::platforms::Platform = serde_json::from_value(serde_json::json!({
            "id": 3, "name": "p", "settlement_cycle_days": 1, "auto_confirm_days": 15, "require_payment_password": false, "secret_version": 1
        }))
        .unwrap();
        let now = 1_700_000_000;
        for (timestamp, nonce) in [(now - 100, "aaaaaaaaaaaaaaaa"), (now - 400, "bbbbbbbbbbbbbbbb"), (now + 250, "cccccccccccccccc")] {
            let head = SignedHead { platform: platform.clone(), timestamp, nonce_hash: crate::auth::nonce_hash(3, nonce), now: timestamp };
            durable.record(&head).unwrap();
        }
        let cache = NonceCache::new();
        assert_eq!(durable.restore(&cache, now).unwrap(), 2, "the one 400 s old is not read");
        assert_eq!(cache.remember(3, crate::auth::nonce_hash(3, "aaaaaaaaaaaaaaaa"), now - 100, now, 10), Ok(false));
        assert_eq!(cache.remember(3, crate::auth::nonce_hash(3, "cccccccccccccccc"), now + 250, now, 10), Ok(false));
    }

    /// Records a day past the window go: at start, and from `record` at most once an hour.
    #[test]
    fn records_a_day_past_the_window_are_deleted() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let durable = DurableNonces::new(store.clone());
        let platform: crate::platforms::Platform = serde_json::from_value(serde_json::json!({
            "id": 3, "name": "p", "settlement_cycle_days": 1, "auto_confirm_days": 15, "require_payment_password": false, "secret_version": 1
        }))
        .unwrap();
        let recorded = || {
            let mut times = Vec::new();
            store
                .scan(PREFIX, &[b'q', b'/' + 1], &mut |key, _| {
                    times.push((u64::from_be_bytes(key[2..10].try_into().unwrap()) ^ (1 << 63)) as i64);
                    true
                })
                .unwrap();
            times
        };
        let record = |timestamp: i64, now: i64, nonce: &str| {
            let head = SignedHead { platform: platform.clone(), timestamp, nonce_hash: crate::auth::nonce_hash(3, nonce), now };
            durable.record(&head).unwrap();
        };
        let now = 1_700_000_000;
        let day = KEPT_PAST_WINDOW_SECONDS;
        // Written long ago (by earlier processes), and one a negative clock would give.
        record(now - 3 * day, now - 3 * day, "aaaaaaaaaaaaaaaa");
        record(now - day - TIMESTAMP_WINDOW_SECONDS - 1, now - day - TIMESTAMP_WINDOW_SECONDS - 1, "bbbbbbbbbbbbbbbb");
        record(-5, -5, "cccccccccccccccc");
        let fresh = DurableNonces::new(store.clone());
        let head = SignedHead { platform: platform.clone(), timestamp: now - 10, nonce_hash: crate::auth::nonce_hash(3, "dddddddddddddddd"), now: now - 10 };
        fresh.record(&head).unwrap();
        store.write(&[(&key(now - day, 3, 7), b"1")]).unwrap();
        // A start prunes all but the last day and the window.
        assert_eq!(fresh.restore(&NonceCache::new(), now).unwrap(), 1);
        assert_eq!(recorded(), vec![now - day, now - 10]);
        // Within the hour, records are kept; an hour on, the next record prunes.
        let record_fresh = |timestamp: i64, now: i64, nonce: &str| {
            let head = SignedHead { platform: platform.clone(), timestamp, nonce_hash: crate::auth::nonce_hash(3, nonce), now };
            fresh.record(&head).unwrap();
        };
        // An hour and more on, past the day and window of the record made 10 s before `now`.
        let later = now + day + TIMESTAMP_WINDOW_SECONDS + 11;
        record_fresh(now + 100, now + 100, "eeeeeeeeeeeeeeee");
        assert_eq!(recorded(), vec![now - day, now - 10, now + 100]);
        record_fresh(later - 5, later, "ffffffffffffffff");
        assert_eq!(recorded(), vec![now + 100, later - 5]);
    }
}
