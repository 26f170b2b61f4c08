//! Events to platforms (the gateway issue, item 6): every creation and change of an order is an
//! event. The shards keep them in order (`ShardState::order_changes`, rebuilt from the journal,
//! so the journal is their durable outbox). Platforms list them at `GET /v1/events` and may set
//! a webhook URL (`POST /v1/webhook`); delivery workers post each event there, signed like
//! Stripe-Signature (`X-Clearing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook
//! signing secret, "t.body")>`; the API secret for a platform made before webhook secrets
//! until it rotates one), retried with exponential backoff, and remember per platform and shard
//! how far they have delivered (`d/<platform>/<shard>` in the store): at least once, in order per
//! shard, also across restarts. While a rotation's overlap lasts, the previous secret's signature
//! comes too, in `X-Clearing-Signature-Previous` (same form).
//!
//! Each platform is scheduled on its own (DESIGN.md invariant 12): a small pool of workers
//! (`[webhooks] workers`) takes platforms' lanes in turn, a lane is held by one worker at a time
//! (one request in flight per platform) and keeps its own backoff, and at most half of the
//! workers may hold platforms whose last attempt failed. So a slow, hanging or dead endpoint
//! delays its own platform's events only.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actix_web::{get, post, web, HttpResponse};
use engine::ledger::state::{OrderChange, ShardState};
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage::Store;

use crate::error::{blocking, ApiError};
use crate::orders::{format_time, kind_name, merged_positions, page_limit, public_order_id, Position, ShardPage};
use crate::platforms::Platforms;
use crate::signed::Signed;

/// Events one listing request examines per shard before it answers with a cursor.
const LIST_SCAN_MAX: usize = 100_000;
/// Events one delivery round reads from a shard for one platform.
const DELIVERY_BATCH: usize = 64;
/// Changes one delivery round looks through per shard and platform.
const DELIVERY_SCAN_MAX: usize = 100_000;
/// Fewest delivery workers: one may hang on a failing platform, one is left for the others.
pub const WORKERS_MIN: usize = 2;
/// Most delivery workers (threads; each waits on at most one request).
pub const WORKERS_MAX: usize = 64;
/// Bytes of a webhook's answer read before it is dropped (nobody reads it; an endpoint must not
/// make us read much).
const ANSWER_BYTES_MAX: u64 = 4096;
/// How soon a platform with nothing to deliver is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Longest a waiting worker sleeps before it looks at the schedule again.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(1);

/// How deliveries are made and retried (config `[webhooks]`).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Attempts of one event before it is given up (it stays listed at `GET /v1/events`).
    pub attempts_max: u32,
    /// The first retry waits this long; each next one twice as long, at most `backoff_ms_max`.
    pub backoff_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_ms_max: u64,
    /// Seconds one delivery may take, connecting and reading the answer included.
    pub timeout_seconds: u64,
    /// Delivery workers shared by all platforms (`WORKERS_MIN..=WORKERS_MAX`).
    pub workers: usize,
    /// Plain `http://` to loopback addresses (development); otherwise `https://` only, and
    /// loopback addresses are refused like private ones.
    pub allow_insecure_loopback: bool,
    /// Deliveries per second to one platform (at most one is in flight per platform anyway).
    pub deliveries_per_second_max: u32,
    /// Per platform id: its own deliveries per second.
    pub per_platform: std::collections::BTreeMap<u32, u32>,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            attempts_max: 12,
            backoff_ms: 1_000,
            backoff_ms_max: 600_000,
            timeout_seconds: 10,
            workers: 8,
            allow_insecure_loopback: false,
            deliveries_per_second_max: 200,
            per_platform: std::collections::BTreeMap::new(),
        }
    }
}

impl WebhookConfig {
    /// The least time between two deliveries to `platform`.
    fn interval(&self, platform: u32) -> Duration {
        let rate = self.per_platform.get(&platform).copied().unwrap_or(self.deliveries_per_second_max).max(1);
        Duration::from_secs(1) / rate
    }
}

/// An event's public id: its index in its shard's change log, composed with the shard.
fn public_event_id(shard: u16, shard_count: u16, index: usize) -> String {
    format!("evt_{}", index as u64 * shard_count as u64 + shard as u64)
}

/// The event as platforms see it.
fn event_view(state: &ShardState, index: usize, change: &OrderChange) -> Value {
    let order = state.order(change.order).expect("changes are of local orders");
    let spec = state.currencies[order.currency.0 as usize];
    json!({
        "event_id": public_event_id(state.shard, state.shard_count, index),
        "type": format!("order.{}", change.status.name()),
        "created_at": format_time(change.at),
        "data": {
            "order_id": public_order_id(order.id),
            "out_order_no": order.out_order_no.map(|n| n.as_str().to_string()),
            "kind": kind_name(order.kind),
            "status": change.status.name(),
            "amount": spec.format(order.amount),
            "currency": spec.code_str(),
            "account_id": crate::accounts::public_account_id(order.account),
        },
    })
}

/// One shard's newest `limit` events of `platform` older than `before`, and where the scan
/// stopped if it stopped early.
fn scan_shard(state: &ShardState, platform: u32, before: Position, limit: usize) -> ShardPage {
    let number = |index: usize| index as u64 * state.shard_count as u64 + state.shard as u64;
    let changes = &state.order_changes;
    let (mut low, mut high) = (0usize, changes.len());
    while low < high {
        let middle = (low + high) / 2;
        let change = changes.get(middle).expect("in range");
        if Position(change.at, number(middle)) < before {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let mut found = Vec::new();
    for (scanned, index) in (0..low).rev().enumerate() {
        let change = changes.get(index).expect("in range");
        if scanned == LIST_SCAN_MAX {
            return (found, Some(Position(change.at, number(index) + 1)));
        }
        if change.platform == platform {
            found.push((Position(change.at, number(index)), event_view(state, index, change)));
            if found.len() == limit {
                break;
            }
        }
    }
    (found, None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/events?limit=&cursor=`: the platform's events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/events")]
pub async fn list_events(
    signed: Signed,
    query: web::Query<ListQuery>,
    engine: web::Data<Arc<Engine>>,
    platforms: web::Data<Arc<Platforms>>,
) -> Result<HttpResponse, ApiError> {
    let platform = signed.platform.id;
    let limit = page_limit(query.limit.as_deref())?;
    let key = platforms.derived_key(EVENTS_CURSOR_KEY);
    let before = match query.cursor.as_deref() {
        None => Position::NEWEST,
        Some(text) => open_cursor(&key, platform, text).ok_or_else(|| ApiError::invalid("not a cursor this API returned", "cursor"))?,
    };
    let (events, next) = merged_positions(&engine, limit, move |state, wanted| scan_shard(state, platform, before, wanted)).await?;
    let next_cursor = next.map(|position| seal_cursor(&key, platform, position));
    Ok(HttpResponse::Ok().json(json!({"events": events, "next_cursor": next_cursor})))
}

/// What the events' cursors are sealed under (a key derived from the master key).
const EVENTS_CURSOR_KEY: &str = "events-cursor";

/// An events cursor: the listing's position sealed for `platform` (ChaCha20-Poly1305, a random
/// nonce, the platform as associated data), in hex. A page that stops early (after 100,000
/// changes of every platform) ends at another platform's change: its time and number are
/// nobody else's business, and a cursor another platform chose or was handed cannot be opened
/// (helper 102: the plain `time-number` cursors showed them and took any position).
fn seal_cursor(key: &[u8; 32], platform: u32, position: Position) -> String {
    use rand::RngCore as _;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let sealing = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"));
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut data = Vec::with_capacity(12 + 16 + 16);
    data.extend_from_slice(&nonce);
    let mut sealed = [position.0.to_le_bytes(), position.1.to_le_bytes()].concat();
    sealing.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(platform.to_le_bytes()), &mut sealed).expect("sealed");
    data.extend_from_slice(&sealed);
    hex::encode(data)
}

/// The position a cursor of `seal_cursor` holds, if it was sealed for `platform` under `key`.
fn open_cursor(key: &[u8; 32], platform: u32, text: &str) -> Option<Position> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let opening = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).ok()?);
    if text.len() != 2 * (12 + 16 + 16) {
        return None;
    }
    let mut data = hex::decode(text).ok()?;
    let (nonce, sealed) = data.split_at_mut(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let plain = opening.open_in_place(nonce, Aad::from(platform.to_le_bytes()), sealed).ok()?;
    let (at, number) = plain.split_at(8);
    Some(Position(u64::from_le_bytes(at.try_into().ok()?), u64::from_le_bytes(number.try_into().ok()?)))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    url: Option<String>,
}

/// `POST /v1/webhook/rotate-secret` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateWebhookSecret {
    /// Seconds the webhook secret in use keeps signing deliveries beside the new one (0: it
    /// stops now; default `[secrets] rotation_overlap_seconds`; at most a week).
    #[serde(default)]
    overlap_seconds: Option<u64>,
    /// The `signing_secret_version` the caller knows: a repeat whose answer was lost then
    /// answers without rotating again; another version is 409 `idempotency_conflict`.
    #[serde(default)]
    from_version: Option<u32>,
}

/// The longest webhook URL, in bytes.
const URL_BYTES_MAX: usize = 2048;

/// Why a webhook URL is refused, or `Ok` for one the workers may post to: `https://` (plain
/// `http://` only to loopback under `allow_insecure_loopback`), no user or password, and no host
/// that is a refused address itself (names are resolved and checked at each delivery).
pub fn check_url(text: &str, allow_insecure_loopback: bool) -> Result<url::Url, &'static str> {
    if text.len() > URL_BYTES_MAX {
        return Err("url must be at most 2048 bytes");
    }
    // The URL exactly as written: no blanks around it (the parser would drop them silently).
    if text.trim() != text {
        return Err("url must not begin or end with blanks");
    }
    let url = url::Url::parse(text).map_err(|_| "url must be an absolute https:// URL")?;
    // A host name is letters, digits, hyphens and dots (the parser takes more, e.g. `*`).
    if let Some(url::Host::Domain(name)) = url.host() {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err("url must name a host of letters, digits, hyphens and dots");
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry a user name or password");
    }
    let loopback = match url.host() {
        None => return Err("url must name a host"),
        Some(url::Host::Domain(name)) => is_localhost(name),
        Some(url::Host::Ipv4(ip)) => {
            let ip = std::net::IpAddr::V4(ip);
            if refused_address(ip, allow_insecure_loopback) {
                return Err("url names a private, loopback, link-local or reserved address");
            }
            ip.is_loopback()
        }
        Some(url::Host::Ipv6(ip)) => {
            let ip = std::net::IpAddr::V6(ip);
            if refused_address(ip, allow_insecure_loopback) {
                return Err("url names a private, loopback, link-local or reserved address");
            }
            ip.is_loopback()
        }
    };
    if loopback && !allow_insecure_loopback {
        return Err("url names a loopback host");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback && allow_insecure_loopback => Ok(url),
        "http" => Err("url must be https:// (plain http:// only to loopback, under [webhooks] allow_insecure_loopback)"),
        _ => Err("url must be an absolute https:// URL"),
    }
}

/// `localhost` and its subdomains (RFC 6761: they resolve to loopback).
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether deliveries may not go to `ip`: unspecified, private (RFC 1918, CGNAT 100.64/10, ULA
/// fc00::/7), loopback (unless `allow_loopback`), link-local (169.254/16 with the cloud metadata
/// address, fe80::/10), multicast, broadcast, documentation, benchmarking and reserved ranges,
/// and IPv6 forms that embed such an IPv4 address (mapped, compatible, NAT64, 6to4).
pub fn refused_address(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    let refused_v4 = |ip: Ipv4Addr| {
        let [a, b, c, _] = ip.octets();
        if ip.is_loopback() {
            return !allow_loopback;
        }
        a == 0 // "this network", 0.0.0.0 included
            || a == 10
            || (a == 100 && (64..128).contains(&b)) // CGNAT
            || (a == 169 && b == 254) // link-local, 169.254.169.254 included
            || (a == 172 && (16..32).contains(&b))
            || (a == 192 && b == 168)
            || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
            || (a == 192 && b == 0 && c == 2) // TEST-NET-1
            || (a == 198 && (18..20).contains(&b)) // benchmarking
            || (a == 198 && b == 51 && c == 100) // TEST-NET-2
            || (a == 203 && b == 0 && c == 113) // TEST-NET-3
            || a >= 224 // multicast 224/4, reserved 240/4, broadcast
    };
    match ip {
        IpAddr::V4(ip) => refused_v4(ip),
        IpAddr::V6(ip) => {
            if ip.is_loopback() {
                return !allow_loopback;
            }
            let segments = ip.segments();
            let embedded = Ipv4Addr::new((segments[6] >> 8) as u8, segments[6] as u8, (segments[7] >> 8) as u8, segments[7] as u8);
            if let Some(v4) = ip.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            ip.is_unspecified()
                || segments[..6] == [0; 6] // IPv4-compatible (deprecated)
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (segments[0] & 0xff00) == 0xff00 // multicast
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
                || (segments[0] == 0x2001 && segments[1] == 0) // Teredo
                || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && refused_v4(embedded)) // NAT64
                || (segments[0] == 0x2002 && refused_v4(Ipv4Addr::new((segments[1] >> 8) as u8, segments[1] as u8, (segments[2] >> 8) as u8, segments[2] as u8)))
            // 6to4
        }
    }
}

/// Resolves a webhook's host at each delivery and hands ureq only the addresses it may connect
/// to, so the address checked is the address connected to (a DNS answer that changes between a
/// check and the connection cannot slip a private address in).
struct CheckedResolver {
    allow_loopback: bool,
}

impl ureq::Resolver for CheckedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        use std::net::ToSocketAddrs;
        let all: Vec<std::net::SocketAddr> = netloc.to_socket_addrs()?.collect();
        let allowed: Vec<std::net::SocketAddr> = all.iter().copied().filter(|a| !refused_address(a.ip(), self.allow_loopback)).collect();
        if allowed.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{netloc} resolves only to refused (private, loopback, link-local or reserved) addresses"),
            ));
        }
        Ok(allowed)
    }
}

/// `POST /v1/webhook {url}` (an addition to API.md): sets or (with null) removes the webhook.
#[utoipa::path(post, path = "/v1/webhook", tag = "events", request_body = crate::events::WebhookBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/webhook")]
pub async fn set_webhook(signed: Signed, platforms: web::Data<Arc<Platforms>>, delivery: web::Data<Delivery>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<WebhookBody>()?;
    let platform = set_webhook_url(&platforms, &delivery, signed.platform.id, body.url).await?;
    Ok(secret_answer(webhook_view(&platforms, &platform)))
}

/// A 200 carrying a secret: never stored by a cache on the way.
fn secret_answer(body: Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(body)
}

/// What `/v1/webhook` answers: the URL, the signature header, and the secret that signs the
/// deliveries (`signing_secret`, null while the platform's API secret signs them: a platform
/// made before session 67 that has not rotated its webhook secret), with the one before it
/// while its overlap lasts. Shown to the platform's signed requests only (whoever holds the
/// API secret may read the webhook secret; not the other way round).
pub fn webhook_view(platforms: &Platforms, platform: &crate::platforms::Platform) -> Value {
    let now = crate::signed::unix_seconds();
    let previous = platform.previous_webhook_secret.filter(|previous| now < previous.valid_until);
    json!({
        "url": platform.webhook_url,
        "signature_header": "X-Clearing-Signature",
        "signed_with": if platform.webhook_secret_version == 0 { "api_secret" } else { "webhook_secret" },
        "signing_secret": platforms.webhook_signing_secret(platform),
        "signing_secret_version": platform.webhook_secret_version,
        "previous_signing_secret_version": previous.map(|p| p.version),
        "previous_signs_until": previous.map(|p| crate::agreements::rfc3339(p.valid_until)),
    })
}

/// `POST /v1/webhook/rotate-secret {overlap_seconds?, from_version?}` (an addition to API.md):
/// issues the platform's next webhook signing secret. Deliveries are signed with the new one in
/// `X-Clearing-Signature` and, for the overlap (default `[secrets] rotation_overlap_seconds`,
/// at most a week; 0 ends it now), with the one it replaced in `X-Clearing-Signature-Previous`.
/// A platform whose deliveries its API secret signed moves off it this way. With
/// `from_version`, a repeat whose answer was lost does not rotate twice.
#[utoipa::path(post, path = "/v1/webhook/rotate-secret", tag = "events", request_body = crate::events::RotateWebhookSecret, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/webhook/rotate-secret")]
pub async fn rotate_webhook_secret(signed: Signed, platforms: web::Data<Arc<Platforms>>) -> Result<HttpResponse, ApiError> {
    let body = if signed.body.iter().all(u8::is_ascii_whitespace) { RotateWebhookSecret::default() } else { signed.json::<RotateWebhookSecret>()? };
    let (id, now) = (signed.platform.id, crate::signed::unix_seconds());
    let shared = platforms.get_ref().clone();
    // The store write syncs to disk: off the async workers.
    let (platform, rotated) = blocking(move || shared.rotate_webhook_secret(id, body.overlap_seconds, body.from_version, now)).await??;
    let mut view = webhook_view(&platforms, &platform);
    // False: the secret was at `from_version + 1` already (this request's repeat, or another
    // rotation from the same version), and nothing changed.
    view["rotated"] = json!(rotated);
    Ok(secret_answer(view))
}

/// Checks and sets (or with `None` removes) platform `id`'s webhook URL and schedules its
/// deliveries: the API and the portal share it.
pub async fn set_webhook_url(platforms: &Arc<Platforms>, delivery: &Delivery, id: u32, url: Option<String>) -> Result<crate::platforms::Platform, ApiError> {
    if let Some(url) = url.as_deref() {
        check_url(url, delivery.allow_insecure_loopback).map_err(|why| ApiError::invalid(why, "url"))?;
    }
    let platforms = platforms.clone();
    let platform = blocking(move || platforms.set_webhook(id, url)).await??;
    delivery.wake(id);
    Ok(platform)
}

/// `GET /v1/webhook`: the platform's webhook URL.
#[utoipa::path(get, path = "/v1/webhook", tag = "events", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/webhook")]
pub async fn show_webhook(signed: Signed, platforms: web::Data<Arc<Platforms>>) -> HttpResponse {
    secret_answer(webhook_view(&platforms, &signed.platform))
}

/// Registers the event routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list_events).service(set_webhook).service(show_webhook).service(rotate_webhook_secret);
}

/// Where deliveries to one platform stand on one shard.
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
struct Cursor {
    /// Index in the shard's change log from which nothing of this platform is delivered yet.
    next: usize,
    #[serde(skip)]
    attempts: u32,
    #[serde(skip)]
    retry_at: Option<Instant>,
    /// The shard's last batch sequence before a read that found nothing more for this platform:
    /// while the shard has written no batch since, reading it again would find nothing either,
    /// so idle platforms cost the shard threads nothing.
    #[serde(skip)]
    quiet_at: Option<u64>,
}

fn cursor_key(platform: u32, shard: u16) -> Vec<u8> {
    format!("d/{platform}/{shard}").into_bytes()
}

/// One platform's deliveries: a cursor per shard. A worker holds the lane for a turn, so a
/// platform never has more than one request in flight, and its backoff is its own.
struct Lane {
    platform: u32,
    cursors: Vec<Cursor>,
    /// Its last attempt failed (the endpoint is down, slow or refusing).
    failing: bool,
    /// No delivery starts before this (the platform's deliveries per second).
    next_send: Option<Instant>,
    /// The shard its next turn starts with: after a turn that stopped early (a slow or failed
    /// delivery), the one after where it stopped, so one shard's backlog at a slow endpoint
    /// does not hold back the platform's other shards (helper 106).
    first_shard: usize,
}

impl Lane {
    /// Forgets the waits before retries (the platform set its webhook again: try it now).
    fn clear_backoff(&mut self) {
        for cursor in &mut self.cursors {
            cursor.retry_at = None;
        }
    }
}

/// Where a platform's lane is.
enum Slot {
    /// Waiting for `due_at`; `(due_at, platform)` is its key in `Schedule::healthy` or `failing`.
    Queued { lane: Lane, due_at: Instant },
    /// The platform has no webhook: not scheduled until one is set.
    Parked(Lane),
    /// A worker holds it. `failing` as it was taken; `woken`: the webhook was set meanwhile.
    InFlight { failing: bool, woken: bool },
}

/// The lanes and when each is due. Workers take the lane due first; a lane that delivered goes
/// back due now, behind those already due, so platforms take turns.
#[derive(Default)]
struct Schedule {
    slots: HashMap<u32, Slot>,
    healthy: BTreeSet<(Instant, u32)>,
    failing: BTreeSet<(Instant, u32)>,
    /// Workers holding a failing lane: at most `Shared::failing_max`, so that however many
    /// platforms' endpoints hang, the other workers are left to the platforms that answer.
    failing_in_flight: usize,
    /// Cursors loaded at start, of platforms that have no lane yet.
    saved: HashMap<u32, Vec<Cursor>>,
    stopped: bool,
}

impl Schedule {
    fn queue(&mut self, lane: Lane, due_at: Instant) {
        let key = (due_at, lane.platform);
        if lane.failing {
            self.failing.insert(key);
        } else {
            self.healthy.insert(key);
        }
        self.slots.insert(lane.platform, Slot::Queued { lane, due_at });
    }

    fn unqueue(&mut self, key: (Instant, u32)) {
        if !self.healthy.remove(&key) {
            self.failing.remove(&key);
        }
    }

    /// Takes the lane due first (a failing one only while fewer than `failing_max` are held), or
    /// says when the next one is due (`None`: none can be taken).
    fn take(&mut self, now: Instant, failing_max: usize) -> Result<Lane, Option<Instant>> {
        let failing = if self.failing_in_flight < failing_max { self.failing.first() } else { None };
        let Some(&(due_at, platform)) = [self.healthy.first(), failing].into_iter().flatten().min() else {
            return Err(None);
        };
        if due_at > now {
            return Err(Some(due_at));
        }
        self.unqueue((due_at, platform));
        let Some(Slot::Queued { lane, .. }) = self.slots.remove(&platform) else {
            panic!("a queued key names a queued lane");
        };
        self.failing_in_flight += usize::from(lane.failing);
        self.slots.insert(platform, Slot::InFlight { failing: lane.failing, woken: false });
        Ok(lane)
    }

    /// A worker gives a lane back, due again at `due_at` (`None`: parked, no webhook).
    fn put_back(&mut self, mut lane: Lane, due_at: Option<Instant>, now: Instant) {
        let Some(Slot::InFlight { failing, woken }) = self.slots.remove(&lane.platform) else {
            panic!("only a lane a worker holds comes back");
        };
        self.failing_in_flight -= usize::from(failing);
        match (woken, due_at) {
            (true, _) => {
                lane.clear_backoff();
                self.queue(lane, now);
            }
            (false, Some(due_at)) => self.queue(lane, due_at),
            (false, None) => {
                self.slots.insert(lane.platform, Slot::Parked(lane));
            }
        }
    }

    /// The platform's webhook was set (or removed): its lane is due now, without its backoff.
    fn wake(&mut self, platform: u32, shard_count: u16, now: Instant) {
        let mut lane = match self.slots.remove(&platform) {
            None => {
                let cursors = self.saved.remove(&platform).unwrap_or_else(|| vec![Cursor::default(); shard_count as usize]);
                Lane { platform, cursors, failing: false, next_send: None, first_shard: 0 }
            }
            Some(Slot::Parked(lane)) => lane,
            Some(Slot::Queued { lane, due_at }) => {
                self.unqueue((due_at, platform));
                lane
            }
            Some(Slot::InFlight { failing, .. }) => {
                self.slots.insert(platform, Slot::InFlight { failing, woken: true });
                return;
            }
        };
        lane.clear_backoff();
        self.queue(lane, now);
    }
}

/// The schedule and the workers' signal, shared by the workers and `Delivery`.
struct Shared {
    schedule: Mutex<Schedule>,
    changed: Condvar,
    /// Workers that may hold failing lanes at once: half of them.
    failing_max: usize,
    shard_count: u16,
}

impl Shared {
    /// The next lane due, waiting for it; `None` once delivery has stopped.
    fn next(&self) -> Option<Lane> {
        let mut schedule = self.schedule.lock().expect("webhook schedule lock");
        loop {
            if schedule.stopped {
                return None;
            }
            let now = Instant::now();
            let wait = match schedule.take(now, self.failing_max) {
                Ok(lane) => return Some(lane),
                Err(due_at) => due_at.map_or(IDLE_WAIT_MAX, |at| at.saturating_duration_since(now).min(IDLE_WAIT_MAX)),
            };
            schedule = self.changed.wait_timeout(schedule, wait).expect("webhook schedule lock").0;
        }
    }

    fn put_back(&self, lane: Lane, due_at: Option<Instant>) {
        self.schedule.lock().expect("webhook schedule lock").put_back(lane, due_at, Instant::now());
        self.changed.notify_one();
    }

    fn stop(&self) {
        self.schedule.lock().expect("webhook schedule lock").stopped = true;
        self.changed.notify_all();
    }
}

/// The webhook delivery workers; `wake` schedules a platform whose webhook was set.
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Shared>,
    /// `[webhooks] allow_insecure_loopback`, for checking URLs as they are set.
    allow_insecure_loopback: bool,
    recent: Arc<Recent>,
}

/// How many delivery attempts are kept per platform (in memory, for the platform portal).
pub const RECENT_ATTEMPTS_MAX: usize = 20;

/// One delivery attempt as the platform portal shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Unix seconds.
    pub at: i64,
    pub event_id: String,
    pub url: String,
    /// `answered 200`, `answered 500`, or why nothing was answered.
    pub outcome: String,
    pub delivered: bool,
    pub elapsed_ms: u64,
}

/// The last `RECENT_ATTEMPTS_MAX` attempts of each platform, newest last; lost at a restart.
#[derive(Default)]
struct Recent(Mutex<HashMap<u32, VecDeque<Attempt>>>);

impl Recent {
    fn push(&self, platform: u32, attempt: Attempt) {
        let mut all = self.0.lock().expect("recent deliveries lock");
        let kept = all.entry(platform).or_default();
        if kept.len() == RECENT_ATTEMPTS_MAX {
            kept.pop_front();
        }
        kept.push_back(attempt);
    }
}

impl Delivery {
    /// The platform's last delivery attempts, newest first.
    pub fn recent(&self, platform: u32) -> Vec<Attempt> {
        self.recent.0.lock().expect("recent deliveries lock").get(&platform).map(|kept| kept.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Schedules the platform's deliveries now (its webhook was set, changed or removed).
    pub fn wake(&self, platform: u32) {
        self.shared.schedule.lock().expect("webhook schedule lock").wake(platform, self.shared.shard_count, Instant::now());
        self.shared.changed.notify_one();
    }
}

/// What every worker delivers with.
struct Context {
    engine: Arc<Engine>,
    platforms: Arc<Platforms>,
    store: Arc<dyn Store>,
    agent: ureq::Agent,
    config: WebhookConfig,
    recent: Arc<Recent>,
}

/// Starts the delivery workers and schedules every platform that has a webhook. They stop when
/// the engine stops; a delivery cut short is not recorded, so it is made again after a restart.
pub fn start_delivery(engine: Arc<Engine>, platforms: Arc<Platforms>, store: Arc<dyn Store>, config: WebhookConfig) -> Result<Delivery, String> {
    let shard_count = engine.config().shard_count;
    let mut saved: HashMap<u32, Vec<Cursor>> = HashMap::new();
    for (rest, cursor) in crate::records::load_all::<Cursor>(store.as_ref(), b"d/")? {
        let rest = String::from_utf8_lossy(&rest).into_owned();
        let parsed: Option<(u32, u16)> = rest.split_once('/').and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)));
        let (platform, shard) = parsed.ok_or("corrupt delivery cursor")?;
        let cursors = saved.entry(platform).or_insert_with(|| vec![Cursor::default(); shard_count as usize]);
        // The shard count is fixed once data exists: a cursor of another shard is corrupt.
        *cursors.get_mut(shard as usize).ok_or("delivery cursor of a shard that does not exist")? = cursor;
    }
    // The configuration checks the range; a struct built elsewhere still gets a sane pool.
    let workers = config.workers.clamp(WORKERS_MIN, WORKERS_MAX);
    let schedule = Schedule { saved, ..Schedule::default() };
    let shared = Arc::new(Shared { schedule: Mutex::new(schedule), changed: Condvar::new(), failing_max: workers / 2, shard_count });
    let recent = Arc::new(Recent::default());
    let delivery = Delivery { shared, allow_insecure_loopback: config.allow_insecure_loopback, recent: recent.clone() };
    for platform in platforms.all() {
        if platform.webhook_url.is_some() {
            delivery.wake(platform.id);
        }
    }
    let timeout = Duration::from_secs(config.timeout_seconds);
    // The overall timeout bounds connect, write and read together (a slow trickle included).
    // No redirects: ureq would follow a 301/302 with a GET without the body and count that as
    // delivered; a redirect is an endpoint's failure to answer.
    // https with rustls and the webpki roots; every host resolved and checked per connection.
    let resolver = CheckedResolver { allow_loopback: config.allow_insecure_loopback };
    let agent = ureq::AgentBuilder::new().timeout_connect(timeout).timeout(timeout).redirects(0).resolver(resolver).build();
    let context = Arc::new(Context { engine, platforms, store, agent, config, recent });
    for index in 0..workers {
        let (shared, context) = (delivery.shared.clone(), context.clone());
        let spawned = std::thread::Builder::new().name(format!("webhooks-{index}")).spawn(move || work(&shared, &context));
        if let Err(error) = spawned {
            delivery.shared.stop();
            return Err(format!("starting webhook delivery: {error}"));
        }
    }
    Ok(delivery)
}

/// A worker: takes the lane due first, gives it one turn, puts it back, until the engine stops.
fn work(shared: &Shared, context: &Context) {
    while let Some(mut lane) = shared.next() {
        match deliver_turn(context, &mut lane) {
            Ok(due_at) => shared.put_back(lane, due_at),
            Err(stopped) => {
                tracing::warn!("webhooks: {stopped}");
                shared.stop();
            }
        }
    }
}

/// One turn of a platform: the next events of each of its shards, until an attempt fails (so a
/// hanging endpoint holds its worker for about one timeout per turn). Returns when the lane is
/// due again (`None`: the platform has no webhook). An error means the engine has stopped.
fn deliver_turn(context: &Context, lane: &mut Lane) -> Result<Option<Instant>, engine::EngineError> {
    let counters = context.engine.counters();
    let now = Instant::now();
    // Per shard, its last batch sequence if it is worth reading: not waiting for a retry, and
    // written since a read found nothing. The sequence is taken before the shard is read, so a
    // batch written in between makes a later turn read again.
    let readable: Vec<Option<u64>> = lane
        .cursors
        .iter()
        .enumerate()
        .map(|(shard, cursor)| {
            let written = counters.get(shard).map_or(0, |c| c.last_sequence.load(Ordering::Relaxed));
            let waiting = cursor.retry_at.is_some_and(|at| now < at);
            (!waiting && cursor.quiet_at != Some(written)).then_some(written)
        })
        .collect();
    if readable.iter().all(Option::is_none) {
        // Nothing new: an idle platform costs neither a read of a shard nor its secret.
        return Ok(Some(next_due(lane, now)));
    }
    let Some(platform) = context.platforms.get(lane.platform) else { return Ok(None) };
    let Some(url) = platform.webhook_url.as_deref() else { return Ok(None) };
    let secrets = context.platforms.webhook_secrets(&platform, crate::signed::unix_seconds());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut delivered = false;
    let mut pace = Pace { interval: context.config.interval(lane.platform), next_send: lane.next_send, paused_until: None };
    let count = lane.cursors.len();
    let first = lane.first_shard % count.max(1);
    for shard in (first..count).chain(0..first) {
        let Some(written) = readable[shard] else { continue };
        let round = deliver_some(context, url, &secrets, lane.platform, shard as u16, &mut lane.cursors[shard], written, &mut pace)?;
        delivered |= round.delivered;
        if pace.paused_until.is_some() {
            break;
        }
        if round.failed || round.slow {
            lane.first_shard = (shard + 1) % count;
        }
        // A slow endpoint (it answered, after `SLOW_DELIVERY` or more) ends the turn and counts
        // as failing, so that slow lanes take at most their share of the workers as failing ones
        // do (before session 63 a lane answering 200 after 9 s kept its worker for every event
        // of the turn, and eight of them every worker; helper 105).
        if round.failed || round.slow {
            lane.failing = true;
            break;
        }
        if round.delivered {
            lane.failing = false;
        }
    }
    lane.next_send = pace.next_send;
    let now = Instant::now();
    Ok(Some(match pace.paused_until {
        // Its rate is used up: due again when the next delivery may start.
        Some(at) => at,
        None if delivered => now,
        None => next_due(lane, now),
    }))
}

/// A platform's deliveries per second within a turn: the next delivery starts no sooner than
/// `interval` after the previous one started.
struct Pace {
    interval: Duration,
    next_send: Option<Instant>,
    /// The turn stopped here because the rate was used up.
    paused_until: Option<Instant>,
}

/// When a lane that delivered nothing is due again: at its first retry, or to look for news.
fn next_due(lane: &Lane, now: Instant) -> Instant {
    lane.cursors.iter().map(|cursor| cursor.retry_at.unwrap_or(now + IDLE_POLL)).min().unwrap_or(now + IDLE_POLL)
}

/// How long a platform's deliveries of a shard that could not be read wait before the next try.
const READ_RETRY: Duration = Duration::from_secs(5);

/// A delivery that took this long (answered or not) ends its platform's turn and counts as a
/// failing one in the schedule.
const SLOW_DELIVERY: Duration = Duration::from_secs(1);

/// What one shard's round of deliveries did.
#[derive(Default)]
struct Round {
    delivered: bool,
    failed: bool,
    /// A delivery took `SLOW_DELIVERY` or more: the round stopped after it.
    slow: bool,
}

/// Delivers the next events of one platform on one shard, in order, until one fails. `written`
/// is the shard's last batch sequence, read before the shard. An error means the engine has
/// stopped.
#[allow(clippy::too_many_arguments)]
fn deliver_some(
    context: &Context,
    url: &str,
    secrets: &[&str],
    platform: u32,
    shard: u16,
    cursor: &mut Cursor,
    written: u64,
    pace: &mut Pace,
) -> Result<Round, engine::EngineError> {
    let start = cursor.next;
    let read = context.engine.read_shard(shard, move |state| {
        let mut events = Vec::new();
        let length = state.order_changes.len();
        let end = length.min(start.saturating_add(DELIVERY_SCAN_MAX));
        for index in start..end {
            let change = state.order_changes.get(index).expect("in range");
            if change.platform == platform {
                events.push((index, event_view(state, index, change)));
                if events.len() == DELIVERY_BATCH {
                    return (events, index + 1, index + 1 == length);
                }
            }
        }
        (events, end, end == length)
    });
    let (events, scanned_to, end_of_log) = match read {
        // A wait before this try that has passed is over (a read that failed set it, and a read
        // that finds no event would otherwise leave it, the lane due at once, for ever).
        Ok(read) => {
            if cursor.retry_at.is_some_and(|at| Instant::now() >= at) {
                cursor.retry_at = None;
            }
            read
        }
        // Every shard stops with the engine: the workers stop too. A shard that stopped alone
        // (a failed write: the process goes on) is not the engine stopping.
        Err(stopped @ engine::EngineError::ShardStopped(_)) if context.engine.is_shut_down() => return Err(stopped),
        // Overloaded, a piece of history that could not be read back now, a stopped shard: this
        // shard's deliveries of this platform wait and are tried again; the other shards' and
        // platforms' go on (before session 63 any such error stopped every delivery of every
        // platform until a restart; helper 105).
        Err(error) => {
            tracing::warn!(platform, shard, "webhooks: cannot read the shard's events now, trying again later: {error}");
            cursor.retry_at = Some(Instant::now() + READ_RETRY);
            return Ok(Round::default());
        }
    };
    let config = &context.config;
    let mut round = Round::default();
    // The URL changed during the turn: the events not yet posted wait for the next one.
    let mut moved = false;
    for (index, event) in events {
        let started = Instant::now();
        if let Some(at) = pace.next_send.filter(|at| started < *at) {
            pace.paused_until = Some(at);
            break;
        }
        // A URL changed (or removed) during the turn ends it: the next turn posts to the new one
        // (the rest of the turn, up to 64 events a shard, went to the old URL; Known limit of
        // session 63).
        if !context.platforms.webhook_is(platform, url) {
            moved = true;
            break;
        }
        pace.next_send = Some(started + pace.interval);
        let body = serde_json::to_vec(&event).expect("events serialize");
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        // The current secret's signature in `X-Clearing-Signature` (one `v1`, as always); the
        // previous secret's, while a rotation's overlap lasts, in `X-Clearing-Signature-Previous`
        // (a new header: receivers parsing the first one are unchanged; helper 106).
        let signature = crate::simulator::signature_header(secrets[0], timestamp, &body);
        let previous = secrets.get(1).map(|secret| crate::simulator::signature_header(secret, timestamp, &body));
        let sent = post(&context.agent, url, context.config.allow_insecure_loopback, &signature, previous.as_deref(), &body);
        let outcome = match &sent {
            Ok(status) => format!("answered {status}"),
            Err(error) => error.clone(),
        };
        let event_id = event["event_id"].as_str().unwrap_or_default().to_string();
        let elapsed_ms = started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        context.recent.push(platform, Attempt { at: timestamp, event_id, url: url.to_string(), outcome, delivered: sent.is_ok(), elapsed_ms });
        match sent {
            Ok(_) => {
                round.delivered = true;
                cursor.next = index + 1;
                cursor.attempts = 0;
                cursor.retry_at = None;
                if started.elapsed() >= SLOW_DELIVERY {
                    round.slow = true;
                    break;
                }
            }
            Err(error) => {
                round.failed = true;
                cursor.attempts += 1;
                if cursor.attempts >= config.attempts_max {
                    tracing::warn!("webhooks: giving up on {} for platform {platform} after {} attempts: {error}", event["event_id"], cursor.attempts);
                    cursor.next = index + 1;
                    cursor.attempts = 0;
                    cursor.retry_at = None;
                    continue;
                }
                let backoff = config.backoff_ms.saturating_mul(1 << (cursor.attempts - 1).min(20)).min(config.backoff_ms_max);
                cursor.retry_at = Some(Instant::now() + Duration::from_millis(backoff));
                break;
            }
        }
    }
    // Past the events read only when all were delivered: not after a failure, nor when the rate
    // paused the turn before the last of them.
    let finished = cursor.retry_at.is_none() && pace.paused_until.is_none() && !round.slow && !moved;
    if finished && cursor.next < scanned_to {
        cursor.next = scanned_to;
    }
    cursor.quiet_at = (end_of_log && finished).then_some(written);
    if cursor.next != start {
        if let Err(error) = crate::records::put(context.store.as_ref(), &[(cursor_key(platform, shard), &*cursor)]) {
            tracing::warn!("webhooks: cannot save the delivery cursor: {error}");
        }
    }
    Ok(round)
}

/// Posts one signed event; only a 2xx answer counts as delivered. The URL is checked again (the
/// configuration may have changed since it was set), its host's addresses by the resolver.
fn post(agent: &ureq::Agent, url: &str, allow_insecure_loopback: bool, signature: &str, previous: Option<&str>, body: &[u8]) -> Result<u16, String> {
    check_url(url, allow_insecure_loopback)?;
    let mut request = agent.post(url).set("Content-Type", "application/json").set("X-Clearing-Signature", signature);
    if let Some(previous) = previous {
        request = request.set("X-Clearing-Signature-Previous", previous);
    }
    let sent = request.send_bytes(body);
    let response = match sent {
        Ok(response) => response,
        Err(ureq::Error::Status(status, response)) => {
            read_capped(response);
            return Err(format!("answered {status}"));
        }
        Err(error) => return Err(error.to_string()),
    };
    let status = response.status();
    read_capped(response);
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("answered {status}"))
    }
}

/// Reads at most `ANSWER_BYTES_MAX` of an answer, within the request's timeout: a short answer
/// read to its end lets the connection be reused; a long one is cut off with its connection.
fn read_capped(response: ureq::Response) {
    let _ = response.into_reader().take(ANSWER_BYTES_MAX).read_to_end(&mut Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An events cursor opens for its platform only, and no changed byte opens.
    #[test]
    fn event_cursors_are_sealed_for_their_platform() {
        let key = [7u8; 32];
        let position = Position(1_700_000_000_000_000, 123_456);
        let cursor = seal_cursor(&key, 3, position);
        assert_eq!(open_cursor(&key, 3, &cursor), Some(position));
        assert_ne!(seal_cursor(&key, 3, position), cursor, "a fresh nonce each time");
        assert_eq!(open_cursor(&key, 4, &cursor), None, "another platform's");
        assert_eq!(open_cursor(&[8u8; 32], 3, &cursor), None, "another key");
        for at in 0..cursor.len() {
            let mut changed = cursor.clone().into_bytes();
            changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
            assert_eq!(open_cursor(&key, 3, std::str::from_utf8(&changed).unwrap()), None, "byte {at}");
        }
        for garbage in ["", "1700000000-1", &cursor[..cursor.len() - 2], "zz"] {
            assert_eq!(open_cursor(&key, 3, garbage), None, "{garbage}");
        }
    }

    /// A cursor whose wait before a retry has passed, read and found with no event of its
    /// platform, waits no more and is quiet: the wait stayed, and the lane was due at once,
    /// reading the shard again and again (helper 106, session 63).
    #[test]
    fn a_passed_wait_ends_at_a_read_that_finds_nothing() {
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let engine = Arc::new(Engine::start(engine::EngineConfig { shard_count: 2, ..engine::EngineConfig::default() }, store.clone()).unwrap());
        let platforms = Arc::new(Platforms::load(store.clone(), crate::secrets::MasterKey::from_bytes([3; 32])).unwrap());
        let context = Context {
            engine: engine.clone(),
            platforms,
            store: store.clone(),
            agent: ureq::AgentBuilder::new().build(),
            config: WebhookConfig::default(),
            recent: Arc::new(Recent::default()),
        };
        let written = engine.counters()[1].last_sequence.load(Ordering::Relaxed);
        let mut cursor = Cursor { retry_at: Some(Instant::now() - Duration::from_secs(1)), ..Cursor::default() };
        let mut pace = Pace { interval: Duration::ZERO, next_send: None, paused_until: None };
        let round = deliver_some(&context, "https://example.com/hook", &["secret"], 7, 1, &mut cursor, written, &mut pace).unwrap();
        assert!(!round.delivered && !round.failed);
        assert_eq!((cursor.retry_at, cursor.quiet_at), (None, Some(written)), "no wait left, quiet until the shard writes again");
        engine.shutdown();
    }

    /// A shard whose events cannot be read for a while (its read queue full: `Overloaded`)
    /// holds back only its own deliveries: before session 63 the error stopped every delivery
    /// worker, and no platform got a webhook again until a restart (helper 105).
    #[test]
    fn a_shard_that_cannot_be_read_now_holds_back_only_its_own_deliveries() {
        use engine::ledger::command::{Command, Envelope};
        use engine::ledger::types::{AccountId, Limits};
        use engine::money::CurrencyId;
        use std::io::{BufRead, BufReader, Write};
        let store: Arc<dyn Store> = Arc::new(storage::MemoryStore::new());
        let config = engine::EngineConfig { shard_count: 2, control_capacity: 1, ack_flush_ms: 1, ..engine::EngineConfig::default() };
        let engine = Arc::new(Engine::start(config, store.clone()).unwrap());
        let platforms = Arc::new(Platforms::load(store.clone(), crate::secrets::MasterKey::from_bytes([3; 32])).unwrap());
        let new = crate::platforms::NewPlatform { name: "P".into(), ..crate::platforms::NewPlatform::default() };
        let (platform, _, _) = platforms.create(new).unwrap();
        // The platform's endpoint: answers 200 and keeps each body.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(String::new()));
        let keeping = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                keeping.lock().unwrap().push_str(&String::from_utf8_lossy(&body));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        let webhooks = WebhookConfig { allow_insecure_loopback: true, backoff_ms: 100, ..WebhookConfig::default() };
        let delivery = start_delivery(engine.clone(), platforms.clone(), store.clone(), webhooks).unwrap();
        let run = |command| engine.execute_one(Envelope { platform: platform.id, out_order_no: None, command }).unwrap();
        let accounts: Vec<AccountId> =
            (0..16).map(|owner| AccountId(run(Command::OpenAccount { owner, currency: CurrencyId(0), limits: Limits::NONE }).id)).collect();
        let on = |shard: u16| *accounts.iter().find(|a| a.shard(2) == shard).unwrap();
        let recharge = |account| format!("ord_{}", run(Command::Recharge { account, currency: CurrencyId(0), amount: 100, channel: 1 }).id);
        let arrived = |order: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if received.lock().unwrap().contains(&format!("\"{order}\"")) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        // An event on shard 1, before the platform has a webhook (nothing reads it yet).
        let unread = recharge(on(1));
        // Shard 1 held in a read, one more read queued behind it: its control channel is full,
        // so the workers' read of shard 1 waits 2 s for room and is refused.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holding = engine.clone();
        let holder = std::thread::spawn(move || {
            holding.read_shard(1, move |_| {
                let _ = held.recv_timeout(Duration::from_secs(30));
            })
        });
        std::thread::sleep(Duration::from_millis(100));
        let queued = engine.clone();
        let waiting = std::thread::spawn(move || queued.read_shard(1, |_| ()));
        std::thread::sleep(Duration::from_millis(100));
        platforms.set_webhook(platform.id, Some(url)).unwrap();
        delivery.wake(platform.id);
        std::thread::sleep(Duration::from_millis(2_500));
        let elsewhere = recharge(on(0));
        assert!(arrived(&elsewhere), "deliveries of the other shard go on while one cannot be read");
        release.send(()).unwrap();
        holder.join().unwrap().unwrap();
        waiting.join().unwrap().unwrap();
        assert!(arrived(&unread), "and that shard's, once it can be read");
        engine.shutdown();
    }

    fn lane(platform: u32, failing: bool) -> Lane {
        Lane { platform, cursors: vec![Cursor::default(); 2], failing, next_send: None, first_shard: 0 }
    }

    /// The platforms `take` hands out at `now`, in order, until it hands out none.
    fn taken(schedule: &mut Schedule, now: Instant, failing_max: usize) -> Vec<u32> {
        std::iter::from_fn(|| schedule.take(now, failing_max).ok().map(|lane| lane.platform)).collect()
    }

    #[test]
    fn webhook_urls_table() {
        // (url, refused without the development switch, refused with it)
        let cases: &[(&str, bool, bool)] = &[
            ("https://hooks.example.com/path?q=1", false, false),
            ("https://93.184.216.34/hook", false, false),
            ("https://[2606:4700::1111]/hook", false, false),
            ("http://hooks.example.com/hook", true, true),
            ("ftp://hooks.example.com/", true, true),
            ("https://user:pass@hooks.example.com/", true, true),
            ("https://user@hooks.example.com/", true, true),
            ("http://169.254.169.254/latest/meta-data/", true, true),
            ("https://169.254.169.254/", true, true),
            ("https://10.0.0.1/", true, true),
            ("https://172.16.5.4/", true, true),
            ("https://172.31.255.255/", true, true),
            ("https://172.32.0.1/", false, false),
            ("https://192.168.1.1/", true, true),
            ("https://100.64.0.1/", true, true),
            ("https://0.0.0.0/", true, true),
            ("https://224.0.0.1/", true, true),
            ("https://255.255.255.255/", true, true),
            ("https://192.0.2.1/", true, true),
            ("https://[fd00::1]/", true, true),
            ("https://[fe80::1]/", true, true),
            ("https://[::ffff:10.0.0.1]/", true, true),
            ("https://[::ffff:169.254.169.254]/", true, true),
            ("https://[::]/", true, true),
            ("https://[2001:db8::1]/", true, true),
            ("http://127.0.0.1:1/", true, false),
            ("https://127.0.0.1:1/", true, false),
            ("http://[::1]:8080/", true, false),
            ("http://localhost:8080/hook", true, false),
            ("http://LOCALHOST./hook", true, false),
            ("http://api.localhost/hook", true, false),
            ("http://0x7f.1/", true, false),
            ("http://2130706433/", true, false),
            ("not a url", true, true),
            ("https://", true, true),
        ];
        for (url, refused, refused_when_developing) in cases {
            assert_eq!(check_url(url, false).is_err(), *refused, "{url} without the switch");
            assert_eq!(check_url(url, true).is_err(), *refused_when_developing, "{url} with the switch");
        }
        assert!(check_url(&format!("https://example.com/{}", "a".repeat(2048)), false).is_err(), "too long");
    }

    #[test]
    fn names_are_resolved_and_refused_addresses_dropped_at_delivery() {
        // `localhost` resolves (from the hosts file, no network) to loopback only.
        let refusing = CheckedResolver { allow_loopback: false };
        let error = ureq::Resolver::resolve(&refusing, "localhost:9").expect_err("loopback refused");
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        let developing = CheckedResolver { allow_loopback: true };
        let addresses = ureq::Resolver::resolve(&developing, "localhost:9").expect("loopback allowed");
        assert!(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()));
        // Through the agent as the workers build it: no connection is made to a refused address.
        let agent = ureq::AgentBuilder::new().resolver(CheckedResolver { allow_loopback: false }).redirects(0).build();
        let error = agent.post("https://localhost:9/hook").send_bytes(b"{}").expect_err("refused");
        assert!(error.to_string().contains("refused"), "{error}");
        assert!(post(&agent, "https://localhost:9/hook", false, "t=1,v1=00", None, b"{}").is_err());
    }

    #[test]
    fn lanes_are_taken_in_due_order_and_failing_ones_only_up_to_their_share() {
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms);
        let mut schedule = Schedule::default();
        // (platform, failing, due in ms)
        for (platform, failing, due) in [(1, true, 0), (2, true, 1), (3, false, 2), (4, false, 3), (5, true, 4), (6, false, 50)] {
            schedule.queue(lane(platform, failing), at(due));
        }
        // One failing lane may be held: 1, then the healthy ones that are due; 2 and 5 wait.
        assert_eq!(taken(&mut schedule, at(10), 1), [1, 3, 4]);
        assert_eq!(schedule.take(at(10), 1).err(), Some(Some(at(50))), "6 is the next one due");
        // Platform 1 comes back (still failing): the next failing lane may go.
        schedule.put_back(lane(1, true), Some(at(20)), at(10));
        assert_eq!(taken(&mut schedule, at(10), 1), [2]);
        assert_eq!(schedule.failing_in_flight, 1);
    }

    #[test]
    fn a_lane_back_from_a_turn_waits_behind_the_lanes_already_due() {
        let now = Instant::now();
        let mut schedule = Schedule::default();
        schedule.queue(lane(1, false), now);
        schedule.queue(lane(2, false), now + Duration::from_millis(1));
        let first = schedule.take(now + Duration::from_millis(5), 8).expect("due");
        schedule.put_back(first, Some(now + Duration::from_millis(5)), now + Duration::from_millis(5));
        assert_eq!(taken(&mut schedule, now + Duration::from_millis(5), 8), [2, 1]);
    }

    #[test]
    fn setting_the_webhook_schedules_the_lane_now_without_its_backoff() {
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let mut schedule = Schedule::default();
        let mut waiting = lane(1, true);
        waiting.cursors[0].retry_at = Some(later);
        schedule.queue(waiting, later);
        schedule.wake(1, 2, now);
        let lane = schedule.take(now, 1).expect("due at once");
        assert!(lane.cursors.iter().all(|c| c.retry_at.is_none()));
        // Woken while a worker holds it: due at once when it comes back, even if it had no webhook.
        schedule.wake(1, 2, now);
        schedule.put_back(lane, None, now);
        assert_eq!(taken(&mut schedule, now, 1), [1]);
        // Without a webhook it is parked until the next wake.
        schedule.put_back(Lane { platform: 1, cursors: vec![Cursor::default(); 2], failing: false, next_send: None, first_shard: 0 }, None, now);
        assert_eq!(taken(&mut schedule, later, 1), Vec::<u32>::new());
        schedule.wake(1, 2, now);
        assert_eq!(taken(&mut schedule, now, 1), [1]);
        // A platform never seen gets a lane with a cursor per shard.
        schedule.wake(7, 2, now);
        assert_eq!(schedule.take(now, 1).map(|lane| lane.cursors.len()).ok(), Some(2));
    }
}
