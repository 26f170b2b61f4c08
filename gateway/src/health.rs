//! `GET /healthz` and `GET /readyz`.

use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use engine::Engine;

use crate::error::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Success", body = Object), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready while every shard runs; 503 naming each stopped shard and why (a failed write, a
/// panic) once one has stopped. The body lists every shard's state either way.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Success", body = Object), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let failures = engine.failures();
    if failures.is_empty() {
        let shards: Vec<serde_json::Value> = (0..engine.counters().len()).map(|shard| serde_json::json!({"shard": shard, "state": "running"})).collect();
        return Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "shards": shards})));
    }
    let stopped: Vec<String> = failures.iter().map(|(shard, why)| format!("shard {shard} stopped ({why})")).collect();
    Err(ApiError::unavailable(format!("not ready: {}", stopped.join("; "))))
}
