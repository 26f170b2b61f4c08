//! Cold idempotency records on RocksDB in a temporary directory (the scenarios of
//! `engine/tests/support/cold.rs`): replays and conflicts of orders whose records went cold,
//! live, after a restart (the database closed and opened again) and after a fall-back from a
//! corrupt newest checkpoint.

#[path = "../engine/tests/support/cold.rs"]
mod support;

use std::sync::Arc;

use storage::Store;
use storage_rocks::RocksStore;
use support::*;

struct Rocks {
    dir: tempfile::TempDir,
    store: Option<Arc<dyn Store>>,
}

impl Harness for Rocks {
    fn store(&mut self) -> Arc<dyn Store> {
        self.store.get_or_insert_with(|| Arc::new(RocksStore::open(self.dir.path()).unwrap())).clone()
    }

    fn reopen(&mut self) {
        let store = self.store.take().expect("open");
        assert_eq!(Arc::strong_count(&store), 1, "every engine and handle dropped before reopening");
        drop(store);
    }
}

#[test]
fn cold_records_stay_replays_and_conflicts_on_rocksdb() {
    cold_records_stay_replays_and_conflicts(&mut Rocks { dir: tempfile::tempdir().unwrap(), store: None });
}

/// Session 31: a checkpoint's cold rows, thousands a shard, go into RocksDB as one table file
/// (`Store::write_sorted`: past the write-ahead log and the memtable) and answer as rows
/// written the ordinary way did: every old number replays with its order and is a conflict
/// under other content or from the other shard, after a restart on the same directory.
#[test]
fn thousands_of_cold_rows_go_in_as_a_table_file_and_answer_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = Rocks { dir, store: None };
    let rocks = Arc::new(RocksStore::open(harness.dir.path()).unwrap());
    // No periodic checkpoint: the stop's checkpoint seals every record, 6,000 a shard.
    let engine = engine::Engine::start(config(1_000_000), rocks.clone() as Arc<dyn Store>).unwrap();
    let accounts = accounts(&engine);
    let mut acked: Acked = Vec::new();
    for round in 0..6 {
        for (payer, payee) in [(accounts[0], accounts[2]), (accounts[3], accounts[1])] {
            let envelopes: Vec<_> = (0..1_000).map(|i| keyed(&format!("many-{}-{round}-{i}", payer.shard(2)), pay(payer, payee, 1 + i))).collect();
            let replies = engine.execute(envelopes.clone()).unwrap();
            assert!(replies.iter().all(|r| r.is_ok() && !r.replayed));
            acked.extend(envelopes.into_iter().zip(replies.iter().map(|r| r.id)));
        }
    }
    engine.shutdown();
    drop(engine);
    let report = rocks.memory_report();
    assert!(report.contains("rows: memtables 0.0 MB"), "the rows went through the memtable: {report}");
    let mut rows = 0;
    rocks
        .scan(engine::cold::COLD_PREFIX, b"h/i0", &mut |_, _| {
            rows += 1;
            true
        })
        .unwrap();
    assert_eq!(rows, 12_000, "a cold row for each order number");
    drop(rocks);
    // The harness opens the directory again (it held no handle of its own).
    let store = harness.store();
    let engine = engine::Engine::start(config(1_000_000), store.clone()).unwrap();
    // Every 97th: each replay and conflict is three round trips.
    let sample: Acked = acked.iter().step_by(97).cloned().collect();
    assert_replays_and_conflicts(&engine, &accounts, &sample, "after a restart");
    engine.shutdown();
}
