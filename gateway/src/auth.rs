//! Platform request signing (API.md): HMAC-SHA256 over METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE
//! and the body's SHA-256, within a time window, each nonce once.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::platforms::{Platform, Platforms};

/// How far a request's timestamp may be from the server's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECONDS: i64 = 300;

/// Nonces seen within the window, per platform; bounded.
///
/// A nonce is refused while the request that first used it has its timestamp inside the
/// window (a replay of that request carries the same timestamp, and requests outside the
/// window are refused before the nonce is looked at). Nonces are kept as 128-bit hashes of
/// (platform, nonce) with that timestamp, and listed per timestamp second so that whole
/// seconds are forgotten at once as they leave the window: no allocation per request and no
/// scan of the whole cache.
pub struct NonceCache {
    seen: Mutex<Seen>,
    entries_max: usize,
}

#[derive(Default)]
struct Seen {
    by_hash: HashMap<u128, i64, rustc_hash::FxBuildHasher>,
    by_second: std::collections::BTreeMap<i64, Vec<u128>>,
}

impl NonceCache {
    /// A cache holding at most `entries_max` nonces.
    pub fn new(entries_max: usize) -> NonceCache {
        NonceCache { seen: Mutex::new(Seen::default()), entries_max }
    }

    /// Records the nonce of a request signed at `timestamp` (already checked to be within the
    /// window of `now`); false if it was seen before.
    fn remember(&self, platform: u32, nonce: &str, timestamp: i64, now: i64) -> Result<bool, ApiError> {
        let mut key = [0u8; 4 + 64];
        key[..4].copy_from_slice(&platform.to_le_bytes());
        let length = nonce.len().min(64);
        key[4..4 + length].copy_from_slice(&nonce.as_bytes()[..length]);
        let hash = xxhash_rust::xxh3::xxh3_128(&key[..4 + length]);
        let mut seen = self.seen.lock().expect("nonce lock");
        let seen = &mut *seen;
        while let Some(entry) = seen.by_second.first_entry() {
            if *entry.key() >= now - TIMESTAMP_WINDOW_SECONDS {
                break;
            }
            let second = *entry.key();
            for old in entry.remove() {
                if seen.by_hash.get(&old) == Some(&second) {
                    seen.by_hash.remove(&old);
                }
            }
        }
        if seen.by_hash.contains_key(&hash) {
            return Ok(false);
        }
        if seen.by_hash.len() >= self.entries_max {
            return Err(ApiError::unavailable("too many requests within the signing window".into()));
        }
        seen.by_hash.insert(hash, timestamp);
        seen.by_second.entry(timestamp).or_default().push(hash);
        Ok(true)
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| ApiError::unauthenticated(&format!("missing header {name}")))
}

/// The canonical string a platform signs.
pub fn canonical(method: &str, path_and_query: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{}", hex::encode(Sha256::digest(body)))
}

/// Checks a platform request's signature headers; returns the platform it comes from.
pub fn authenticate(request: &HttpRequest, body: &[u8], platforms: &Platforms, nonces: &NonceCache, now: i64) -> Result<Platform, ApiError> {
    let platform_id = header(request, "x-platform-id")?;
    let timestamp = header(request, "x-timestamp")?;
    let nonce = header(request, "x-nonce")?;
    let signature = header(request, "x-signature")?;
    let platform = Platform::parse_public_id(platform_id).and_then(|id| platforms.get(id)).ok_or_else(|| ApiError::unauthenticated("unknown platform"))?;
    let nonce_valid = (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
    if !nonce_valid {
        return Err(ApiError::unauthenticated("X-Nonce must be 16 to 64 characters [A-Za-z0-9]"));
    }
    let seconds: i64 = timestamp.parse().map_err(|_| ApiError::unauthenticated("X-Timestamp must be unix seconds"))?;
    if !within_window(now, seconds) {
        return Err(ApiError::new(401, "timestamp_out_of_window", "X-Timestamp is more than 300 s from the server's clock"));
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let canonical = canonical(request.method().as_str(), path_and_query, timestamp, nonce, body);
    if !platforms.verify_signature(&platform, canonical.as_bytes(), signature, now) {
        return Err(ApiError::unauthenticated("bad signature"));
    }
    if !nonces.remember(platform.id, nonce, seconds, now)? {
        return Err(ApiError::new(401, "replayed_request", "this nonce was already used"));
    }
    Ok(platform)
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
    fn nonces_are_refused_within_the_window_forgotten_after_it_and_bounded() {
        let cache = NonceCache::new(3);
        let nonce = "abcdefghijklmnop";
        assert_eq!(cache.remember(1, nonce, 1_000, 1_000), Ok(true));
        assert_eq!(cache.remember(1, nonce, 1_000, 1_200), Ok(false), "a replay");
        assert_eq!(cache.remember(1, nonce, 1_250, 1_250), Ok(false), "the same nonce re-signed within the window");
        assert_eq!(cache.remember(2, nonce, 1_250, 1_250), Ok(true), "nonces are per platform");
        assert_eq!(cache.remember(1, nonce, 1_301, 1_301), Ok(true), "forgotten once the first use left the window");
        assert_eq!(cache.remember(1, "bcdefghijklmnopq", 1_301, 1_301), Ok(true));
        assert_eq!(cache.remember(1, "cdefghijklmnopqr", 1_301, 1_301).unwrap_err().code, "unavailable", "bounded");
    }
}
