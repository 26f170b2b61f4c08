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
/// panic) once one has stopped (`/admin/shards` shows every shard's state).
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Success", body = Object), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(engine: web::Data<Arc<Engine>>) -> Result<HttpResponse, ApiError> {
    let failures = engine.failures();
    if failures.is_empty() {
        return Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})));
    }
    let stopped: Vec<String> = failures.iter().map(|(shard, why)| format!("shard {shard} stopped ({why})")).collect();
    Err(ApiError::unavailable(format!("not ready: {}", stopped.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use engine::ledger::command::{Command, Envelope};
    use engine::ledger::types::Limits;
    use engine::money::CurrencyId;
    use engine::EngineConfig;
    use storage::MemoryStore;

    #[actix_web::test]
    async fn readiness_names_a_stopped_shard_and_why() {
        let store = Arc::new(MemoryStore::new());
        let engine = Arc::new(Engine::start(EngineConfig { shard_count: 2, ..EngineConfig::default() }, store.clone()).unwrap());
        let app = test::init_service(App::new().app_data(web::Data::new(engine.clone())).service(readyz)).await;
        let response = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status(), 200);
        // A failed write stops the shard that made it (DESIGN.md 4).
        store.fail_after(0);
        let open = Envelope { platform: 1, out_order_no: None, command: Command::OpenAccount { owner: 1, currency: CurrencyId(0), limits: Limits::NONE } };
        let failed = web::block({
            let engine = engine.clone();
            move || engine.execute_one(open)
        })
        .await
        .unwrap();
        assert!(failed.is_err());
        let response = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = test::read_body_json(response).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("stopped (storage failed:") && message.contains("injected write failure"), "{message}");
        assert_eq!(message.matches("stopped").count(), 1, "only the shard that failed: {message}");
        engine.shutdown();
    }
}
