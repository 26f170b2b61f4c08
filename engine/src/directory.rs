//! The router's read-only view of which customer accounts exist, with their platform, currency
//! and status. Each shard writes only its own part (after the batch is durable); the router reads
//! it to check receivers that live on other shards before a payment is accepted.

use std::sync::RwLock;

use crate::ledger::state::ShardState;
use crate::ledger::types::{AccountId, AccountKind, AccountStatus};
use crate::money::CurrencyId;

/// What the router knows of one customer account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub platform: u32,
    pub currency: CurrencyId,
    pub status: AccountStatus,
}

/// Per shard, entries by the account's local index (`None` for system accounts).
pub struct Directory {
    shards: Vec<RwLock<Vec<Option<DirectoryEntry>>>>,
}

impl Directory {
    /// An empty directory for `shard_count` shards.
    pub fn new(shard_count: u16) -> Directory {
        Directory { shards: (0..shard_count).map(|_| RwLock::new(Vec::new())).collect() }
    }

    /// Records an account's current platform, currency and status.
    pub fn set(&self, account: AccountId, shard_count: u16, platform: u32, currency: CurrencyId, status: AccountStatus) {
        let mut entries = self.shards[account.shard(shard_count) as usize].write().expect("directory lock");
        let index = account.local_index(shard_count) as usize;
        if entries.len() <= index {
            entries.resize(index + 1, None);
        }
        entries[index] = Some(DirectoryEntry { platform, currency, status });
    }

    /// The entry of a customer account, if it exists.
    pub fn get(&self, account: AccountId, shard_count: u16) -> Option<DirectoryEntry> {
        let shard = account.shard(shard_count) as usize;
        let entries = self.shards.get(shard)?.read().expect("directory lock");
        entries.get(account.local_index(shard_count) as usize).copied().flatten()
    }

    /// Loads every customer account of a recovered shard.
    pub fn load(&self, state: &ShardState) {
        let mut entries = self.shards[state.shard as usize].write().expect("directory lock");
        entries.clear();
        entries.extend(state.accounts.iter().map(|a| match a.kind {
            AccountKind::Customer => Some(DirectoryEntry { platform: a.platform, currency: a.currency, status: a.status }),
            AccountKind::System(_) => None,
        }));
    }
}
