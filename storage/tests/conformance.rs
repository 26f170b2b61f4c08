//! The in-memory store against the conformance suite, and its injectable failures.

use storage::conformance::check_store;
use storage::{MemoryStore, Store};

#[test]
fn memory_store_conforms() {
    check_store(&MemoryStore::new());
}

#[test]
fn failed_write_poisons_the_store() {
    let store = MemoryStore::new();
    store.fail_after(1);
    store.write(&[(b"a", b"1")]).expect("first write succeeds");
    assert!(store.write(&[(b"b", b"2")]).is_err());
    assert!(store.is_poisoned());
    assert!(matches!(store.write(&[(b"c", b"3")]), Err(storage::StorageError::Poisoned)));
    assert_eq!(store.get(b"b").expect("get"), None, "the failed batch wrote nothing");
}
