//! Per-platform quotas (DESIGN.md invariant 12): request rate (a token bucket), requests being
//! executed at once, the platform's share of the nonce cache and its largest body. Each platform
//! has its own counters, so one platform over its quota is answered 429 `rate_limited` with
//! `Retry-After` and no other platform notices.
//!
//! The counters are created on a platform's first request and kept for the life of the process
//! (one small struct per platform). A request takes no allocation: the platform's counters are
//! found under a read lock and shared by `Arc`; the token bucket's lock is held for a few
//! arithmetic operations and never across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::error::ApiError;

/// One platform's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Requests per second the bucket refills with.
    pub requests_per_second: u32,
    /// Requests the bucket holds when full (what a platform may send at once after a pause).
    pub burst: u32,
    /// Requests of the platform being executed at once (signature checked, answer not yet sent).
    pub in_flight_max: u32,
    /// Nonces of the platform remembered within the signing window (its share of the cache).
    pub nonces_max: u32,
    /// Largest request body of the platform, in bytes (at most the server's `http.body_bytes_max`).
    pub body_bytes_max: usize,
}

impl Default for QuotaLimits {
    /// Far above what one platform of `clearing load` sends (about 20,000 single orders/s from 64
    /// connections), so the defaults never throttle an honest platform on one node.
    fn default() -> QuotaLimits {
        QuotaLimits { requests_per_second: 50_000, burst: 100_000, in_flight_max: 512, nonces_max: 8 << 20, body_bytes_max: 16 << 20 }
    }
}

/// Limits every platform gets, and those of the platforms configured apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaConfig {
    pub defaults: QuotaLimits,
    /// By platform id (`plt_7` is 7).
    pub platforms: BTreeMap<u32, QuotaLimits>,
}

impl QuotaConfig {
    /// The limits of platform `id`.
    pub fn limits(&self, id: u32) -> QuotaLimits {
        self.platforms.get(&id).copied().unwrap_or(self.defaults)
    }
}

/// Micro-tokens per request: the bucket counts in millionths so that it refills smoothly.
const TOKEN: u64 = 1_000_000;

struct Bucket {
    micro_tokens: u64,
    refilled: Instant,
}

/// One platform's counters.
pub struct Tenant {
    limits: QuotaLimits,
    bucket: Mutex<Bucket>,
    in_flight: AtomicU32,
}

impl Tenant {
    fn new(limits: QuotaLimits, now: Instant) -> Tenant {
        let full = u64::from(limits.burst).saturating_mul(TOKEN);
        Tenant { limits, bucket: Mutex::new(Bucket { micro_tokens: full, refilled: now }), in_flight: AtomicU32::new(0) }
    }

    /// The platform's limits.
    pub fn limits(&self) -> &QuotaLimits {
        &self.limits
    }

    /// Refills the bucket to `now`; with `take`, takes one request's token. Err: the seconds
    /// until a token is there.
    fn tokens(&self, now: Instant, take: bool) -> Result<(), u32> {
        let rate = u64::from(self.limits.requests_per_second);
        let full = u64::from(self.limits.burst).saturating_mul(TOKEN);
        // A std Mutex, not a tokio one: no await while it is held.
        let mut bucket = self.bucket.lock().expect("token bucket lock");
        let elapsed_micros = u64::try_from(now.saturating_duration_since(bucket.refilled).as_micros()).unwrap_or(u64::MAX);
        if elapsed_micros > 0 {
            bucket.micro_tokens = bucket.micro_tokens.saturating_add(elapsed_micros.saturating_mul(rate)).min(full);
            bucket.refilled = now;
        }
        if bucket.micro_tokens >= TOKEN {
            if take {
                bucket.micro_tokens -= TOKEN;
            }
            return Ok(());
        }
        let missing = TOKEN - bucket.micro_tokens;
        // Seconds until the missing part has refilled, rounded up (a rate of 0 never refills).
        let seconds = missing.div_ceil(rate.saturating_mul(1_000_000).max(1)).max(1);
        Err(u32::try_from(seconds).unwrap_or(u32::MAX))
    }

    /// Refuses a request of a platform whose bucket is empty, without taking a token: checked
    /// before the body is read, when the signature is not known to be good yet (so an
    /// unauthenticated client cannot spend a platform's tokens).
    pub fn check_rate(&self, now: Instant) -> Result<(), ApiError> {
        self.tokens(now, false).map_err(|seconds| ApiError::rate_limited("the platform is over its request rate", seconds))
    }

    /// Takes one request's token (after the signature was checked).
    pub fn take_token(&self, now: Instant) -> Result<(), ApiError> {
        self.tokens(now, true).map_err(|seconds| ApiError::rate_limited("the platform is over its request rate", seconds))
    }

    /// Counts a request as being executed until the returned guard is dropped.
    pub fn enter(self: &Arc<Tenant>) -> Result<InFlight, ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.limits.in_flight_max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::rate_limited("the platform has too many requests in flight", 1));
        }
        Ok(InFlight { tenant: self.clone() })
    }

    /// Requests of the platform being executed now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// A request being executed; dropping it (when the handler has answered) frees its place.
pub struct InFlight {
    tenant: Arc<Tenant>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.tenant.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware: a platform's request that may change something (`/v1`, any method but GET and
/// HEAD) runs to its end on a task of its own, whatever its client does. A client that resets
/// its connection drops the future actix polls; before, the handler's `Signed` (and its
/// `InFlight` place) went with it while the work it had started (a task it spawned, a blocking
/// closure queued behind a store lock) went on, so a client resetting each request after
/// sending it kept piling up work no quota counted (helper 107). Now the handler, its places and
/// everything it awaits end together, and a request's money work is never cut off half-way.
pub async fn run_to_end<B: actix_web::body::MessageBody + 'static>(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<actix_web::dev::ServiceResponse<B>, actix_web::Error> {
    use actix_web::http::Method;
    use tracing::Instrument as _;
    // The path the router matches (decoded: `/%761/bulk` is routed to `/v1/bulk`) and the raw one.
    let platform = |path: &str| path.starts_with("/v1/");
    if !(platform(request.match_info().as_str()) || platform(request.path())) || matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.call(request).await;
    }
    // The task logs under the request's span (its request id).
    match actix_web::rt::spawn(next.call(request).in_current_span()).await {
        Ok(answered) => answered,
        Err(failed) => {
            // A handler that panicked: the contract's JSON error, nothing of the panic's text.
            tracing::error!("a request's task failed: {failed}");
            Err(crate::error::ApiError::new(500, "internal_error", "the request failed on our side").into())
        }
    }
}

/// Every platform's counters, created on first use.
pub struct Quotas {
    config: QuotaConfig,
    tenants: RwLock<HashMap<u32, Arc<Tenant>, rustc_hash::FxBuildHasher>>,
}

impl Quotas {
    /// Counters for the limits of `config`.
    pub fn new(config: QuotaConfig) -> Quotas {
        Quotas { config, tenants: RwLock::new(HashMap::default()) }
    }

    /// The counters of platform `id`.
    pub fn tenant(&self, id: u32) -> Arc<Tenant> {
        if let Some(tenant) = self.tenants.read().expect("quotas lock").get(&id) {
            return tenant.clone();
        }
        let limits = self.config.limits(id);
        self.tenants.write().expect("quotas lock").entry(id).or_insert_with(|| Arc::new(Tenant::new(limits, Instant::now()))).clone()
    }

    /// The limits of platform `id`.
    pub fn limits(&self, id: u32) -> QuotaLimits {
        self.config.limits(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Regression (helper 107): a request whose client went away was dropped half-way with its
    /// in-flight place while the work it had started went on. A `/v1` request that may change
    /// something now runs to its end (and holds its place until then); a read is dropped with
    /// its client as before.
    #[actix_web::test]
    async fn a_request_its_client_drops_runs_to_its_end_holding_its_place() {
        use actix_web::{dev::Service as _, test, web, App, HttpResponse};
        let tenant = Arc::new(Tenant::new(QuotaLimits { in_flight_max: 1, ..QuotaLimits::default() }, Instant::now()));
        let finished = Arc::new(AtomicU32::new(0));
        let (handler_tenant, handler_finished) = (tenant.clone(), finished.clone());
        let handler = move || {
            let (tenant, finished) = (handler_tenant.clone(), handler_finished.clone());
            async move {
                let _place = tenant.enter().map_err(|_| actix_web::error::ErrorTooManyRequests("busy"))?;
                actix_web::rt::time::sleep(Duration::from_millis(300)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<HttpResponse, actix_web::Error>(HttpResponse::Ok().finish())
            }
        };
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(run_to_end))
                .wrap(actix_web::middleware::from_fn(crate::request_id::request_span))
                .route("/v1/work", web::post().to(handler.clone()))
                .route("/v1/work", web::get().to(handler))
                .route("/v1/panics", web::post().to(|| async { panic!("a bug with a secret in its message") as HttpResponse })),
        )
        .await;
        // A handler that panics is the contract's JSON 500, its message not shown, with the
        // request's id (helper 112#5: the id was missing).
        let failed = app.call(test::TestRequest::post().uri("/v1/panics").insert_header(("x-request-id", "panics-1")).to_request()).await;
        let Err(error) = failed else { panic!("a panicked handler answers an error") };
        let response = actix_web::ResponseError::error_response(error.as_response_error());
        assert_eq!(response.status().as_u16(), 500);
        assert_eq!(response.headers().get("x-request-id").map(|v| v.as_bytes()), Some(&b"panics-1"[..]));
        let body = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("internal_error") && !text.contains("secret"), "{text}");
        // A percent-encoded path routed to /v1 runs to its end too (helper 112).
        let cut = actix_web::rt::time::timeout(Duration::from_millis(50), app.call(test::TestRequest::post().uri("/%761/work").to_request())).await;
        assert!(cut.is_err(), "cut short");
        assert_eq!(tenant.in_flight(), 1, "the encoded path's work holds its place");
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        assert_eq!((finished.load(Ordering::SeqCst), tenant.in_flight()), (1, 0));
        // The client goes away 50 ms in: the work goes on, its place held.
        let cut = actix_web::rt::time::timeout(Duration::from_millis(50), app.call(test::TestRequest::post().uri("/v1/work").to_request())).await;
        assert!(cut.is_err(), "cut short");
        assert_eq!(tenant.in_flight(), 1, "its place is held while its work goes on");
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        assert_eq!((finished.load(Ordering::SeqCst), tenant.in_flight()), (2, 0), "it ran to its end, then gave its place back");
        // A read is dropped with its client.
        let cut = actix_web::rt::time::timeout(Duration::from_millis(50), app.call(test::TestRequest::get().uri("/v1/work").to_request())).await;
        assert!(cut.is_err());
        assert_eq!(tenant.in_flight(), 0);
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }

    fn limits(requests_per_second: u32, burst: u32, in_flight_max: u32) -> QuotaLimits {
        QuotaLimits { requests_per_second, burst, in_flight_max, ..QuotaLimits::default() }
    }

    #[test]
    fn the_bucket_holds_its_burst_refills_at_its_rate_and_says_when() {
        let start = Instant::now();
        let tenant = Tenant::new(limits(2, 3, 10), start);
        for _ in 0..3 {
            assert!(tenant.take_token(start).is_ok());
        }
        let refused = tenant.take_token(start).unwrap_err();
        assert_eq!((refused.status, refused.code, refused.retry_after_seconds), (429, "rate_limited", Some(1)));
        assert!(tenant.check_rate(start).is_err(), "checking does not refill");
        let later = start + Duration::from_millis(500);
        assert!(tenant.check_rate(later).is_ok() && tenant.check_rate(later).is_ok(), "checking takes nothing");
        assert!(tenant.take_token(later).is_ok(), "half a second refills one token at 2/s");
        assert!(tenant.take_token(later).is_err());
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(tenant.take_token(much_later).is_ok());
        }
        assert!(tenant.take_token(much_later).is_err(), "never more than the burst");
    }

    #[test]
    fn a_slow_rate_says_how_many_seconds_and_a_zero_rate_never_overflows() {
        let start = Instant::now();
        let slow = Tenant::new(QuotaLimits { requests_per_second: 0, burst: 0, ..QuotaLimits::default() }, start);
        let refused = slow.take_token(start + Duration::from_secs(1_000_000)).unwrap_err();
        assert!(refused.retry_after_seconds.unwrap() >= 1);
        let huge = Tenant::new(QuotaLimits { requests_per_second: u32::MAX, burst: u32::MAX, ..QuotaLimits::default() }, start);
        assert!(huge.take_token(start + Duration::from_secs(u32::MAX as u64)).is_ok(), "no overflow at the ends of the types");
    }

    #[test]
    fn in_flight_is_bounded_and_freed_when_the_guard_drops() {
        let tenant = Arc::new(Tenant::new(limits(10, 10, 2), Instant::now()));
        let first = tenant.enter().unwrap();
        let second = tenant.enter().unwrap();
        assert_eq!(tenant.enter().err().map(|e| (e.code, e.retry_after_seconds)), Some(("rate_limited", Some(1))));
        drop(first);
        let third = tenant.enter().unwrap();
        assert_eq!(tenant.in_flight(), 2);
        drop((second, third));
        assert_eq!(tenant.in_flight(), 0);
    }

    #[test]
    fn platforms_have_their_own_counters_and_overrides() {
        let mut config = QuotaConfig::default();
        config.platforms.insert(2, limits(1, 1, 1));
        let quotas = Quotas::new(config);
        let now = Instant::now();
        assert!(quotas.tenant(2).take_token(now).is_ok());
        assert!(quotas.tenant(2).take_token(now).is_err(), "the same counters on the next request");
        assert!(quotas.tenant(1).take_token(now).is_ok(), "another platform is not affected");
        assert_eq!(quotas.limits(3), QuotaLimits::default());
    }
}
