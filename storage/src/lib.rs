//! Persistence behind a trait, and the in-memory store. The RocksDB store is the crate
//! `storage-rocks`; the engine and clearing see only `Store`.
//!
//! Every write is one atomic, durable batch: it returns only after the data is on disk (fsync).
//! A failed write poisons the store: every later write fails too, and nothing is retried.

pub mod backup;
pub mod conformance;
mod memory;
pub mod records;

pub use memory::MemoryStore;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage io: {0}")]
    Io(String),
    /// What was read does not match its checksum (RocksDB's `Corruption`): damage on disk, not
    /// a disk that did not answer; reading it again gives the same. Since session 61.
    #[error("storage corruption: {0}")]
    Corrupt(String),
    #[error("storage is poisoned by an earlier failed write; restart the process")]
    Poisoned,
    #[error("storage is open read-only")]
    ReadOnly,
}

/// Rows per `write` when `Store::write_sorted` writes them through `write`.
pub const SORTED_CHUNK_ROWS: usize = 65_536;

/// Writes `puts` with `store.write`, `SORTED_CHUNK_ROWS` at a time (nothing for none).
pub fn write_in_chunks<S: Store + ?Sized>(store: &S, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
    puts.chunks(SORTED_CHUNK_ROWS).try_for_each(|chunk| store.write(chunk))
}

/// An ordered key-value store with atomic, durable batch writes.
pub trait Store: Send + Sync + 'static {
    /// Writes all `puts` atomically and durably; returns only once they survive a crash.
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError>;

    /// Writes `puts`, their keys strictly ascending, durably, as `write` does: for many rows at
    /// once, each written once (the engine's cold idempotency rows), which need no atomicity
    /// among themselves. A store that can (RocksDB, for the keys of its rows family) builds them
    /// into one sorted table file and takes it in whole, past its log and its memtables. This
    /// default, and any store with keys that do not ascend, writes them `SORTED_CHUNK_ROWS` at a
    /// time (`write_in_chunks`): each part atomic, a large set never one huge batch.
    fn write_sorted(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        write_in_chunks(self, puts)
    }

    /// Deletes every key in `[start, end)` atomically and durably (one synced write).
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError>;

    /// Deletes every key in each of `ranges` (each `[start, end)`), durably. A store that can
    /// (RocksDB, `MemoryStore`) does it as one atomic synced write; this default deletes one
    /// range after the other, in order, each atomic (a crash may leave the later ones).
    fn delete_ranges(&self, ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        ranges.iter().try_for_each(|(start, end)| self.delete_range(start, end))
    }

    /// Writes `puts` and deletes every key in each of `ranges`, durably. A store that can
    /// (RocksDB, `MemoryStore`) does both as one atomic synced write (the deletions after the
    /// puts: a put inside a deleted range is deleted); this default writes, then deletes (a
    /// crash may leave the deletions undone).
    fn write_and_delete(&self, puts: &[(&[u8], &[u8])], ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        self.write(puts)?;
        self.delete_ranges(ranges)
    }

    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Reads many keys at once, answering in their order. `keys` sorted ascending lets a store
    /// that can (RocksDB's batched `MultiGet`) walk its files once for all of them; this default
    /// reads them one by one.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Visits the keys in `[start, end)` in ascending order until `visit` returns false.
    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError>;

    /// Whether an earlier write failed (the store then refuses all writes).
    fn is_poisoned(&self) -> bool;

    /// Gives back the disk space of keys deleted in `[start, end)` now, where the store keeps
    /// deleted data until it reorganises its files (RocksDB: until a compaction meets the range
    /// tombstone, which for data no longer written, such as an archived journal, may be never).
    /// Changes no key. This default does nothing (the store frees space as it deletes).
    fn reclaim(&self, _start: &[u8], _end: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }

    /// The greatest key in `[start, end)`, if any. This default visits the whole range; a store
    /// that can seek backwards (RocksDB) overrides it.
    fn last_key_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let mut last = None;
        self.scan(start, end, &mut |key, _| {
            last = Some(key.to_vec());
            true
        })?;
        Ok(last)
    }
}
