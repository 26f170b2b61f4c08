//! Notices of credits the ledger sent to a shard's suspense stripe instead of their account: a
//! bank's verdict on a recharge for an account closed (or credit-blocked, or at its balance
//! ceiling) while the money was on its way, a cross-shard credit to a closed account, a
//! withdrawal's money returned to one. The money is safe in suspense (the reserve check counts
//! it), but nobody would know whose it was: each is written as a notice under `h/dv/` in the
//! same storage write as its journal batch (so a crash never has one without the other), and the
//! clearing actor opens an operator's case for each and then forgets the notice.
//!
//! Derived from what `ShardState::credit_target` noted in the batch's effects (the account a
//! credit was for, when it went to suspense instead), with the order and kind of the entry that
//! posted it; not journaled on their own (a replay writes none: they are in the store already).

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::ledger::state::{Effects, ShardState};
use crate::ledger::types::{AccountId, OrderId, SystemRole, Timestamp, NO_ORDER};
use crate::money::Minor;

/// The notices' key prefix: `h/dv/{shard}{batch sequence}{index}`, big-endian.
pub const PREFIX: &[u8] = b"h/dv/";
const PREFIX_END: &[u8] = b"h/dv0";

/// One credit sent to suspense.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diversion {
    pub shard: u16,
    /// The journal batch that posted it, and its place among the batch's notices.
    pub sequence: u64,
    pub index: u32,
    /// The order whose entry it is (`None` for entries of no order, such as commissions).
    pub order: Option<OrderId>,
    /// The entry's kind, as the API names it (`recharge`, `transfer_in`, `withdrawal_failure`...).
    pub kind: String,
    /// The account the credit was for.
    pub account: AccountId,
    /// The currency's code.
    pub currency: String,
    pub amount: Minor,
    /// The batch's timestamp (microseconds since 1970).
    pub at: Timestamp,
}

/// The key of the `index`-th notice of batch `sequence` of `shard`.
pub fn key(shard: u16, sequence: u64, index: u32) -> [u8; 19] {
    let mut key = [0u8; 19];
    key[..5].copy_from_slice(PREFIX);
    key[5..7].copy_from_slice(&shard.to_be_bytes());
    key[7..15].copy_from_slice(&sequence.to_be_bytes());
    key[15..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The notices of a batch whose effects are `fx` (one per `fx.diverted`), keyed and encoded,
/// for the batch's write. Empty (and allocation-free) when nothing was diverted. Each diversion's
/// suspense posting is the first at or after where it was noted with its amount (and after the
/// one before), and its entry gives the order and kind.
pub fn collect(state: &ShardState, fx: &Effects, sequence: u64, at: Timestamp) -> Vec<([u8; 19], Vec<u8>)> {
    let mut notices = Vec::new();
    if fx.diverted.is_empty() {
        return notices;
    }
    // Where each entry's postings start.
    let mut starts = Vec::with_capacity(fx.entries.len());
    let mut offset = 0usize;
    for entry in &fx.entries {
        starts.push(offset);
        offset += entry.posting_count as usize;
    }
    let mut next = 0usize;
    for (index, diverted) in fx.diverted.iter().enumerate() {
        let suspense = state.system_account(SystemRole::Suspense, diverted.currency);
        let from = diverted.from_posting.max(next);
        let found = fx.postings.iter().enumerate().skip(from).find(|(_, p)| p.account == suspense && p.amount == diverted.amount).map(|(at, _)| at);
        let entry = found.and_then(|at| starts.partition_point(|start| *start <= at).checked_sub(1)).and_then(|e| fx.entries.get(e));
        if let Some(at) = found {
            next = at + 1;
        }
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let notice = Diversion {
            shard: state.shard,
            sequence,
            index,
            order: entry.map(|e| e.order).filter(|order| *order != NO_ORDER),
            kind: entry.map_or("unknown", |e| e.kind.name()).to_string(),
            account: diverted.account,
            currency: state.currencies.get(diverted.currency.0 as usize).map(|c| c.code_str().to_string()).unwrap_or_default(),
            amount: diverted.amount,
            at,
        };
        notices.push((key(state.shard, sequence, index), serde_json::to_vec(&notice).expect("notices serialize")));
    }
    notices
}

/// Up to `limit` notices not yet forgotten, by shard then batch, with their keys; one that
/// does not decode is answered as its bytes (hex), never skipped and never in the way of the
/// others.
pub fn read(store: &dyn Store, limit: usize) -> Result<Vec<(Vec<u8>, Result<Diversion, String>)>, StorageError> {
    let mut found = Vec::new();
    store.scan(PREFIX, PREFIX_END, &mut |key, value| {
        let notice = serde_json::from_slice::<Diversion>(value).map_err(|_| hex_of(value));
        found.push((key.to_vec(), notice));
        found.len() < limit
    })?;
    Ok(found)
}

/// Forgets the notices of `keys` (one synced write).
pub fn forget(store: &dyn Store, keys: &[Vec<u8>]) -> Result<(), StorageError> {
    let ends: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| {
            let mut end = key.clone();
            end.push(0);
            end
        })
        .collect();
    let ranges: Vec<(&[u8], &[u8])> = keys.iter().zip(&ends).map(|(start, end)| (start.as_slice(), end.as_slice())).collect();
    store.delete_ranges(&ranges)
}

/// Lower-case hex of `bytes`.
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
