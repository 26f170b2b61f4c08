//! An in-memory `Store` for tests, with injectable write failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::{StorageError, Store};

/// A `BTreeMap` behind a mutex. "Durable" for the life of the value; used by tests and simulations.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    poisoned: AtomicBool,
    /// Writes left before an injected failure; `u64::MAX` means never fail.
    writes_before_failure: AtomicU64,
}

impl MemoryStore {
    /// An empty store that never fails.
    pub fn new() -> MemoryStore {
        MemoryStore { writes_before_failure: AtomicU64::new(u64::MAX), ..MemoryStore::default() }
    }

    /// Makes the write after the next `writes` succeed fail (as an fsync error would).
    pub fn fail_after(&self, writes: u64) {
        self.writes_before_failure.store(writes, Ordering::SeqCst);
    }

    /// A copy of everything stored (for tests that restart an engine on the same data).
    pub fn snapshot(&self) -> MemoryStore {
        let map = self.map.lock().expect("memory store lock").clone();
        MemoryStore { map: Mutex::new(map), ..MemoryStore::new() }
    }
}

impl MemoryStore {
    /// Counts one write against the injected failure; fails (and poisons) when it is the one.
    fn count_write(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        let left = self.writes_before_failure.load(Ordering::SeqCst);
        if left == 0 {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(StorageError::Io("injected write failure".into()));
        }
        if left != u64::MAX {
            self.writes_before_failure.store(left - 1, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        self.write_and_delete(puts, &[])
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        self.delete_ranges(&[(start, end)])
    }

    fn delete_ranges(&self, ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        // One write, as RocksDB's one batch; no write for no range.
        if ranges.is_empty() {
            return Ok(());
        }
        self.write_and_delete(&[], ranges)
    }

    fn write_and_delete(&self, puts: &[(&[u8], &[u8])], ranges: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        // One write, as RocksDB's one batch: all of it or (a failure injected) none.
        self.count_write()?;
        let mut map = self.map.lock().expect("memory store lock");
        for (key, value) in puts {
            map.insert(key.to_vec(), value.to_vec());
        }
        for (start, end) in ranges {
            let doomed: Vec<Vec<u8>> = map.range(start.to_vec()..end.to_vec()).map(|(key, _)| key.clone()).collect();
            for key in doomed {
                map.remove(&key);
            }
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map.lock().expect("memory store lock").get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        // A few entries at a time, the lock released while `visit` runs: a visitor may read the
        // store itself (replay reads cold records while it walks the journal), as it may on
        // RocksDB, whose iterators hold no lock.
        const CHUNK: usize = 64;
        let mut from = std::ops::Bound::Included(start.to_vec());
        loop {
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = {
                let map = self.map.lock().expect("memory store lock");
                map.range((from.clone(), std::ops::Bound::Excluded(end.to_vec()))).take(CHUNK).map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            for (key, value) in &chunk {
                if !visit(key, value) {
                    return Ok(());
                }
            }
            match chunk.last() {
                Some((last, _)) if chunk.len() == CHUNK => from = std::ops::Bound::Excluded(last.clone()),
                _ => return Ok(()),
            }
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }
}
