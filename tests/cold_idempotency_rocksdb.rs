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
