//! Platform request signing (API.md): HMAC-SHA256 over METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE
//! and the body's SHA-256, within a time window, each nonce once.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::platforms::{Platform, Platforms};
use crate::secrets::hmac_hex;

/// How far a request's timestamp may be from the server's clock, in seconds.
pub const TIMESTAMP_WINDOW_SECONDS: i64 = 300;

/// Nonces seen within the window, per platform; bounded.
pub struct NonceCache {
    seen: Mutex<HashMap<(u32, String), i64>>,
    entries_max: usize,
}

impl NonceCache {
    /// A cache holding at most `entries_max` nonces.
    pub fn new(entries_max: usize) -> NonceCache {
        NonceCache { seen: Mutex::new(HashMap::new()), entries_max }
    }

    /// Records a nonce; false if it was already seen within the window.
    fn remember(&self, platform: u32, nonce: &str, now: i64) -> Result<bool, ApiError> {
        let mut seen = self.seen.lock().expect("nonce lock");
        if seen.len() >= self.entries_max {
            seen.retain(|_, at| now - *at <= 2 * TIMESTAMP_WINDOW_SECONDS);
            if seen.len() >= self.entries_max {
                return Err(ApiError::unavailable("too many requests within the signing window".into()));
            }
        }
        Ok(seen.insert((platform, nonce.to_string()), now).is_none())
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthenticated(&format!("missing header {name}")))
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
    let platform = Platform::parse_public_id(platform_id)
        .and_then(|id| platforms.get(id))
        .ok_or_else(|| ApiError::unauthenticated("unknown platform"))?;
    let nonce_valid = (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric());
    if !nonce_valid {
        return Err(ApiError::unauthenticated("X-Nonce must be 16 to 64 characters [A-Za-z0-9]"));
    }
    let seconds: i64 = timestamp.parse().map_err(|_| ApiError::unauthenticated("X-Timestamp must be unix seconds"))?;
    if (now - seconds).abs() > TIMESTAMP_WINDOW_SECONDS {
        return Err(ApiError::new(401, "timestamp_out_of_window", "X-Timestamp is more than 300 s from the server's clock"));
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let expected = hmac_hex(platforms.secret(&platform).as_bytes(), canonical(request.method().as_str(), path_and_query, timestamp, nonce, body).as_bytes());
    if !constant_time_equal(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
        return Err(ApiError::unauthenticated("bad signature"));
    }
    if !nonces.remember(platform.id, nonce, now)? {
        return Err(ApiError::new(401, "replayed_request", "this nonce was already used"));
    }
    Ok(platform)
}

/// Compares two byte strings without an early exit.
pub fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    let mut difference = (a.len() != b.len()) as u8;
    for (index, byte) in a.iter().enumerate() {
        difference |= byte ^ b.get(index).copied().unwrap_or(0);
    }
    difference == 0
}
