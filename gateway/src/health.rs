//! `GET /healthz` and `GET /readyz`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use engine::Engine;

use crate::error::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Success", body = Object), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready while every shard runs; 503 once one has stopped (a failed write stops a shard).
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Success", body = Object), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let stopped: Vec<usize> = engine.counters().iter().enumerate().filter(|(_, c)| c.stopped.load(Ordering::Relaxed)).map(|(shard, _)| shard).collect();
    if stopped.is_empty() {
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::unavailable(format!("shards stopped: {stopped:?}")))
    }
}
