//! `GET /openapi.json`: the OpenAPI document of every endpoint, generated from the handlers'
//! annotations and the request types (utoipa). Error codes are listed from the code too: every
//! engine result code through the one table that maps them (`orders::rejection`), plus the
//! codes the gateway answers itself (`GATEWAY_ERROR_CODES`, checked against the sources by a test).

use actix_web::{get, web, HttpResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::schemas::*;
pub use crate::schemas::{error_codes, GATEWAY_ERROR_CODES, SERVER_ERROR_CODES};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "platform_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature",
                "hex(HMAC-SHA256(secret, METHOD \\n PATH_AND_QUERY \\n TIMESTAMP \\n NONCE \\n hex(SHA256(body)))), with headers X-Platform-Id, X-Timestamp (unix seconds, within 300 s) and X-Nonce (16-64 [A-Za-z0-9], once)",
            ))),
        );
        components.add_security_scheme("operator_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme(
            "channel_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Channel-Signature",
                "t=<unix seconds>,v1=<hex HMAC-SHA256(channel key, \"t.body\")>",
            ))),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Clearing engine: platform OpenAPI and operator API", description = "Virtual-account clearing (../shared/API.md is the contract)."),
    paths(
        crate::accounts::open_account,
        crate::accounts::show_account,
        crate::accounts::close_account,
        crate::agreements::publish,
        crate::agreements::list_templates,
        crate::agreements::show_template,
        crate::agreements::sign,
        crate::agreements::list_signatures,
        crate::agreements::show_signature,
        crate::agreements::put_requirements,
        crate::agreements::get_requirements,
        crate::h5::create_session,
        crate::admin::list_shards,
        crate::admin::one_shard,
        crate::admin::check_invariants,
        crate::admin::create_platform,
        crate::admin::rotate_secret,
        crate::admin::set_account_status,
        crate::admin::list_channels,
        crate::admin::change_channel,
        crate::admin::add_channel,
        crate::backups::take_backup,
        crate::backups::list_backups,
        crate::offline::offline_transfers,
        crate::offline::list_cases,
        crate::offline::resolve_case,
        crate::reconcile::reconcile_endpoint,
        crate::reconcile::reserve_check,
        crate::bulk::bulk,
        crate::cards::bind,
        crate::cards::verify,
        crate::cards::unbind,
        crate::cards::list,
        crate::entries::list_entries,
        crate::events::list_events,
        crate::events::set_webhook,
        crate::events::show_webhook,
        crate::events::rotate_webhook_secret,
        crate::metrics::scrape,
        crate::notifications::list,
        crate::orders::show_order,
        crate::orders::list_orders,
        crate::passwords::set_password,
        crate::payments::create_batch,
        crate::payments::create_payment,
        crate::payments::confirm,
        crate::payments::cancel,
        crate::payments::create_refund,
        crate::payments::create_freeze,
        crate::payments::release,
        crate::recharges::create_recharge,
        crate::recharges::create_collection,
        crate::health::healthz,
        crate::health::readyz,
        crate::settlements::settle,
        crate::settlements::schedule,
        crate::settlements::operator_statement,
        crate::settlements::platform_statement,
        crate::commission::put_rule,
        crate::commission::get_rule,
        crate::commission::delete_rule,
        crate::simulator::receive_callback,
        crate::simulator::card_transactions,
        crate::simulator::card_link,
        crate::simulator::statement_file,
        crate::v1::whoami,
        crate::v1::create_member,
        crate::withdrawals::create_withdrawal,
        crate::withdrawals::create_payout
    ),
    components(schemas(ErrorBody, ErrorDetail, OrderView, OrderPage, AccountView, MemberView, CardView, EntryView, EntryPage, BulkOperation, BulkRequest, BulkResult, BulkResponse)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document this server serves: what utoipa derives, with `contract`'s words, the
/// configured currencies and the channels' names (all of them, and the enabled money-in ones).
pub fn served(currencies: &[(String, u8)], channels: &[String], money_in: &[String]) -> serde_json::Value {
    crate::contract::document(serde_json::to_value(ApiDoc::openapi()).expect("the document serializes"), currencies, channels, money_in)
}

/// The document as last rendered, with the channel names it was rendered for: rendered again
/// only when an operator has added, enabled or disabled a channel since (a request costs a
/// look at the channel list, not a rendering).
#[derive(Default)]
struct Rendered(std::sync::Mutex<Option<((Vec<String>, Vec<String>), web::Bytes)>>);

/// `GET /openapi.json`.
#[get("/openapi.json")]
async fn document(
    rendered: web::Data<Rendered>,
    engine: web::Data<std::sync::Arc<engine::Engine>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> HttpResponse {
    let set = clearing.channels();
    let all: Vec<String> = set.all().iter().map(|c| c.name.clone()).collect();
    let money_in: Vec<String> = set.all().iter().filter(|c| set.money_in(Some(&c.name), &c.currency).is_some()).map(|c| c.name.clone()).collect();
    let key = (all, money_in);
    let mut cached = rendered.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = match cached.as_ref() {
        Some((rendered_for, text)) if *rendered_for == key => text.clone(),
        _ => {
            let currencies: Vec<(String, u8)> = engine.config().currencies.iter().map(|c| (c.code_str().to_string(), c.exponent)).collect();
            let text = web::Bytes::from(serde_json::to_vec(&served(&currencies, &key.0, &key.1)).expect("the document serializes"));
            *cached = Some((key, text.clone()));
            text
        }
    };
    HttpResponse::Ok().content_type("application/json").body(text)
}

/// The documented paths, each with the methods it answers (`Allow`), matched as actix matches.
fn documented_routes() -> &'static [(actix_web::dev::ResourceDef, String)] {
    static ROUTES: std::sync::OnceLock<Vec<(actix_web::dev::ResourceDef, String)>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        let doc = ApiDoc::openapi();
        doc.paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, present)| present.then_some(name))
                .collect();
                (actix_web::dev::ResourceDef::new(path.as_str()), methods.join(", "))
            })
            .collect()
    })
}

/// The methods a documented path answers, when `path` is one (`None`: no such path).
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    documented_routes().iter().find(|(route, _)| route.is_match(path)).map(|(_, methods)| methods.as_str())
}

/// What answers a request no route took: `405 method_not_allowed` with `Allow` when the path is
/// a documented one asked with another method, `404 not_found` otherwise; both in the API's
/// JSON error shape.
pub async fn unrouted(request: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    match allowed_methods(request.path()) {
        Some(methods) => {
            let error = crate::error::ApiError::new(405, "method_not_allowed", &format!("{} answers {methods}", request.path()));
            let mut response = error.error_response();
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(methods) {
                response.headers_mut().insert(actix_web::http::header::ALLOW, value);
            }
            response
        }
        None => crate::error::ApiError::not_found().error_response(),
    }
}

/// Registers the route (the document is rendered once).
pub fn routes(config: &mut web::ServiceConfig) {
    config.app_data(web::Data::new(Rendered::default())).service(document);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code literal the gateway answers with is in the document.
    #[test]
    fn every_error_code_in_the_sources_is_documented() {
        let documented = error_codes();
        let sources = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).unwrap();
        let pattern = ["ApiError::new(", "ApiError::new(4", "ApiError::new(5"];
        for file in sources {
            let path = file.unwrap().path();
            // Directories hold the pages (portal/): their codes are shown to people on pages,
            // not answered to API clients, so the document does not list them.
            if path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (index, _) in text.match_indices(pattern[0]) {
                let rest = &text[index + pattern[0].len()..];
                let Some(start) = rest.find('"') else { continue };
                let code = &rest[start + 1..start + 1 + rest[start + 1..].find('"').unwrap()];
                if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !code.is_empty() {
                    assert!(documented.contains(&code), "{code} in {} is not documented", path.display());
                }
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_path_parameters_are_in_their_path() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut ids = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if let Some(id) = operation["operationId"].as_str() {
                    if let Some(first) = ids.insert(id.to_string(), format!("{method} {path}")) {
                        panic!("operationId {id} is used by {first} and {method} {path}");
                    }
                }
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "path" {
                        let name = parameter["name"].as_str().unwrap();
                        assert!(path.contains(&format!("{{{name}}}")), "{method} {path} declares path parameter {name}");
                    }
                }
            }
        }
        assert!(ids.len() > 40, "{} operations with ids", ids.len());
    }

    /// `contract::OPERATIONS` names every operation of the document, once, and no other.
    #[test]
    fn the_contract_describes_every_operation() {
        let raw = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut handlers: Vec<String> = Vec::new();
        for item in raw["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                handlers.push(operation["operationId"].as_str().unwrap().to_string());
            }
        }
        handlers.sort();
        let mut described: Vec<String> = crate::contract::OPERATIONS.iter().map(|o| o.handler.to_string()).collect();
        described.sort();
        assert_eq!(handlers, described);
        let doc = served(&[("CNY".to_string(), 2)], &["sim_gateway".to_string()], &["sim_gateway".to_string()]);
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                assert!(operation["summary"].is_string() && operation["security"].is_array(), "{operation}");
            }
        }
    }

    /// The headers and the webhook a client relies on are in the document (helper 110#6: only
    /// the prose named them): `Idempotent-Replay` on the answers of operations keyed by an
    /// order number (not on an H5 link's, which only echoes one), `Retry-After` where a code
    /// that sends it is answered, and the signed event the webhook posts.
    #[test]
    fn replay_and_retry_headers_and_the_webhook_are_documented() {
        let doc = served(&[("CNY".to_string(), 2)], &["sim_gateway".to_string()], &["sim_gateway".to_string()]);
        let replay = |path: &str, status: &str| doc["paths"][path]["post"]["responses"][status]["headers"].get("Idempotent-Replay").is_some();
        assert!(replay("/v1/payments", "201") && replay("/v1/recharges", "201") && replay("/v1/members", "201") && replay("/v1/accounts", "201"));
        assert!(!replay("/v1/h5/sessions", "201") && !replay("/v1/bulk", "200"));
        // A kept refusal of the ledger (journal format 5) is answered again with the header.
        assert!(replay("/v1/payments", "422") && replay("/v1/withdrawals", "422") && replay("/v1/accounts", "409"));
        assert!(!replay("/v1/payments", "401") && !replay("/v1/payments", "429") && !replay("/v1/h5/sessions", "400"));
        let retry = |path: &str, status: &str| doc["paths"][path]["post"]["responses"][status]["headers"].get("Retry-After").is_some();
        assert!(retry("/v1/payments", "429") && retry("/v1/payments", "503") && retry("/v1/accounts/{account_id}/cards", "422"));
        assert!(!retry("/v1/payments", "422"), "no code of a payment's 422 sends it");
        assert!(!retry("/v1/accounts/{account_id}/cards/{card_id}/verify", "422"), "a card locked by wrong amounts stays locked: no Retry-After");
        let webhook = &doc["webhooks"]["order_event"]["post"];
        assert_eq!(webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Event");
        assert_eq!(webhook["parameters"][0]["name"], "X-Clearing-Signature");
        assert_eq!(doc["components"]["schemas"]["Event"]["required"], serde_json::json!(["event_id", "type", "created_at", "data"]));
    }

    /// Every code the API answers has the shape the document gives `error.code`.
    #[test]
    fn every_error_code_has_the_documented_shape() {
        for code in error_codes() {
            let bytes = code.as_bytes();
            assert!(
                bytes.first().is_some_and(u8::is_ascii_lowercase) && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_'),
                "{code} does not match ^[a-z][a-z0-9_]*$"
            );
        }
    }

    #[test]
    fn a_documented_path_names_its_methods_and_another_path_none() {
        assert_eq!(allowed_methods("/v1/orders/ord_1"), Some("GET"));
        assert_eq!(allowed_methods("/admin/platforms/plt_1/settlement-rule"), Some("GET, PUT, DELETE"));
        assert_eq!(allowed_methods("/v1/nothing-here"), None);
        assert_eq!(allowed_methods("/v1/orders/ord_1/more"), None);
    }

    #[test]
    fn the_document_has_every_route() {
        let doc = ApiDoc::openapi();
        for path in [
            "/v1/payments",
            "/v1/bulk",
            "/v1/accounts/{account_id}/entries",
            "/admin/settlements",
            "/sim/cards/{card_no}/transactions",
            "/admin/platforms/{platform_id}/rotate-secret",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
    }
}
