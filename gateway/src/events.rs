//! Events to platforms (the gateway issue, item 6): every creation and change of an order is an
//! event. The shards keep them in order (`ShardState::order_changes`, rebuilt from the journal,
//! so the journal is their durable outbox). Platforms list them at `GET /v1/events` and may set
//! a webhook URL (`POST /v1/webhook`); a delivery thread posts each event there, signed like
//! Stripe-Signature (`X-Clearing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(platform
//! secret, "t.body")>`), retried with exponential backoff, and remembers per platform and shard
//! how far it has delivered (`d/<platform>/<shard>` in the store): at least once, in order per
//! shard, also across restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{get, post, web, HttpResponse};
use engine::ledger::state::{OrderChange, ShardState};
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage::Store;

use crate::error::{blocking, ApiError};
use crate::orders::{format_time, kind_name, merged_page, page_limit, parse_cursor, public_order_id, Position, ShardPage};
use crate::platforms::Platforms;
use crate::v1::Signed;

/// Events one listing request examines per shard before it answers with a cursor.
const LIST_SCAN_MAX: usize = 100_000;
/// Events one delivery round reads from a shard for one platform.
const DELIVERY_BATCH: usize = 64;
/// Changes one delivery round looks through per shard and platform.
const DELIVERY_SCAN_MAX: usize = 100_000;

/// How deliveries are retried (config `[webhooks]`).
#[derive(Clone, Copy, Debug)]
pub struct WebhookConfig {
    /// Attempts of one event before it is given up (it stays listed at `GET /v1/events`).
    pub attempts_max: u32,
    /// The first retry waits this long; each next one twice as long, at most `backoff_ms_max`.
    pub backoff_ms: u64,
    pub backoff_ms_max: u64,
    /// Seconds one delivery may take.
    pub timeout_seconds: u64,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig { attempts_max: 12, backoff_ms: 1_000, backoff_ms_max: 600_000, timeout_seconds: 10 }
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
#[utoipa::path(get, path = "/v1/events", tag = "events", params(("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/events")]
pub async fn list_events(signed: Signed, query: web::Query<ListQuery>, engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let platform = signed.platform.id;
    let limit = page_limit(query.limit.as_deref())?;
    let before = parse_cursor(query.cursor.as_deref())?;
    let (events, next_cursor) = merged_page(&engine, limit, move |state, wanted| scan_shard(state, platform, before, wanted)).await?;
    Ok(HttpResponse::Ok().json(json!({"events": events, "next_cursor": next_cursor})))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    url: Option<String>,
}

/// A webhook URL the delivery thread can post to: plain `http://` (TLS ends in front of us).
fn valid_url(url: &str) -> bool {
    url.len() <= 2048 && (url.starts_with("http://") || url.starts_with("https://")) && url.parse::<actix_web::http::Uri>().is_ok()
}

/// `POST /v1/webhook {url}` (an addition to API.md): sets or (with null) removes the webhook.
#[utoipa::path(post, path = "/v1/webhook", tag = "events", request_body = crate::events::WebhookBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[post("/v1/webhook")]
pub async fn set_webhook(signed: Signed, platforms: web::Data<Arc<Platforms>>) -> Result<HttpResponse, ApiError> {
    let body = signed.json::<WebhookBody>()?;
    if body.url.as_deref().is_some_and(|u| !valid_url(u)) {
        return Err(ApiError::invalid("url must be an http:// or https:// URL", "url"));
    }
    let (platforms, id) = (platforms.get_ref().clone(), signed.platform.id);
    let platform = blocking(move || platforms.set_webhook(id, body.url)).await??;
    Ok(HttpResponse::Ok().json(json!({"url": platform.webhook_url, "signature_header": "X-Clearing-Signature"})))
}

/// `GET /v1/webhook`: the platform's webhook URL.
#[utoipa::path(get, path = "/v1/webhook", tag = "events", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/webhook")]
pub async fn show_webhook(signed: Signed) -> HttpResponse {
    HttpResponse::Ok().json(json!({"url": signed.platform.webhook_url, "signature_header": "X-Clearing-Signature"}))
}

/// Registers the event routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list_events).service(set_webhook).service(show_webhook);
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
}

fn cursor_key(platform: u32, shard: u16) -> Vec<u8> {
    format!("d/{platform}/{shard}").into_bytes()
}

/// Starts the thread that delivers events to webhooks.
pub fn start_delivery(engine: Arc<Engine>, platforms: Arc<Platforms>, store: Arc<dyn Store>, config: WebhookConfig) -> Result<(), String> {
    let mut cursors: HashMap<(u32, u16), Cursor> = HashMap::new();
    for (rest, cursor) in crate::records::load_all::<Cursor>(store.as_ref(), b"d/")? {
        let rest = String::from_utf8_lossy(&rest).into_owned();
        let parsed = rest.split_once('/').and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)));
        cursors.insert(parsed.ok_or("corrupt delivery cursor")?, cursor);
    }
    std::thread::Builder::new()
        .name("webhooks".into())
        .spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(config.timeout_seconds)).build();
            loop {
                let mut delivered_any = false;
                for platform in platforms.all() {
                    let Some(url) = platform.webhook_url.clone() else { continue };
                    let secret = platforms.secret(&platform);
                    for shard in 0..engine.config().shard_count {
                        let cursor = cursors.entry((platform.id, shard)).or_default();
                        match deliver_some(&engine, &agent, &url, &secret, platform.id, shard, cursor, &config, store.as_ref()) {
                            Ok(delivered) => delivered_any |= delivered,
                            Err(stopped) => {
                                eprintln!("webhooks: {stopped}");
                                return;
                            }
                        }
                    }
                }
                if !delivered_any {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Delivers the next events of one platform on one shard; true if any was delivered. An error
/// means the engine has stopped.
#[allow(clippy::too_many_arguments)]
fn deliver_some(
    engine: &Engine,
    agent: &ureq::Agent,
    url: &str,
    secret: &str,
    platform: u32,
    shard: u16,
    cursor: &mut Cursor,
    config: &WebhookConfig,
    store: &dyn Store,
) -> Result<bool, engine::EngineError> {
    if cursor.retry_at.is_some_and(|at| Instant::now() < at) {
        return Ok(false);
    }
    let start = cursor.next;
    let (events, scanned_to) = engine.read_shard(shard, move |state| {
        let mut events = Vec::new();
        let end = state.order_changes.len().min(start + DELIVERY_SCAN_MAX);
        for index in start..end {
            let change = state.order_changes.get(index).expect("in range");
            if change.platform == platform {
                events.push((index, event_view(state, index, change)));
                if events.len() == DELIVERY_BATCH {
                    return (events, index + 1);
                }
            }
        }
        (events, end)
    })?;
    let mut delivered = false;
    for (index, event) in events {
        let body = serde_json::to_vec(&event).expect("events serialize");
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let signature = crate::simulator::signature_header(secret, timestamp, &body);
        let sent = agent.post(url).set("Content-Type", "application/json").set("X-Clearing-Signature", &signature).send_bytes(&body);
        match sent {
            Ok(_) => {
                delivered = true;
                cursor.next = index + 1;
                cursor.attempts = 0;
                cursor.retry_at = None;
            }
            Err(error) => {
                cursor.attempts += 1;
                if cursor.attempts >= config.attempts_max {
                    eprintln!("webhooks: giving up on {} for platform {platform} after {} attempts: {error}", event["event_id"], cursor.attempts);
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
    if cursor.retry_at.is_none() && cursor.next < scanned_to {
        cursor.next = scanned_to;
    }
    if cursor.next != start {
        if let Err(error) = crate::records::put(store, &[(cursor_key(platform, shard), &*cursor)]) {
            eprintln!("webhooks: cannot save the delivery cursor: {error}");
        }
    }
    Ok(delivered)
}
