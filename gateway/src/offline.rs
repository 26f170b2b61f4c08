//! Offline transfers to virtual account numbers (线下转账自动识别入账; the clearing issue, item 5):
//! lines of the bank's statement that credit the master account are matched by the virtual
//! account number they name. A line that names an account able to take it is credited to that
//! account (a confirmed recharge through the `offline_transfer` channel); one that matches
//! nothing goes to a suspense account and becomes a case for an operator, who records how it
//! was resolved, by whom and when. Each line is idempotent by its bank reference. Cases are
//! clearing's (`clearing_actor::cases`, owned by the clearing actor): these handlers ask it to
//! open, list and resolve them.

use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use clearing_actor::cases::{CaseFilter, CaseOpening, Resolution};
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

/// Held by an upload of statement lines from its first line to its last.
static UPLOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How long an upload waits for the one before it (a stuck engine would hold the lock): 503
/// `overloaded` after that.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Key prefix of the lines' notes (`xo/{bank_ref}`, JSON).
const NOTE_PREFIX: &str = "xo/";

/// Where a statement line goes, noted (synced) before the engine books it: a line taken again
/// (a statement uploaded twice, a retry after a 503 or a stop) goes the same way, whatever its
/// account's status or the engine's load is now, and one that names another account or amount
/// is a conflict. Without it a line credited to its account and uploaded again while the
/// account's shard was busy, or with its number garbled, was booked to suspense as well: one
/// bank transfer counted twice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LineNote {
    /// The account the line names (`None`: no virtual account number in it).
    account: Option<u64>,
    currency: u8,
    amount: i64,
    /// Booked (or being booked) to suspense rather than to the account.
    suspense: bool,
}

impl LineNote {
    fn key(bank_ref: &str) -> Vec<u8> {
        format!("{NOTE_PREFIX}{bank_ref}").into_bytes()
    }

    async fn read(store: &Arc<dyn Store>, bank_ref: &str) -> Result<Option<LineNote>, ApiError> {
        let (store, key) = (store.clone(), LineNote::key(bank_ref));
        let value = blocking(move || store.get(&key)).await?.map_err(ApiError::store)?;
        value.map(|bytes| serde_json::from_slice(&bytes).map_err(|_| ApiError::new(500, "internal_error", "a statement line's note is corrupt"))).transpose()
    }

    /// Drops the note of `bank_ref` (one just written for a line the engine found conflicting).
    async fn forget(store: &Arc<dyn Store>, bank_ref: &str) -> Result<(), ApiError> {
        let (store, start) = (store.clone(), LineNote::key(bank_ref));
        let mut end = start.clone();
        end.push(0);
        blocking(move || store.delete_range(&start, &end)).await?.map_err(ApiError::store)
    }

    async fn write(&self, store: &Arc<dyn Store>, bank_ref: &str) -> Result<(), ApiError> {
        let (store, key, note) = (store.clone(), LineNote::key(bank_ref), self.clone());
        blocking(move || crate::records::put(store.as_ref(), &[(key, &note)])).await?
    }
}

/// Refusals of a credit that come from the account (it cannot take the money now): the line
/// goes to suspense. Any other (a busy shard, a bad amount) is the upload's answer, to retry.
fn account_refuses(code: ResultCode) -> bool {
    matches!(
        code,
        ResultCode::AccountNotFound
            | ResultCode::AccountClosed
            | ResultCode::AccountFrozen
            | ResultCode::AccountCreditBlocked
            | ResultCode::CurrencyMismatch
            | ResultCode::BalanceLimitExceeded
    )
}

/// The start of the bank references an offline line may not have: its case id
/// (`case_{bank_ref}`) would be one of the clearing's own (`case_paid_after_failure_…`,
/// `case_paid_by_left_channel_…`).
const RESERVED_REF_PREFIX: &str = "paid_";

/// Credits one statement line, or books it to suspense with a case. Lines are taken one at a
/// time (`UPLOADS`), so a line's note is read and written by one request at once.
async fn take_line(
    engine: &Arc<Engine>,
    clearing: &clearing_actor::Clearing,
    store: &Arc<dyn Store>,
    line: StatementLine,
) -> Result<serde_json::Value, ApiError> {
    let number = OutOrderNo::new(&line.bank_ref).ok_or_else(|| ApiError::invalid("bank_ref is 1 to 64 characters [A-Za-z0-9_-]", "bank_ref"))?;
    // A line's case is `case_{bank_ref}`: a reference that would name one of the clearing's own
    // cases (`case_paid_…`: a payout paid twice, whose case being open already means its hold
    // is not placed) is refused before anything is taken (helper 98, session 62).
    if line.bank_ref.starts_with(RESERVED_REF_PREFIX) {
        return Err(ApiError::invalid("bank_ref must not start with \"paid_\" (the clearing's own cases' ids)", "bank_ref"));
    }
    let (currency_id, spec) = currency(engine, &line.currency)?;
    // Banks pad amounts with zeros ("000100.50"); the API's amounts have none, a statement's may.
    let unpadded = match line.amount.trim_start_matches('0') {
        rest if rest.len() == line.amount.len() => line.amount.as_str(),
        // Keep one zero before the point ("0000.5" is "0.5") or of a zero ("00" is "0").
        rest if rest.is_empty() || rest.starts_with('.') => &line.amount[line.amount.len() - rest.len() - 1..],
        rest => rest,
    };
    let amount = crate::orders::amount(unpadded, &spec, "amount")?;
    let named = parse_virtual_account_no(line.virtual_account_no.trim());
    let shard = (xxhash_rust::xxh3::xxh3_64(line.bank_ref.as_bytes()) % engine.config().shard_count as u64) as u16;
    let mut note = LineNote { account: named.map(|account| account.0), currency: currency_id.0, amount, suspense: named.is_none() };
    let mut noted_now = false;
    match LineNote::read(store, &line.bank_ref).await? {
        Some(noted) if LineNote { suspense: note.suspense, ..noted.clone() } != note => {
            return Err(ApiError::new(409, "idempotency_conflict", "this bank_ref was taken with other content"));
        }
        Some(noted) => note = noted,
        None => {
            // A line taken before notes were kept: one already booked to suspense stays there,
            // even if its account could take it now.
            let suspense_scope = Command::CreditSuspense { shard, currency: currency_id, amount }.idempotency_scope();
            let key = engine::ledger::command::idempotency_key(0, suspense_scope, &number);
            let reading = engine.clone();
            note.suspense |= blocking(move || reading.idempotency_record(shard, key).map(|record| record.is_some_and(|record| record.reply.is_ok()))).await??;
            note.write(store, &line.bank_ref).await?;
            noted_now = true;
        }
    }
    if let (Some(account), false) = (named, note.suspense) {
        let command = Command::Recharge { account, currency: currency_id, amount, channel: OFFLINE_CHANNEL };
        let reply = execute(engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
        if reply.is_ok() {
            return Ok(
                json!({"bank_ref": line.bank_ref, "status": "credited", "account_id": public_account_id(account), "order_id": public_order_id(OrderId(reply.id)), "replayed": reply.replayed}),
            );
        }
        if reply.code == ResultCode::IdempotencyConflict {
            // A line taken before notes were kept, with other content: its note is not this.
            if noted_now {
                LineNote::forget(store, &line.bank_ref).await?;
            }
            return Err(ApiError::new(409, "idempotency_conflict", "this bank_ref was taken with other content"));
        }
        if !account_refuses(reply.code) {
            return Err(crate::error::refused(&reply));
        }
        // Noted before it is booked: taken again, the line goes to suspense again.
        note.suspense = true;
        note.write(store, &line.bank_ref).await?;
    }
    let reason = match named {
        None => "no virtual account number".to_string(),
        Some(account) => format!("{} cannot take the credit (unknown, closed, blocked or another currency)", public_account_id(account)),
    };
    let case_id = format!("case_{}", line.bank_ref);
    let command = Command::CreditSuspense { shard, currency: currency_id, amount };
    let reply = execute(engine, Envelope { platform: 0, out_order_no: Some(number), command }).await?;
    if !reply.is_ok() {
        if noted_now && reply.code == ResultCode::IdempotencyConflict {
            LineNote::forget(store, &line.bank_ref).await?;
        }
        return Err(crate::error::refused(&reply));
    }
    // Opened once: a replayed line finds its case (and opens it if a crash came in between).
    let opening = CaseOpening { case_id: case_id.clone(), line: serde_json::to_value(&line).expect("lines serialize"), reason: reason.clone() };
    clearing.open_cases(vec![opening]).await?;
    Ok(json!({"bank_ref": line.bank_ref, "status": "suspense", "case_id": case_id, "reason": reason, "replayed": reply.replayed}))
}

/// `POST /admin/offline-transfers {lines}`: the bank statement's credit lines, one result each.
#[utoipa::path(post, path = "/admin/offline-transfers", tag = "operator", request_body = crate::offline::TransfersBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/offline-transfers")]
pub async fn offline_transfers(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<clearing_actor::Clearing>,
    store: web::Data<Arc<dyn Store>>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: TransfersBody = crate::signed::parse_json(&body)?;
    if body.lines.is_empty() || body.lines.len() > LINES_MAX {
        return Err(ApiError::invalid("1 to 8189 lines per request", "lines"));
    }
    // One statement at a time: a line is checked for suspense, then credited to its account or
    // booked to suspense (two order numbers of two scopes); two uploads of one line at once, the
    // account's status changing in between, could do both (one bank transfer credited twice).
    let Ok(_one_at_a_time) = actix_web::rt::time::timeout(UPLOAD_WAIT, UPLOADS.lock()).await else {
        return Err(ApiError::overloaded("another statement upload is being taken; try again when it has finished"));
    };
    let mut results = Vec::with_capacity(body.lines.len());
    for line in body.lines {
        let bank_ref = line.bank_ref.clone();
        let (currency, amount) = (line.currency.clone(), line.amount.clone());
        results.push(match take_line(&engine, &clearing, &store, line).await {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CasesQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/cases?status=&limit=&cursor=`: money in suspense and reconciliation differences
/// waiting for (or resolved by) an operator, by case id, a page at a time (`status` open,
/// resolved or all, the default; `limit` 1-500, default 50; `cursor` the `next_cursor` of the
/// previous page).
#[utoipa::path(get, path = "/admin/cases", tag = "operator", params(("status" = Option<String>, Query, description = "open, resolved or all (default)"), ("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[get("/admin/cases")]
pub async fn list_cases(request: HttpRequest, token: web::Data<AdminToken>, clearing: web::Data<clearing_actor::Clearing>) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let query = web::Query::<CasesQuery>::from_query(request.query_string()).map_err(|e| ApiError::invalid(&e.to_string(), "query"))?.into_inner();
    let filter = match query.status.as_deref() {
        None => CaseFilter::All,
        Some(text) => CaseFilter::parse(text).ok_or_else(|| ApiError::invalid("status is open, resolved or all", "status"))?,
    };
    let limit = crate::orders::page_limit(query.limit.as_deref())?;
    if query.cursor.as_ref().is_some_and(|cursor| cursor.is_empty() || cursor.len() > 512) {
        return Err(ApiError::invalid("cursor is the next_cursor of the previous page", "cursor"));
    }
    let page = clearing.cases_page(filter, query.cursor, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    /// What was done (e.g. "returned to the payer's bank, ref ...").
    resolution: String,
    /// Who did it.
    operator: String,
    /// What becomes of the case's hold, if it has one (a payout the bank says it paid after it
    /// failed; a credited recharge a bank statement says failed): `release` (the default: back
    /// to the account) or `capture` (into suspense: the member was paid on its card, or the
    /// recharge's money never came). On a case of a channel a payout left that says it paid it
    /// (`case_paid_by_left_channel_`), `release` said also finds that channel's word wrong: the
    /// payout may go on to another channel. Not said, it goes no further, and a failure for good
    /// is held under a case of its own.
    #[serde(default)]
    hold: Option<String>,
}

/// `POST /admin/cases/{case_id}/resolve`: records how a case was resolved, by whom and when.
#[utoipa::path(post, path = "/admin/cases/{case_id}/resolve", tag = "operator", request_body = crate::offline::ResolveBody, params(("case_id" = String, Path, description = "Case id")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/cases/{case_id}/resolve")]
pub async fn resolve_case(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: ResolveBody = crate::signed::parse_json(&body)?;
    // Clearing checks the lengths (1-1024 and 1-128 bytes) and that the case is still open.
    let fate = match body.hold.as_deref() {
        None => None,
        Some("release") => Some(clearing_actor::cases::HoldFate::Release),
        Some("capture") => Some(clearing_actor::cases::HoldFate::Capture),
        Some(_) => return Err(ApiError::invalid("hold is release or capture", "hold")),
    };
    let resolution = Resolution { resolution: body.resolution, operator: body.operator };
    let case = match fate {
        Some(fate) => clearing.resolve_case_with(path.into_inner(), resolution, fate).await?,
        None => clearing.resolve_case(path.into_inner(), resolution).await?,
    };
    Ok(HttpResponse::Ok().json(case))
}

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(offline_transfers).service(list_cases).service(resolve_case);
}
