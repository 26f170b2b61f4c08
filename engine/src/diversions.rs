//! Notices of credits the ledger sent to a shard's suspense stripe instead of their account: a
//! bank's verdict on a recharge for an account closed (or credit-blocked, or at its balance
//! ceiling) while the money was on its way, a cross-shard credit to a closed account, a
//! withdrawal's money returned to one. The money is safe in suspense (the reserve check counts
//! it), but nobody would know whose it was: each is written as a notice under `h/dv/` in the
//! same storage write as its journal batch (so a crash never has one without the other), and the
//! clearing actor opens an operator's case for each and then forgets the notice.
//!
//! Derived from the batch's entries and postings, not journaled on their own: a credit to
//! suspense in an entry of any kind but `SuspenseIn` (money that matched no account, a case of
//! its own) and `Adjustment` (an operator's own movement).

use serde::{Deserialize, Serialize};
use storage::{StorageError, Store};

use crate::ledger::state::{Effects, ShardState};
use crate::ledger::types::{EntryKind, OrderId, SystemRole, Timestamp};
use crate::money::Minor;

/// The notices' key prefix: `h/dv/{shard}{batch sequence}{index}`, big-endian.
pub const PREFIX: &[u8] = b"h/dv/";
const PREFIX_END: &[u8] = b"h/dv0";

/// One credit sent to suspense.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diversion {
    pub shard: u16,
    /// The journal batch that posted it.
    pub sequence: u64,
    /// The order whose entry it is.
    pub order: OrderId,
    /// The entry's kind (`Recharge`, `RemoteCredit`, `WithdrawalFailure`, ...).
    pub kind: String,
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

/// The notices of a batch whose effects are `fx` (`fx.diversions` of them), keyed and encoded,
/// for the batch's write. Empty (and allocation-free) when nothing was diverted.
pub fn collect(state: &ShardState, fx: &Effects, sequence: u64, at: Timestamp) -> Vec<([u8; 19], Vec<u8>)> {
    let mut notices = Vec::new();
    if fx.diversions == 0 {
        return notices;
    }
    let mut offset = 0usize;
    for entry in &fx.entries {
        let count = entry.posting_count as usize;
        let postings = fx.postings.get(offset..offset + count).unwrap_or_default();
        offset += count;
        if matches!(entry.kind, EntryKind::SuspenseIn | EntryKind::Adjustment) {
            continue;
        }
        let suspense = state.system_account(SystemRole::Suspense, entry.currency);
        for posting in postings.iter().filter(|p| p.account == suspense && p.amount > 0) {
            let notice = Diversion {
                shard: state.shard,
                sequence,
                order: entry.order,
                kind: format!("{:?}", entry.kind),
                currency: state.currencies.get(entry.currency.0 as usize).map(|c| c.code_str().to_string()).unwrap_or_default(),
                amount: posting.amount,
                at,
            };
            let index = u32::try_from(notices.len()).unwrap_or(u32::MAX);
            notices.push((key(state.shard, sequence, index), serde_json::to_vec(&notice).expect("notices serialize")));
        }
    }
    notices
}

/// Up to `limit` notices not yet forgotten, oldest first per shard, with their keys. A notice
/// that does not decode is answered as an error naming its key (it is never skipped silently).
pub fn read(store: &dyn Store, limit: usize) -> Result<Vec<(Vec<u8>, Diversion)>, String> {
    let mut found = Vec::new();
    let mut failure = None;
    store
        .scan(PREFIX, PREFIX_END, &mut |key, value| {
            match serde_json::from_slice::<Diversion>(value) {
                Ok(notice) => found.push((key.to_vec(), notice)),
                Err(_) => failure = Some(format!("diversion notice {} is corrupt", hex_of(key))),
            }
            failure.is_none() && found.len() < limit
        })
        .map_err(|e| e.to_string())?;
    match failure {
        Some(failure) => Err(failure),
        None => Ok(found),
    }
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

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
