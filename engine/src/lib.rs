//! The clearing engine: a pure double-entry ledger core, sharded actors with group commit, and a
//! router. See ARCHITECTURE.md for the map and the invariants.

pub mod archive;
pub mod chart;
pub mod checkpoint;
mod claims;
pub mod codec;
pub mod cold;
pub mod directory;
pub mod diversions;
pub mod engine;
pub mod histogram;
pub mod invariants;
pub mod journal;
pub mod ledger;
pub mod money;
pub mod result;
pub mod shard;

pub use engine::{Engine, EngineConfig};

/// Asks the CPU to bring the cache line holding `address` in, for a read or write a little
/// later (a hint: it never faults and changes nothing, so any address, even a dangling or
/// stale one, is harmless).
#[inline(always)]
pub(crate) fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache and never dereferences its address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(address.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// How many keys ahead a loop over keys asks for their cache lines (`each_prefetched`, the
/// router's claims, the cold filter): enough misses in flight to overlap, few enough that the
/// lines are still cached when they are used.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// `each(item)` for every item of `items`, in order, with `prefetch(item)` called
/// `PREFETCH_AHEAD` items before: the items' cache misses overlap instead of coming one after
/// another.
pub(crate) fn each_prefetched<T: Copy + Default>(items: impl Iterator<Item = T>, prefetch: impl Fn(T), mut each: impl FnMut(T)) {
    let mut ring = [T::default(); PREFETCH_AHEAD];
    let mut count = 0;
    for item in items {
        prefetch(item);
        let slot = count % PREFETCH_AHEAD;
        if count >= PREFETCH_AHEAD {
            each(ring[slot]);
        }
        ring[slot] = item;
        count += 1;
    }
    for index in count.saturating_sub(PREFETCH_AHEAD)..count {
        each(ring[index % PREFETCH_AHEAD]);
    }
}

/// Failures that are not business outcomes: storage, a stopped shard, bad configuration.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("shard {0} has stopped")]
    ShardStopped(u16),
    #[error("journal: {0}")]
    Journal(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("not a command clients may send")]
    NotAClientCommand,
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("shard {0} is overloaded; try again shortly")]
    Overloaded(u16),
}

impl From<storage::StorageError> for EngineError {
    fn from(error: storage::StorageError) -> EngineError {
        EngineError::Storage(error.to_string())
    }
}

impl From<journal::JournalError> for EngineError {
    fn from(error: journal::JournalError) -> EngineError {
        EngineError::Journal(error.to_string())
    }
}
