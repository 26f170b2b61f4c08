//! Prometheus metrics (`GET /metrics`, operator token): HTTP latency recorded per request with
//! the `metrics` crate, and the engine's shard counters copied in at each scrape (the engine
//! itself only keeps integer atomics, so it never formats or hashes labels on its hot path).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{get, web, HttpRequest, HttpResponse};
use engine::ledger::command::Command;
use engine::result::ResultCode;
use engine::Engine;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::admin::AdminToken;
use crate::error::ApiError;

/// Installs the process-wide recorder; call once, before serving.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new().install_recorder().map_err(|e| e.to_string())
}

/// Middleware: request latency by method, route pattern (never the raw path) and status.
pub async fn record_latency(request: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let response = next.call(request).await?;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("clearing_http_request_duration_seconds", "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Copies the engine's counters into the registry.
fn sync_engine(engine: &Engine) {
    for (shard, c) in engine.counters().iter().enumerate() {
        let shard_label = shard.to_string();
        let gauge = |name: &'static str, value: u64| metrics::gauge!(name, "shard" => shard_label.clone()).set(value as f64);
        gauge("clearing_shard_mailbox_depth", engine.mailbox_depth(shard as u16) as u64);
        gauge("clearing_shard_outbox_pending", c.outbox_pending.load(Ordering::Relaxed));
        gauge("clearing_shard_last_sequence", c.last_sequence.load(Ordering::Relaxed));
        gauge("clearing_shard_accounts", c.accounts.load(Ordering::Relaxed));
        gauge("clearing_shard_last_batch_size", c.last_batch_size.load(Ordering::Relaxed));
        gauge("clearing_shard_fsync_microseconds_last", c.last_fsync_us.load(Ordering::Relaxed));
        gauge("clearing_shard_fsync_microseconds_max", c.largest_fsync_us.load(Ordering::Relaxed));
        gauge("clearing_shard_stopped", c.stopped.load(Ordering::Relaxed) as u64);
        let counter = |name: &'static str, value: u64| metrics::counter!(name, "shard" => shard_label.clone()).absolute(value);
        counter("clearing_shard_batches_total", c.batches.load(Ordering::Relaxed));
        counter("clearing_shard_commands_total", c.commands.load(Ordering::Relaxed));
        counter("clearing_shard_fsync_microseconds_total", c.total_fsync_us.load(Ordering::Relaxed));
        for (cell, count) in c.outcomes.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let kind = Command::KIND_NAMES[cell / ResultCode::ALL.len()];
            let result = ResultCode::ALL[cell % ResultCode::ALL.len()].name();
            metrics::counter!("clearing_commands_total", "shard" => shard_label.clone(), "kind" => kind, "result" => result).absolute(count);
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operator", responses((status = 200, description = "Success", body = String), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/metrics")]
pub async fn scrape(
    request: HttpRequest,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    handle: web::Data<PrometheusHandle>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    sync_engine(&engine);
    // The daily settlement schedule: failed runs (each is tried again until it succeeds).
    if let Some(schedule) = clearing.schedule().await? {
        metrics::counter!("clearing_settlement_failures_total").absolute(schedule.failures_total);
        metrics::gauge!("clearing_settlement_failures_in_a_row").set(schedule.failures_in_a_row as f64);
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render()))
}

/// Registers `/metrics`.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(scrape);
}
