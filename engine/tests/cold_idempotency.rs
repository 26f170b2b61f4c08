//! Cold idempotency records on the in-memory store: the shared scenarios (`support/cold.rs`,
//! also run on RocksDB by `tests/cold_idempotency_rocksdb.rs`) and write failures injected at
//! each write of a checkpoint that evicts records.

#[path = "support/cold.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use engine::Engine;
use storage::{MemoryStore, StorageError, Store};
use support::*;

struct Memory(Arc<dyn Store>);

impl Harness for Memory {
    fn store(&mut self) -> Arc<dyn Store> {
        self.0.clone()
    }

    fn reopen(&mut self) {}
}

#[test]
fn cold_records_stay_replays_and_conflicts_on_the_memory_store() {
    cold_records_stay_replays_and_conflicts(&mut Memory(Arc::new(MemoryStore::new())));
}

/// A store that, once armed (`left` below `u64::MAX`), fails the `left`-th next write whose
/// first key starts with `prefix` (a cold-row write, a checkpoint part, a manifest) and every
/// write after it, as a failed fsync poisons a store.
struct FailingAt {
    inner: MemoryStore,
    prefix: &'static [u8],
    left: AtomicU64,
    failed: AtomicBool,
}

impl Store for FailingAt {
    fn write(&self, puts: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        let armed = self.left.load(Ordering::SeqCst) != u64::MAX;
        if armed && puts.first().is_some_and(|(key, _)| key.starts_with(self.prefix)) && self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.failed.store(true, Ordering::SeqCst);
            return Err(StorageError::Io("injected write failure".into()));
        }
        self.inner.write(puts)
    }

    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StorageError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned);
        }
        self.inner.delete_range(start, end)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }

    fn scan(&self, start: &[u8], end: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> {
        self.inner.scan(start, end, visit)
    }

    fn is_poisoned(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A failure at each write of a checkpoint that evicts (its cold rows, its part, its manifest),
/// the first to the third of each: the shards stop, and a restart from what was durable answers
/// every acknowledged order as a replay and every reuse as a conflict, with recovery equal to a
/// replay of the whole journal.
#[test]
fn a_write_failure_at_each_write_of_an_evicting_checkpoint_loses_nothing_acknowledged() {
    for prefix in [&b"h/i/"[..], b"m/p/", b"m/c/"] {
        for nth in 0..3u64 {
            let when = format!("failing the write #{nth} of {}", String::from_utf8_lossy(prefix));
            let store = Arc::new(FailingAt { inner: MemoryStore::new(), prefix, left: AtomicU64::new(u64::MAX), failed: AtomicBool::new(false) });
            let engine = Engine::start(config(3), store.clone()).unwrap();
            let accounts = accounts(&engine);
            store.left.store(nth, Ordering::SeqCst);
            // How many checkpoints run depends on scheduling (one at a time per shard, on a
            // thread of its own: a busy machine coalesces them), so orders go on until the
            // failure has happened, then one more round meets the stopped shards.
            let mut acked = Vec::new();
            for attempt in 0..100 {
                let failed = store.failed.load(Ordering::SeqCst);
                acked.extend(orders(&engine, &accounts, &format!("t{attempt}"), 10));
                if failed {
                    break;
                }
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
            engine.shutdown();
            drop(engine);
            assert!(store.failed.load(Ordering::SeqCst), "{when}: the failure was injected");
            let durable: Arc<dyn Store> = Arc::new(store.inner.snapshot());
            assert_recovery_equals_whole_replay(&*durable, &when);
            let restarted = Engine::start(config(3), durable.clone()).unwrap();
            assert_replays_and_conflicts(&restarted, &accounts, &acked, &when);
            restarted.shutdown();
            assert!(engine::invariants::check_store(&*durable, 2).unwrap().ok, "{when}");
        }
    }
}
