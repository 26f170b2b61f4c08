//! `GET /v1/accounts/{account_id}/entries?limit=&cursor=` (API.md): the journal lines of one
//! account, newest first. Lines are read from the journal itself: the shard knows which batches
//! hold postings of each account (`ShardState::batches_of`), so a page reads only those batches.
//! `balance_after` is the bucket's balance after the line, computed backwards from the balance
//! now; the cursor carries where the page ended and the three bucket balances at that point.

use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use engine::journal::{batch_key, decode};
use engine::ledger::types::{AccountId, AccountKind, Bucket, EntryKind, NO_ORDER};
use engine::money::Minor;
use engine::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use storage::Store;

use crate::accounts::parse_account_id;
use crate::error::{blocking, ApiError};
use crate::orders::{format_time, page_limit, public_order_id};
use crate::signed::Signed;

/// Journal batches one page reads at most before it answers (with a cursor to go on).
const BATCHES_PER_PAGE_MAX: usize = 256;

/// Where a page ends: lines strictly before posting `index` of batch `sequence`, and the
/// settled, unsettled and frozen balances right after the line before that point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    sequence: u64,
    index: usize,
    balances: [Minor; 3],
}

impl Cursor {
    /// `sequence-index-settled-unsettled-frozen-tag`: the tag (an HMAC under the master key,
    /// bound to the account) makes a cursor with other balances fail, so a page's
    /// `balance_after` always comes from the ledger.
    fn encode(&self, tag: impl Fn(&str) -> String) -> String {
        let body = format!("{}.{}.{}.{}.{}", self.sequence, self.index, self.balances[0], self.balances[1], self.balances[2]);
        let tag = tag(&body);
        format!("{body}.{tag}")
    }

    fn decode(text: &str, tag: impl Fn(&str) -> String) -> Option<Cursor> {
        let (body, given) = text.rsplit_once('.')?;
        let expected = tag(body);
        if !crate::auth::constant_time_equal(expected.as_bytes(), given.as_bytes()) {
            return None;
        }
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() != 5 {
            return None;
        }
        let number = |i: usize| parts[i].parse::<i64>().ok();
        Some(Cursor { sequence: parts[0].parse().ok()?, index: parts[1].parse().ok()?, balances: [number(2)?, number(3)?, number(4)?] })
    }
}

fn bucket_index(bucket: Bucket) -> usize {
    match bucket {
        Bucket::Settled => 0,
        Bucket::Unsettled => 1,
        Bucket::Frozen => 2,
    }
}

fn bucket_name(bucket: Bucket) -> &'static str {
    ["settled", "unsettled", "frozen"][bucket_index(bucket)]
}

/// The API's name of a journal entry kind.
pub fn entry_kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Recharge => "recharge",
        EntryKind::Payment => "payment",
        EntryKind::GuaranteeHold => "guarantee_hold",
        EntryKind::GuaranteeRelease => "guarantee_release",
        EntryKind::GuaranteeCancel => "guarantee_cancel",
        EntryKind::Refund => "refund",
        EntryKind::Freeze => "freeze",
        EntryKind::FreezeRelease => "freeze_release",
        EntryKind::WithdrawalReserve => "withdrawal",
        EntryKind::WithdrawalSuccess => "withdrawal_success",
        EntryKind::WithdrawalFailure => "withdrawal_failure",
        EntryKind::Mature => "settlement",
        EntryKind::RemoteCredit => "transfer_in",
        EntryKind::WithdrawalReroute => "withdrawal_reroute",
        EntryKind::SuspenseIn => "suspense_in",
        EntryKind::Commission => "commission",
        EntryKind::ServiceFee => "service_fee",
        EntryKind::ChannelFee => "channel_fee",
        EntryKind::VerificationDeposit => "verification_deposit",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Reads up to `limit` lines of `account` older than `cursor` from `batches` (the newest of the
/// account's batches up to the cursor); `older` tells whether the account has batches before them.
#[allow(clippy::too_many_arguments)]
fn read_lines(
    store: &dyn Store,
    shard: u16,
    account: AccountId,
    spec: engine::money::CurrencySpec,
    batches: &[u64],
    older: bool,
    mut cursor: Cursor,
    limit: usize,
) -> Result<(Vec<Value>, Option<Cursor>), ApiError> {
    let mut lines = Vec::new();
    for sequence in batches.iter().rev() {
        let bytes = store
            .get(&batch_key(shard, *sequence))
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .ok_or_else(|| ApiError::unavailable(format!("journal batch {sequence} of shard {shard} is missing")))?;
        let record = decode(shard, *sequence, &bytes).map_err(|e| ApiError::unavailable(e.to_string()))?;
        // The entry each posting belongs to.
        let mut owners: Vec<&engine::ledger::types::EntryHeader> = Vec::with_capacity(record.postings.len());
        for entry in &record.entries {
            owners.extend(std::iter::repeat_n(entry, entry.posting_count as usize));
        }
        let end = if *sequence == cursor.sequence { cursor.index } else { record.postings.len() };
        for index in (0..end.min(record.postings.len())).rev() {
            let posting = record.postings[index];
            if posting.account != account {
                continue;
            }
            if lines.len() == limit {
                return Ok((lines, Some(Cursor { sequence: *sequence, index: index + 1, ..cursor })));
            }
            let entry = owners[index];
            let slot = bucket_index(posting.bucket);
            let balance_after = cursor.balances[slot];
            cursor.balances[slot] -= posting.amount;
            lines.push(json!({
                "entry_id": format!("ent_{}", entry.entry_id),
                "order_id": (entry.order != NO_ORDER).then(|| public_order_id(entry.order)),
                "kind": entry_kind_name(entry.kind),
                "amount": spec.format(posting.amount.abs()),
                "direction": if posting.amount > 0 { "credit" } else { "debit" },
                "bucket": bucket_name(posting.bucket),
                "balance_after": spec.format(balance_after),
                "created_at": format_time(record.timestamp),
            }));
        }
        cursor = Cursor { sequence: *sequence, index: 0, ..cursor };
    }
    // A page that read its most batches goes on, from the oldest it read, on the next request.
    Ok((lines, older.then_some(cursor)))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/entries", tag = "accounts", params(("account_id" = String, Path, description = "Account id (acc_...)"), ("limit" = Option<String>, Query, description = "Page size 1-500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Success", body = crate::schemas::EntryPage), (status = "4XX", description = "The caller's mistake; `error.code` is one of ErrorCode", body = crate::schemas::ErrorBody), (status = "5XX", description = "Ours: unavailable or internal_error", body = crate::schemas::ErrorBody)), security(("platform_signature" = [])))]
#[get("/v1/accounts/{account_id}/entries")]
pub async fn list_entries(
    signed: Signed,
    path: web::Path<String>,
    query: web::Query<Query>,
    engine: web::Data<Arc<Engine>>,
    store: web::Data<Arc<dyn Store>>,
    platforms: web::Data<Arc<crate::platforms::Platforms>>,
) -> Result<HttpResponse, ApiError> {
    let platform = signed.platform.id;
    let account = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let limit = page_limit(query.limit.as_deref())?;
    let tag = |body: &str| platforms.tag("entries-cursor", &format!("{}/{body}", account.0));
    let after =
        query.cursor.as_deref().map(|c| Cursor::decode(c, tag).ok_or_else(|| ApiError::invalid("not a cursor this API returned", "cursor"))).transpose()?;
    let shard = account.shard(engine.config().shard_count);
    let (engine, store) = (engine.get_ref().clone(), store.get_ref().clone());
    let page = blocking(move || -> Result<Option<(Vec<Value>, Option<Cursor>)>, ApiError> {
        // The balances now and the batches to read, as of the same moment between two batches.
        let found = engine.read_shard(shard, move |state| {
            let a = state.account(account).filter(|a| a.kind == AccountKind::Customer && a.platform == platform)?;
            let spec = state.currencies[a.currency.0 as usize];
            let all = state.batches_of.get(&account).map_or(&[][..], Vec::as_slice);
            let before = after.map_or(u64::MAX, |c| c.sequence);
            let upto = all.partition_point(|s| *s <= before);
            let from = upto.saturating_sub(BATCHES_PER_PAGE_MAX);
            Some((spec, [a.settled, a.unsettled, a.frozen], all[from..upto].to_vec(), from > 0))
        })?;
        let Some((spec, balances, batches, older)) = found else { return Ok(None) };
        let cursor = after.unwrap_or(Cursor { sequence: u64::MAX, index: 0, balances });
        Ok(Some(read_lines(store.as_ref(), shard, account, spec, &batches, older, cursor, limit)?))
    })
    .await??;
    let (lines, next) = page.ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(json!({"entries": lines, "next_cursor": next.map(|c| c.encode(tag))})))
}

/// Registers the entries route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list_entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = crate::secrets::MasterKey::from_bytes([7; 32]);
        let tag = |body: &str| key.tag("entries-cursor", &format!("9/{body}"));
        let cursor = Cursor { sequence: 7, index: 3, balances: [100, 5, 0] };
        let text = cursor.encode(tag);
        assert_eq!(Cursor::decode(&text, tag), Some(cursor));
        // Changed balances, another account's tag, or garbage: refused.
        let forged = text.replacen("7.3.100.", "7.3.999.", 1);
        assert_eq!(Cursor::decode(&forged, tag), None);
        let other = |body: &str| key.tag("entries-cursor", &format!("10/{body}"));
        assert_eq!(Cursor::decode(&text, other), None);
        for garbage in ["7-3", "a.b.c.d.e.f", "", "."] {
            assert_eq!(Cursor::decode(garbage, tag), None, "{garbage}");
        }
    }
}
