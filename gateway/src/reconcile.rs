//! Reconciliation (the clearing issue, item 4): a channel's statement file of a business date
//! against the engine's channel ledger (the orders that went through that channel). Each line is
//! matched by order id and classified: matched; missing on our side (长款: the bank has it, we do
//! not); missing on theirs (短款: we have a final order the bank does not list); amount or status
//! mismatch, and fee mismatch (the bank's fee column against what we charged a payout, or the
//! channel's tariff for money in). Lines missing on our side are carried to the next days (`r/carry/...`) before they
//! are declared; the safe case (our order still pending or processing, the bank's verdict
//! final) is resolved automatically by applying the verdict; everything else becomes a case for
//! an operator. Re-running a date opens no case twice.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{post, web, HttpRequest, HttpResponse};
use engine::ledger::command::{Command, Envelope};
use engine::ledger::types::{OrderDetail, OrderId, OrderKind, OrderStatus};
use engine::money::{CurrencySpec, Minor};
use engine::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use storage::Store;

use crate::admin::AdminToken;
use crate::error::{blocking, ApiError};
use crate::offline::Cases;
use crate::orders::{parse_order_id, public_order_id};

/// Days a line missing on our side is carried before it becomes a case.
pub const CARRY_DAYS: u32 = 2;
/// Lines one file may hold.
pub const LINES_MAX: usize = 2_000_000;

/// One statement line (the bank crate's: the simulator writes the same lines).
pub use bank::StatementLine as Line;

#[derive(Serialize, Deserialize)]
struct Carried {
    line: Line,
    first_day: u32,
    /// Declared missing on our side (a case is open): a re-run of an earlier date that lists
    /// the line again does not carry it again.
    #[serde(default)]
    declared: bool,
}

/// Parses a statement file (UTF-8 or GBK; a header naming the columns, then one line per order).
pub fn parse_file(bytes: &[u8]) -> Result<Vec<Line>, ApiError> {
    bank::statement::parse(bytes).map_err(|error| ApiError::invalid(&error.to_string(), "file"))
}

/// What reconciliation needs of one of our orders.
#[derive(Clone, Copy)]
struct Ours {
    amount: Minor,
    /// The fee we charged a payout (money in: `None`, the channel's tariff applies).
    fee: Option<Minor>,
    status: OrderStatus,
    withdrawal: bool,
    created_day: u32,
    spec: CurrencySpec,
}

use clearing_actor::settlement::channel_of;

/// The bank's verdict seen from our side: pending, or final success/failure.
fn our_verdict(ours: &Ours) -> Option<bool> {
    match ours.status {
        OrderStatus::Pending | OrderStatus::Processing => None,
        OrderStatus::Failed => Some(false),
        _ => Some(true),
    }
}

/// Reconciles `file` for `channel` and business day `day`. Blocking (reads shards, may apply verdicts).
pub fn reconcile(
    engine: &Engine,
    cases: &Cases,
    store: &dyn Store,
    channels: &clearing_actor::channels::ChannelSet,
    channel: u16,
    day: u32,
    file: &[u8],
) -> Result<Value, ApiError> {
    let tariff = channels.get(channel);
    // Each line with the day it was first seen (if carried before) and whether it was declared.
    let mut lines: Vec<(Line, Option<u32>, bool)> = parse_file(file)?.into_iter().map(|l| (l, None, false)).collect();
    let carry_prefix = format!("r/carry/{channel:05}/");
    // A carry that ended is kept as null (the store has no deletes). A line in today's file
    // that was carried keeps the day it was first seen.
    let mut in_file: HashMap<String, usize> = lines.iter().enumerate().map(|(index, (l, _, _))| (l.bank_ref.clone(), index)).collect();
    for (_, carried) in crate::records::load_all::<Option<Carried>>(store, carry_prefix.as_bytes()).map_err(ApiError::unavailable)? {
        let Some(carried) = carried else { continue };
        match in_file.get(&carried.line.bank_ref) {
            Some(index) => (lines[*index].1, lines[*index].2) = (Some(carried.first_day), carried.declared),
            None if carried.declared => {}
            None => {
                in_file.insert(carried.line.bank_ref.clone(), lines.len());
                lines.push((carried.line, Some(carried.first_day), false));
            }
        }
    }
    // Our channel ledger: every order through this channel (all days: a carried line may name
    // an older one), with its business day.
    let offset = engine.config().utc_offset_seconds as i64;
    let mut ours: HashMap<u64, Ours> = HashMap::new();
    for shard in 0..engine.config().shard_count {
        let part = engine.read_shard(shard, move |state| {
            state
                .orders
                .iter()
                .filter(|o| channel_of(&o.detail) == Some(channel))
                .map(|o| {
                    let created_day = ((o.created_at / 1_000_000) as i64 + offset).div_euclid(86_400) as u32;
                    let spec = state.currencies[o.currency.0 as usize];
                    let fee = match o.detail {
                        OrderDetail::Withdrawal { fee, .. } => Some(fee),
                        _ => None,
                    };
                    (o.id.0, Ours { amount: o.amount, fee, status: o.status, withdrawal: o.kind == OrderKind::Withdrawal, created_day, spec })
                })
                .collect::<Vec<_>>()
        })?;
        ours.extend(part);
    }
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    let mut details: Vec<Value> = Vec::new();
    let mut note = |class: &'static str, detail: Value, details: &mut Vec<Value>| {
        *counts.entry(class).or_default() += 1;
        if class != "matched" && details.len() < 1000 {
            details.push(json!({"class": class, "detail": detail}));
        }
    };
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut puts: Vec<(Vec<u8>, Carried)> = Vec::new();
    let mut deletes: Vec<Vec<u8>> = Vec::new();
    for (line, carried_since, declared) in lines {
        let carry_key = format!("{carry_prefix}{}", line.bank_ref).into_bytes();
        let found = parse_order_id(&line.order_id).and_then(|id| ours.get(&id.0).copied().map(|o| (id, o)));
        let Some((id, order)) = found else {
            let first_day = carried_since.unwrap_or(day).min(day);
            if declared || day.saturating_sub(first_day) >= CARRY_DAYS {
                let case_id = format!("recon_{channel}_{}", line.bank_ref);
                cases.open(
                    case_id.clone(),
                    serde_json::to_value(&line).expect("lines serialize"),
                    "missing on our side (长款): the bank lists an order we do not have".into(),
                )?;
                note("missing_ours", json!({"bank_ref": line.bank_ref, "case_id": case_id}), &mut details);
                if !declared {
                    puts.push((carry_key, Carried { line, first_day, declared: true }));
                }
            } else {
                note("carried", json!({"bank_ref": line.bank_ref, "first_seen": clearing_actor::calendar::date_text(first_day)}), &mut details);
                puts.push((carry_key, Carried { line, first_day, declared: false }));
            }
            continue;
        };
        seen.insert(id.0);
        if carried_since.is_some() {
            deletes.push(carry_key);
        }
        let theirs_ok = line.status == "succeeded";
        let amount = crate::parse_amount(&line.amount, &order.spec).ok();
        if amount != Some(order.amount) {
            let case_id = format!("recon_{channel}_{}", line.bank_ref);
            let reason = format!("amount mismatch: ours {}, theirs {}", order.spec.format(order.amount), line.amount);
            cases.open(case_id.clone(), serde_json::to_value(&line).expect("lines serialize"), reason)?;
            note("amount_mismatch", json!({"bank_ref": line.bank_ref, "order_id": line.order_id, "case_id": case_id}), &mut details);
            continue;
        }
        if let Some(their_fee) = &line.fee {
            // A failed order costs nothing; otherwise the fee we charged (payouts) or the
            // channel's tariff (money in).
            let ours_fee = if !theirs_ok { 0 } else { order.fee.unwrap_or_else(|| tariff.as_ref().map_or(0, |c| c.fee(order.amount))) };
            if order.spec.parse(their_fee) != Some(ours_fee) {
                let case_id = format!("recon_{channel}_{}", line.bank_ref);
                let reason = format!("fee mismatch: ours {}, theirs {their_fee}", order.spec.format(ours_fee));
                cases.open(case_id.clone(), serde_json::to_value(&line).expect("lines serialize"), reason)?;
                note("fee_mismatch", json!({"bank_ref": line.bank_ref, "order_id": line.order_id, "case_id": case_id}), &mut details);
                continue;
            }
        }
        match our_verdict(&order) {
            Some(ok) if ok == theirs_ok => note("matched", Value::Null, &mut details),
            Some(_) => {
                let case_id = format!("recon_{channel}_{}", line.bank_ref);
                let reason = format!("status mismatch: ours {}, theirs {}", order.status.name(), line.status);
                cases.open(case_id.clone(), serde_json::to_value(&line).expect("lines serialize"), reason)?;
                note("status_mismatch", json!({"bank_ref": line.bank_ref, "order_id": line.order_id, "case_id": case_id}), &mut details);
            }
            None => {
                // The safe case: we wait, the bank has decided. Apply its verdict.
                let command = if order.withdrawal {
                    Command::CompleteWithdrawal { order: id, succeeded: theirs_ok }
                } else {
                    Command::CompleteRecharge { order: id, succeeded: theirs_ok }
                };
                let reply = engine.execute_one(Envelope { platform: 0, out_order_no: None, command })?;
                note("auto_resolved", json!({"order_id": public_order_id(OrderId(id.0)), "status": reply.status.map(|s| s.name())}), &mut details);
            }
        }
    }
    // Our final orders of the day the bank does not list.
    let mut missing: Vec<(&u64, &Ours)> = ours.iter().filter(|(id, o)| o.created_day == day && !seen.contains(id)).collect();
    missing.sort_by_key(|(id, _)| **id);
    for (id, order) in missing {
        let order_id = public_order_id(OrderId(*id));
        if our_verdict(order).is_none() {
            note("awaiting_bank", json!({"order_id": order_id}), &mut details);
            continue;
        }
        let case_id = format!("recon_{channel}_{order_id}");
        let line = json!({"order_id": order_id, "amount": order.spec.format(order.amount), "status": order.status.name()});
        cases.open(case_id.clone(), line, "missing on their side (短款): our order is not on the bank's statement".into())?;
        note("missing_theirs", json!({"order_id": order_id, "case_id": case_id}), &mut details);
    }
    let pairs: Vec<(Vec<u8>, &Carried)> = puts.iter().map(|(k, v)| (k.clone(), v)).collect();
    if !pairs.is_empty() {
        crate::records::put(store, &pairs)?;
    }
    if !deletes.is_empty() {
        // A carried line that matched (or was declared) is no longer carried.
        let done: Vec<(Vec<u8>, Value)> = deletes.into_iter().map(|k| (k, Value::Null)).collect();
        let refs: Vec<(Vec<u8>, &Value)> = done.iter().map(|(k, v)| (k.clone(), v)).collect();
        crate::records::put(store, &refs)?;
    }
    let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    Ok(json!({"channel": channels.name(channel), "business_date": clearing_actor::calendar::date_text(day), "counts": counts, "details": details}))
}

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
#[utoipa::path(post, path = "/admin/reconciliations", tag = "operator", request_body = crate::reconcile::ReconcileBody, responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[post("/admin/reconciliations")]
pub async fn reconcile_endpoint(
    request: HttpRequest,
    body: web::Bytes,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    cases: web::Data<Arc<Cases>>,
    store: web::Data<Arc<dyn Store>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    token.check(&request)?;
    let body: ReconcileBody = crate::v1::parse_json(&body)?;
    let channels = clearing.channels();
    let channel = channels.by_name(&body.channel).map(|c| c.id).ok_or_else(|| ApiError::invalid("unknown channel", "channel"))?;
    let day = clearing_actor::calendar::parse_date(&body.business_date).ok_or_else(|| ApiError::invalid("business_date is YYYY-MM-DD", "business_date"))?;
    let (engine, cases, store) = (engine.get_ref().clone(), cases.get_ref().clone(), store.get_ref().clone());
    let summary = blocking(move || reconcile(&engine, &cases, store.as_ref(), &channels, channel, day, body.file.as_bytes())).await??;
    Ok(HttpResponse::Ok().json(summary))
}

/// Registers the route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(reconcile_endpoint).service(reserve_check);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_files_table() {
        let good = "bank_ref,order_id,direction,amount,status\nB1,ord_3,out,10.00,succeeded\n\n";
        assert_eq!(parse_file(good.as_bytes()).unwrap().len(), 1);
        let header = "bank_ref,order_id,direction,amount,status\n";
        for bad in ["h\nB1,ord_3,out,10.00".to_string(), format!("{header}B1,ord_3,sideways,10.00,succeeded"), format!("{header}B1,ord_3,out,10.00,maybe")] {
            assert!(parse_file(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
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
#[utoipa::path(get, path = "/admin/reserve", tag = "operator", params(("currency" = String, Query, description = "Currency code"), ("bank_balance" = Option<String>, Query, description = "The bank's balance of the reserve account")), responses((status = 200, description = "Success", body = Object), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::openapi::ErrorBody)), security(("operator_token" = [])))]
#[actix_web::get("/admin/reserve")]
pub async fn reserve_check(
    request: HttpRequest,
    query: web::Query<ReserveQuery>,
    token: web::Data<AdminToken>,
    engine: web::Data<Arc<Engine>>,
    clearing: web::Data<clearing_actor::Clearing>,
) -> Result<HttpResponse, ApiError> {
    use engine::ledger::types::{AccountKind, SystemRole};
    token.check(&request)?;
    let (currency_id, spec) = crate::orders::currency(&engine, &query.currency)?;
    let bank = match (&query.bank_balance, query.bank.as_deref()) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("bank_balance or bank, not both", "bank")),
        (Some(balance), None) => Some(spec.parse(balance).ok_or_else(|| ApiError::invalid("bank_balance is an amount", "bank_balance"))?),
        (None, Some("simulator")) => {
            let bank = clearing.bank().clone();
            let (balance, _) = blocking(move || bank.reserve_balance(&spec)).await?.map_err(|e| ApiError::unavailable(e.to_string()))?;
            Some(balance)
        }
        (None, Some(_)) => return Err(ApiError::invalid("bank is simulator", "bank")),
        (None, None) => None,
    };
    // Per shard: [customer funds, then each system role], as balances (credit positive).
    let roles = SystemRole::ALL.len();
    let mut totals = vec![0i128; roles + 1];
    for shard in 0..engine.config().shard_count {
        let engine = engine.get_ref().clone();
        let part = blocking(move || {
            engine.read_shard(shard, move |state| {
                let mut sums = vec![0i128; roles + 1];
                for account in state.accounts.iter().filter(|a| a.currency == currency_id) {
                    let slot = match account.kind {
                        AccountKind::Customer => 0,
                        AccountKind::System(role) => 1 + role.index(),
                    };
                    sums[slot] += account.total() as i128;
                }
                sums
            })
        })
        .await??;
        for (total, value) in totals.iter_mut().zip(part) {
            *total += value;
        }
    }
    let role = |r: SystemRole| totals[1 + r.index()];
    let reserve = -role(SystemRole::Reserve);
    let liabilities = totals[0]
        + role(SystemRole::InTransit)
        + role(SystemRole::Escrow)
        + role(SystemRole::PayoutPending)
        + role(SystemRole::FeeIncome)
        + role(SystemRole::Suspense);
    let money = |v: i128| spec.format(v as Minor);
    let mut body = json!({
        "currency": spec.code_str(),
        "reserve": money(reserve),
        "customer_funds": money(totals[0]),
        "in_transit": money(role(SystemRole::InTransit)),
        "escrow": money(role(SystemRole::Escrow)),
        "payouts_sent": money(role(SystemRole::PayoutPending)),
        "fees": money(role(SystemRole::FeeIncome)),
        "suspense": money(role(SystemRole::Suspense)),
        "ok": reserve == liabilities,
    });
    if let Some(bank) = bank {
        body["bank_balance"] = json!(money(bank as i128));
        body["difference"] = json!(money(bank as i128 - reserve));
        body["ok"] = json!(reserve == liabilities && bank as i128 == reserve);
    }
    Ok(HttpResponse::Ok().json(body))
}
