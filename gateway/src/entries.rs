//! `GET /v1/accounts/{account_id}/entries?limit=&cursor=` (API.md): the journal lines of one
//! account, newest first. Lines are read from the journal itself: the shard knows which batches
//! hold postings of each account (`ShardState::batches_of`), so a page reads only those batches.
//! `balance_after` is the bucket's balance after the line, computed backwards from the balance
//! now; the cursor carries where the page ended and the three bucket balances at that point.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{get, web, HttpResponse};
use engine::journal::{batch_key, decode, first_live_sequence};
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

/// Stored journal bytes one page decodes at most: once a page has read this much it answers
/// with the lines it has and a cursor, even with fewer than `limit` lines (API.md allows it).
/// A page always reads at least one batch, so a cursor walk always moves on. A full batch
/// (8,189 payments) is some hundreds of KB and decodes in about 15 ms here, so a page costs a
/// few batches (the old limit, 256 batches, could take seconds and hundreds of MB).
pub const ENTRY_PAGE_BYTES_MAX: usize = 1 << 20;

/// Entry pages read at once; one more is answered 503 `overloaded` with `Retry-After`.
pub const ENTRY_PAGES_IN_FLIGHT_MAX: usize = 4;

static ENTRY_PAGES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place among the entry pages read at once; given back when dropped.
struct PageSlot;

impl PageSlot {
    fn take() -> Result<PageSlot, ApiError> {
        ENTRY_PAGES_IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < ENTRY_PAGES_IN_FLIGHT_MAX).then_some(n + 1))
            .map(|_| PageSlot)
            .map_err(|_| ApiError::overloaded("too many entry pages are being read; try again shortly"))
    }
}

impl Drop for PageSlot {
    fn drop(&mut self) {
        ENTRY_PAGES_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

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

/// The API's name of a journal entry kind (`EntryKind::name`).
pub fn entry_kind_name(kind: EntryKind) -> &'static str {
    kind.name()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Reads up to `limit` lines of `account` older than `cursor` from `batches` (the newest of the
/// account's batches up to the cursor); `older` tells whether the account has batches before them.
/// Stops after the batch that brings the bytes read to `bytes_max` (with a cursor to go on).
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
    bytes_max: usize,
) -> Result<(Vec<Value>, Option<Cursor>), ApiError> {
    let mut lines = Vec::new();
    let mut bytes_read = 0usize;
    for sequence in batches.iter().rev() {
        if bytes_read >= bytes_max {
            // The budget is spent: this batch and the older ones are for the next page.
            return Ok((lines, Some(cursor)));
        }
        let Some(bytes) = store.get(&batch_key(shard, *sequence)).map_err(|e| ApiError::unavailable(e.to_string()))? else {
            // Batches before the live journal's first were archived (`clearing archive`): the
            // account's lines end there, and the page ends without a cursor. Any other missing
            // batch is damage.
            let first = first_live_sequence(store, shard).map_err(|e| ApiError::unavailable(e.to_string()))?;
            if first > *sequence {
                return Ok((lines, None));
            }
            return Err(ApiError::unavailable(format!("journal batch {sequence} of shard {shard} is missing")));
        };
        bytes_read = bytes_read.saturating_add(bytes.len());
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

/// The batches a page may read (at most `BATCHES_PER_PAGE_MAX`, the newest before the cursor:
/// the cursor's own batch only if lines of it are left), and whether older ones remain.
#[cfg(test)]
fn page_batches(all: &[u64], after: Option<Cursor>) -> (&[u64], bool) {
    let upto = all.partition_point(|s| before(after, *s));
    let from = upto.saturating_sub(BATCHES_PER_PAGE_MAX);
    (&all[from..upto], from > 0)
}

/// Whether batch `sequence` comes before the cursor (all do without one).
fn before(after: Option<Cursor>, sequence: u64) -> bool {
    after.is_none_or(|c| sequence < c.sequence || (sequence == c.sequence && c.index > 0))
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
    let account = parse_account_id(&path).ok_or_else(ApiError::not_found)?;
    let (lines, next) = page(&engine, &store, &platforms, signed.platform.id, account, query.limit.as_deref(), query.cursor.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({"entries": lines, "next_cursor": next})))
}

/// One page of `account`'s journal lines, newest first, and the cursor of the next page (the
/// API and the pages share it; 404 when the account is not `platform`'s).
pub async fn page(
    engine: &Arc<Engine>,
    store: &Arc<dyn Store>,
    platforms: &crate::platforms::Platforms,
    platform: u32,
    account: AccountId,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let limit = page_limit(limit)?;
    let tag = |body: &str| platforms.tag("entries-cursor", &format!("{}/{body}", account.0));
    let after = cursor.map(|c| Cursor::decode(c, tag).ok_or_else(|| ApiError::invalid("not a cursor this API returned", "cursor"))).transpose()?;
    let shard = account.shard(engine.config().shard_count);
    let (engine, store) = (engine.clone(), store.clone());
    let slot = PageSlot::take()?;
    let page = blocking(move || -> Result<Option<(Vec<Value>, Option<Cursor>)>, ApiError> {
        let _slot = slot;
        // The balances now and the batches to read, as of the same moment between two batches.
        let found = engine.read_shard(shard, move |state| {
            let a = state.account(account).filter(|a| a.kind == AccountKind::Customer && a.platform == platform)?;
            let spec = state.currencies[a.currency.0 as usize];
            let (batches, older) = state.batches_of.get(&account).map_or((Vec::new(), false), |all| all.window(|s| before(after, s), BATCHES_PER_PAGE_MAX));
            Some((spec, [a.settled, a.unsettled, a.frozen], batches, older))
        })?;
        let Some((spec, balances, batches, older)) = found else { return Ok(None) };
        let cursor = after.unwrap_or(Cursor { sequence: u64::MAX, index: 0, balances });
        Ok(Some(read_lines(store.as_ref(), shard, account, spec, &batches, older, cursor, limit, ENTRY_PAGE_BYTES_MAX)?))
    })
    .await??;
    let (lines, next) = page.ok_or_else(ApiError::not_found)?;
    Ok((lines, next.map(|c| c.encode(tag))))
}

/// Registers the entries route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(list_entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::journal::{encode, BatchRecordRef};
    use engine::ledger::types::{EntryHeader, OrderId, Posting};

    /// A journal of `count` batches on shard 0, each holding one line of account 2 (a credit of
    /// 1 to settled) among `padding` lines of other accounts; returns the sequences and the
    /// stored size of one batch.
    fn journal(store: &storage::MemoryStore, count: u64, padding: usize) -> (Vec<u64>, usize) {
        let mut size = 0;
        let mut previous_hash = engine::journal::ZERO_HASH;
        for sequence in 1..=count {
            let mut postings = vec![Posting { account: AccountId(4), bucket: Bucket::Settled, amount: -1 }; padding];
            postings.extend(vec![Posting { account: AccountId(6), bucket: Bucket::Settled, amount: 1 }; padding]);
            postings.push(Posting { account: AccountId(8), bucket: Bucket::Settled, amount: -1 });
            postings.push(Posting { account: AccountId(2), bucket: Bucket::Settled, amount: 1 });
            let header = |entry_id, count| EntryHeader {
                entry_id,
                order: OrderId(sequence * 2),
                kind: EntryKind::Payment,
                currency: engine::money::CurrencyId(0),
                posting_count: count,
            };
            let entries = vec![header(sequence * 10, 2 * padding as u32), header(sequence * 10 + 1, 2)];
            let record =
                BatchRecordRef { shard: 0, sequence, timestamp: sequence * 1_000_000, previous_hash, envelopes: &[], entries: &entries, postings: &postings };
            let mut bytes = Vec::new();
            previous_hash = encode(&record, &mut bytes);
            size = bytes.len();
            store.write(&[(&batch_key(0, sequence), &bytes)]).expect("memory store writes");
        }
        ((1..=count).collect(), size)
    }

    #[test]
    fn an_entries_page_stops_at_its_byte_budget_and_the_walk_returns_every_line_once() {
        // Regression (issue item 13): a page decoded up to 256 batches whatever their size.
        let store = storage::MemoryStore::new();
        let (all, size) = journal(&store, 20, 2000);
        let spec = engine::money::CurrencySpec::new("CNY", 2).expect("valid");
        let budget = 3 * size;
        let (mut after, mut seen, mut pages) = (None, Vec::new(), 0);
        loop {
            let (batches, older) = page_batches(&all, after);
            let cursor = after.unwrap_or(Cursor { sequence: u64::MAX, index: 0, balances: [20, 0, 0] });
            let (lines, next) = read_lines(&store, 0, AccountId(2), spec, batches, older, cursor, 500, budget).expect("reads");
            pages += 1;
            assert!(lines.len() <= 3, "a page reads at most its budget of batches: {}", lines.len());
            seen.extend(lines.iter().map(|line| (line["entry_id"].as_str().unwrap().to_string(), line["balance_after"].as_str().unwrap().to_string())));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
            assert!(pages <= 20, "the walk moves on");
        }
        let expected: Vec<(String, String)> = (1..=20u64).rev().map(|k| (format!("ent_{}", k * 10 + 1), spec.format(k as i64))).collect();
        assert_eq!(seen, expected, "every line once, newest first, with its balance");
        assert_eq!(pages, 7);
        // Without a budget the same walk is one page (what the old code did for any size).
        let (batches, older) = page_batches(&all, None);
        let (lines, next) =
            read_lines(&store, 0, AccountId(2), spec, batches, older, Cursor { sequence: u64::MAX, index: 0, balances: [20, 0, 0] }, 500, usize::MAX)
                .expect("reads");
        assert_eq!((lines.len(), next), (20, None));
    }

    #[test]
    fn an_entries_page_ends_where_batches_were_archived_and_a_hole_is_an_error() {
        let store = storage::MemoryStore::new();
        let (all, _) = journal(&store, 10, 1);
        let spec = engine::money::CurrencySpec::new("CNY", 2).expect("valid");
        let start = Cursor { sequence: u64::MAX, index: 0, balances: [10, 0, 0] };
        // Batches 1..=4 archived: the page holds the six live lines and no cursor.
        store.delete_range(&batch_key(0, 1), &batch_key(0, 5)).expect("delete");
        let (batches, older) = page_batches(&all, None);
        let (lines, next) = read_lines(&store, 0, AccountId(2), spec, batches, older, start, 500, usize::MAX).expect("reads");
        assert_eq!((lines.len(), next), (6, None));
        // A batch missing inside the live journal is damage, said as such.
        store.delete_range(&batch_key(0, 7), &batch_key(0, 8)).expect("delete");
        let Err(error) = read_lines(&store, 0, AccountId(2), spec, batches, older, start, 500, usize::MAX) else { panic!("a hole read as lines") };
        assert!(
            error.to_string().contains("journal batch 7 of shard 0 is missing") || format!("{error:?}").contains("journal batch 7 of shard 0 is missing"),
            "{error:?}"
        );
    }

    #[test]
    fn entry_pages_read_at_once_are_bounded() {
        let slots: Vec<PageSlot> = (0..ENTRY_PAGES_IN_FLIGHT_MAX).map(|_| PageSlot::take().expect("a free slot")).collect();
        let refused = PageSlot::take().err().expect("all slots taken");
        assert_eq!((refused.status, refused.code), (503, "overloaded"));
        drop(slots);
        assert!(PageSlot::take().is_ok(), "slots come back");
    }

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
