//! Reconciliation and the reserve check over HTTP (the clearing issue, item 4): the request
//! types and handlers. The work is clearing's: `clearing_actor::reconcile` classifies a
//! channel's statement file against our channel ledger (the clearing actor runs it on a worker
//! thread and opens the cases it finds), `clearing_actor::reserve` computes the reserve figures.

use actix_web::{post, web, HttpRequest, HttpResponse};
use clearing_actor::reserve::BankFigure;
use engine::Engine;
use serde::Deserialize;
use std::sync::Arc;

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileBody {
    /// Channel name.
    channel: String,
    business_date: String,
    /// The statement file's text (CSV with a header).
    file: String,
}

/// `POST /admin/reconciliations {channel, business_date, file}`.
#[utoipa::path(post, path = "/admin/reconciliations", tag = "operator", request_body = crate::reconcile::ReconcileBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/reconciliations")]
pub async fn reconcile_endpoint(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: ReconcileBody = crate::signed::parse_json(&body)?;
    let channel = clearing.channels().by_name(&body.channel).map(|c| c.id).ok_or_else(|| ApiError::invalid("unknown channel", "channel"))?;
    let day = clearing_actor::calendar::parse_date(&body.business_date).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let report = clearing.reconcile(channel, day, body.file.into_bytes()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(reconcile_endpoint).service(reserve_check);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveQuery {
    currency: String,
    /// The balance of the master (reserve) account on the bank's statement, to compare.
    bank_balance: Option<String>,
    /// `simulator`: take the bank's balance from the bank simulator's reserve account instead.
    bank: Option<String>,
}

/// `GET /admin/reserve?currency=&bank_balance=`: the reserve check. Our reserve (money the bank
/// holds for us, by our books) must equal customer funds + in transit + escrow + payouts sent +
/// fees + suspense; with the bank's own figure it also shows the difference to explain.
#[utoipa::path(get, path = "/admin/reserve", tag = "operator", params(("currency" = String, Query, description = "Currency code"), ("bank_balance" = Option<String>, Query, description = "The bank's balance of the reserve account")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::get("/admin/reserve")]
pub async fn reserve_check(
    request: HttpRequest,
    query: web::Query<ReserveQuery>,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let (currency, _) = crate::orders::currency(&engine, &query.currency)?;
    match (&query.bank_balance, query.bank.as_deref()) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("bank_balance or bank, not both", "bank")),
        (None, Some(bank)) if bank != "simulator" => return Err(ApiError::invalid("bank is simulator", "bank")),
        _ => {}
    }
    let (engine, bank, query) = (engine.get_ref().clone(), clearing.bank().clone(), query.into_inner());
    let report = blocking(move || {
        let figure = match (&query.bank_balance, &query.bank) {
            (Some(stated), _) => BankFigure::Stated(stated),
            (None, Some(_)) => BankFigure::Bank(bank.as_ref()),
            (None, None) => BankFigure::None,
        };
        clearing_actor::reserve::check(&engine, currency, figure)
    })
    .await??;
    Ok(HttpResponse::Ok().json(report))
}
