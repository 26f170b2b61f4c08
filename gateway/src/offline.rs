//! Offline transfers to virtual account numbers (线下转账自动识别入账; the clearing issue, item 5):
//! lines of the bank's statement that credit the master account are matched by the virtual
//! account number they name. A line that names an account able to take it is credited to that
//! account (a confirmed recharge through the `offline_transfer` channel); one that matches
//! nothing goes to a suspense account and becomes a case for an operator, who records how it
//! was resolved, by whom and when. Each line is idempotent by its bank reference.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use engine::ledger::command::{Command, Envelope, OutOrderNo};
use engine::ledger::types::OrderId;
use engine::result::ResultCode;
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use storage::Store;

use crate::accounts::{execute, parse_virtual_account_no, public_account_id};
use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};
use crate::orders::{currency, public_order_id};

/// The channel number offline transfers are recorded under.
pub use clearing_actor::channels::OFFLINE_CHANNEL;
/// Statement lines one request may carry.
pub const LINES_MAX: usize = 8189;
const PREFIX: &str = "k/";

/// One line of the bank statement that credits the master account.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementLine {
    /// The bank's own reference of the line (unique per line; 1-64 [A-Za-z0-9_-]).
    pub bank_ref: String,
    /// What the payer wrote as the beneficiary account (a virtual account number, or anything).
    pub virtual_account_no: String,
    pub amount: String,
    pub currency: String,
    pub payer_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransfersBody {
    lines: Vec<StatementLine>,
}

/// A case for an operator: money in suspense.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    pub case_id: String,
    /// The statement line (or order) the case is about.
    pub line: serde_json::Value,
    pub reason: String,
    /// `open` or `resolved`.
    pub status: String,
    pub created_at: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
}

/// Every case, loaded at start and written through.
pub struct Cases {
    store: Arc<dyn Store>,
    by_id: Mutex<BTreeMap<String, Case>>,
}

impl Cases {
    /// Loads every stored case.
    pub fn load(store: Arc<dyn Store>) -> Result<Cases, String> {
        let by_id = crate::records::load_all::<Case>(store.as_ref(), PREFIX.as_bytes())?.into_iter().map(|(_, c)| (c.case_id.clone(), c)).collect();
        Ok(Cases { store, by_id: Mutex::new(by_id) })
    }

    /// Opens a case unless one with its id exists (re-runs open nothing twice); true if opened.
    pub fn open(&self, case_id: String, line: serde_json::Value, reason: String) -> Result<bool, ApiError> {
        if self.by_id.lock().expect("cases lock").contains_key(&case_id) {
            return Ok(false);
        }
        self.save(Case { case_id, line, reason, status: "open".into(), created_at: now_text(), resolution: None, resolved_by: None, resolved_at: None })?;
        Ok(true)
    }

    fn save(&self, case: Case) -> Result<(), ApiError> {
        crate::records::put(self.store.as_ref(), &[(format!("{PREFIX}{}", case.case_id).into_bytes(), &case)])?;
        self.by_id.lock().expect("cases lock").insert(case.case_id.clone(), case);
        Ok(())
    }
}

fn now_text() -> String {
    crate::orders::format_time(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64))
}

/// Credits one statement line, or books it to suspense with a case.
async fn take_line(engine: &Arc<Engine>, cases: &Arc<Cases>, line: StatementLine) -> Result<serde_json::Value, ApiError> {
    let number = OutOrderNo::new(&line.bank_ref).ok_or_else(|| ApiError::invalid("bank_ref is 1 to 64 characters [A-Za-z0-9_-]", "bank_ref"))?;
    let (currency_id, spec) = currency(engine, &line.currency)?;
    let amount = crate::orders::amount(&line.amount, &spec, "amount")?;
    let named = parse_virtual_account_no(line.virtual_account_no.trim());
    let shard = (xxhash_rust::xxh3::xxh3_64(line.bank_ref.as_bytes()) % engine.config().shard_count as u64) as u16;
    // A line already booked to suspense stays there, even if its account could take it now.
    let suspense_scope = Command::CreditSuspense { shard, currency: currency_id, amount }.idempotency_scope();
    let key = engine::ledger::command::idempotency_key(0, suspense_scope, &number);
    let reading = engine.clone();
    let in_suspense = blocking(move || reading.read_shard(shard, move |state| state.idempotency.get(&key).is_some())).await??;
    if let (Some(account), false) = (named, in_suspense) {
        let command = Command::Recharge { account, currency: currency_id, amount, channel: OFFLINE_CHANNEL };
        let reply = execute(engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
        if reply.is_ok() {
            return Ok(
                json!({"bank_ref": line.bank_ref, "status": "credited", "account_id": public_account_id(account), "order_id": public_order_id(OrderId(reply.id)), "replayed": reply.replayed}),
            );
        }
        if reply.code == ResultCode::IdempotencyConflict {
            return Err(ApiError::new(409, "idempotency_conflict", "this bank_ref was taken with other content"));
        }
    }
    let reason = match named {
        None => "no virtual account number".to_string(),
        Some(account) => format!("{} cannot take the credit (unknown, closed, blocked or another currency)", public_account_id(account)),
    };
    let case_id = format!("case_{}", line.bank_ref);
    let command = Command::CreditSuspense { shard, currency: currency_id, amount };
    let reply = execute(engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
    if !reply.is_ok() {
        return Err(crate::orders::rejection(reply.code));
    }
    if !reply.replayed || !cases.by_id.lock().expect("cases lock").contains_key(&case_id) {
        let case = Case {
            case_id: case_id.clone(),
            line: serde_json::to_value(&line).expect("lines serialize"),
            reason: reason.clone(),
            status: "open".into(),
            created_at: now_text(),
            resolution: None,
            resolved_by: None,
            resolved_at: None,
        };
        let cases = cases.clone();
        blocking(move || cases.save(case)).await??;
    }
    Ok(json!({"bank_ref": line.bank_ref, "status": "suspense", "case_id": case_id, "reason": reason, "replayed": reply.replayed}))
}

/// `POST /admin/offline-transfers {lines}`: the bank statement's credit lines, one result each.
#[utoipa::path(post, path = "/admin/offline-transfers", tag = "operator", request_body = crate::offline::TransfersBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/offline-transfers")]
pub async fn offline_transfers(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    cases: web::Data<Arc<Cases>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: TransfersBody = crate::v1::parse_json(&body)?;
    if body.lines.is_empty() || body.lines.len() > LINES_MAX {
        return Err(ApiError::invalid("1 to 8189 lines per request", "lines"));
    }
    let mut results = Vec::with_capacity(body.lines.len());
    for line in body.lines {
        let bank_ref = line.bank_ref.clone();
        let (currency, amount) = (line.currency.clone(), line.amount.clone());
        results.push(match take_line(&engine, &cases, line).await {
            Ok(result) => {
                // The (simulated) bank's reserve account shows the money that arrived.
                if let Some((spec, minor)) = crate::orders::currency(&engine, &currency).ok().and_then(|(_, spec)| Some((spec, spec.parse(&amount)?))) {
                    clearing.bank().transfer_in(&spec, &bank_ref, minor);
                }
                result
            }
            Err(error) if error.status < 500 => json!({"bank_ref": bank_ref, "status": "refused", "error": {"code": error.code, "message": error.message}}),
            Err(error) => return Err(error),
        });
    }
    Ok(HttpResponse::Ok().json(json!({"results": results})))
}

/// `GET /admin/cases`: money in suspense waiting for (or resolved by) an operator.
#[utoipa::path(get, path = "/admin/cases", tag = "operator", responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/cases")]
pub async fn list_cases(request: HttpRequest, token: web::Data<AdminToken>, cases: web::Data<Arc<Cases>>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let all: Vec<Case> = cases.by_id.lock().expect("cases lock").values().cloned().collect();
    Ok(HttpResponse::Ok().json(json!({"cases": all})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    /// What was done (e.g. "returned to the payer's bank, ref ...").
    resolution: String,
    /// Who did it.
    operator: String,
}

/// `POST /admin/cases/{case_id}/resolve`: records how a case was resolved, by whom and when.
#[utoipa::path(post, path = "/admin/cases/{case_id}/resolve", tag = "operator", request_body = crate::offline::ResolveBody, params(("case_id" = String, Path, description = "Case id")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/cases/{case_id}/resolve")]
pub async fn resolve_case(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    cases: web::Data<Arc<Cases>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: ResolveBody = crate::v1::parse_json(&body)?;
    if body.resolution.trim().is_empty() || body.operator.trim().is_empty() || body.resolution.len() > 1024 || body.operator.len() > 128 {
        return Err(ApiError::invalid("resolution (1-1024 bytes) and operator (1-128 bytes) are required", "resolution"));
    }
    let mut case = cases.by_id.lock().expect("cases lock").get(path.as_str()).cloned().ok_or_else(ApiError::not_found)?;
    if case.status == "resolved" {
        return Err(ApiError::new(409, "order_state_invalid", "the case is already resolved"));
    }
    case.status = "resolved".into();
    case.resolution = Some(body.resolution);
    case.resolved_by = Some(body.operator);
    case.resolved_at = Some(now_text());
    let (saving, saved) = (cases.get_ref().clone(), case.clone());
    blocking(move || saving.save(saved)).await??;
    Ok(HttpResponse::Ok().json(case))
}

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(offline_transfers).service(list_cases).service(resolve_case);
}
