//! One conformance suite that every `Store` implementation must pass.

use storage::{MemoryStore, RocksStore, Store};

fn check_store(store: &dyn Store) {
    // Empty reads.
    assert_eq!(store.get(b"a").expect("get"), None);
    // A batch is written whole.
    store.write(&[(b"k/2", b"two"), (b"k/1", b"one"), (b"k/3", b"three")]).expect("write");
    assert_eq!(store.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    // Overwrite.
    store.write(&[(b"k/2", b"TWO")]).expect("write");
    assert_eq!(store.get(b"k/2").expect("get").as_deref(), Some(&b"TWO"[..]));
    // Scans are ordered, bounded by [start, end), and stop when told.
    let mut seen = Vec::new();
    store
        .scan(b"k/", b"k/3", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("scan");
    assert_eq!(seen, vec![(b"k/1".to_vec(), b"one".to_vec()), (b"k/2".to_vec(), b"TWO".to_vec())]);
    let mut count = 0;
    store
        .scan(b"k/", b"k/~", &mut |_, _| {
            count += 1;
            false
        })
        .expect("scan");
    assert_eq!(count, 1);
    // An empty batch is allowed.
    store.write(&[]).expect("empty write");
    assert!(!store.is_poisoned());
}

#[test]
fn memory_store_conforms() {
    check_store(&MemoryStore::new());
}

#[test]
fn rocks_store_conforms_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RocksStore::open(dir.path()).expect("open");
        check_store(&store);
    }
    let reopened = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.get(b"k/3").expect("get").as_deref(), Some(&b"three"[..]));
    drop(reopened);
    let read_only = RocksStore::open_read_only(dir.path()).expect("read-only");
    assert_eq!(read_only.get(b"k/1").expect("get").as_deref(), Some(&b"one"[..]));
    assert!(read_only.write(&[(b"x", b"y")]).is_err());
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
