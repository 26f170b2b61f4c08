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

/// What a crash leaves (`snapshot`): durable writes, and unlogged ones only once persisted. A
/// durable write or delete after an unlogged write of the same key is what survives; an unlogged
/// overwrite of a durable key leaves the durable value.
#[test]
fn a_crash_keeps_unlogged_writes_only_once_persisted() {
    let store = MemoryStore::new();
    store.write(&[(b"k/old", b"durable"), (b"k/gone", b"durable")]).expect("write");
    store.write_unlogged(&[(b"k/a", b"1"), (b"k/old", b"unlogged"), (b"k/b", b"1"), (b"k/gone", b"unlogged")]).expect("unlogged");
    store.write_unlogged(&[(b"k/old", b"unlogged again")]).expect("unlogged");
    store.write(&[(b"k/b", b"durable")]).expect("write");
    store.delete_range(b"k/gone", b"k/gone\0").expect("delete");
    let reads = |store: &MemoryStore| store.get_many(&[b"k/a", b"k/old", b"k/b", b"k/gone"]).expect("get many");
    let text = |value: &str| Some(value.as_bytes().to_vec());
    assert_eq!(reads(&store), [text("1"), text("unlogged again"), text("durable"), None], "everything reads at once");
    assert_eq!(reads(&store.snapshot()), [None, text("durable"), text("durable"), None], "a crash before the persist");
    store.persist_unlogged().expect("persist");
    assert_eq!(reads(&store.snapshot()), [text("1"), text("unlogged again"), text("durable"), None], "a crash after it");
    store.write_unlogged(&[(b"k/a", b"2")]).expect("unlogged");
    assert_eq!(reads(&store.snapshot())[0], text("1"), "the persisted value, not the newer unlogged one");
}

/// Unlogged writes and persists count as writes for an injected failure, which poisons the store.
#[test]
fn unlogged_writes_and_persists_fail_as_writes_do() {
    let store = MemoryStore::new();
    store.fail_after(1);
    store.write_unlogged(&[(b"a", b"1")]).expect("first write succeeds");
    assert!(store.persist_unlogged().is_err());
    assert!(store.is_poisoned());
    assert!(matches!(store.write_unlogged(&[(b"b", b"2")]), Err(storage::StorageError::Poisoned)));
    assert_eq!(store.snapshot().get(b"a").expect("get"), None, "never persisted");
}
