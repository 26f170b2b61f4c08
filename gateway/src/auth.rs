//! Platform request signing (API.md): HMAC-SHA256 over METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE
//! and the body's SHA-256, within a time window, each nonce once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::platforms::{Platform, Platforms};

/// How far a request's timestamp may be from the server's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECONDS: i64 = 300;

/// Nonces seen within the window, per platform, each platform bounded by its own share.
///
/// A nonce is refused while the request that first used it has its timestamp inside the
/// window (a replay of that request carries the same timestamp, and requests outside the
/// window are refused before the nonce is looked at). Nonces are kept as 128-bit hashes of
/// (platform, nonce) with that timestamp, and listed per timestamp second so that whole
/// seconds are forgotten at once as they leave the window: no allocation per request and no
/// scan of the whole cache. Each platform has its own map behind its own lock, counted against
/// its own share (`QuotaLimits::nonces_max`): a platform that fills its share (say with
/// timestamps 300 s ahead, which stay longest) is answered 429 and no other platform notices.
#[derive(Default)]
pub struct NonceCache {
    platforms: RwLock<HashMap<u32, Arc<Mutex<Seen>>, rustc_hash::FxBuildHasher>>,
    /// The second of the last sweep of every platform's map (`sweep`).
    swept_at: std::sync::atomic::AtomicI64,
}

/// How many seconds behind its clock the sweep of every platform's map forgets (`sweep`).
const SWEEP_MARGIN: i64 = 5;

/// Nonces a platform's map keeps room for however few it holds (shrinking below is not worth
/// its rehash).
const NONCES_KEPT_ROOM: usize = 1024;

#[derive(Default)]
struct Seen {
    by_hash: HashMap<u128, i64, rustc_hash::FxBuildHasher>,
    by_second: std::collections::BTreeMap<i64, Vec<u128>>,
}

impl Seen {
    /// Forgets the seconds that left the window of `now`; a map left at a quarter of its room
    /// or less (after a burst) gives the rest back, so a platform's peak does not stay resident
    /// (up to its share of 8 Mi nonces, hundreds of MB) for the life of the process.
    fn expire(&mut self, now: i64) {
        let mut expired = false;
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() >= now.saturating_sub(TIMESTAMP_WINDOW_SECONDS) {
                break;
            }
            expired = true;
            let second = *entry.key();
            for old in entry.remove() {
                if self.by_hash.get(&old) == Some(&second) {
                    self.by_hash.remove(&old);
                }
            }
        }
        if expired && self.by_hash.capacity() > 4 * self.by_hash.len().max(NONCES_KEPT_ROOM) {
            self.by_hash.shrink_to(2 * self.by_hash.len().max(NONCES_KEPT_ROOM));
        }
    }

    fn insert(&mut self, hash: u128, timestamp: i64) {
        self.by_hash.insert(hash, timestamp);
        self.by_second.entry(timestamp).or_default().push(hash);
    }
}

/// The 128-bit hash under which a platform's nonce is remembered (in memory and on disk).
pub fn nonce_hash(platform: u32, nonce: &str) -> u128 {
    let mut key = [0u8; 4 + 64];
    key[..4].copy_from_slice(&platform.to_le_bytes());
    let length = nonce.len().min(64);
    key[4..4 + length].copy_from_slice(&nonce.as_bytes()[..length]);
    xxhash_rust::xxh3::xxh3_128(&key[..4 + length])
}

impl NonceCache {
    /// An empty cache.
    pub fn new() -> NonceCache {
        NonceCache::default()
    }

    fn platform(&self, platform: u32) -> Arc<Mutex<Seen>> {
        if let Some(seen) = self.platforms.read().expect("nonce lock").get(&platform) {
            return seen.clone();
        }
        self.platforms.write().expect("nonce lock").entry(platform).or_default().clone()
    }

    /// Records the nonce (by `nonce_hash`) of a request signed at `timestamp` (already checked
    /// to be within the window of `now`); false if it was seen before; 429 `rate_limited` when
    /// the platform already holds `share` nonces.
    pub fn remember(&self, platform: u32, hash: u128, timestamp: i64, now: i64, share: usize) -> Result<bool, ApiError> {
        self.sweep(now);
        let seen = self.platform(platform);
        // A std Mutex: no await while it is held.
        let mut seen = seen.lock().expect("nonce lock");
        seen.expire(now);
        if seen.by_hash.contains_key(&hash) {
            return Ok(false);
        }
        if seen.by_hash.len() >= share {
            // Its oldest second leaves the window first.
            let oldest = seen.by_second.first_key_value().map_or(now, |(second, _)| *second);
            let wait = oldest.saturating_add(TIMESTAMP_WINDOW_SECONDS).saturating_sub(now).saturating_add(1).clamp(1, 2 * TIMESTAMP_WINDOW_SECONDS + 1);
            return Err(ApiError::rate_limited("the platform is over its share of signed requests within the signing window", wait as u32));
        }
        seen.insert(hash, timestamp);
        Ok(true)
    }

    /// At most once a second (the first request of a second does it): forgets, in every
    /// platform's map, the seconds that left the window `SWEEP_MARGIN` seconds ago (a request
    /// that read the clock a little earlier may still find its nonce's second in its window:
    /// the sweep must not forget it under that request; helper 112). A platform's own requests expire its
    /// map too, but one that stops sending would otherwise keep its whole share (up to 8 Mi
    /// nonces, hundreds of MB) for the life of the process (helper 107). A map another request
    /// holds is left for the next sweep.
    fn sweep(&self, now: i64) {
        use std::sync::atomic::Ordering;
        let last = self.swept_at.load(Ordering::Relaxed);
        if now <= last || self.swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let all: Vec<Arc<Mutex<Seen>>> = self.platforms.read().expect("nonce lock").values().cloned().collect();
        for seen in all {
            if let Ok(mut seen) = seen.try_lock() {
                seen.expire(now.saturating_sub(SWEEP_MARGIN));
            }
        }
    }

    /// Puts back a nonce remembered durably before a restart (no share applies: it was within
    /// it when it was accepted).
    pub fn restore(&self, platform: u32, hash: u128, timestamp: i64, now: i64) {
        if within_window(now, timestamp) {
            let seen = self.platform(platform);
            let mut seen = seen.lock().expect("nonce lock");
            if !seen.by_hash.contains_key(&hash) {
                seen.insert(hash, timestamp);
            }
        }
    }

    /// Nonces the platform holds now.
    pub fn held(&self, platform: u32) -> usize {
        self.platform(platform).lock().expect("nonce lock").by_hash.len()
    }
}

/// The one value of header `name`. Given twice it is refused, whatever the values: a proxy in
/// front that read the other one would see another platform, signature or time than we check.
fn header<'a>(request: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    let mut values = request.headers().get_all(name);
    let value = values.next().and_then(|v| v.to_str().ok()).ok_or_else(|| ApiError::unauthenticated(&format!("missing header {name}")))?;
    if values.next().is_some() {
        return Err(ApiError::unauthenticated(&format!("header {name} given more than once")));
    }
    Ok(value)
}

/// The canonical string a platform signs.
pub fn canonical(method: &str, path_and_query: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}", hex::encode(Sha256::digest(body)))
}

/// What a signed request's headers say, checked before a byte of its body is read.
#[derive(Debug)]
pub struct SignedHead {
    pub platform: Platform,
    /// `X-Timestamp`, unix seconds within the window.
    pub timestamp: i64,
    /// `nonce_hash` of the platform and `X-Nonce`.
    pub nonce_hash: u128,
    /// The server's clock when the head was checked (which secrets verify depends on it).
    pub now: i64,
}

/// Checks everything the headers of a platform request tell on their own: the headers are there,
/// the platform exists, the nonce and the signature are well-formed, the timestamp is within the
/// window. Nothing here needs the body, so a client that is refused here is refused before it
/// sent one.
pub fn check_head(request: &HttpRequest, platforms: &Platforms, now: i64) -> Result<SignedHead, ApiError> {
    let platform_id = header(request, "x-platform-id")?;
    let timestamp = header(request, "x-timestamp")?;
    let nonce = header(request, "x-nonce")?;
    let signature = header(request, "x-signature")?;
    let platform = Platform::parse_public_id(platform_id).and_then(|id| platforms.get(id)).ok_or_else(|| ApiError::unauthenticated("unknown platform"))?;
    let nonce_valid = (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
    if !nonce_valid {
        return Err(ApiError::unauthenticated("X-Nonce must be 16 to 64 characters [A-Za-z0-9]"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::unauthenticated("X-Signature must be 64 hexadecimal digits"));
    }
    // Digits only (`parse` would also take a sign): the signed text is the number as written.
    let seconds: i64 = Some(timestamp)
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ApiError::unauthenticated("X-Timestamp must be unix seconds"))?;
    if !within_window(now, seconds) {
        return Err(ApiError::new(401, "timestamp_out_of_window", "X-Timestamp is more than 300 s from the server's clock"));
    }
    let nonce_hash = nonce_hash(platform.id, nonce);
    Ok(SignedHead { platform, timestamp: seconds, nonce_hash, now })
}

/// Checks the signature of a request whose head passed `check_head`, over its exact body.
pub fn check_signature(request: &HttpRequest, head: &SignedHead, body: &[u8], platforms: &Platforms) -> Result<(), ApiError> {
    let (timestamp, nonce, signature) = (header(request, "x-timestamp")?, header(request, "x-nonce")?, header(request, "x-signature")?);
    let platform = &head.platform;
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let canonical = canonical(request.method().as_str(), path_and_query, timestamp, nonce, body);
    if !platforms.verify_signature(platform, canonical.as_bytes(), signature, head.now) {
        return Err(ApiError::unauthenticated("bad signature"));
    }
    Ok(())
}

/// Remembers the nonce of a request whose signature was checked: `replayed_request` when it was
/// seen within the window, 429 `rate_limited` when the platform holds `share` nonces already.
pub fn check_nonce(head: &SignedHead, nonces: &NonceCache, now: i64, share: usize) -> Result<(), ApiError> {
    // The window again at the moment the nonce is remembered: the body was read since the
    // headers were checked (up to the body timeout), and the nonces of seconds that left the
    // window by now are forgotten, so a request that left it meanwhile would not be found a
    // replay (helper 112).
    if !within_window(now, head.timestamp) {
        return Err(ApiError::new(401, "timestamp_out_of_window", "the request's timestamp left the signing window while its body was read"));
    }
    if !nonces.remember(head.platform.id, head.nonce_hash, head.timestamp, now, share)? {
        return Err(ApiError::new(401, "replayed_request", "this nonce was already used"));
    }
    Ok(())
}

/// Checks a platform request's headers, signature and nonce in that order; returns the
/// platform it comes from (the `Signed` extractor does the same steps with the body read and
/// quotas checked in between).
pub fn authenticate(request: &HttpRequest, body: &[u8], platforms: &Platforms, nonces: &NonceCache, now: i64, share: usize) -> Result<Platform, ApiError> {
    let head = check_head(request, platforms, now)?;
    check_signature(request, &head, body, platforms)?;
    check_nonce(&head, nonces, now, share)?;
    Ok(head.platform)
}

/// Whether a request's timestamp is within the signing window of `now`. Checked: a timestamp at
/// the ends of i64 is out of the window, never an overflow (which panicked the handler).
fn within_window(now: i64, seconds: i64) -> bool {
    now.checked_sub(seconds).and_then(i64::checked_abs).is_some_and(|off| off <= TIMESTAMP_WINDOW_SECONDS)
}

/// Compares two byte strings without an early exit (tokens; signatures use `hmac_verify_hex`).
pub fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() != b.len()) as u8;
    for (index, byte) in a.iter().enumerate() {
        difference |= byte ^ b.get(index).copied().unwrap_or(0);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache after platform 1's burst of 200,000 nonces at `now`, and its map's room.
    fn after_a_burst(now: i64) -> (NonceCache, impl Fn(&NonceCache) -> usize) {
        let nonces = NonceCache::default();
        for n in 0..200_000u128 {
            assert!(nonces.remember(1, n, now, now, usize::MAX).unwrap());
        }
        let room = |nonces: &NonceCache| nonces.platform(1).lock().unwrap().by_hash.capacity();
        assert!(room(&nonces) >= 200_000);
        (nonces, room)
    }

    /// A burst's room is given back once its nonces leave the window.
    #[test]
    fn a_platforms_nonce_map_shrinks_after_a_burst() {
        let now = 1_700_000_000;
        let (nonces, room) = after_a_burst(now);
        // Past the window: the next request expires the burst and the map shrinks.
        let later = now + TIMESTAMP_WINDOW_SECONDS + 1;
        assert!(nonces.remember(1, u128::MAX, later, later, usize::MAX).unwrap());
        assert_eq!(nonces.held(1), 1);
        assert!(room(&nonces) <= 4 * NONCES_KEPT_ROOM, "{} slots kept for 1 nonce", room(&nonces));
        // Still a replay within the window.
        assert!(!nonces.remember(1, u128::MAX, later, later, usize::MAX).unwrap());
    }

    /// Regression (helper 107): a platform that stops sending after a burst gave nothing back
    /// (its map was expired only by its own requests). Another platform's request once the
    /// burst has left the window empties it and gives its room back.
    #[test]
    fn a_quiet_platforms_burst_is_forgotten_by_others_requests() {
        let now = 1_700_000_000;
        let (nonces, room) = after_a_burst(now);
        let later = now + TIMESTAMP_WINDOW_SECONDS + 1 + SWEEP_MARGIN;
        assert!(nonces.remember(2, 7, later, later, usize::MAX).unwrap());
        assert_eq!(nonces.held(1), 0, "platform 1 sent nothing since");
        assert!(room(&nonces) <= 4 * NONCES_KEPT_ROOM, "{} slots kept for no nonce", room(&nonces));
    }

    /// Regression (helper 112): the sweep, run by another platform's request that read the
    /// clock a second later, forgot a second still inside the window of a request about to
    /// remember its nonce, so a replay of it was taken.
    #[test]
    fn the_sweep_leaves_the_seconds_a_request_may_still_hold() {
        let nonces = NonceCache::default();
        assert!(nonces.remember(1, 42, 1_000, 1_300, usize::MAX).unwrap());
        assert!(nonces.remember(2, 7, 1_301, 1_301, usize::MAX).unwrap(), "another platform's request sweeps");
        assert!(!nonces.remember(1, 42, 1_000, 1_300, usize::MAX).unwrap(), "still a replay at 1300");
    }

    #[test]
    fn timestamp_window_table() {
        let now = 1_700_000_000;
        let cases = [(now, true), (now - 300, true), (now + 300, true), (now - 301, false), (now + 301, false), (i64::MIN, false), (i64::MAX, false)];
        for (seconds, inside) in cases {
            assert_eq!(within_window(now, seconds), inside, "{seconds}");
        }
        assert!(!within_window(i64::MIN, i64::MAX) && !within_window(i64::MAX, i64::MIN), "no overflow either way");
    }

    #[test]
    fn nonces_are_refused_within_the_window_forgotten_after_it_and_bounded_per_platform() {
        let cache = NonceCache::new();
        let hash = |platform, nonce| nonce_hash(platform, nonce);
        let nonce = "abcdefghijklmnop";
        assert_eq!(cache.remember(1, hash(1, nonce), 1_000, 1_000, 3), Ok(true));
        assert_eq!(cache.remember(1, hash(1, nonce), 1_000, 1_200, 3), Ok(false), "a replay");
        assert_eq!(cache.remember(1, hash(1, nonce), 1_250, 1_250, 3), Ok(false), "the same nonce re-signed within the window");
        assert_eq!(cache.remember(2, hash(2, nonce), 1_250, 1_250, 3), Ok(true), "nonces are per platform");
        assert_eq!(cache.remember(1, hash(1, nonce), 1_301, 1_301, 3), Ok(true), "forgotten once the first use left the window");
        assert_eq!(cache.remember(1, hash(1, "bcdefghijklmnopq"), 1_301, 1_301, 3), Ok(true));
        assert_eq!(cache.remember(1, hash(1, "cdefghijklmnopqr"), 1_301, 1_301, 3), Ok(true));
        let full = cache.remember(1, hash(1, "defghijklmnopqrs"), 1_301, 1_301, 3).unwrap_err();
        assert_eq!((full.status, full.code, full.retry_after_seconds), (429, "rate_limited", Some(301)), "bounded by the platform's share");
        assert_eq!(cache.remember(2, hash(2, "defghijklmnopqrs"), 1_301, 1_301, 3), Ok(true), "another platform's share is its own");
        assert_eq!((cache.held(1), cache.held(2)), (3, 2));
    }

    #[test]
    fn a_platform_filling_its_share_with_future_timestamps_leaves_others_alone() {
        let cache = NonceCache::new();
        let now = 10_000;
        for index in 0..100 {
            assert_eq!(cache.remember(7, nonce_hash(7, &format!("future{index:012}")), now + 300, now, 100), Ok(true));
        }
        assert_eq!(cache.remember(7, nonce_hash(7, "futurexxxxxxxxxxxx"), now + 300, now, 100).unwrap_err().code, "rate_limited");
        assert_eq!(cache.remember(8, nonce_hash(8, "honestxxxxxxxxxxxx"), now, now, 100), Ok(true));
    }

    #[test]
    fn restored_nonces_are_refused_and_old_ones_are_not_restored() {
        let cache = NonceCache::new();
        cache.restore(1, nonce_hash(1, "abcdefghijklmnop"), 1_000, 1_100);
        cache.restore(1, nonce_hash(1, "bcdefghijklmnopq"), 700, 1_100);
        assert_eq!(cache.remember(1, nonce_hash(1, "abcdefghijklmnop"), 1_000, 1_100, 10), Ok(false));
        assert_eq!(cache.held(1), 1, "a nonce outside the window is not restored");
    }
}
