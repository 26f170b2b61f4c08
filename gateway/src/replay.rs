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

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use storage::Store;

use crate::auth::{NonceCache, SignedHead, TIMESTAMP_WINDOW_SECONDS};
use crate::error::ApiError;

const PREFIX: &[u8] = b"q/";

/// How long past the window a record is kept before it is deleted. Past the window no start
/// reads it (a request that old is refused by its timestamp); a day more keeps the records a
/// start would read after the server's clock was set back by up to a day.
const KEPT_PAST_WINDOW_SECONDS: i64 = 86_400;

/// How often `record` prunes, by the monotonic clock, besides the prune of each start.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

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

/// The timestamp of a `q/` key.
fn timestamp_of(key: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(key.get(2..10)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// Nonces recorded in the store.
pub struct DurableNonces {
    store: Arc<dyn Store>,
    /// The wall-clock time `restore` pruned at and the monotonic instant it did: later prunes
    /// take their time from these, never from a request's clock reading, so that a wall clock
    /// that jumps forward cannot delete the records of the true window. None before `restore`.
    anchor: OnceLock<(i64, Instant)>,
    /// When `record` last pruned (or `restore`), by the monotonic clock; none: due.
    pruned: Mutex<Option<Instant>>,
}

impl DurableNonces {
    /// Nonces kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> DurableNonces {
        DurableNonces { store, anchor: OnceLock::new(), pruned: Mutex::new(None) }
    }

    /// Puts the recorded nonces still within the window of `now` back into `cache`; returns how
    /// many. Reads only the keys of the window (they are ordered by timestamp). Then deletes
    /// the records a day past the window: past the window of `now` or of the newest record,
    /// whichever is older (a clock that is days ahead at a start deletes nothing more than the
    /// records' own times allow).
    pub fn restore(&self, cache: &NonceCache, now: i64) -> Result<usize, String> {
        let start = key(now.saturating_sub(TIMESTAMP_WINDOW_SECONDS), 0, 0);
        let end = [b'q', b'/' + 1];
        let mut restored = 0;
        self.store
            .scan(&start, &end, &mut |key, _| {
                if key.len() == 30 {
                    let timestamp = timestamp_of(key).expect("a 30-byte key");
                    let platform = u32::from_be_bytes(key[10..14].try_into().expect("4 bytes"));
                    let hash = u128::from_be_bytes(key[14..30].try_into().expect("16 bytes"));
                    cache.restore(platform, hash, timestamp, now);
                    restored += 1;
                }
                true
            })
            .map_err(|e| format!("reading the recorded nonces: {e}"))?;
        let newest = self.store.last_key_in(PREFIX, &end).map_err(|e| format!("reading the recorded nonces: {e}"))?;
        let anchor = newest.as_deref().and_then(timestamp_of).map_or(now, |newest| newest.min(now));
        let _ = self.anchor.set((anchor, Instant::now()));
        *self.pruned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        self.prune(anchor).map_err(|e| format!("deleting the recorded nonces past the window: {e}"))?;
        Ok(restored)
    }

    /// Deletes the records more than `KEPT_PAST_WINDOW_SECONDS` past the window of `now` (one
    /// synced range deletion, whatever it holds).
    fn prune(&self, now: i64) -> Result<(), storage::StorageError> {
        let end = key(now.saturating_sub(TIMESTAMP_WINDOW_SECONDS).saturating_sub(KEPT_PAST_WINDOW_SECONDS), 0, 0);
        self.store.delete_range(PREFIX, &end)
    }

    /// Records a request's nonce durably (one synced write); call off the async workers. At most
    /// once every `PRUNE_EVERY` (monotonic), and only after `restore`, it also prunes, at the
    /// start's time plus the time since (or the request's clock reading, if earlier).
    pub fn record(&self, head: &SignedHead) -> Result<(), ApiError> {
        let key = key(head.timestamp, head.platform.id, head.nonce_hash);
        self.store.write(&[(&key, b"1")]).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let Some(&(anchor, anchored)) = self.anchor.get() else { return Ok(()) };
        let due = {
            let mut pruned = self.pruned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *pruned = Some(Instant::now());
            }
            due
        };
        if due {
            let since = i64::try_from(anchored.elapsed().as_secs()).unwrap_or(i64::MAX);
            // The request does not wait on the outcome: a record left is harmless, and a store
            // that failed refuses the next write anyway.
            if let Err(error) = self.prune(anchor.saturating_add(since).min(head.now)) {
                tracing::warn!("replay: cannot delete the recorded nonces past the window: {error}");
            }
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

    /// Records a day past the window go at start (by the older of the start's clock and the
    /// newest record), and from `record` once the monotonic interval has passed, never by a
    /// request's clock reading alone.
    #[test]
    fn records_a_day_past_the_window_are_deleted_by_trusted_time_only() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let platform: crate::platforms::Platform = serde_json::from_value(serde_json::json!({
            "id": 3, "name": "p", "settlement_cycle_days": 1, "auto_confirm_days": 15, "require_payment_password": false, "secret_version": 1
        }))
        .unwrap();
        let recorded = || {
            let mut times = Vec::new();
            store
                .scan(PREFIX, &[b'q', b'/' + 1], &mut |key, _| {
                    times.push(timestamp_of(key).unwrap());
                    true
                })
                .unwrap();
            times
        };
        let head = |timestamp: i64, now: i64, nonce: u128| SignedHead { platform: platform.clone(), timestamp, nonce_hash: nonce, now };
        let now = 1_700_000_000;
        let cutoff = now - TIMESTAMP_WINDOW_SECONDS - KEPT_PAST_WINDOW_SECONDS;
        // Written by earlier processes: before `restore`, `record` prunes nothing.
        let durable = DurableNonces::new(store.clone());
        for (i, timestamp) in [-5, now - 3 * 86_400, cutoff - 1, cutoff, now - 10].into_iter().enumerate() {
            durable.record(&head(timestamp, now + 30 * 86_400, i as u128 + 1)).unwrap();
        }
        assert_eq!(recorded(), vec![-5, now - 3 * 86_400, cutoff - 1, cutoff, now - 10]);
        // A start whose clock is ten days ahead prunes by the newest record's time (now - 10)
        // instead: only what is a day past that record's window goes.
        let ahead = DurableNonces::new(store.clone());
        assert_eq!(ahead.restore(&NonceCache::new(), now + 10 * 86_400).unwrap(), 0);
        assert_eq!(recorded(), vec![cutoff - 1, cutoff, now - 10]);
        // A start at `now` (its newest record at `now`) keeps the record at the cutoff and the
        // window's, and deletes the one before.
        store.write(&[(&key(now, 3, 9), b"1")]).unwrap();
        let durable = DurableNonces::new(store.clone());
        assert_eq!(durable.restore(&NonceCache::new(), now).unwrap(), 2);
        assert_eq!(recorded(), vec![cutoff, now - 10, now]);
        // Within the interval, `record` prunes nothing, whatever the request's clock says.
        store.write(&[(&key(cutoff - 1, 3, 10), b"1")]).unwrap();
        durable.record(&head(now + 100, now + 100 * 86_400, 20)).unwrap();
        assert_eq!(recorded(), vec![cutoff - 1, cutoff, now - 10, now, now + 100]);
        // Past it (the interval ended by hand here: no prune yet counts as due), the prune's time is the start's plus
        // the time since, not the request's reading ten days ahead: the window stays.
        *durable.pruned.lock().unwrap() = None;
        durable.record(&head(now + 101, now + 10 * 86_400, 21)).unwrap();
        assert_eq!(recorded(), vec![cutoff, now - 10, now, now + 100, now + 101]);
    }
}
